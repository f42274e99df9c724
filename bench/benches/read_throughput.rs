//! Read throughput of a 3-node in-process cluster with lease reads against ReadIndex reads
//! (the baseline, measured in the same run): 64 concurrent readers (tokio tasks through
//! `Db::get`) read 10,000 keys of 256-byte values spread over 8 ranges.
//!
//! Run: `cargo bench -p flotilla-bench --bench read_throughput`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flotilla_bench::local_db;
use flotilla_raftstore::keyspace::initial_ranges;
use flotilla_raftstore::local::LocalCluster;
use flotilla_raftstore::StoreConfig;
use rand::{Rng, SeedableRng};

const READERS: u64 = 64;
const KEYS: u64 = 10_000;

fn key(i: u64) -> Vec<u8> {
    // Spread over the ranges, which split the user space on its first two bytes.
    let mut k = ((i.wrapping_mul(0x9e37_79b9) >> 8) as u16)
        .to_be_bytes()
        .to_vec();
    k.extend_from_slice(&i.to_be_bytes());
    k
}

fn reads(c: &mut Criterion) {
    let mut group = c.benchmark_group("get_3_nodes_8_ranges");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (name, lease_reads) in [("lease", true), ("read_index_baseline", false)] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            lease_reads,
            ..StoreConfig::default()
        };
        let cluster =
            Arc::new(LocalCluster::start(dir.path(), 3, initial_ranges(8, 3), cfg).unwrap());
        let db = local_db(&rt, &cluster);
        rt.block_on(async {
            for i in 0..KEYS {
                db.put(&key(i), &[b'v'; 256]).await.unwrap();
            }
        });
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(READERS);
                let started = Instant::now();
                rt.block_on(async {
                    let tasks: Vec<_> = (0..READERS)
                        .map(|t| {
                            let db = db.clone();
                            tokio::spawn(async move {
                                let mut rng = rand::rngs::SmallRng::seed_from_u64(t);
                                for _ in 0..per {
                                    let v =
                                        db.get(&key(rng.gen_range(0..KEYS))).await.expect("get");
                                    assert!(v.is_some());
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                });
                started.elapsed()
            })
        });
        let lease: u64 = cluster
            .nodes()
            .map(|n| flotilla_raftstore::StoreMetrics::get(&n.metrics().lease_reads))
            .sum();
        let index: u64 = cluster
            .nodes()
            .map(|n| flotilla_raftstore::StoreMetrics::get(&n.metrics().read_index_reads))
            .sum();
        println!("{name}: {lease} lease reads, {index} ReadIndex reads");
        drop(db);
        if let Ok(c) = Arc::try_unwrap(cluster) {
            c.shutdown();
        }
    }
    group.finish();
}

criterion_group!(benches, reads);
criterion_main!(benches);
