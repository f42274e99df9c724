//! `flotilla-load`: a closed-loop load generator for a running Flotilla cluster, or for
//! etcd with the same load (`--backend etcd`: the baseline of `scripts/bench-vs-etcd.sh`).
//!
//! What it measures: the throughput (operations per second, total and per kind) and the
//! latency distribution (p50, p99, p99.9, max, mean) of gets and puts sent over gRPC,
//! as seen by the client, plus the errors by gRPC code.
//!
//! How: `--clients` tokio tasks, spread round-robin over `--endpoints`, each a closed
//! loop (send one request, wait for the answer, send the next), so the offered load is
//! the clients' concurrency, not a fixed rate. With `--rpc stream` (the default), the
//! clients' requests to one node share one `Kv.Commands` stream and travel many per
//! frame (`load/mux.rs`); `--rpc unary` sends one `Kv.Get`/`Kv.Put` call each. Each
//! operation is a get with probability `--read-ratio`, else a put of `--value-size`
//! bytes; its key comes from `--distribution` over `--keys` keys (see `load/keys.rs`). Operations that start during `--warmup-secs`
//! load the cluster but are not recorded; the measured window then lasts
//! `--duration-secs` (operations still in flight at its end are abandoned, not counted)
//! or `--ops` operations (until the last one finishes). Each client records the
//! latency of every successful operation into its own HDR histograms (microseconds, 3
//! significant digits); they are merged at the end.
//! Failed operations are counted by gRPC code, never retried, and do not stop the run
//! (the client pauses `--error-pause-ms` after one). `--preload` first writes every key
//! once with the same clients. Ctrl-C ends the run early and reports what was measured
//! until then (a second Ctrl-C exits at once).
//!
//! Example:
//! `flotilla-load --endpoints 127.0.0.1:7180 --clients 32 --duration-secs 30
//!  --read-ratio 0.9 --keys 1000000 --distribution zipfian --preload`

// gRPC statuses are carried by value, as the callers match on them.
#![allow(clippy::result_large_err)]

#[path = "../load/mod.rs"]
mod load;

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::sync::watch;

use load::args::{Args, Distribution};
use load::conn::{self, Conn};
use load::keys::{Chooser, KeySpace};
use load::report::{Preloaded, Report};
use load::stats::{Outcome, Stats};
use load::worker::{Plan, Worker};

/// How long to wait for every endpoint to answer a first get before giving up.
const PROBE_FOR: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("flotilla-load: {e}");
        return ExitCode::from(2);
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    match rt.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => fail(e),
    }
}

fn fail(e: String) -> ExitCode {
    eprintln!("flotilla-load: {e}");
    ExitCode::FAILURE
}

/// When the run was stopped by Ctrl-C.
type StopTime = Arc<OnceLock<Instant>>;

