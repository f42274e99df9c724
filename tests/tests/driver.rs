//! The threaded driver (poller threads, in-process transport) serves a real workload, and
//! a restarted cluster keeps its data. Waits are bounded polls, never sleeps.

use std::time::Duration;

use flotilla_raftstore::local::{even_ranges, LocalCluster};
use flotilla_raftstore::{Command, Response, StoreConfig, StoreMetrics};

fn cfg() -> StoreConfig {
    StoreConfig { tick_interval: Duration::from_millis(20), ..StoreConfig::default() }
}

#[test]
fn threaded_cluster_serves_writes_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let deadline = Duration::from_secs(20);
    let keys: Vec<Vec<u8>> = (0..200u32).map(|i| [&(i * 331 % 65_536).to_be_bytes()[2..], b"-k".as_slice()].concat()).collect();
    {
        let cluster = LocalCluster::start(dir.path(), 3, even_ranges(8, 3), cfg()).unwrap();
        std::thread::scope(|s| {
            for chunk in keys.chunks(50) {
                let cluster = &cluster;
                s.spawn(move || {
                    for k in chunk {
                        let cmd = Command::Put { key: k.clone(), value: k.clone() };
                        cluster.call(k, cmd, deadline).expect("put");
                    }
                });
            }
        });
        let (syncs, writes): (u64, u64) = cluster.nodes().fold((0, 0), |(s, w), n| {
            (s + StoreMetrics::get(&n.metrics().raft_log_syncs), w + StoreMetrics::get(&n.metrics().writes_answered))
        });
        assert_eq!(writes, 200, "every put answered exactly once");
        assert!(syncs > 0);
        cluster.shutdown();
    }
    let cluster = LocalCluster::start(dir.path(), 3, even_ranges(8, 3), cfg()).unwrap();
    for k in &keys {
        let got = cluster.call(k, Command::Get { key: k.clone() }, deadline).expect("get");
        assert_eq!(got, Response::Value(Some(k.clone())));
    }
    cluster.shutdown();
}
