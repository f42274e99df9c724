//! Metadata and command types that are persisted or replicated, encoded with prost.
//!
//! Everything here goes to disk or into the Raft log, so field tags are stable: add fields,
//! never renumber them. The types are declared in Rust with prost's derive (no `.proto`
//! compilation step); `docs/storage.md` lists them.

use prost::Message;

/// The hard upper limit on key size, whatever the configuration says. Unbounded spans are
/// closed with a key just above it.
pub const MAX_KEY_SIZE_CAP: usize = 64 << 10;

/// Identifies a range's shape: `version` bumps on split and merge, `conf_ver` on a
/// membership change. A command routed with another epoch is refused with
/// `EpochNotMatch`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Message)]
pub struct Epoch {
    #[prost(uint64, tag = "1")]
    pub version: u64,
    #[prost(uint64, tag = "2")]
    pub conf_ver: u64,
}

/// One member of a range's Raft group: which node holds it, its Raft id, and its role.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Message)]
pub struct Replica {
    #[prost(uint64, tag = "1")]
    pub node_id: u64,
    #[prost(uint64, tag = "2")]
    pub replica_id: u64,
    /// A [`ReplicaRole`] (read it with `role()`); absent on disk (descriptors written
    /// before roles existed) means `Voter`.
    #[prost(enumeration = "ReplicaRole", tag = "3")]
    pub role: i32,
}

/// What a replica counts for. Outside a membership change every replica is a `Voter`
/// or a `Learner`; during a joint configuration (raft-rs `ConfChangeV2`) a replica
/// being added as a voter is an `IncomingVoter` (it votes in the new configuration
/// only) and one being removed or demoted is a `DemotingVoter` (the old one only). Which
/// sets are quorums is `crate::quorum`'s question.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ReplicaRole {
    Voter = 0,
    Learner = 1,
    IncomingVoter = 2,
    DemotingVoter = 3,
}

impl Replica {
    /// A voting replica.
    pub fn voter(node_id: u64, replica_id: u64) -> Replica {
        Replica {
            node_id,
            replica_id,
            role: ReplicaRole::Voter as i32,
        }
    }

    /// This replica with another role.
    pub fn with_role(self, role: ReplicaRole) -> Replica {
        Replica {
            role: role as i32,
            ..self
        }
    }
}

impl ReplicaRole {
    /// The name status views show.
    pub fn name(self) -> &'static str {
        match self {
            ReplicaRole::Voter => "voter",
            ReplicaRole::Learner => "learner",
            ReplicaRole::IncomingVoter => "incoming-voter",
            ReplicaRole::DemotingVoter => "demoting-voter",
        }
    }
}

/// A range: the key span `[start, end)` (empty `end` = unbounded), its epoch and replicas.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct RangeDescriptor {
    #[prost(uint64, tag = "1")]
    pub range_id: u64,
    #[prost(bytes = "vec", tag = "2")]
    pub start: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub end: Vec<u8>,
    #[prost(message, optional, tag = "4")]
    pub epoch: Option<Epoch>,
    #[prost(message, repeated, tag = "5")]
    pub replicas: Vec<Replica>,
    /// The Raft id the next replica added to this range gets (0 on descriptors written
    /// before it existed: then one above the highest id listed). Allocated in the
    /// replicated descriptor, so ids are never reused and need no coordination.
    #[prost(uint64, tag = "6")]
    pub next_replica_id: u64,
    /// The node whose voter should lead this range, chosen by placement (0: none chosen,
    /// or written before it existed). When that node holds no voter, the fallback rule
    /// picks one ([`RangeDescriptor::preferred_voter`]).
    #[prost(uint64, tag = "7")]
    pub preferred_node: u64,
    /// Bumped by each change of `preferred_node`, so that meta records can tell the newer
    /// of two descriptors with the same epoch ([`MetaEntry::freshness`]). Not part of the
    /// epoch: a preference changes no routing.
    #[prost(uint64, tag = "8")]
    pub preference_ver: u64,
}

impl RangeDescriptor {
    /// The voter that should lead: the one on `preferred_node`, else
    /// `voters[range_id % voters.len()]` (so ranges on the same nodes spread their
    /// leaders evenly with no choice made at all). `None` without voters.
    pub fn preferred_voter(&self) -> Option<Replica> {
        self.choose_voter(0)
    }

