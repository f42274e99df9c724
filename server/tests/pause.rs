//! A leaseholder frozen with `SIGSTOP` for longer than its lease must not, when it wakes,
//! answer a read with a value overwritten while it was frozen (issue 10's stale read).
//!
//! The scenario is made deterministic by cutting the frozen node's links to the other
//! nodes as well (its clients still reach it): when it wakes it has heard nothing of the
//! new leader, so only its own judgement of time can stop it from serving the read it
//! finds queued. With leases measured in ticks it answered from its old lease.

mod common;

use std::time::Duration;

use common::*;
use tonic::Code;

const RECOVERY: Duration = Duration::from_secs(30);

/// The node whose replica of `key`'s range holds the lease.
async fn leaseholder_of(cluster: &TestCluster, key: &[u8]) -> u64 {
    let client = cluster.client();
    poll_until("a leaseholder for the key", RECOVERY, || async {
        let ranges = client.ranges().await.map_err(|s| s.to_string())?;
        ranges
            .ranges
            .iter()
            .find(|r| {
                let d = r.descriptor.as_ref().expect("descriptor");
                d.start.as_slice() <= key && (d.end.is_empty() || key < d.end.as_slice())
            })
            .filter(|r| r.lease && r.leader_node != 0)
            .map(|r| r.leader_node)
            .ok_or_else(|| "no leaseholder yet".to_string())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leaseholder_woken_from_sigstop_serves_no_stale_read() {
    let _serial = serial().await;
    let mut cluster = TestCluster::start(3, ClusterOpts::ranges(1)).await;
    let key = b"paused-key".to_vec();
    cluster.client().put(&key, b"v1").await.expect("first put");
    let old = leaseholder_of(&cluster, &key).await;
    let direct = cluster.client_of(old);
    assert_eq!(
        direct.get(&key).await.expect("read at the leaseholder"),
        Some(b"v1".to_vec())
    );

    // Freeze the leaseholder and cut it off from its peers (not from its clients).
    assert!(cluster.node(old).pause(), "SIGSTOP node {old}");
    cluster.isolate(old);
    let others = cluster.client_without(&[old]);
    poll_until("the other nodes to acknowledge v2", RECOVERY, || async {
        match tokio::time::timeout(CALL_TIMEOUT, others.put(&key, b"v2")).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
            Err(_) => Err("no answer".into()),
        }
    })
    .await;
    assert_eq!(
        get_eventually(&others, &key, RECOVERY).await.unwrap(),
        Some(b"v2".to_vec())
    );

    // A read sent to the frozen node waits in its socket; then it wakes.
    let reader = tokio::spawn(async move { direct.get(&key).await });
    // Give the call a moment to reach the frozen socket (the assertion holds either way:
    // a read arriving just after the wake meets the same stale lease).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(cluster.node(old).resume(), "SIGCONT node {old}");
    let answer = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("an answer")
        .expect("task");
    eprintln!("the woken leaseholder answered {answer:?}");
    match answer {
        Ok(v) => assert_eq!(
            v,
            Some(b"v2".to_vec()),
            "stale read from the woken leaseholder"
        ),
        Err(s) => assert!(
            matches!(
                s.code(),
                Code::Unavailable | Code::Unknown | Code::DeadlineExceeded
            ),
            "a read the woken node cannot serve fails retryably: {s:?}"
        ),
    }

    // Healed, every node reads the new value.
    cluster.heal();
    for id in cluster.ids() {
        let v = get_eventually(&cluster.client_of(id), b"paused-key", RECOVERY)
            .await
            .unwrap();
        assert_eq!(v, Some(b"v2".to_vec()), "node {id} after the heal");
    }
}
