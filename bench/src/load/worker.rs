//! One client: a closed loop that sends an operation, waits for its answer, records it,
//! and sends the next; and the preload, which writes every key once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use super::args::Args;
use super::conn::Conn;
use super::keys::{Chooser, KeySpace};
use super::stats::{Outcome, Stats};

/// What all clients share.
pub struct Plan {
    pub keys: KeySpace,
    pub chooser: Chooser,
    pub read_ratio: f64,
    /// Operations that start before this are warm-up, not measured.
    pub measure_from: Instant,
    /// The end of the measured window: no operation starts at or after this, and one
    /// still in flight then is abandoned (not counted).
    pub until: Option<Instant>,
    /// At most this many measured operations (all clients together).
    pub ops_limit: Option<u64>,
    /// Measured operations started so far.
    pub started: AtomicU64,
    /// Operations finished so far, measured or not, and how many of them failed (for the
    /// progress line).
    pub finished: AtomicU64,
    pub failed: AtomicU64,
}

impl Plan {
    /// True once every measured operation allowed by `ops_limit` has started.
    pub fn ops_exhausted(&self) -> bool {
        self.ops_limit
            .is_some_and(|limit| self.started.load(Ordering::Relaxed) >= limit)
    }

    /// Whether a measured operation may start (and counts it).
    fn take_ticket(&self) -> bool {
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        self.ops_limit.is_none_or(|limit| n < limit)
    }
}

/// One client's state.
pub struct Worker {
    conn: Conn,
    rng: SmallRng,
    value: Vec<u8>,
    writes: u64,
    stop: watch::Receiver<bool>,
    timeout: Duration,
    error_pause: Duration,
}

impl Worker {
    /// Client number `id` of a run configured by `args`, sending on `conn`.
    pub fn new(id: usize, conn: Conn, args: &Args, stop: watch::Receiver<bool>) -> Worker {
        let mut rng = SmallRng::seed_from_u64(args.seed.wrapping_add(id as u64));
        let mut value = vec![0u8; args.value_size];
        rng.fill(&mut value[..]);
        Worker {
            conn,
            rng,
            value,
            writes: 0,
            stop,
            timeout: args.timeout(),
            error_pause: args.error_pause(),
        }
    }

    /// Runs the closed loop of `plan` until its end or a stop; returns what it measured.
    pub async fn run(mut self, plan: Arc<Plan>) -> (Stats, Worker) {
        let mut stats = Stats::default();
        loop {
            let start = Instant::now();
            if plan.until.is_some_and(|u| start >= u) {
                break;
            }
            let measured = start >= plan.measure_from;
            if measured && !plan.take_ticket() {
                break;
            }
            let write = !self.rng.gen_bool(plan.read_ratio);
            let key = plan.keys.key(plan.chooser.pick(&mut self.rng, write));
            let Some(outcome) = self.op_or_stop(write, key, plan.until).await else {
                break;
            };
            let done = Instant::now();
            plan.finished.fetch_add(1, Ordering::Relaxed);
            if matches!(outcome, Outcome::Err(..)) {
                plan.failed.fetch_add(1, Ordering::Relaxed);
                self.pause_after_error().await;
            }
            if measured {
                stats.record(write, outcome, done - start, done);
            }
        }
        (stats, self)
    }

    /// Writes key indexes taken from `next` until `count`, retrying each failed put up to
    /// twice; records every attempt.
    pub async fn preload(
        mut self,
        keys: KeySpace,
        next: Arc<AtomicU64>,
        count: u64,
    ) -> (Stats, Worker) {
        let mut stats = Stats::default();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= count {
                break;
            }
            for _ in 0..3 {
                let start = Instant::now();
                let Some(outcome) = self.op_or_stop(true, keys.key(i), None).await else {
                    return (stats, self);
                };
                let failed = matches!(outcome, Outcome::Err(..));
                stats.record(true, outcome, start.elapsed(), Instant::now());
                if !failed {
                    break;
                }
                self.pause_after_error().await;
            }
        }
        (stats, self)
    }

    /// Sleeps a little after a failure, so that a node that is down does not turn the
    /// client into a busy loop of instant errors.
    async fn pause_after_error(&mut self) {
        if !self.error_pause.is_zero() {
            let mut stop = self.stop.clone();
            let _ = tokio::time::timeout(self.error_pause, stop.wait_for(|s| *s)).await;
        }
    }

    /// Runs one operation, or returns `None` if the run is stopped or `deadline` passes
    /// first (the operation is then abandoned, not counted).
    async fn op_or_stop(
        &mut self,
        write: bool,
        key: Vec<u8>,
        deadline: Option<Instant>,
    ) -> Option<Outcome> {
        if *self.stop.borrow() {
            return None;
        }
        let mut stop = self.stop.clone();
        let deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => None,
            _ = deadline => None,
            outcome = self.op(write, key) => Some(outcome),
        }
    }

    async fn op(&mut self, write: bool, key: Vec<u8>) -> Outcome {
        if write {
            let value = self.next_value();
            self.conn.put(key, value, self.timeout).await
        } else {
            self.conn.get(key, self.timeout).await
        }
    }

    /// The client's value with its first bytes replaced by a write counter.
    fn next_value(&mut self) -> Vec<u8> {
        self.writes += 1;
        let stamp = self.writes.to_le_bytes();
        let n = self.value.len().min(stamp.len());
        self.value[..n].copy_from_slice(&stamp[..n]);
        self.value.clone()
    }
}