    /// The voter that should take over when the leader's node `lost` is gone: the same
    /// rule as [`RangeDescriptor::preferred_voter`] among the voters on other nodes. Every
    /// node computes the same answer from the descriptor alone.
    pub fn successor_without(&self, lost: u64) -> Option<Replica> {
        self.choose_voter(lost)
    }

    fn choose_voter(&self, except_node: u64) -> Option<Replica> {
        // Only a voter can lead (a learner never campaigns).
        let voters = crate::quorum::Voters::of(self);
        let eligible: Vec<Replica> = self
            .replicas
            .iter()
            .copied()
            .filter(|r| {
                voters.contains(r.replica_id) && (except_node == 0 || r.node_id != except_node)
            })
            .collect();
        if let Some(chosen) = eligible
            .iter()
            .find(|r| self.preferred_node != 0 && r.node_id == self.preferred_node)
        {
            return Some(*chosen);
        }
        eligible
            .get((self.range_id % eligible.len().max(1) as u64) as usize)
            .copied()
    }

    /// True when `key` lies in `[start, end)`.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && (self.end.is_empty() || key < self.end.as_slice())
    }

    /// The exclusive upper bound of the span as a real key: `end`, or for an unbounded
    /// range a key above every valid user key (keys are capped at [`MAX_KEY_SIZE_CAP`]).
    pub fn end_bound(&self) -> Vec<u8> {
        if self.end.is_empty() {
            vec![0xff; MAX_KEY_SIZE_CAP + 1]
        } else {
            self.end.clone()
        }
    }

    /// The epoch, or the zero epoch if unset.
    pub fn epoch(&self) -> Epoch {
        self.epoch.unwrap_or_default()
    }

    /// The replica this range has on `node_id`, if any.
    pub fn replica_on(&self, node_id: u64) -> Option<Replica> {
        self.replicas.iter().copied().find(|r| r.node_id == node_id)
    }

    /// The voter this range has on `node_id`, if any (a replica that counts in a quorum).
    pub fn voter_on(&self, node_id: u64) -> Option<Replica> {
        self.replica_on(node_id)
            .filter(|r| crate::quorum::Voters::of(self).contains(r.replica_id))
    }

    /// The replica with Raft id `replica_id`, if any.
    pub fn replica_by_id(&self, replica_id: u64) -> Option<Replica> {
        self.replicas
            .iter()
            .copied()
            .find(|r| r.replica_id == replica_id)
    }

    /// The Raft id the next added replica gets: never one this range has used.
    pub fn next_replica_id(&self) -> u64 {
        let above = self
            .replicas
            .iter()
            .map(|r| r.replica_id + 1)
            .max()
            .unwrap_or(1);
        self.next_replica_id.max(above)
    }
}

/// How far a replica has applied its log, and where the log now starts.
#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct ApplyState {
    #[prost(uint64, tag = "1")]
    pub applied_index: u64,
    #[prost(uint64, tag = "2")]
    pub truncated_index: u64,
    #[prost(uint64, tag = "3")]
    pub truncated_term: u64,
}

/// A replica's durable Raft state: the hard state (as raft-rs protobuf bytes) and the
/// position of the last log entry, written with every append.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct RaftLocalState {
    #[prost(bytes = "vec", tag = "1")]
    pub hard_state: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub last_index: u64,
    #[prost(uint64, tag = "3")]
    pub last_term: u64,
}

/// A replica's durable state in one record (meta key `'r' ‖ range id`): every round that
/// changes the Raft state or the apply state rewrites it, one insert instead of two.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct ReplicaState {
    #[prost(message, optional, tag = "1")]
    pub raft: Option<RaftLocalState>,
    #[prost(message, optional, tag = "2")]
    pub apply: Option<ApplyState>,
}

/// One write inside a replicated command.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct WriteOp {
    /// True for a delete, false for a put.
    #[prost(bool, tag = "1")]
    pub delete: bool,
    #[prost(bytes = "vec", tag = "2")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub value: Vec<u8>,
}

impl WriteOp {
    /// A put of `key` = `value`.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> WriteOp {
        WriteOp {
            delete: false,
            key: key.into(),
            value: value.into(),
        }
    }

    /// A delete of `key`.
    pub fn delete(key: impl Into<Vec<u8>>) -> WriteOp {
        WriteOp {
            delete: true,
            key: key.into(),
            value: Vec::new(),
        }
    }
}

