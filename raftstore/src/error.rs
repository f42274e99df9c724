//! The raftstore error type. Routing errors are structured and carry the hints a router
//! needs to retry (the leader, the current descriptor); [`Error::is_retryable`] is the one
//! place that says which errors a caller may retry.

use crate::metapb::{RangeDescriptor, Replica};

/// Result alias for raftstore operations.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong with a request or inside the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// This replica is not the leader; `leader` is the one it knows of, if any.
    #[error("range {range_id}: this replica is not the leader (leader: {})", leader.as_ref().map_or("unknown".to_string(), |l| format!("node {}", l.node_id)))]
    NotLeader {
        range_id: u64,
        leader: Option<Replica>,
    },
    /// This node hosts no replica of the range.
    #[error("range {range_id} is not hosted on node {node_id}")]
    RangeNotFound { range_id: u64, node_id: u64 },
    /// The request was routed with an outdated epoch; `current` holds the descriptors to
    /// route with instead.
    #[error(
        "range {range_id}: epoch version {} conf_ver {} is stale, refresh the route",
        requested.version,
        requested.conf_ver
    )]
    EpochNotMatch {
        range_id: u64,
        requested: crate::metapb::Epoch,
        current: Vec<RangeDescriptor>,
    },
    /// A key of the request is outside the range's span.
    #[error(
        "key {} is not in range {range_id} [{}, {})",
        crate::keyspace::show_key(key),
        crate::keyspace::show_key(start),
        crate::keyspace::show_end(end)
    )]
    KeyNotInRange {
        key: Vec<u8>,
        range_id: u64,
        start: Vec<u8>,
        end: Vec<u8>,
    },
    /// The proposal was overwritten by a newer leader's log and never applied; retry.
    #[error("range {range_id}: the command lost its term and was not applied; retry")]
    StaleCommand { range_id: u64 },
    /// Raft would not accept the proposal right now (leader transfer, no leader, too many
    /// uncommitted entries); retry.
    #[error("range {range_id}: the proposal was dropped by Raft ({reason}); retry")]
    ProposalDropped { range_id: u64, reason: String },
    /// No answer within the deadline. For writes the outcome is unknown: the write may
    /// still be applied.
    #[error("range {range_id}: no answer within {ticks} ticks (a write may still apply)")]
    Timeout { range_id: u64, ticks: u64 },
    /// The command may or may not have been applied, and this replica can no longer tell.
    #[error("range {range_id}: outcome unknown ({reason}); the write may have applied")]
    Ambiguous { range_id: u64, reason: String },
    /// Another membership change of the range is still in flight (or a new leader has
    /// not yet applied its log); retry once it has applied.
    #[error("range {range_id}: another membership change is in flight; retry when it has applied")]
    ConfChangeInProgress { range_id: u64 },
    /// A membership change that cannot be made as asked (a node that already holds a
    /// replica, too few voters left, a node that is down, ...): `reason` says what and
    /// what to do instead.
    #[error("range {range_id}: {reason}")]
    InvalidMembership { range_id: u64, reason: String },
    /// An empty key was given; keys must have at least one byte.
    #[error("empty keys are not allowed")]
    EmptyKey,
    /// A key longer than the configured limit.
    #[error("key of {size} bytes exceeds the limit of {limit} bytes (max_key_size)")]
    KeyTooLarge { size: usize, limit: usize },
    /// A value longer than the configured limit.
    #[error("value of {size} bytes exceeds the limit of {limit} bytes (max_value_size)")]
    ValueTooLarge { size: usize, limit: usize },
    /// A request that is malformed in some other way.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The store is shutting down or stopped after a fatal error.
    #[error("the store on node {node_id} is stopped")]
    StoreStopped { node_id: u64 },
    /// Another node could not be reached, so the request was not sent to it (certainly
    /// not applied): its address is unknown, the connection was refused, or it has been
    /// silent long enough to be suspected down.
    #[error("node {node_id} could not be reached ({reason}); the request was not sent")]
    NodeUnreachable { node_id: u64, reason: String },
    /// A storage failure; the store stops rather than risk diverging replicas.
    #[error(transparent)]
    Engine(#[from] flotilla_engine::Error),
    /// A snapshot's files could not be written, read or ingested.
    #[error(transparent)]
    Snapshot(#[from] crate::snap::SnapError),
    /// The cluster has moved to a format version this binary does not know.
    #[error(
        "{seen_at}: the cluster runs at format version {cluster}, and this binary knows versions up to \
         {binary}; start this node with a newer binary"
    )]
    VersionTooNew {
        cluster: u32,
        binary: u32,
        /// Where the version was seen (the data directory, another node).
        seen_at: String,
    },
    /// Data on disk that cannot be decoded.
    #[error("corrupt {what} on disk: {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// An error raft-rs reported.
    #[error("raft: {0}")]
    Raft(String),
}

impl Error {
    /// True for errors after which the request was certainly not applied, so a client may
    /// retry it (after refreshing its route from the hints).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::NotLeader { .. }
                | Error::RangeNotFound { .. }
                | Error::EpochNotMatch { .. }
                | Error::StaleCommand { .. }
                | Error::ProposalDropped { .. }
                | Error::ConfChangeInProgress { .. }
        )
    }

    /// True when a write's outcome is unknown: it may have been applied. Only commands
    /// that are [safe to repeat](crate::Command::is_safe_to_repeat) may be retried; a
    /// put, delete, batch or compare-and-swap reports the ambiguity to its caller.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, Error::Timeout { .. } | Error::Ambiguous { .. })
    }
}

impl Error {
    /// `KeyNotInRange` for `key` and the range `desc`.
    pub fn key_not_in_range(desc: &RangeDescriptor, key: &[u8]) -> Error {
        Error::KeyNotInRange {
            key: key.to_vec(),
            range_id: desc.range_id,
            start: desc.start.clone(),
            end: desc.end.clone(),
        }
    }

    /// `InvalidMembership` for a leader preference naming a node without a voter.
    pub fn not_a_voter(desc: &RangeDescriptor, node_id: u64) -> Error {
        let nodes: Vec<u64> = desc.replicas.iter().map(|r| r.node_id).collect();
        let reason = format!("node {node_id} holds no voter of it (replicas on nodes {nodes:?}); prefer one of its voters");
        Error::InvalidMembership {
            range_id: desc.range_id,
            reason,
        }
    }

    /// `EpochNotMatch` for a request routed with `requested`, carrying `desc` as current.
    pub fn epoch_not_match(desc: &RangeDescriptor, requested: crate::metapb::Epoch) -> Error {
        Error::EpochNotMatch {
            range_id: desc.range_id,
            requested,
            current: vec![desc.clone()],
        }
    }
}

impl From<raft::Error> for Error {
    fn from(e: raft::Error) -> Self {
        Error::Raft(e.to_string())
    }
}

pub(crate) fn corrupt(what: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Corrupt {
        what,
        detail: e.to_string(),
    }
}
