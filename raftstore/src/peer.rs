//! [`Peer`]: the state of one replica — its raft-rs node over [`PeerStorage`], the
//! proposals waiting to be applied and the reads waiting for a read index.
//!
//! The logic that acts on a peer lives in `operation/` (propose, read, ready, apply, GC);
//! this module only holds state and the small queries everyone needs.

use std::collections::VecDeque;

use raft::{Config, RawNode, StateRole};

use crate::cmd::{Callback, Command};
use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::metapb::{RangeDescriptor, Replica};
use crate::storage::PeerStorage;

/// A write waiting for its log entry to apply.
pub(crate) struct Proposal {
    pub index: u64,
    pub term: u64,
    pub proposed_at: u64,
    pub waiters: crate::operation::Waiters,
}

/// A read waiting for a confirmed read index and for apply to reach it.
pub(crate) struct PendingRead {
    pub id: u64,
    pub command: Command,
    /// The epoch the read was routed with; re-checked when it is served.
    pub epoch: crate::metapb::Epoch,
    pub callback: Callback,
    pub issued_at: u64,
    /// The clock time it was first issued (a confirmation renews the lease from it).
    pub issued_clock: std::time::Duration,
    pub last_try: u64,
    /// Set once the leader has confirmed its leadership for this read.
    pub read_index: Option<u64>,
}

/// One replica of one range on this store.
pub struct Peer {
    pub(crate) node_id: u64,
    pub(crate) range_id: u64,
    pub(crate) replica_id: u64,
    pub(crate) raw: RawNode<PeerStorage>,
    pub(crate) proposals: VecDeque<Proposal>,
    /// Writes accepted this round, proposed together at its end (`operation/batch.rs`).
    pub(crate) pending: crate::operation::PendingWrites,
    pub(crate) reads: VecDeque<PendingRead>,
    /// The tick each other replica was last heard from (for leadership balance).
    pub(crate) last_heard: std::collections::HashMap<u64, u64>,
    /// The tick of this replica's last leadership transfer attempt.
    pub(crate) last_transfer: Option<u64>,
    /// Followers a snapshot was queued for this round (reported after `advance`).
    pub(crate) snapshots_sent: Vec<u64>,
    /// Replicas heard from that this replica's descriptor does not list (it is behind a
    /// membership change: a leader added since), so that answers to them can be
    /// addressed. Without it a follower that missed the change that added its new leader
    /// could never tell that leader it needs a snapshot (the chaos test found this).
    pub(crate) peer_cache: std::collections::HashMap<u64, crate::metapb::Replica>,
    /// Until this tick, a replica created by a split on its leader's node campaigns every
    /// other tick while no leader is known.
    pub(crate) campaign_until: Option<u64>,
    /// Campaign once, at the next tick the store's campaign budget allows
    /// (`operation/campaign.rs`).
    pub(crate) campaign_asked: bool,
    /// Until this tick the replica's election timer does not run (a new range's replica
    /// that is not its preferred voter leaves the first campaign to that one).
    pub(crate) election_held_until: u64,
    /// The lease: the term and the clock time until which this leader may read locally.
    pub(crate) lease: (u64, std::time::Duration),
    /// Outstanding lease renewals: read-index request id, and the tick and clock time it
    /// was issued.
    pub(crate) lease_probes: Vec<(u64, u64, std::time::Duration)>,
    /// The last tick a read reached this leader (renewals stop when reads do).
    pub(crate) last_read: u64,
    /// Per follower: the term and the follower node's support epoch (`(incarnation,
    /// epoch)`) in which it last answered this leader's heartbeat.
    pub(crate) fortified: std::collections::HashMap<u64, (u64, (u64, u64))>,
    /// Until this clock time the replica grants no vote and starts no election (it
    /// replaced an uninitialized replica that may have made promises, see `split.rs`).
    pub(crate) no_votes_until: std::time::Duration,
    /// A term in which this replica started a leadership transfer: no lease in it.
    pub(crate) no_lease_term: Option<u64>,
    /// The membership change this leader is carrying out (`conf_change.rs`).
    pub(crate) change_job: Option<crate::operation::ChangeJob>,
    /// Bytes of keys and values applied since the last size check (for auto-split).
    pub(crate) written_since_check: u64,
    /// Recent request load, for splitting by load (`operation/load_split.rs`).
    pub(crate) load: crate::operation::LoadStats,
    /// With a seed (the deterministic harness), election timeouts are drawn from it.
    election_seed: Option<u64>,
    /// The (term, role) the election timeout was last drawn for, and how many draws.
    timeout_drawn_for: (u64, StateRole),
    timeout_draws: u64,
    election_ticks: usize,
}

