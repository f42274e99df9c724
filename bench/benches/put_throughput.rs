//! Put throughput of a 3-node in-process cluster with 1, 64 and 1,024 ranges (256-byte
//! values, fsync on, 64 concurrent proposers through the router's `Db` API), against raw RocksDB synced write batches
//! of the same value size measured in the same run. After each cluster benchmark it prints
//! the fsyncs per committed write (all three nodes' synced log writes / writes answered).
//!
//! Run: `cargo bench -p flotilla-bench --bench put_throughput`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::Arc;

use flotilla_bench::{local_db, puts_with_keys, random_key, syncs_and_writes, Keys};
use flotilla_engine::{Cf, Engine, EngineOptions};
use flotilla_raftstore::keyspace::{decode_user_key, initial_ranges};
use flotilla_raftstore::local::LocalCluster;
use flotilla_raftstore::StoreConfig;
use rand::SeedableRng;

const VALUE_SIZE: usize = 256;
const PROPOSERS: u64 = 64;

fn raw_rocksdb(c: &mut Criterion) {
    let mut group = c.benchmark_group("rocksdb_synced_put");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
    let value = vec![b'v'; VALUE_SIZE];
    group.bench_function("1_writer", |b| {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        b.iter(|| {
            let mut wb = engine.batch();
            wb.put(Cf::Data, &random_key(&mut rng), &value);
            engine.write(wb, true).unwrap();
        })
    });
    group.bench_function(format!("{PROPOSERS}_writers"), |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(PROPOSERS);
            let started = Instant::now();
            std::thread::scope(|s| {
                for t in 0..PROPOSERS {
                    let (engine, value) = (&engine, &value);
                    s.spawn(move || {
                        let mut rng = rand::rngs::SmallRng::seed_from_u64(t);
                        for _ in 0..per {
                            let mut wb = engine.batch();
                            wb.put(Cf::Data, &random_key(&mut rng), value);
                            engine.write(wb, true).unwrap();
                        }
                    });
                }
            });
            started.elapsed()
        })
    });
    group.finish();
}

fn cluster_puts(c: &mut Criterion) {
    let mut group = c.benchmark_group("cluster_put_3_nodes");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for ranges in [1u64, 64, 1024] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig::default();
        let cluster =
            Arc::new(LocalCluster::start(dir.path(), 3, initial_ranges(ranges, 3), cfg).unwrap());
        let db = local_db(&rt, &cluster);
        // Wait for every range to elect and serve once.
        rt.block_on(async {
            for r in &cluster.ranges()[1..] {
                let mut key = decode_user_key(&r.start).expect("a user range").to_vec();
                key.push(0);
                db.put(&key, b"warm").await.unwrap();
            }
        });
        let (s0, w0) = syncs_and_writes(&cluster);
        group.bench_function(format!("{ranges}_ranges"), |b| {
            b.iter_custom(|iters| {
                puts_with_keys(&rt, &db, Keys::Uniform, iters, PROPOSERS, VALUE_SIZE)
            })
        });
        let (s1, w1) = syncs_and_writes(&cluster);
        println!(
            "cluster_put_3_nodes/{ranges}_ranges: {:.3} fsyncs per committed write ({} fsyncs over 3 nodes, {} writes)",
            (s1 - s0) as f64 / (w1 - w0).max(1) as f64,
            s1 - s0,
            w1 - w0
        );
        drop(db);
        if let Ok(cluster) = Arc::try_unwrap(cluster) {
            cluster.shutdown();
        }
    }
    group.finish();
}

criterion_group!(benches, raw_rocksdb, cluster_puts);
criterion_main!(benches);
