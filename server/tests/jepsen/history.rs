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
    Cas {
        expected: Option<u64>,
        new: u64,
    },
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
    Cas {
        succeeded: bool,
        previous: Option<u64>,
    },
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
        History {
            origin,
            entries: Mutex::new(Vec::new()),
        }
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
    let ok = entries
        .iter()
        .filter(|e| matches!(e.outcome, Outcome::Ok(_)))
        .count();
    let failed = entries
        .iter()
        .filter(|e| matches!(e.outcome, Outcome::Fail(_)))
        .count();
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

/// Reads a history written by [`save`] (times at its microsecond precision), so that a
/// saved run can be checked again (`JEPSEN_HISTORY=… cargo test … -- --ignored check_saved`).
pub fn load(path: &Path) -> Result<Vec<Entry>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Result<Entry, String> {
    let bad = || format!("unreadable history line: {line}");
    let mut words = line.split_whitespace();
    let mut field = |prefix: &str| -> Result<String, String> {
        let w = words.next().ok_or_else(bad)?;
        w.strip_prefix(prefix).map(str::to_string).ok_or_else(bad)
    };
    let ms = |s: String| {
        s.parse::<f64>()
            .map(|v| Duration::from_nanos((v * 1e6).round() as u64))
            .map_err(|_| bad())
    };
    let (invoke, complete) = (ms(field("")?)?, ms(field("")?)?);
    let num = |s: String| s.parse::<u64>().map_err(|_| bad());
    let (process, node, key) = (
        num(field("p")?)?,
        num(field("n")?)?,
        num(field("k")?)? as usize,
    );
    let tail =
        line[line.find(&format!(" k{key} ")).ok_or_else(bad)? + format!(" k{key} ").len()..].trim();
    let split = ["Ok(", "Fail(", "Unknown("]
        .iter()
        .filter_map(|p| tail.rfind(&format!(" {p}")))
        .max()
        .ok_or_else(bad)?;
    let (op, outcome) = (tail[..split].trim(), tail[split..].trim());
    Ok(Entry {
        process,
        node,
        key,
        op: parse_op(op).ok_or_else(bad)?,
        invoke,
        complete,
        outcome: parse_outcome(outcome).ok_or_else(bad)?,
    })
}

fn opt(s: &str) -> Option<Option<u64>> {
    match s.trim() {
        "None" => Some(None),
        s => s
            .strip_prefix("Some(")?
            .strip_suffix(')')?
            .parse()
            .ok()
            .map(Some),
    }
}

fn parse_op(s: &str) -> Option<Op> {
    if s == "Get" {
        return Some(Op::Get);
    }
    if s == "Delete" {
        return Some(Op::Delete);
    }
    if let Some(v) = s.strip_prefix("Put(") {
        return v.strip_suffix(')')?.parse().ok().map(Op::Put);
    }
    let body = s.strip_prefix("Cas { expected: ")?.strip_suffix(" }")?;
    let (expected, new) = body.split_once(", new: ")?;
    Some(Op::Cas {
        expected: opt(expected)?,
        new: new.parse().ok()?,
    })
}

fn parse_outcome(s: &str) -> Option<Outcome> {
    let text = |p: &str| {
        s.strip_prefix(p)
            .and_then(|r| r.strip_suffix(')'))
            .map(|r| r.trim_matches('"').to_string())
    };
    if s.starts_with("Fail(") {
        return text("Fail(").map(Outcome::Fail);
    }
    if s.starts_with("Unknown(") {
        return text("Unknown(").map(Outcome::Unknown);
    }
    let ret = s.strip_prefix("Ok(")?.strip_suffix(')')?;
    if ret == "Done" {
        return Some(Outcome::Ok(Ret::Done));
    }
    if let Some(v) = ret.strip_prefix("Value(") {
        return Some(Outcome::Ok(Ret::Value(opt(v.strip_suffix(')')?)?)));
    }
    let body = ret.strip_prefix("Cas { succeeded: ")?.strip_suffix(" }")?;
    let (succeeded, previous) = body.split_once(", previous: ")?;
    Some(Outcome::Ok(Ret::Cas {
        succeeded: succeeded == "true",
        previous: opt(previous)?,
    }))
}
