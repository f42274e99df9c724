//! Shared pieces of Flotilla's benchmarks: key generation and the concurrent put driver.

use std::time::{Duration, Instant};

use flotilla_raftstore::local::LocalCluster;
use flotilla_raftstore::{Command, StoreMetrics};
use rand::{Rng, SeedableRng};

/// A random 16-byte key (uniform over the key space, so over the ranges).
pub fn random_key(rng: &mut impl Rng) -> Vec<u8> {
    rng.gen::<[u8; 16]>().to_vec()
}

/// Runs `total` puts of `value_size`-byte values from `proposers` threads against
/// `cluster`; returns the wall time. Panics if a put fails.
pub fn concurrent_puts(cluster: &LocalCluster, total: u64, proposers: u64, value_size: usize) -> Duration {
    let per_thread = total.div_ceil(proposers);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..proposers {
            s.spawn(move || {
                let mut rng = rand::rngs::SmallRng::seed_from_u64(t);
                let value = vec![b'v'; value_size];
                for _ in 0..per_thread {
                    let key = random_key(&mut rng);
                    let cmd = Command::Put { key: key.clone(), value: value.clone() };
                    cluster.call(&key, cmd, Duration::from_secs(30)).expect("put succeeds");
                }
            });
        }
    });
    started.elapsed()
}

/// Synced Raft log writes and answered writes summed over the cluster's nodes.
pub fn syncs_and_writes(cluster: &LocalCluster) -> (u64, u64) {
    cluster.nodes().fold((0, 0), |(s, w), n| {
        let m = n.metrics();
        (s + StoreMetrics::get(&m.raft_log_syncs), w + StoreMetrics::get(&m.writes_answered))
    })
}
