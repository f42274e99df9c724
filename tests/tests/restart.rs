//! Durability across restarts: every acknowledged write survives all nodes stopping.

use flotilla_raftstore::local::even_ranges;
use flotilla_tests::{harness_config, Cluster};

#[test]
fn all_nodes_stopped_and_reopened_keep_every_acknowledged_write() {
    let cfg = flotilla_raftstore::StoreConfig {
        sync_log: true,
        ..harness_config()
    };
    let mut c = Cluster::with_config(3, even_ranges(8, 3), 21, cfg);
    let mut acked = Vec::new();
    for i in 0..200u32 {
        let key = [(i % 256) as u8, (i * 7 % 256) as u8, b'k', (i / 256) as u8];
        let value = format!("v{i}");
        if c.put(&key, value.as_bytes()).is_ok() {
            acked.push((key, value));
        }
    }
    assert_eq!(
        acked.len(),
        200,
        "a healthy cluster acknowledges every write"
    );
    // Stop in the middle of a round's traffic: a write is in flight while nodes go down.
    let range = c.range_of(b"zz");
    let leader = c.leader_of(range).unwrap();
    let _in_flight = c.request(
        leader,
        range,
        flotilla_raftstore::Command::Put {
            key: b"zz".to_vec(),
            value: b"maybe".to_vec(),
        },
    );
    for n in c.node_ids() {
        c.stop(n);
    }
    for n in c.node_ids() {
        c.start(n);
    }
    for (key, value) in &acked {
        assert_eq!(
            c.get(key).unwrap().as_deref(),
            Some(value.as_bytes()),
            "key {key:?}"
        );
    }
    let v = c.get(b"zz").unwrap();
    assert!(
        v.is_none() || v.as_deref() == Some(&b"maybe"[..]),
        "no invented value: {v:?}"
    );
}

#[test]
fn a_restarted_follower_catches_up() {
    let mut c = Cluster::new(3, 2, 4);
    let leader = c.wait_leader(1, 60).unwrap();
    let follower = c.node_ids().into_iter().find(|n| *n != leader).unwrap();
    c.stop(follower);
    for i in 0..20u8 {
        c.put(&[i, 1], b"x").unwrap();
    }
    c.start(follower);
    let digests = c.digests(1, 100);
    assert_eq!(digests.len(), 3);
    let first = digests[&leader];
    assert!(digests.values().all(|d| *d == first), "{digests:?}");
}
