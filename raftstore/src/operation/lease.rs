//! Leaseholder reads: a leader that can prove no rival can be elected reads locally.
//!
//! Two proofs, either of which gives the lease (`Store::has_lease`). Both are judged
//! against the store's [`Clock`](crate::clock::Clock) read at the moment a read is served,
//! never against the tick count: a process that was frozen executes no ticks while the
//! other nodes' time runs on (`clock.rs`).
//!
//! **What the proofs assume of clocks.** Each node measures only durations on its own
//! monotonic clock; no two nodes' readings are ever compared, so an absolute offset
//! between them does not matter. What matters is *rate*: over any span of a support
//! period (`liveness_timeout_ticks`) or an election timeout, two nodes' clocks may
//! disagree by at most `max_clock_offset_ticks` tick intervals. Both proofs end the lease
//! that much early. A larger drift (a clock running slow on the leader) can let a deposed
//! leader serve a stale read: the documented failure mode, shown by the harness test
//! `a_clock_drifting_beyond_the_bound_allows_a_stale_read`. A frozen or starved process
//! is not drift: its clock runs on while it is frozen, and it judges its lease by it
//! when it wakes. Ticks, in turn, are caught up to the clock (`Store::catch_up`) and
//! never run ahead of it, so a store runs at most `d / tick_interval + 1` ticks in any
//! span `d` of real time — the bound the quorum-round proof needs of followers.
//!
//! **A recent quorum round.** Every replica runs raft-rs with check-quorum, under which a
//! follower that heard from its leader ignores vote requests, and does not campaign, for
//! `election_ticks` of its own ticks, which take at least `election_ticks − 1` tick
//! intervals of real time. So when a quorum answers a heartbeat round the leader issued
//! at clock time `t`, no rival can be elected before `t + (election_ticks − 1) ×
//! tick_interval`; the leader reads until that, less `max_clock_offset_ticks` intervals
//! ([`quorum_lease_span`]). The confirmation is raft-rs's ReadIndex round: a `ReadState`
//! for a request issued at `t` means a quorum answered heartbeats sent at `t` or later.
//! Every ReadIndex read renews it, and while reads keep coming a leader sends a renewal
//! every `heartbeat_ticks`.
//!
//! **Store liveness** (after CockroachDB), which survives quiescence. A node *supports*
//! another while it hears from it: for a support period (`liveness_timeout_ticks` tick
//! intervals on its clock) after any batch from node L arrived, none of its replicas
//! whose leader is on L grants a vote to a rival (a leader transfer, or the leader itself
//! campaigning, excepted) or lets its election timer run. Each node-to-node batch carries
//! its send time on the sender's clock, and the next batch back echoes the latest one
//! received, so when node V echoes L's send time `s`, L knows V supports it until at
//! least `s` plus a support period (V heard the batch after `s`). Support that lapses (a
//! silence longer than the period, or a restart: `incarnation`) starts a new support
//! *epoch*, reported in every batch. A follower *fortifies* a leader when it answers the
//! leader's heartbeat in the leader's term; the answer travels in a batch that names the
//! epoch of the moment it was sent. The leader holds the lease while a quorum of replicas
//! (itself included) fortified it in its current term under their node's current epoch,
//! with echoed support reaching past `now + max_clock_offset_ticks` intervals. Any quorum
//! that could elect a rival contains one of those replicas, whose node still supports the
//! leader's: it refuses. Since support is per node, a quiesced range keeps its lease for
//! the price of the node's liveness beats, and idle ranges serve local reads.
//!
//! **Common conditions.** A store that ran before grants no vote and starts no election
//! for one support period (or election timeout, the longer) of its clock after reopening,
//! so promises made before a crash still hold (the process restarted after it crashed,
//! and the promises ran from before the crash). A leader that starts a leadership transfer
//! holds no lease for the rest of its term (the transferee's campaign bypasses both
//! proofs). A leader reads locally only once it has committed an entry of its term and
//! applied everything committed, so its engine holds every acknowledged write.

