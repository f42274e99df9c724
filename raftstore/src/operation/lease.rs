//! Leaseholder reads: a leader that a quorum confirmed recently reads locally.
//!
//! **Why it is safe.** Every replica runs raft-rs with check-quorum, under which a
//! follower that heard from its leader ignores vote requests, and does not campaign, for
//! `election_ticks` ticks of its own clock after that (`election_elapsed`). So when a
//! quorum answers a heartbeat round the leader sent at tick `t`, no other replica can be
//! elected before `t + election_ticks` on the followers' clocks: any electing quorum
//! contains one of them. The leader holds the lease until
//! `t + election_ticks − max_clock_offset_ticks` on its own clock. Three holes are closed:
//! - a restarted replica forgets its leader and would vote at once, so a store that ran
//!   before refuses every vote for its first `election_ticks` ticks after reopening;
//! - a leadership transfer's campaign bypasses check-quorum, so a leader that starts one
//!   holds no lease for the rest of its term;
//! - a new leader may lack entries the old one applied, so it reads locally only once it
//!   has committed an entry of its term and applied everything committed.
//!
//! **Where `t` comes from.** The confirmation is raft-rs's own ReadIndex round (Safe
//! mode): a `ReadState` for a request issued at tick `t` means a quorum answered
//! heartbeats sent at `t` or later. Every read served through ReadIndex renews the lease
//! with its issue tick, and while reads keep coming a leader sends a renewal round every
//! `heartbeat_ticks`, so the lease does not lapse between them. Renewals stop once no read
//! has come for `election_ticks`.
//!
//! **Quiescence.** A quiesced range sends nothing, so its lease runs out: the first read
//! after it went quiet wakes it and goes through ReadIndex (one quorum round), which
//! renews the lease, and the reads after it are local until the range is idle again. The
//! way to keep leases through quiescence is CockroachDB's store liveness: support granted
//! per node, with a node's replicas refusing to vote against a leader on a node it still
//! supports; docs/architecture.md describes it. It is not built.

use raft::prelude::MessageType;
use raft::{StateRole, CAMPAIGN_TRANSFER};

use crate::cmd::{Callback, Request};
use crate::metrics::StoreMetrics;
use crate::peer::Peer;
use crate::store::Store;
use crate::transport::RaftEnvelope;

/// Read-index request ids of lease renewals have this bit set (reads count from 1).
const PROBE_BIT: u64 = 1 << 63;

impl Store {
    /// Whether a (pre-)vote request must be refused: within an election timeout of
    /// reopening, the replicas here may have promised (by hearing from a leader before the
    /// restart) not to vote yet.
    pub(crate) fn vote_refused(&self, env: &RaftEnvelope) -> bool {
        let m = &env.message;
        let is_vote = matches!(m.get_msg_type(), MessageType::MsgRequestVote | MessageType::MsgRequestPreVote);
        let reopened = self.incarnation > 1 && self.now < self.cfg.election_ticks as u64;
        is_vote && reopened && m.context.as_ref() != CAMPAIGN_TRANSFER
    }

    /// True while the replica of `range_id` here holds the range's lease.
    pub fn has_lease(&self, range_id: u64) -> bool {
        self.peers.get(&range_id).is_some_and(|p| p.lease_valid(self.now))
    }

    /// Serves a read from the engine under the lease; gives the request back when the
    /// lease does not hold.
    pub(crate) fn try_lease_read(&mut self, req: Request, callback: Callback) -> Option<(Request, Callback)> {
        if !req.command.is_read() || !self.cfg.lease_reads {
            return Some((req, callback));
        }
        let now = self.now;
        let peer = self.peers.get_mut(&req.range_id)?;
        peer.last_read = now;
        if !peer.lease_valid(now) {
            return Some((req, callback));
        }
        let _ = callback.send(peer.execute_read(&req.command));
        StoreMetrics::add(&self.metrics.lease_reads, 1);
        None
    }

    /// Sends a renewal round for every awake leader that is being read from, every
    /// heartbeat interval.
    pub(crate) fn renew_leases(&mut self) {
        if !self.cfg.lease_reads {
            return;
        }
        let now = self.now;
        let every = self.cfg.heartbeat_ticks.max(1) as u64;
        let recent = self.cfg.election_ticks as u64;
        let Store { awake, peers, touched, next_read_id, .. } = self;
        for id in awake.iter() {
            let Some(peer) = peers.get_mut(id) else { continue };
            if !peer.is_leader() || now.saturating_sub(peer.last_read) > recent || (now + id) % every != 0 {
                continue;
            }
            let probe = *next_read_id | PROBE_BIT;
            *next_read_id += 1;
            peer.raw.read_index(probe.to_be_bytes().to_vec());
            peer.lease_probes.push((probe, now));
            peer.lease_probes.retain(|(_, at)| now.saturating_sub(*at) <= recent);
            touched.insert(*id);
        }
    }
}

impl Peer {
    /// True while this replica leads and its lease holds at tick `now`.
    pub(crate) fn lease_valid(&self, now: u64) -> bool {
        let r = &self.raw.raft;
        r.state == StateRole::Leader
            && r.lead_transferee.is_none()
            && self.no_lease_term != Some(r.term)
            && self.lease.0 == r.term
            && now < self.lease.1
            && r.commit_to_current_term()
            && self.applied_index() >= r.raft_log.committed
    }

    /// Extends the lease after raft-rs confirmed, in the current term, a quorum round
    /// issued at tick `issued`.
    pub(crate) fn extend_lease(&mut self, issued: u64, election_ticks: u64, max_offset: u64) {
        let term = self.raw.raft.term;
        if self.raw.raft.state != StateRole::Leader {
            return;
        }
        let until = (issued + election_ticks).saturating_sub(max_offset);
        if self.lease.0 != term {
            self.lease = (term, until);
        } else {
            self.lease.1 = self.lease.1.max(until);
        }
    }

    /// The issue tick of a lease renewal with read-index id `id`, if it is one.
    pub(crate) fn take_probe(&mut self, id: u64) -> Option<u64> {
        if id & PROBE_BIT == 0 {
            return None;
        }
        let i = self.lease_probes.iter().position(|(p, _)| *p == id)?;
        Some(self.lease_probes.swap_remove(i).1)
    }
}