/// A condition checked at apply time: the command's writes happen only if `key` currently
/// holds `expected` (absent when `expected_present` is false).
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Condition {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bool, tag = "2")]
    pub expected_present: bool,
    #[prost(bytes = "vec", tag = "3")]
    pub expected: Vec<u8>,
}

/// The payload of a normal Raft entry: writes to one range, all or nothing.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct RaftCommand {
    #[prost(uint64, tag = "1")]
    pub range_id: u64,
    #[prost(message, optional, tag = "2")]
    pub epoch: Option<Epoch>,
    #[prost(message, repeated, tag = "3")]
    pub ops: Vec<WriteOp>,
    #[prost(message, optional, tag = "4")]
    pub condition: Option<Condition>,
    /// An admin command: split the range (no ops, no condition).
    #[prost(message, optional, tag = "5")]
    pub split: Option<SplitRequest>,
    /// An admin command for the meta range: record these entries where they are newer.
    #[prost(message, repeated, tag = "6")]
    pub meta_update: Vec<MetaEntry>,
    /// The context of a membership change (a `ConfChangeV2` entry): the replica set the
    /// change leads to.
    #[prost(message, optional, tag = "7")]
    pub change: Option<MembershipChange>,
    /// An admin command: make this node's voter the range's preferred leader.
    #[prost(message, optional, tag = "8")]
    pub prefer: Option<PreferLeader>,
    /// Plain writes proposed together (`operation/batch.rs`): applied in order, each as if
    /// it were its own entry. A command with a batch carries nothing else but its range
    /// and epoch.
    #[prost(message, repeated, tag = "9")]
    pub batch: Vec<RaftCommand>,
}

/// Placement's choice of the node that should lead a range (`operation/balance.rs`
/// applies it; the leader then hands leadership there once that voter is caught up).
#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct PreferLeader {
    #[prost(uint64, tag = "1")]
    pub node_id: u64,
}

/// What one Raft configuration change does to the range's descriptor: its replicas
/// become `replicas` (roles included) and the next replica id `next_replica_id`. The
/// proposer computes it; every replica checks the epoch and that raft-rs's resulting
/// configuration matches the roles before recording it (`operation/conf_change.rs`).
#[derive(Clone, PartialEq, Eq, Message)]
pub struct MembershipChange {
    #[prost(message, repeated, tag = "1")]
    pub replicas: Vec<Replica>,
    #[prost(uint64, tag = "2")]
    pub next_replica_id: u64,
}

/// What a node keeps of a replica it destroyed: refuses messages to any replica id of
/// the range up to `replica_id`, so an old incarnation is never re-created.
#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct Tombstone {
    #[prost(uint64, tag = "1")]
    pub range_id: u64,
    #[prost(uint64, tag = "2")]
    pub replica_id: u64,
}

/// A replica asking another member whether it is still part of the range (it has not
/// heard from a leader for a while: it may have been removed while cut off).
#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct MembershipCheck {
    #[prost(uint64, tag = "1")]
    pub range_id: u64,
    /// The asking replica's id.
    #[prost(uint64, tag = "2")]
    pub replica_id: u64,
    /// The replica the question is addressed to.
    #[prost(uint64, tag = "3")]
    pub to: u64,
}

/// The answer to a replica that is no longer a member: the descriptor (applied, so
/// committed) that does not list it.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct ReplicaRemoved {
    #[prost(uint64, tag = "1")]
    pub replica_id: u64,
    #[prost(message, optional, tag = "2")]
    pub descriptor: Option<RangeDescriptor>,
}

/// Split a range at `split_key`: the range keeps `[start, split_key)`, and a new range
/// `new_range_id` takes `[split_key, end)` on the same replicas.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct SplitRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub split_key: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub new_range_id: u64,
}

/// One record of the meta range: a range's descriptor and the leader last seen for it.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct MetaEntry {
    #[prost(message, optional, tag = "1")]
    pub descriptor: Option<RangeDescriptor>,
    #[prost(message, optional, tag = "2")]
    pub leader: Option<Replica>,
    /// The Raft term in which `leader` led.
    #[prost(uint64, tag = "3")]
    pub term: u64,
}

