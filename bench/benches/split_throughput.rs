//! Put throughput while ranges split. Each sample starts a fresh 3-node in-process cluster
//! with the meta range and one user range, then 64 concurrent writers put 256-byte values
//! (fsync on) with either increasing keys (every write lands in the last range, which
//! keeps splitting: the hot-spot case) or uniform random keys (splits spread over the key
//! space). The split threshold is 512 KiB, so a sample of 50k writes causes about 25
//! splits. Baseline in the same run: the uniform load with splitting off. After each
//! benchmark it prints how many ranges the last sample ended with.
//!
//! Run: `cargo bench -p flotilla-bench --bench split_throughput`

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flotilla_bench::{local_db, puts_with_keys, Keys};
use flotilla_raftstore::keyspace::initial_ranges;
use flotilla_raftstore::local::LocalCluster;
use flotilla_raftstore::StoreConfig;

const VALUE_SIZE: usize = 256;
const PROPOSERS: u64 = 64;
const SPLIT_SIZE: u64 = 512 << 10;

/// Times `iters` puts on a fresh cluster; returns the time and the ranges it ended with.
fn sample(rt: &tokio::runtime::Runtime, keys: Keys, split_size: u64, iters: u64) -> (Duration, usize) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig { split_size, ..StoreConfig::default() };
    let cluster = Arc::new(LocalCluster::start(dir.path(), 3, initial_ranges(1, 3), cfg).unwrap());
    let db = local_db(rt, &cluster);
    rt.block_on(async { db.put(b"warm", b"up").await.unwrap() });
    let took = puts_with_keys(rt, &db, keys, iters, PROPOSERS, VALUE_SIZE);
    let status = rt.block_on(cluster.node(1).unwrap().status()).unwrap();
    drop(db);
    if let Ok(c) = Arc::try_unwrap(cluster) {
        c.shutdown();
    }
    (took, status.len())
}

fn split_under_load(c: &mut Criterion) {
    let mut group = c.benchmark_group("put_while_splitting_3_nodes");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let loads: [(&str, fn() -> Keys, u64); 3] = [
        ("sequential_keys", Keys::sequential, SPLIT_SIZE),
        ("uniform_keys", || Keys::Uniform, SPLIT_SIZE),
        ("uniform_keys_no_split_baseline", || Keys::Uniform, 0),
    ];
    for (name, keys, split_size) in loads {
        let mut ranges = 0;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let (took, r) = sample(&rt, keys(), split_size, iters);
                ranges = r;
                took
            })
        });
        println!("{name}: the last sample ended with {ranges} ranges (meta range included)");
    }
    group.finish();
}

criterion_group!(benches, split_under_load);
criterion_main!(benches);
