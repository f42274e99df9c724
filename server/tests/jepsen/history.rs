//! What the clients did: every operation with its invoke and return times (from one
//! monotonic origin) and its outcome — ok with a value, definitely failed (the protocol
//! says nothing ran), or unknown (it may have applied).
//!
//! Register values are unique per write (`client << 32 | seq`), written as decimal text,
//! so a read names the write it saw. A client whose operation ended unknown retires its
//! process id and continues under a fresh one, as Jepsen's processes do: the unknown
//! operation stays open forever in the history, free to take effect at any later point.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An operation on one register key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Get,
    Put(u64),
    Delete,
    /// Compare-and-swap: set `new` if the register holds `expected` (`None`: absent).
    Cas { expected: Option<u64>, new: u64 },
}

impl Op {
    pub fn is_write(&self) -> bool {
        !matches!(self, Op::Get)
    }
}

/// What a completed operation returned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Ret {
    Value(Option<u64>),
    Done,
    Cas { succeeded: bool, previous: Option<u64> },
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok(Ret),
    /// Certainly not applied: the answer's error kind says nothing ran.
    Fail(String),
    /// May or may not have applied (a timeout, a connection lost mid-call, `ambiguous`).
    Unknown(String),
}

/// One operation as recorded.
#[derive(Clone, Debug)]
pub struct Entry {
    pub process: u64,
    /// The node the client sent it to.
    pub node: u64,
    pub key: usize,
    pub op: Op,
    pub invoke: Duration,
    pub complete: Duration,
    pub outcome: Outcome,
}

/// The shared, append-only record of a run.
pub struct History {
    origin: Instant,
    entries: Mutex<Vec<Entry>>,
}

impl History {
    pub fn new(origin: Instant) -> History {
        History { origin, entries: Mutex::new(Vec::new()) }
    }

    /// Time since the run began.
    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    pub fn record(&self, e: Entry) {
        self.entries.lock().unwrap().push(e);
    }

    pub fn entries(&self) -> Vec<Entry> {
        let mut v = self.entries.lock().unwrap().clone();
        v.sort_by_key(|e| e.invoke);
        v
    }
}

/// Operations by outcome: (ok, failed, unknown).
pub fn counts(entries: &[Entry]) -> (usize, usize, usize) {
    let ok = entries.iter().filter(|e| matches!(e.outcome, Outcome::Ok(_))).count();
    let failed = entries.iter().filter(|e| matches!(e.outcome, Outcome::Fail(_))).count();
    (ok, failed, entries.len() - ok - failed)
}

/// Writes the history as one line per operation, in invoke order, for a person to read
/// next to the node logs.
pub fn save(entries: &[Entry], path: &Path) -> std::io::Result<()> {
    let mut out = String::from("# invoke_ms complete_ms process node key op outcome\n");
    for e in entries {
        let _ = writeln!(
            out,
            "{:>10.3} {:>10.3} p{} n{} k{} {:?} {:?}",
            e.invoke.as_secs_f64() * 1e3,
            e.complete.as_secs_f64() * 1e3,
            e.process,
            e.node,
            e.key,
            e.op,
            e.outcome
        );
    }
    std::fs::write(path, out)
}