impl MetaEntry {
    /// The order in which meta records replace each other: a newer shape (split,
    /// membership change), then a newer leader preference, then a later term.
    pub fn freshness(&self) -> (u64, u64, u64, u64) {
        let e = self
            .descriptor
            .as_ref()
            .map(|d| d.epoch())
            .unwrap_or_default();
        let preference = self.descriptor.as_ref().map_or(0, |d| d.preference_ver);
        (e.version, e.conf_ver, preference, self.term)
    }
}

/// A key-value pair inside a snapshot.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct KvPair {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// The data of a Raft snapshot as it travels in the Raft message: the range's descriptor
/// and the files that hold its keys (`snap.rs`), which travel beside the message, in
/// chunks. `pairs` carries keys inline instead; snapshots built here never use it, it is
/// kept so that a message carrying it still installs.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct SnapshotData {
    #[prost(message, optional, tag = "1")]
    pub descriptor: Option<RangeDescriptor>,
    #[prost(message, repeated, tag = "2")]
    pub pairs: Vec<KvPair>,
    #[prost(message, repeated, tag = "3")]
    pub files: Vec<SnapshotFile>,
}

/// One file of a snapshot: an SST of the data column family.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct SnapshotFile {
    /// The file's name inside the snapshot's directory (letters, digits, `_`, `.`).
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint64, tag = "2")]
    pub size: u64,
    /// CRC-32 (IEEE) of the file's bytes.
    #[prost(uint32, tag = "3")]
    pub crc32: u32,
}

/// The marker of a snapshot installed but whose files may not be ingested yet
/// (`keys::pending_ingest_key`): a store that finds one at open finishes the ingestion
/// before the replica serves anything.
#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct PendingIngest {
    #[prost(uint64, tag = "1")]
    pub term: u64,
    #[prost(uint64, tag = "2")]
    pub index: u64,
}

/// One range's heartbeat (or response) inside a coalesced [`HeartbeatBatch`]: what raft-rs
/// puts in a `MsgHeartbeat` / `MsgHeartbeatResponse` without a read context.
#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct Beat {
    #[prost(uint64, tag = "1")]
    pub range_id: u64,
    #[prost(uint64, tag = "2")]
    pub from: u64,
    #[prost(uint64, tag = "3")]
    pub to: u64,
    #[prost(uint64, tag = "4")]
    pub term: u64,
    #[prost(uint64, tag = "5")]
    pub commit: u64,
    /// A `MsgHeartbeatResponse` rather than a `MsgHeartbeat`.
    #[prost(bool, tag = "6")]
    pub response: bool,
    /// From a leader going quiet: the follower may stop ticking once it has caught up.
    #[prost(bool, tag = "7")]
    pub quiesce: bool,
}

/// Everything one node sends another in one flush besides real Raft traffic: the
/// coalesced heartbeats of all ranges, and the node's liveness beat (the batch itself,
/// sent at least once per liveness interval, even when empty).
#[derive(Clone, PartialEq, Eq, Message)]
pub struct HeartbeatBatch {
    #[prost(message, repeated, tag = "1")]
    pub beats: Vec<Beat>,
    /// The sender's clock when it sent this batch, in µs from the clock's origin (a
    /// duration on the sender's monotonic clock, never compared with another node's).
    #[prost(uint64, tag = "2")]
    pub sent_at: u64,
    /// The latest `sent_at` the sender has received from the destination: it acknowledges
    /// that the sender supports the destination at least until that time plus the
    /// support period (`lease.rs`).
    #[prost(uint64, tag = "3")]
    pub echo: u64,
    /// How many times the sender's store has been opened (its clock restarts with each
    /// opening, so stamps compare as `(incarnation, sent_at)`).
    #[prost(uint64, tag = "4")]
    pub incarnation: u64,
    /// The incarnation `echo` belongs to.
    #[prost(uint64, tag = "5")]
    pub echo_incarnation: u64,
    /// The sender's support epoch for the destination: it grows whenever the sender's
    /// support lapsed (it did not hear from the destination for a support period).
    #[prost(uint64, tag = "6")]
    pub support_epoch: u64,
    /// The sender is draining (about to stop): hand it no leadership.
    #[prost(bool, tag = "7")]
    pub draining: bool,
    /// Replicas on the sender asking whether they are still members (`life.rs`).
    #[prost(message, repeated, tag = "8")]
    pub membership_checks: Vec<MembershipCheck>,
    /// Replicas on the destination that are no longer members of their range.
    #[prost(message, repeated, tag = "9")]
    pub removed: Vec<ReplicaRemoved>,
}
