//! The Jepsen-style suite against real `flotilla` processes (see `jepsen/mod.rs`).
//!
//! Each test runs a short schedule of one nemesis (seconds, for CI); `replay` runs the
//! schedule, seed and length given in `JEPSEN_SCHEDULE`, `JEPSEN_SEED` and
//! `JEPSEN_SECONDS` (what `scripts/jepsen.sh` sets for long runs).

mod common;
#[path = "jepsen/mod.rs"]
mod suite;

use std::time::Duration;

use suite::{run, Schedule};

/// How long each CI schedule runs (`JEPSEN_CI_SECONDS` overrides it).
fn ci_length() -> Duration {
    let secs = std::env::var("JEPSEN_CI_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    Duration::from_secs(secs)
}

async fn short(name: &str, seed: u64) -> suite::Report {
    let _serial = common::serial().await;
    run(&Schedule::new(name, seed, ci_length())).await
}

/// The suite's workload (registers under compare-and-swap, checked for
/// linearizability, and durable writers) on a secure cluster: TLS everywhere, node
/// certificates between nodes, client certificates, while the leaseholder is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secure_cluster_kill_the_leaseholder() {
    let _serial = common::serial().await;
    let mut s = Schedule::new("kill-leaseholder", 12, ci_length());
    s.secure = true;
    run(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_faults() {
    short("none", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_a_node() {
    short("kill", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_the_leaseholder() {
    short("kill-leaseholder", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_two_nodes() {
    short("kill-two", 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_the_leaseholder() {
    short("pause-leaseholder", 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_a_node() {
    short("pause", 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partition_a_node() {
    short("partition", 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partition_the_leaseholder() {
    short("partition-leaseholder", 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ring_partition() {
    short("ring", 9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clock_skew_within_the_bound() {
    short("clock-within", 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn splits_under_load() {
    short("split", 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catch_up_by_snapshot() {
    let report = short("snapshot", 12).await;
    assert!(
        report.snapshots > 0,
        "the cut-off node caught up without a snapshot: {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_transfers() {
    short("transfer", 14).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed() {
    short("mixed", 13).await;
}

/// A long run, from the environment (`scripts/jepsen.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long runs: scripts/jepsen.sh"]
async fn replay() {
    let _serial = common::serial().await;
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set; use scripts/jepsen.sh"))
    };
    let seconds: u64 = var("JEPSEN_SECONDS")
        .parse()
        .expect("JEPSEN_SECONDS is a number");
    let seed: u64 = var("JEPSEN_SEED").parse().expect("JEPSEN_SEED is a number");
    let schedule = Schedule::new(&var("JEPSEN_SCHEDULE"), seed, Duration::from_secs(seconds));
    let report = run(&schedule).await;
    println!("{}", report.summary(&schedule));
}

/// Checks a saved history again (`JEPSEN_HISTORY=path`), printing the verdict per key.
#[test]
#[ignore = "offline check of a saved history: JEPSEN_HISTORY=path"]
fn check_saved() {
    let path = std::env::var("JEPSEN_HISTORY").expect("JEPSEN_HISTORY is not set");
    let entries = suite::history::load(std::path::Path::new(&path)).expect("a readable history");
    for (key, verdict) in suite::checker::check(&entries, Duration::from_secs(600)) {
        println!("k{key}: {verdict:?}");
    }
}
