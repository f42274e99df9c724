//! Shared pieces of Flotilla's benchmarks: key generation and the concurrent put driver.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_raftstore::local::LocalCluster;
use flotilla_raftstore::StoreMetrics;
use flotilla_router::local::open_local;
use flotilla_router::Db;
use rand::{Rng, SeedableRng};

/// The embeddable API over an in-process cluster.
pub type LocalDb = Db<Arc<LocalCluster>>;

/// A `Db` over `cluster`, its meta publisher running on `rt`.
pub fn local_db(rt: &tokio::runtime::Runtime, cluster: &Arc<LocalCluster>) -> Arc<LocalDb> {
    let _guard = rt.enter();
    open_local(cluster)
}

/// A random 16-byte key (uniform over the key space, so over the ranges).
pub fn random_key(rng: &mut impl Rng) -> Vec<u8> {
    rng.gen::<[u8; 16]>().to_vec()
}

/// Which keys a load writes.
#[derive(Clone)]
pub enum Keys {
    /// Uniform random 16-byte keys.
    Uniform,
    /// Increasing 8-byte keys shared by all writers (an append-only load: every write goes
    /// to the last range).
    Sequential(Arc<std::sync::atomic::AtomicU64>),
}

impl Keys {
    /// A fresh sequential counter starting at 0.
    pub fn sequential() -> Keys {
        Keys::Sequential(Arc::new(std::sync::atomic::AtomicU64::new(0)))
    }

    fn next(&self, rng: &mut impl Rng) -> Vec<u8> {
        match self {
            Keys::Uniform => random_key(rng),
            Keys::Sequential(n) => n
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .to_be_bytes()
                .to_vec(),
        }
    }
}

/// Runs `total` puts of `value_size`-byte values with keys from `keys`, from `proposers`
/// concurrent tasks, each waiting for its answer before the next put; returns the wall
/// time. Panics if a put fails.
pub fn puts_with_keys(
    rt: &tokio::runtime::Runtime,
    db: &Arc<LocalDb>,
    keys: Keys,
    total: u64,
    proposers: u64,
    value_size: usize,
) -> Duration {
    let per_task = total.div_ceil(proposers);
    let started = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..proposers)
            .map(|t| {
                let (db, keys) = (db.clone(), keys.clone());
                tokio::spawn(async move {
                    let mut rng = rand::rngs::SmallRng::seed_from_u64(t);
                    let value = vec![b'v'; value_size];
                    for _ in 0..per_task {
                        db.put(&keys.next(&mut rng), &value)
                            .await
                            .expect("put succeeds");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("proposer task");
        }
    });
    started.elapsed()
}

/// Synced Raft log writes and answered writes summed over the cluster's nodes.
pub fn syncs_and_writes(cluster: &LocalCluster) -> (u64, u64) {
    cluster.nodes().fold((0, 0), |(s, w), n| {
        let m = n.metrics();
        (
            s + StoreMetrics::get(&m.raft_log_syncs),
            w + StoreMetrics::get(&m.writes_answered),
        )
    })
}
