//! Multi-process snapshot transfers cut short: a new replica's snapshot is streamed
//! slowly (a low `--snapshot-rate`), and the receiver, then the sender, is killed with
//! SIGKILL in the middle of it. The replica is added all the same once the node (or a new
//! leader) is back, nothing half-received is left on disk, and the new replica's engine
//! holds exactly the range's acknowledged data.

mod common;

mod snapshot {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::Duration;

    use crate::common::*;
    use flotilla_engine::{Cf, Engine, EngineOptions};
    use flotilla_raftstore::keyspace::user_key;
    use flotilla_raftstore::metapb::ReplicaRole;
    use flotilla_server::client::Client;

    const RECOVERY: Duration = Duration::from_secs(90);
    /// Bytes per second a node sends of snapshots: a few MiB take seconds.
    const RATE: &str = "1048576";
    const VALUE_BYTES: usize = 8 << 10;
    const KEYS: usize = 500; // about 4 MiB, incompressible

    fn recv_dir(node_dir: &Path) -> PathBuf {
        node_dir.join("db").join("snap").join("recv")
    }

    /// Transfers being written on the node whose data directory is `node_dir`.
    fn transfers_in_progress(node_dir: &Path) -> usize {
        let Ok(entries) = std::fs::read_dir(recv_dir(node_dir)) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .count()
    }

    async fn fill(client: Arc<Client>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let pairs: Vec<_> = (0..KEYS)
            .map(|i| {
                (
                    format!("snap-{i:05}").into_bytes(),
                    incompressible_value(i as u64, VALUE_BYTES),
                )
            })
            .collect();
        let items = pairs.clone();
        run_parallel(items, 8, move |(k, v)| {
            let client = client.clone();
            async move { client.put(&k, &v).await.map_err(|s| s.to_string()) }
        })
        .await
        .expect("fill the range");
        pairs
    }

    /// Asks for `add`/`remove` until the range shows it (a repeat continues a change that
    /// was cut short; an empty change asks where the range stands).
    async fn change_until_done(client: &Client, id: u64, add: &[u64], remove: &[u64]) {
        let (add, remove) = (add.to_vec(), remove.to_vec());
        poll_until("the membership change to finish", RECOVERY, || {
            let (add, remove) = (add.clone(), remove.clone());
            async move {
                let now = client
                    .change_replicas(id, &[], &[])
                    .await
                    .map_err(|s| s.to_string())?
                    .descriptor;
                let d = now.ok_or("no descriptor")?;
                let added = add.iter().all(|n| {
                    d.replica_on(*n)
                        .is_some_and(|r| r.role() == ReplicaRole::Voter)
                });
                let removed = remove.iter().all(|n| d.replica_on(*n).is_none());
                if added && removed {
                    return Ok(());
                }
                let asked = client.change_replicas(id, &add, &remove).await;
                Err(format!(
                    "not there yet: {d:?}; asked again: {:?}",
                    asked.map(|_| ())
                ))
            }
        })
        .await;
    }

    async fn wait_transfer(cluster: &mut TestCluster, node: u64) {
        let dir = cluster.node(node).dir.clone();
        poll_until("a snapshot transfer to be under way", RECOVERY, || {
            let dir = dir.clone();
            async move {
                match transfers_in_progress(&dir) {
                    0 => Err("none".to_string()),
                    _ => Ok(()),
                }
            }
        })
        .await;
    }

    /// The leader of range `id`, as the cluster reports it.
    async fn leader_of(client: &Client, id: u64) -> u64 {
        poll_until("the range's leader", RECOVERY, || async {
            let ranges = client.ranges().await.map_err(|s| s.to_string())?.ranges;
            let info = ranges
                .into_iter()
                .find(|r| r.descriptor.as_ref().is_some_and(|d| d.range_id == id));
            info.map(|r| r.leader_node)
                .filter(|n| *n != 0)
                .ok_or_else(|| "no leader".to_string())
        })
        .await
    }

    /// Every user key of the test in the engine at `node_dir` (the node must be stopped),
    /// without the keyspace's user prefix.
    fn engine_pairs(node_dir: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let engine = Engine::open(node_dir.join("db"), &EngineOptions::default())
            .expect("open the stopped node's engine");
        let mut out = BTreeMap::new();
        let (start, end) = (user_key(b"snap-"), user_key(b"snap."));
        engine
            .scan(Cf::Data, &start, &end, |k, v| {
                out.insert(k[1..].to_vec(), v.to_vec());
                true
            })
            .unwrap();
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_cut_short_at_either_end_is_sent_again_and_installs_whole() {
        let _serial = serial().await;
        let mut opts = ClusterOpts::ranges(1).manual_placement(4);
        opts.extra_args
            .extend(["--snapshot-rate".to_string(), RATE.to_string()]);
        let mut cluster = TestCluster::start(4, opts).await;
        let client = Arc::new(cluster.client_without(&[4]));
        let ranges = client.ranges().await.expect("ranges").ranges;
        let id = ranges
            .iter()
            .filter_map(|r| r.descriptor.as_ref().map(|d| d.range_id))
            .max()
            .unwrap();
        change_until_done(&client, id, &[], &[4]).await;
        let acked = fill(client.clone()).await;
        eprintln!("filled range {id}");

        // The receiver dies mid-transfer; it comes back and the leader sends again.
        let adding = {
            let client = client.clone();
            tokio::spawn(async move { client.change_replicas(id, &[4], &[]).await })
        };
        wait_transfer(&mut cluster, 4).await;
        cluster.kill9(4);
        eprintln!("killed the receiver mid-transfer");
        assert!(
            transfers_in_progress(&cluster.node(4).dir.clone()) > 0,
            "killed in the middle of the transfer"
        );
        cluster.restart(4);
        let _ = adding.await;
        change_until_done(&client, id, &[4], &[]).await;

        eprintln!("added after the receiver's restart");
        // Again, and this time the sender (the leader) dies mid-transfer.
        change_until_done(&client, id, &[], &[4]).await;
        let leader = leader_of(&client, id).await;
        let others: Vec<u64> = (1..=3).filter(|n| *n != leader).collect();
        let client = Arc::new(cluster.client_without(&[leader]));
        let adding = {
            let client = client.clone();
            tokio::spawn(async move { client.change_replicas(id, &[4], &[]).await })
        };
        wait_transfer(&mut cluster, 4).await;
        cluster.kill9(leader);
        eprintln!("killed the sender (node {leader}) mid-transfer");
        let _ = adding.await;
        change_until_done(&client, id, &[4], &[]).await;
        cluster.restart(leader);
        verify_acked(client.clone(), &acked, RECOVERY)
            .await
            .expect("every acknowledged write reads back");
        eprintln!("receiver and sender killed mid-transfer; the replica on node 4 was added from nodes {others:?}");

        // Node 4's replica holds the whole range, and nothing half-received stayed.
        let n4 = cluster.node(4).dir.clone();
        poll_until("node 4 to finish installing", RECOVERY, || {
            let n4 = n4.clone();
            async move {
                match std::fs::read_dir(recv_dir(&n4)).map(|d| d.count()) {
                    Ok(0) => Ok(()),
                    other => Err(format!("{other:?} entries in recv")),
                }
            }
        })
        .await;
        cluster.terminate(4).await;
        let held = engine_pairs(&n4);
        assert_eq!(
            held.len(),
            acked.len(),
            "node 4 holds every key of the range and no other"
        );
        for (k, v) in &acked {
            assert!(
                held.get(k) == Some(v),
                "node 4's copy of {} differs",
                show(k)
            );
        }
    }
}
