//! Requests a store accepts and the answers it gives.
//!
//! A [`Request`] names the range and the epoch the caller routed with; the store checks
//! both before doing anything. Answers travel back on a one-shot channel
//! ([`Callback`]), so callers may be threads or async tasks.

use crate::error::Result;
use crate::metapb::{Epoch, MetaEntry, RangeDescriptor, WriteOp};

/// One command for one range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub range_id: u64,
    pub epoch: Epoch,
    pub command: Command,
}

/// What to do within the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Linearizable read of one key.
    Get { key: Vec<u8> },
    /// Linearizable read of up to `limit` pairs in `[start, end)`, clipped to the range.
    /// An empty `end` means "to the end of the range". The answer also stops after the
    /// pair that brings its keys and values to `max_bytes` (0, or more than the store's
    /// `max_scan_bytes`: that maximum), so it holds at least one pair if any is left; a
    /// caller that got `limit` pairs or `max_bytes` bytes continues after the last key.
    Scan {
        start: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
        max_bytes: usize,
    },
    /// Set `key` to `value`.
    Put { key: Vec<u8>, value: Vec<u8> },
    /// Remove `key`.
    Delete { key: Vec<u8> },
    /// Several writes applied atomically (all keys in this range).
    Batch { ops: Vec<WriteOp> },
    /// Set `key` to `new` (delete it when `None`) only if it currently holds `expected`
    /// (is absent when `None`).
    CompareAndSwap {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
    /// Admin: split the range at `split_key` (strictly inside the range). The new right
    /// range's id is allocated by the leader's store.
    Split { split_key: Vec<u8> },
    /// Admin, meta range only: record `entries` (under their meta keys) where they are
    /// newer than what is stored. Idempotent.
    UpdateMeta { entries: Vec<MetaEntry> },
    /// Admin: change the range's replicas so that every node in `add` holds a voter and
    /// no node in `remove` holds any replica. The leader runs the whole sequence (add
    /// learners, wait for them to catch up, one joint step promoting them and demoting
    /// the removed voters, leave the joint configuration, remove the demoted learners);
    /// each step is a Raft configuration change. A repeat continues a sequence an earlier
    /// attempt left unfinished (`operation/conf_change.rs`).
    ChangeReplicas { add: Vec<u64>, remove: Vec<u64> },
    /// Admin: make the voter on `node_id` the range's preferred leader (replicated; the
    /// leader then hands leadership there once it is caught up, `operation/balance.rs`).
    /// Answered with the descriptor after it.
    PreferLeader { node_id: u64 },
}

impl Command {
    /// True for commands that only read.
    pub fn is_read(&self) -> bool {
        matches!(self, Command::Get { .. } | Command::Scan { .. })
    }

    /// True for commands that may be sent again after an attempt whose outcome is unknown
    /// (`Timeout`, `Ambiguous`): reads, and the admin commands that check their own
    /// effect (a repeated split finds its key no longer strictly inside the range; a meta
    /// update keeps the newer record). A put, delete or batch is *not* among them, though
    /// repeating it alone changes nothing: applied a second time after another client's
    /// write, it brings back a value that was overwritten, which no linearizable history
    /// allows. The Jepsen suite found exactly that (a put applied twice around a kill -9
    /// of the leader).
    pub fn is_safe_to_repeat(&self) -> bool {
        matches!(
            self,
            Command::Get { .. }
                | Command::Scan { .. }
                | Command::Split { .. }
                | Command::UpdateMeta { .. }
                | Command::ChangeReplicas { .. }
                | Command::PreferLeader { .. }
        )
    }

    /// The key that routes this command (a scan's start, a batch's first key).
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Command::Get { key }
            | Command::Put { key, .. }
            | Command::Delete { key }
            | Command::CompareAndSwap { key, .. } => Some(key),
            Command::Scan { start, .. } => Some(start),
            Command::Split { split_key } => Some(split_key),
            Command::Batch { ops } => ops.first().map(|op| op.key.as_slice()),
            Command::UpdateMeta { .. }
            | Command::ChangeReplicas { .. }
            | Command::PreferLeader { .. } => None,
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The value of a `Get` (`None`: absent).
    Value(Option<Vec<u8>>),
    /// The pairs of a `Scan`, in key order; `more` when the answer stopped at the scan's
    /// `limit` or byte budget rather than at its end (the rest may follow the last key).
    Pairs {
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
        more: bool,
    },
    /// A write was applied.
    Done,
    /// The outcome of a compare-and-swap and the value the key held before it.
    Swapped {
        succeeded: bool,
        previous: Option<Vec<u8>>,
    },
    /// A split was applied: the range now is `left`, and `right` is new.
    Split {
        left: RangeDescriptor,
        right: RangeDescriptor,
    },
    /// A membership change (or a leader preference) was applied: the range's descriptor
    /// after it.
    Replicas(RangeDescriptor),
}

/// Where a store sends the answer to one request.
pub type Callback = tokio::sync::oneshot::Sender<Result<Response>>;

/// The receiving end of a [`Callback`].
pub type ResponseReceiver = tokio::sync::oneshot::Receiver<Result<Response>>;

/// A fresh callback pair.
pub fn callback() -> (Callback, ResponseReceiver) {
    tokio::sync::oneshot::channel()
}
