//! Put throughput while ranges split. One iteration starts a fresh 3-node in-process
//! cluster with the meta range and one user range (not timed), then 64 concurrent writers
//! put 30,000 256-byte values (fsync on, timed) with either increasing keys (every write
//! lands in the last range, which keeps splitting: the hot-spot case) or uniform random
//! keys (splits spread over the key space). The split threshold is 512 KiB and leaders
//! look for ranges to check every 2 ticks (200 ms), so the about 8 MiB one iteration
//! writes cause several splits while it runs. Baseline in the same run: the
//! uniform load with splitting off. After each benchmark it prints how many ranges the last
//! iteration ended with.
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
/// Puts per iteration.
const PUTS: u64 = 30_000;

/// Times `puts` puts on a fresh cluster; returns the time and the ranges it ended with.
fn sample(
    rt: &tokio::runtime::Runtime,
    keys: Keys,
    split_size: u64,
    puts: u64,
) -> (Duration, usize) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        split_size,
        split_check_ticks: 2,
        ..StoreConfig::default()
    };
    let cluster = Arc::new(LocalCluster::start(dir.path(), 3, initial_ranges(1, 3), cfg).unwrap());
    let db = local_db(rt, &cluster);
    rt.block_on(async { db.put(b"warm", b"up").await.unwrap() });
    let took = puts_with_keys(rt, &db, keys, puts, PROPOSERS, VALUE_SIZE);
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
        .throughput(Throughput::Elements(PUTS))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // (name, key generator, split size)
    type Load = (&'static str, fn() -> Keys, u64);
    let loads: [Load; 3] = [
        ("sequential_keys", Keys::sequential, SPLIT_SIZE),
        ("uniform_keys", || Keys::Uniform, SPLIT_SIZE),
        ("uniform_keys_no_split_baseline", || Keys::Uniform, 0),
    ];
    for (name, keys, split_size) in loads {
        let mut ranges = 0;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (took, r) = sample(&rt, keys(), split_size, PUTS);
                    total += took;
                    ranges = r;
                }
                total
            })
        });
        println!("{name}: the last sample ended with {ranges} ranges (meta range included)");
    }
    group.finish();
}

criterion_group!(benches, split_under_load);
criterion_main!(benches);