use std::time::Duration;

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
    /// True within one support period of reopening a store that ran before: promises it
    /// made before stopping may still stand. (A store opened for the first time made none.)
    fn just_reopened(&self) -> bool {
        let window = self.ticks_as_time(
            self.cfg
                .liveness_timeout_ticks
                .max(self.cfg.election_ticks as u64),
        );
        self.incarnation > 1 && self.clock.now() < self.opened_at + window
    }

    /// True while this node supports `node`: it heard from it within a support period.
    pub(crate) fn supports(&self, node: u64) -> bool {
        let window = self.ticks_as_time(self.cfg.liveness_timeout_ticks);
        let now = self.clock.now();
        node != self.node_id
            && self
                .support_heard
                .get(&node)
                .is_some_and(|t| now.saturating_sub(*t) <= window)
    }

    /// Whether a (pre-)vote request must be refused: the store just reopened, or the
    /// replica follows a leader on a node this one supports and the candidate is neither
    /// that leader nor a transferee.
    pub(crate) fn vote_refused(&self, peer: &Peer, env: &RaftEnvelope) -> bool {
        let m = &env.message;
        let is_vote = matches!(
            m.get_msg_type(),
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        );
        if !is_vote || m.context.as_ref() == CAMPAIGN_TRANSFER {
            return false;
        }
        if self.just_reopened() {
            return true;
        }
        if self.clock.now() < peer.no_votes_until {
            return true;
        }
        let own_leader_campaigns = peer.raw.raft.leader_id == m.from && m.term > peer.raw.raft.term;
        !own_leader_campaigns && self.leader_supported(peer)
    }

    /// True when the replica follows a leader on another node that this node supports.
    fn leader_supported(&self, peer: &Peer) -> bool {
        let leader = peer.raw.raft.leader_id;
        leader != raft::INVALID_ID
            && leader != peer.replica_id
            && peer
                .descriptor()
                .replica_by_id(leader)
                .is_some_and(|l| self.supports(l.node_id))
    }

    /// Whether a message with a higher term than the replica's must be refused: while the
    /// replica is bound to its leader (this node supports the leader's node, raft-rs's own
    /// check-quorum lease runs, or the store just reopened), only proof of an elected
    /// leader (an append, heartbeat or snapshot), a transfer campaign or its own leader's
    /// campaign may move it to a higher term. Anything else (a stale vote answer, a
    /// rejection) would make it forget its leader and free it to vote for a rival.
    pub(crate) fn higher_term_refused(&self, peer: &Peer, env: &RaftEnvelope) -> bool {
        use MessageType::*;
        let m = &env.message;
        let r = &peer.raw.raft;
        if m.term <= r.term || r.state == StateRole::Leader {
            return false;
        }
        let from_a_leader = matches!(m.get_msg_type(), MsgAppend | MsgHeartbeat | MsgSnapshot);
        let transfer = m.context.as_ref() == CAMPAIGN_TRANSFER;
        let own_leader =
            m.from == r.leader_id && matches!(m.get_msg_type(), MsgRequestVote | MsgRequestPreVote);
        if from_a_leader || transfer || own_leader {
            return false;
        }
        if self.just_reopened() || self.clock.now() < peer.no_votes_until {
            return true;
        }
        let bound_by_raft =
            r.leader_id != raft::INVALID_ID && r.election_elapsed < r.election_timeout();
        bound_by_raft || self.leader_supported(peer)
    }

    /// What decides, for every replica at once, whether its election timer must not run
    /// this tick (read once per tick, not once per replica).
    pub(crate) fn election_hold(&self) -> ElectionHold {
        ElectionHold {
            reopened: self.just_reopened(),
            now: self.clock.now(),
            supported: self
                .neighbours
                .iter()
                .copied()
                .filter(|n| self.supports(*n))
                .collect(),
        }
    }

    /// Records what a neighbour's batch says about support; returns the support epoch it
    /// names for us (the epoch its answers in this batch were given under).
    pub(crate) fn record_support(
        &mut self,
        node: u64,
        batch: &crate::metapb::HeartbeatBatch,
    ) -> (u64, u64) {
        // Support is renewed only by a batch newer than any before it: a replayed or
        // delayed one proves nothing about the sender now. A silence longer than the
        // support period before it means support lapsed: a new epoch.
        let now = self.clock.now();
        let window = self.ticks_as_time(self.cfg.liveness_timeout_ticks);
        let stamp = self.stamp_from.entry(node).or_default();
        if (batch.incarnation, batch.sent_at) > *stamp {
            *stamp = (batch.incarnation, batch.sent_at);
            if self
                .support_heard
                .get(&node)
                .is_some_and(|t| now.saturating_sub(*t) > window)
            {
                *self.my_epoch.entry(node).or_default() += 1;
            }
            self.support_heard.insert(node, now);
        }
        if batch.echo_incarnation == self.incarnation {
            let acked = self.support_acked.entry(node).or_default();
            *acked = (*acked).max(std::time::Duration::from_micros(batch.echo).min(now));
        }
        let epoch = (batch.incarnation, batch.support_epoch);
        let known = self.their_epoch.entry(node).or_default();
        *known = (*known).max(epoch);
        epoch
    }

    /// True when `peer` holds the lease by store liveness (see the module notes).
    pub(crate) fn liveness_lease(&self, peer: &Peer) -> bool {
        if !peer.may_read_locally() {
            return false;
        }
        let term = peer.raw.raft.term;
        let until = self.clock.now() + self.ticks_as_time(self.cfg.max_clock_offset_ticks);
        let window = self.ticks_as_time(self.cfg.liveness_timeout_ticks);
        let desc = peer.descriptor();
        let supports = |replica_id: u64| {
            let Some(rep) = desc.replica_by_id(replica_id) else {
                return false;
            };
            rep.replica_id == peer.replica_id
                || (peer.fortified.get(&rep.replica_id)
                    == Some(&(
                        term,
                        self.their_epoch
                            .get(&rep.node_id)
                            .copied()
                            .unwrap_or_default(),
                    ))
                    && self
                        .support_acked
                        .get(&rep.node_id)
                        .is_some_and(|s| *s + window > until))
        };
        // A quorum of the current configuration (both halves while joint) must support it.
        crate::quorum::is_quorum(desc, supports)
    }

    /// True while the replica of `range_id` here holds the range's lease.
    pub fn has_lease(&self, range_id: u64) -> bool {
        let now = self.clock.now();
        self.peers
            .get(&range_id)
            .is_some_and(|p| p.lease_valid(now) || self.liveness_lease(p))
    }

    /// Serves a read from the engine under the lease; gives the request back when the
    /// lease does not hold.
    pub(crate) fn try_lease_read(
        &mut self,
        req: Request,
        callback: Callback,
    ) -> Option<(Request, Callback)> {
        if !req.command.is_read() || !self.cfg.lease_reads {
            return Some((req, callback));
        }
        let now = self.now;
        let leased = self.has_lease(req.range_id);
        let Some(peer) = self.peers.get_mut(&req.range_id) else {
            return Some((req, callback));
        };
        if !leased {
            peer.last_read = now;
            return Some((req, callback));
        }
        let _ = callback.send(peer.execute_read(&req.command, self.cfg.max_scan_bytes));
        StoreMetrics::add(&self.metrics.lease_reads, 1);
        None
    }
}

