//! What an idle cluster costs: 3 in-process nodes holding 10, 1,000 and 10,000 ranges
//! (every node a replica of every range), with quiescence on and, as the baseline in the
//! same run, off. After the ranges have elected (and, with quiescence, gone quiet), it
//! measures over 5 seconds the process's CPU time (user + system, from /proc) and the
//! messages and bytes the nodes sent, and prints one line per configuration.
//!
//! Run: `cargo bench -p flotilla-bench --bench idle`

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_raftstore::keyspace::initial_ranges;
use flotilla_raftstore::local::LocalCluster;
use flotilla_raftstore::{StoreConfig, StoreMetrics};

const WINDOW: Duration = Duration::from_secs(5);

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ
}

/// Messages and bytes all nodes have sent so far.
fn traffic(cluster: &LocalCluster) -> (u64, u64) {
    cluster.nodes().fold((0, 0), |(m, b), n| {
        let per = n.metrics().per_node();
        (
            m + per.values().map(|c| c.messages).sum::<u64>(),
            b + per.values().map(|c| c.bytes).sum::<u64>(),
        )
    })
}

fn quiesced(cluster: &LocalCluster) -> u64 {
    cluster
        .nodes()
        .map(|n| StoreMetrics::get(&n.metrics().quiesced_ranges))
        .sum()
}

async fn leaders(cluster: &LocalCluster) -> usize {
    let mut n = 0;
    for node in cluster.nodes() {
        n += node
            .status()
            .await
            .map(|s| s.iter().filter(|r| r.is_leader).count())
            .unwrap_or(0);
    }
    n
}

fn measure(rt: &tokio::runtime::Runtime, user_ranges: u64, quiesce: bool) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        quiesce,
        ..StoreConfig::default()
    };
    let started = Instant::now();
    let cluster =
        Arc::new(LocalCluster::start(dir.path(), 3, initial_ranges(user_ranges, 3), cfg).unwrap());
    let total = user_ranges + 1;
    // Settle: every range has a leader and, with quiescence, every replica is quiet.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let elected = rt.block_on(leaders(&cluster)) as u64 == total;
        if elected && (!quiesce || quiesced(&cluster) == 3 * total) {
            break;
        }
        assert!(Instant::now() < deadline, "{total} ranges did not settle");
        std::thread::sleep(Duration::from_millis(200));
    }
    let settle = started.elapsed();
    let (m0, b0, c0) = {
        let (m, b) = traffic(&cluster);
        (m, b, cpu_seconds())
    };
    std::thread::sleep(WINDOW);
    let (m1, b1) = traffic(&cluster);
    let cpu = cpu_seconds() - c0;
    let secs = WINDOW.as_secs_f64();
    println!(
        "{total:>6} ranges, quiesce {:<5}: CPU {:>5.1}% of one core, {:>8.0} messages/s, {:>10.0} bytes/s between 3 nodes (settled in {:.1?}, {} replicas quiet)",
        quiesce,
        100.0 * cpu / secs,
        (m1 - m0) as f64 / secs,
        (b1 - b0) as f64 / secs,
        settle,
        quiesced(&cluster),
    );
    if let Ok(c) = Arc::try_unwrap(cluster) {
        c.shutdown();
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    for ranges in [10u64, 1_000, 10_000] {
        for quiesce in [true, false] {
            measure(&rt, ranges, quiesce);
        }
    }
}