impl Peer {
    /// Builds the raft-rs node of a replica from its storage.
    pub fn new(
        node_id: u64,
        storage: PeerStorage,
        cfg: &StoreConfig,
        election_seed: Option<u64>,
        logger: &slog::Logger,
    ) -> Result<Peer> {
        let desc = storage.descriptor().clone();
        let range_id = desc.range_id;
        let replica = desc.replica_on(node_id).ok_or_else(|| {
            Error::InvalidRequest(format!("range {range_id} has no replica on node {node_id}"))
        })?;
        let applied = storage.apply_state().applied_index;
        let raft_cfg = raft_config(replica.replica_id, applied, cfg);
        raft_cfg.validate()?;
        let logger = logger.new(slog::o!("range" => range_id, "replica" => replica.replica_id));
        let raw = RawNode::new(&raft_cfg, storage, &logger)?;
        Ok(Peer {
            node_id,
            range_id,
            replica_id: replica.replica_id,
            raw,
            proposals: VecDeque::new(),
            pending: Default::default(),
            reads: VecDeque::new(),
            snapshots_sent: Vec::new(),
            peer_cache: std::collections::HashMap::new(),
            written_since_check: 0,
            load: Default::default(),
            change_job: None,
            campaign_until: None,
            campaign_asked: false,
            election_held_until: 0,
            lease: (0, std::time::Duration::ZERO),
            lease_probes: Vec::new(),
            fortified: Default::default(),
            no_votes_until: std::time::Duration::ZERO,
            last_read: 0,
            no_lease_term: None,
            last_heard: std::collections::HashMap::new(),
            last_transfer: None,
            election_seed,
            timeout_drawn_for: (u64::MAX, StateRole::Follower),
            timeout_draws: 0,
            election_ticks: cfg.election_ticks,
        })
    }

    /// Ticks the Raft node. With an election seed, first replaces raft-rs's randomised
    /// election timeout (drawn from the thread's generator whenever the term or role
    /// changes) with one drawn from the seed, so harness runs are reproducible while
    /// replicas still time out at different ticks after every election.
    /// `hold`: the election timer must not run (this node supports the leader's node).
    pub(crate) fn tick(&mut self, now: u64, hold: bool) {
        if let Some(until) = self.campaign_until {
            if now > until || self.raw.raft.leader_id != raft::INVALID_ID {
                self.campaign_until = None;
            } else if self.raw.raft.state != StateRole::Leader
                && now.is_multiple_of(2)
                && self.may_campaign()
            {
                // Every other tick, so a round already under way can finish.
                let _ = self.raw.campaign();
            }
        }
        if let Some(seed) = self.election_seed {
            let now = (self.raw.raft.term, self.raw.raft.state);
            if now != self.timeout_drawn_for {
                self.timeout_drawn_for = now;
                self.timeout_draws += 1;
                // raft-rs draws from [election_tick, 2 * election_tick).
                let spread = self.election_ticks as u64;
                let draw = splitmix(self.replica_id ^ splitmix(self.timeout_draws));
                let x = splitmix(seed ^ splitmix(self.range_id ^ draw));
                let timeout = self.election_ticks + (x % spread) as usize;
                self.raw.raft.set_randomized_election_timeout(timeout);
            }
        }
        if !hold {
            self.raw.tick();
        }
    }

    /// The range's descriptor as this replica knows it.
    pub fn descriptor(&self) -> &RangeDescriptor {
        self.raw.store().descriptor()
    }

    /// True while this replica is the Raft leader.
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The replica this one believes leads the range.
    pub fn leader(&self) -> Option<Replica> {
        let id = self.raw.raft.leader_id;
        if id == raft::INVALID_ID {
            return None;
        }
        self.descriptor().replica_by_id(id)
    }

    /// The current Raft term.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The highest applied log index.
    pub fn applied_index(&self) -> u64 {
        self.raw.store().apply_state().applied_index
    }

    /// The first index still in the log (everything before it was truncated).
    pub fn first_log_index(&self) -> u64 {
        self.raw.store().apply_state().truncated_index + 1
    }

    /// The index of the last entry in the log.
    pub fn last_log_index(&self) -> u64 {
        self.raw.store().last_index_now()
    }

    /// The meta record announcing this replica as the range's leader (none for the meta
    /// range itself, which is not listed in meta, or an uninitialized replica).
    pub(crate) fn meta_entry(&self) -> Option<crate::metapb::MetaEntry> {
        if self.range_id == crate::keyspace::META_RANGE_ID || !self.raw.store().is_initialized() {
            return None;
        }
        Some(crate::metapb::MetaEntry {
            descriptor: Some(self.descriptor().clone()),
            leader: self.descriptor().replica_on(self.node_id),
            term: self.term(),
        })
    }

    /// The `NotLeader` error for this range, with this replica's leader hint.
    pub(crate) fn not_leader(&self) -> Error {
        Error::NotLeader {
            range_id: self.range_id,
            leader: self.leader(),
        }
    }
}

/// The raft-rs configuration of one replica.
fn raft_config(id: u64, applied: u64, cfg: &StoreConfig) -> Config {
    Config {
        id,
        applied,
        election_tick: cfg.election_ticks,
        heartbeat_tick: cfg.heartbeat_ticks,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        ..Default::default()
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