/// The store's side of [`ElectionHold::holds`], taken at one instant.
pub(crate) struct ElectionHold {
    reopened: bool,
    now: std::time::Duration,
    /// The nodes this node supports (heard from within a support period).
    supported: Vec<u64>,
}

impl ElectionHold {
    /// True when a replica's election timer must not run: the store just reopened, the
    /// replica promised not to vote for a while, or it follows a leader on a node this
    /// one supports.
    pub(crate) fn holds(&self, peer: &Peer) -> bool {
        let r = &peer.raw.raft;
        if r.state == StateRole::Leader {
            return false;
        }
        if self.reopened || self.now < peer.no_votes_until {
            return true;
        }
        let leader = r.leader_id;
        r.state == StateRole::Follower
            && leader != raft::INVALID_ID
            && leader != peer.replica_id
            && peer
                .descriptor()
                .replica_by_id(leader)
                .is_some_and(|l| self.supported.contains(&l.node_id))
    }
}

impl Peer {
    /// On a leader read from within the last `recent` ticks: sends a lease renewal round
    /// (a ReadIndex probe with a fresh id from `next_read_id`). The store calls it every
    /// heartbeat interval, staggered by range id. Returns whether it sent one.
    pub(crate) fn renew_lease(
        &mut self,
        next_read_id: &mut u64,
        now: u64,
        clock_now: Duration,
        recent: u64,
    ) -> bool {
        if !self.is_leader() || now.saturating_sub(self.last_read) > recent {
            return false;
        }
        let probe = *next_read_id | PROBE_BIT;
        *next_read_id += 1;
        self.raw.read_index(probe.to_be_bytes().to_vec());
        self.lease_probes.push((probe, now, clock_now));
        self.lease_probes
            .retain(|(_, at, _)| now.saturating_sub(*at) <= recent);
        true
    }

