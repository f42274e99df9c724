//! Message filters for the deterministic harness, after TiKV's `test_raftstore` filters.
//!
//! Every message a store sends passes through the cluster's filter chain before delivery.
//! A filter returns a [`Verdict`]; the chain drops a message if any filter drops it, adds
//! up delays, and delivers a copy more for each `Duplicate`. Randomised filters draw from
//! the cluster's seeded generator, so a run reproduces from its seed.

use std::collections::BTreeSet;

use flotilla_raftstore::RaftEnvelope;
use raft::prelude::MessageType;
use rand::rngs::StdRng;
use rand::Rng;

/// What happens to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Deliver,
    Drop,
    /// Hold the message for this many ticks (later messages may overtake it).
    Delay(u64),
    /// Deliver it twice.
    Duplicate,
}

/// Decides the fate of each message.
pub trait Filter: Send {
    fn check(&mut self, env: &RaftEnvelope, rng: &mut StdRng) -> Verdict;
}

/// Cuts the network into groups: messages between different groups are dropped. A node
/// in no group is alone.
pub struct Partition {
    groups: Vec<BTreeSet<u64>>,
}

impl Partition {
    pub fn new(groups: &[&[u64]]) -> Partition {
        Partition {
            groups: groups.iter().map(|g| g.iter().copied().collect()).collect(),
        }
    }

    fn group_of(&self, node: u64) -> Option<usize> {
        self.groups.iter().position(|g| g.contains(&node))
    }
}

impl Filter for Partition {
    fn check(&mut self, env: &RaftEnvelope, _: &mut StdRng) -> Verdict {
        let (a, b) = (
            self.group_of(env.from.node_id),
            self.group_of(env.to.node_id),
        );
        if a.is_some() && a == b {
            Verdict::Deliver
        } else {
            Verdict::Drop
        }
    }
}

/// Drops everything to and from one node.
pub struct Isolate(pub u64);

impl Filter for Isolate {
    fn check(&mut self, env: &RaftEnvelope, _: &mut StdRng) -> Verdict {
        if env.from.node_id == self.0 || env.to.node_id == self.0 {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }
}

/// Drops what node `.0` sends to node `.1` (the other direction still flows).
pub struct OneWay(pub u64, pub u64);

impl Filter for OneWay {
    fn check(&mut self, env: &RaftEnvelope, _: &mut StdRng) -> Verdict {
        if env.from.node_id == self.0 && env.to.node_id == self.1 {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }
}

/// Drops each message with probability `p`.
pub struct DropRandom(pub f64);

impl Filter for DropRandom {
    fn check(&mut self, _: &RaftEnvelope, rng: &mut StdRng) -> Verdict {
        if rng.gen_bool(self.0) {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }
}

/// Delays each message with probability `p` by 1..=`max_ticks` ticks (reordering them).
pub struct DelayRandom {
    pub p: f64,
    pub max_ticks: u64,
}

impl Filter for DelayRandom {
    fn check(&mut self, _: &RaftEnvelope, rng: &mut StdRng) -> Verdict {
        if rng.gen_bool(self.p) {
            Verdict::Delay(rng.gen_range(1..=self.max_ticks.max(1)))
        } else {
            Verdict::Deliver
        }
    }
}

/// Duplicates each message with probability `p`.
pub struct DuplicateRandom(pub f64);

impl Filter for DuplicateRandom {
    fn check(&mut self, _: &RaftEnvelope, rng: &mut StdRng) -> Verdict {
        if rng.gen_bool(self.0) {
            Verdict::Duplicate
        } else {
            Verdict::Deliver
        }
    }
}

/// Applies `inner` only to messages that `select` picks (by range, type, direction...).
pub struct Select<F> {
    pub select: F,
    pub inner: Box<dyn Filter>,
}

impl<F: FnMut(&RaftEnvelope) -> bool + Send> Filter for Select<F> {
    fn check(&mut self, env: &RaftEnvelope, rng: &mut StdRng) -> Verdict {
        if (self.select)(env) {
            self.inner.check(env, rng)
        } else {
            Verdict::Deliver
        }
    }
}

/// Drops every message of the given types.
pub struct DropTypes(pub Vec<MessageType>);

impl Filter for DropTypes {
    fn check(&mut self, env: &RaftEnvelope, _: &mut StdRng) -> Verdict {
        if self.0.contains(&env.message.get_msg_type()) {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }
}

/// Drops everything: a building block for `Select`.
pub struct DropAll;

impl Filter for DropAll {
    fn check(&mut self, _: &RaftEnvelope, _: &mut StdRng) -> Verdict {
        Verdict::Drop
    }
}

/// Drops every snapshot message to node `0`: a learner there stays behind.
pub struct SnapshotsTo(pub u64);

impl Filter for SnapshotsTo {
    fn check(&mut self, env: &RaftEnvelope, _: &mut StdRng) -> Verdict {
        if env.message.get_msg_type() == MessageType::MsgSnapshot && env.to.node_id == self.0 {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }
}

/// Drops node `0`'s leave-joint proposal (an empty `ConfChangeV2`) on its way to the
/// others: a membership change it leads stays in its joint configuration.
pub struct LeaveJointFrom(pub u64);

impl Filter for LeaveJointFrom {
    fn check(&mut self, env: &RaftEnvelope, _: &mut StdRng) -> Verdict {
        use protobuf::Message as _;
        let leave_joint = |e: &raft::prelude::Entry| {
            e.get_entry_type() == raft::prelude::EntryType::EntryConfChangeV2
                && raft::prelude::ConfChangeV2::parse_from_bytes(&e.data)
                    .is_ok_and(|cc| cc.changes.is_empty())
        };
        if env.from.node_id == self.0 && env.message.entries.iter().any(leave_joint) {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }
}