async fn run(args: Args) -> Result<ExitCode, String> {
    let hashed = args.distribution != Distribution::Sequential && !args.ascii_keys;
    let keys = KeySpace::new(args.key_size, args.keys, hashed)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped: StopTime = Arc::default();
    tokio::spawn(watch_ctrl_c(stop_tx, stopped.clone()));

    let conns = conn::connect_all(&args).await?;
    probe(&conns, &args).await?;
    let mut workers = make_workers(&conns, &args, &stop_rx).await?;
    let chooser = Chooser::new(args.distribution, args.keys, args.zipf_theta);

    let mut preload_report = None;
    if args.preload {
        let (p, back) = preload(workers, keys, args.keys).await;
        workers = back;
        chooser.set_next(args.keys);
        preload_report = Some(p);
    }
    let (stats, secs) = if stopped.get().is_some() {
        (Stats::default(), 0.0)
    } else {
        measure(workers, plan(&args, keys, chooser), &args, &stopped).await
    };
    let report = Report {
        args: &args,
        stats: &stats,
        secs,
        interrupted: stopped.get().is_some(),
        preload: preload_report,
    };
    println!(
        "{}",
        if args.json {
            report.json()
        } else {
            report.text()
        }
        .trim_end()
    );
    let failed = stats.ok() == 0 && stats.error_count() > 0;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// First Ctrl-C: stop the clients (the report follows). Second: exit at once.
async fn watch_ctrl_c(stop: watch::Sender<bool>, stopped: StopTime) {
    if tokio::signal::ctrl_c().await.is_err() {
        // No signal handling: never stop (a dropped sender would read as a stop).
        return std::future::pending::<()>().await;
    }
    let _ = stopped.set(Instant::now());
    let _ = stop.send(true);
    eprintln!("flotilla-load: stopping (Ctrl-C again to quit without a report)");
    if tokio::signal::ctrl_c().await.is_ok() {
        std::process::exit(130);
    }
    // Keep the sender alive: the clients take a closed channel for a stop.
    std::future::pending::<()>().await;
}

/// Waits until every endpoint answers a get (the cluster may still be electing leaders).
async fn probe(conns: &[Conn], args: &Args) -> Result<(), String> {
    let timeout = args.timeout().min(PROBE_FOR);
    let handles: Vec<_> = conns
        .iter()
        .zip(&args.endpoints)
        .map(|(conn, endpoint)| {
            let (mut conn, endpoint) = (conn.clone(), endpoint.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + PROBE_FOR;
                loop {
                    let err = match conn.get(b"flotilla-load-probe".to_vec(), timeout).await {
                        Outcome::Ok | Outcome::Miss => return Ok(()),
                        Outcome::Err(code, message) => format!("{code}: {message}"),
                    };
                    if Instant::now() >= deadline {
                        return Err(format!("endpoint {endpoint} does not answer: {err}"));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// The clients, spread over the endpoints round-robin.
async fn make_workers(
    conns: &[Conn],
    args: &Args,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<Worker>, String> {
    let mut workers = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let conn = if args.channel_per_client {
            conn::connect(args, &args.endpoints[i % args.endpoints.len()]).await?
        } else {
            conns[i % conns.len()].clone()
        };
        workers.push(Worker::new(i, conn, args, stop.clone()));
    }
    Ok(workers)
}

/// Writes keys `0..count` with all the workers; hands the workers back.
async fn preload(workers: Vec<Worker>, keys: KeySpace, count: u64) -> (Preloaded, Vec<Worker>) {
    eprintln!("flotilla-load: preloading {count} keys");
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = workers
        .into_iter()
        .map(|w| tokio::spawn(w.preload(keys, next.clone(), count)))
        .collect();
    let (stats, workers) = join(handles).await;
    (
        Preloaded {
            keys: count,
            secs: start.elapsed().as_secs_f64(),
            stats,
        },
        workers,
    )
}

fn plan(args: &Args, keys: KeySpace, chooser: Chooser) -> Plan {
    let measure_from = Instant::now() + Duration::from_secs(args.warmup_secs);
    Plan {
        keys,
        chooser,
        read_ratio: args.read_ratio,
        measure_from,
        until: args.duration().map(|d| measure_from + d),
        ops_limit: args.ops,
        started: AtomicU64::new(0),
        finished: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    }
}

/// Runs the measured load; returns the merged stats and the length of the window.
async fn measure(
    workers: Vec<Worker>,
    plan: Plan,
    args: &Args,
    stopped: &StopTime,
) -> (Stats, f64) {
    if args.warmup_secs > 0 {
        eprintln!("flotilla-load: warming up for {} s", args.warmup_secs);
    }
    let plan = Arc::new(plan);
    let progress =
        (args.progress_secs > 0).then(|| tokio::spawn(progress(plan.clone(), args.progress_secs)));
    let handles: Vec<_> = workers
        .into_iter()
        .map(|w| tokio::spawn(w.run(plan.clone())))
        .collect();
    let (stats, _) = join(handles).await;
    if let Some(p) = progress {
        p.abort();
    }
    let secs = window_end(&plan, &stats, stopped).saturating_duration_since(plan.measure_from);
    (stats, secs.as_secs_f64())
}

/// Where the measured window ended: at Ctrl-C, at the end of the duration, or when the
/// last of `--ops` operations finished, whichever came first.
fn window_end(plan: &Plan, stats: &Stats, stopped: &StopTime) -> Instant {
    let natural = match (plan.ops_exhausted(), plan.until) {
        (false, Some(until)) => until,
        _ => stats.last.unwrap_or_else(Instant::now),
    };
    let end = stopped.get().map_or(natural, |&t| t.min(natural));
    plan.until.map_or(end, |u| end.min(u))
}

/// Prints the operations finished in each interval to stderr.
async fn progress(plan: Arc<Plan>, every: u64) {
    let start = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(every));
    ticker.tick().await;
    let mut before = 0;
    loop {
        ticker.tick().await;
        let now = plan.finished.load(Ordering::Relaxed);
        let failed = plan.failed.load(Ordering::Relaxed);
        let phase = if Instant::now() < plan.measure_from {
            ", warming up"
        } else {
            ""
        };
        let rate = (now - before) as f64 / every as f64;
        let t = start.elapsed().as_secs_f64();
        eprintln!("[{t:>5.0} s] {now} ops done ({failed} failed), {rate:.0} ops/s{phase}");
        before = now;
    }
}

/// Awaits the clients; merges their stats and hands them back.
async fn join(handles: Vec<tokio::task::JoinHandle<(Stats, Worker)>>) -> (Stats, Vec<Worker>) {
    let mut all = Stats::default();
    let mut workers = Vec::with_capacity(handles.len());
    for h in handles {
        let (stats, w) = h.await.expect("a client task panicked");
        all.merge(&stats);
        workers.push(w);
    }
    (all, workers)
}