    /// True when this replica leads, is not handing leadership over, and its engine holds
    /// every committed write: the conditions common to both proofs of the lease.
    pub(crate) fn may_read_locally(&self) -> bool {
        let r = &self.raw.raft;
        r.state == StateRole::Leader
            && r.lead_transferee.is_none()
            && self.no_lease_term != Some(r.term)
            && r.commit_to_current_term()
            && self.applied_index() >= r.raft_log.committed
    }

    /// True while this replica's lease from a recent quorum round holds at clock time
    /// `now`.
    pub(crate) fn lease_valid(&self, now: Duration) -> bool {
        self.may_read_locally() && self.lease.0 == self.raw.raft.term && now < self.lease.1
    }

    /// Records that follower `replica` answered this leader's heartbeat in `term`, in a
    /// batch sent under its node's support `epoch`.
    ///
    /// Only a follower that has acknowledged an append in this term counts (raft-rs resets
    /// `matched` to 0 when a leader is elected): an uninitialized replica answers
    /// heartbeats but never appends, and a split may replace it with a blank replica that
    /// is bound to nobody.
    pub(crate) fn fortify(&mut self, replica: u64, term: u64, epoch: (u64, u64)) {
        let r = &self.raw.raft;
        let appended = r.prs().get(replica).is_some_and(|pr| pr.matched > 0);
        if r.state == StateRole::Leader && term == r.term && appended {
            self.fortified.insert(replica, (term, epoch));
        }
    }

    /// Before stepping a vote request from this replica's own leader: the leader gave up
    /// (it campaigns), so raft-rs must not ignore it as it ignores rivals while a leader
    /// is known.
    pub(crate) fn forget_leader_if_it_campaigns(&mut self, env: &RaftEnvelope) {
        let m = &env.message;
        let is_vote = matches!(
            m.get_msg_type(),
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        );
        let r = &self.raw.raft;
        if is_vote && m.from == r.leader_id && m.term > r.term && r.state == StateRole::Follower {
            self.raw.raft.leader_id = raft::INVALID_ID;
        }
    }

    /// Extends the lease after raft-rs confirmed, in the current term, a quorum round
    /// issued at clock time `issued`; `span` is [`quorum_lease_span`].
    pub(crate) fn extend_lease(&mut self, issued: Duration, span: Duration) {
        let term = self.raw.raft.term;
        if self.raw.raft.state != StateRole::Leader {
            return;
        }
        let until = issued + span;
        if self.lease.0 != term {
            self.lease = (term, until);
        } else {
            self.lease.1 = self.lease.1.max(until);
        }
    }

    /// The clock time a lease renewal with read-index id `id` was issued at, if it is one.
    pub(crate) fn take_probe(&mut self, id: u64) -> Option<Duration> {
        if id & PROBE_BIT == 0 {
            return None;
        }
        let i = self.lease_probes.iter().position(|(p, _, _)| *p == id)?;
        Some(self.lease_probes.swap_remove(i).2)
    }
}

/// How long a lease lasts past the moment its confirming quorum round was issued.
///
/// A follower grants no vote while fewer than `election_ticks` of its ticks have run since
/// it heard the leader's heartbeat (raft-rs check-quorum). A store runs no more than
/// `d / tick_interval + 1` ticks in any span `d` of real time (ticks are caught up to the
/// clock, never run ahead of it), so those ticks take at least `election_ticks - 1`
/// intervals, and the heartbeat arrived after the round was issued. The leader's clock
/// may run fast or slow against the follower's by up to `max_clock_offset_ticks` over
/// that span.
pub(crate) fn quorum_lease_span(cfg: &crate::config::StoreConfig) -> Duration {
    let ticks = (cfg.election_ticks as u64).saturating_sub(1 + cfg.max_clock_offset_ticks);
    cfg.tick_interval
        .saturating_mul(ticks.min(u32::MAX as u64) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quorum_lease_ends_a_tick_and_the_offset_before_a_follower_may_vote() {
        let cfg = crate::config::StoreConfig {
            tick_interval: Duration::from_millis(100),
            election_ticks: 10,
            max_clock_offset_ticks: 2,
            ..Default::default()
        };
        assert_eq!(quorum_lease_span(&cfg), Duration::from_millis(700));
        let tiny = crate::config::StoreConfig {
            election_ticks: 2,
            max_clock_offset_ticks: 5,
            ..cfg
        };
        assert_eq!(
            quorum_lease_span(&tiny),
            Duration::ZERO,
            "no lease rather than an underflow"
        );
    }
}
