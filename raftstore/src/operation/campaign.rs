//! Elections the store starts itself instead of waiting out a randomised timeout.
//!
//! Raft replaces a lost leader by letting every follower wait its own election timeout
//! (one to two seconds here) and then campaign; a new cluster elects the same way from
//! nothing. With thousands of ranges per node this is slow, and wasteful: followers of one
//! range time out together and split the vote, and each range waits out its full timeout
//! although node liveness has already said, once for all of them, that the leader is gone.
//! So one replica per range is named to campaign at once. Every node names the same one
//! from the descriptor alone, with no message needed to agree:
//! - when node liveness declares a node dead, each range led from there has its election
//!   clock here moved to the time the node has been silent (what it would read had the
//!   replica ticked all along, quiesced or not), capped at the election timeout, and the
//!   replica [`RangeDescriptor::successor_without`] names campaigns at once (or, past the
//!   tick's budget, at a later tick); a failed campaign is retried by raft-rs's own timer.
//!   The others keep their randomised timers, set to the far end of their range, as the
//!   fallback;
//! - when a store opens for the first time, the preferred voter of each range that never
//!   had a leader campaigns the same way, from a queue drained within the budget; the
//!   range's other replicas sleep until a vote request wakes them, with a fallback wake
//!   and timer hold of five election timeouts past the queue's drain time (nodes of a new
//!   cluster start seconds apart).
//!
//! A voter that has not yet declared the death itself (it heard the dead node's last beat
//! a little later) must still refuse such a campaign, or raft-rs ignores it as within the
//! old leader's lease. It holds the request instead ([`Store::hold_vote`]) and steps it
//! again when it declares the same node dead, so the candidate does not wait out its
//! election timeout for an answer that was only early.
//!
//! A store starts at most `max_campaigns_per_tick` campaigns per tick (of any kind, raft-rs's
//! own timeouts included), fewer while it catches up missed ticks; a replica whose
//! campaign is due beyond that waits a tick with its clocks stopped. Retries are spaced by
//! the election timeout, never sooner: a campaign restarted before its vote answers came
//! back would throw the answers away. Without the budget, 100,000 new ranges campaigned together, the vote
//! traffic took longer to handle than an election timeout, every candidate timed out and
//! campaigned again, and no range ever elected.
//!
//! Safety does not rest on any of this. A vote is still refused while the voter supports
//! the old leader's node or has promised not to vote (`lease.rs`), so an early campaign is
//! at worst refused and retried; and the election clock is only moved to what it would
//! have read anyway, which keeps raft-rs's check-quorum bound that the quorum lease
//! relies on (`lease.rs::quorum_lease_span`).
//!
//! [`RangeDescriptor::successor_without`]: crate::metapb::RangeDescriptor::successor_without

use raft::prelude::MessageType;
use raft::{StateRole, CAMPAIGN_TRANSFER};

use crate::peer::Peer;
use crate::transport::RaftEnvelope;

/// A new range's replicas other than its preferred voter hold their election timers this
/// many election timeouts, so that the preferred voter campaigns alone (they are the
/// fallback if it never comes up).
const FALLBACK_HOLD: u64 = 5;
use crate::store::Store;

impl Store {
    /// Node `node` was declared dead: every range it led elects a successor now.
    pub(crate) fn elect_successors_of(&mut self, node: u64) {
        let silent = self
            .now
            .saturating_sub(self.node_heard.get(&node).copied().unwrap_or(0));
        let me = self.node_id;
        let mut campaigned = 0u64;
        for (id, peer) in self.peers.iter_mut() {
            if peer.raw.raft.state == StateRole::Leader
                || peer.leader().is_none_or(|l| l.node_id != node)
            {
                continue;
            }
            peer.age_election_clock(silent);
            let successor = peer.descriptor().successor_without(node);
            let named =
                successor.is_some_and(|s| s.node_id == me && s.replica_id == peer.replica_id);
            // raft-rs's `campaign` does not check that it may: an uninitialized replica
            // (no configuration) would "win" alone.
            if !named || !peer.may_campaign() {
                // The fallback: its own timer, at the far end of its range, so that it
                // does not split the vote with the named successor.
                let latest = 2 * peer.raw.raft.election_timeout() - 1;
                peer.raw.raft.set_randomized_election_timeout(latest);
                continue;
            }
            // It campaigns now if this tick's budget allows, else at a later tick; if
            // that campaign fails, raft-rs's timer tries again an election timeout later.
            if self.campaigns_left > 0 {
                self.campaigns_left -= 1;
                let _ = peer.raw.campaign();
            } else {
                peer.campaign_asked = true;
            }
            self.touched.insert(*id);
            campaigned += 1;
        }
        self.restep_held_votes(node);
        if campaigned > 0 {
            tracing::info!(
                node = self.node_id,
                lost = node,
                ranges = campaigned,
                "campaigning for the ranges a dead node led"
            );
        }
    }

    /// Before a vote request is stepped into `range_id`'s replica: if its leader's node has
    /// been silent past the liveness timeout by the clock, the replica's election clock is
    /// aged to that silence now, as `elect_successors_of` will do when the end of the round
    /// declares the node dead. Messages are handled before the round's missed ticks and
    /// deaths are judged after them, so without this the named successor's vote request
    /// reached a replica whose timer still read "leader heard from": raft-rs ignored it,
    /// and the range waited out a whole election timeout (failover at 10,001 ranges went
    /// from 1.3 s to 2.4 s). The store's own support check has already weighed the vote.
    pub(crate) fn age_if_leader_silent(&mut self, range_id: u64) {
        let now = self.clock_tick();
        let timeout = self.cfg.liveness_timeout_ticks;
        let me = self.node_id;
        let Some(peer) = self.peers.get_mut(&range_id) else {
            return;
        };
        let Some(leader) = peer.leader().filter(|l| l.node_id != me) else {
            return;
        };
        let silent = now.saturating_sub(self.node_heard.get(&leader.node_id).copied().unwrap_or(0));
        if silent > timeout {
            peer.age_election_clock(silent);
        }
    }

    /// Remembers a vote request that this node refused, or that raft-rs is about to
    /// ignore (`in_lease`), because the replica's leader is on another node heard from too
    /// recently. Nodes hear a dying node's last message at slightly different times, so
    /// the named successor, which declared the death first, asks voters that have not yet:
    /// without this their replicas drop the request and the range waits out the
    /// candidate's whole election timeout (at 10,001 ranges, a tenth of the ranges a dead
    /// node led were elected up to a second late). Stepped again by
    /// [`Store::restep_held_votes`] if this node declares the leader's node dead within an
    /// election timeout; forgotten otherwise.
    pub(crate) fn hold_vote(&mut self, env: &RaftEnvelope, only_in_lease: bool) {
        let me = self.node_id;
        let Some(peer) = self.peers.get(&env.range_id) else {
            return;
        };
        let r = &peer.raw.raft;
        let m = &env.message;
        let is_vote = matches!(
            m.get_msg_type(),
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        );
        // raft-rs's own test (check-quorum is always on here).
        let in_lease = r.leader_id != raft::INVALID_ID && r.election_elapsed < r.election_timeout();
        let leader_elsewhere = peer
            .leader()
            .is_some_and(|l| l.node_id != me && l.replica_id != env.from.replica_id);
        if is_vote
            && m.term > r.term
            && (in_lease || !only_in_lease)
            && leader_elsewhere
            && m.context.as_ref() != CAMPAIGN_TRANSFER
        {
            self.held_votes
                .insert(env.range_id, (env.clone(), self.now));
        }
    }

    /// Steps again the held vote requests of ranges led from `node`, just declared dead
    /// (their election clocks aged): as if the network had delivered them now. They go
    /// through every check a new message does, the support check included.
    fn restep_held_votes(&mut self, node: u64) {
        let ids: Vec<u64> = self
            .held_votes
            .keys()
            .copied()
            .filter(|id| {
                self.peers
                    .get(id)
                    .and_then(|p| p.leader())
                    .is_some_and(|l| l.node_id == node)
            })
            .collect();
        for id in ids {
            if let Some((env, _)) = self.held_votes.remove(&id) {
                self.step_envelope(env);
            }
        }
    }

    /// Forgets held vote requests older than an election timeout: their candidates have
    /// campaigned again since, or won.
    pub(crate) fn expire_held_votes(&mut self) {
        let (now, timeout) = (self.now, self.cfg.election_ticks as u64);
        self.held_votes
            .retain(|_, (_, at)| now.saturating_sub(*at) <= timeout);
    }

    /// On a store opened for the first time: every range that never had a leader starts
    /// asleep. Its preferred voter here joins a queue of campaigns, which `advance` starts
    /// within the campaign budget (waking the replica); its other replicas are woken by
    /// the first vote request, or, as the fallback, once the queue here has had time to
    /// drain and a few election timeouts more have passed. So a new cluster of 100,000
    /// ranges is not 100,000 awake replicas per node, each walked every tick.
    pub(crate) fn campaign_new_ranges(&mut self) {
        if self.incarnation != 1 {
            return;
        }
        let Store {
            peers,
            awake,
            new_campaigns,
            new_followers,
            ..
        } = self;
        for (id, peer) in peers.iter_mut() {
            if !peer.never_led() || peer.raw.raft.vote != raft::INVALID_ID || !peer.may_campaign() {
                continue;
            }
            awake.remove(id);
            match peer
                .preferred_leader()
                .is_some_and(|p| p.replica_id == peer.replica_id)
            {
                true => new_campaigns.push_back(*id),
                false => new_followers.push(*id),
            }
        }
        let budget = self.cfg.max_campaigns_per_tick.max(1);
        let drain = self.new_campaigns.len() as u64 / budget + 1;
        self.new_followers_wake_at =
            self.now + drain + FALLBACK_HOLD * self.cfg.election_ticks as u64;
        let held = self.new_followers_wake_at;
        for id in &self.new_followers {
            if let Some(p) = self.peers.get_mut(id) {
                p.election_held_until = held;
            }
        }
    }

    /// Starts queued campaigns of new ranges while the tick's budget lasts and fewer than
    /// `awake_limit` replicas here are awake, and, once the queue has
    /// drained and the fallback time passed, wakes the new ranges' other replicas that
    /// still know no leader, within the same limits.
    pub(crate) fn start_new_campaigns(&mut self) {
        while self.campaigns_left > 0 && !self.too_awake() {
            let Some(id) = self.new_campaigns.pop_front() else {
                break;
            };
            let unled = self
                .peers
                .get(&id)
                .is_some_and(|p| p.raw.raft.leader_id == raft::INVALID_ID && !p.is_leader());
            if !unled {
                continue;
            }
            self.wake(id, false);
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if peer.may_campaign() {
                self.campaigns_left -= 1;
                let _ = peer.raw.campaign();
                self.touched.insert(id);
            }
        }
        let waiting = self.new_campaigns.len() as u64;
        crate::metrics::StoreMetrics::add(&self.metrics.campaigns_deferred, waiting);
        if self.new_followers.is_empty() {
            return;
        }
        if waiting > 0 {
            // Still campaigning here, slower than planned (the awake limit): the fallback
            // waits until this node's queue has drained, and its hold more.
            let hold = FALLBACK_HOLD * self.cfg.election_ticks as u64;
            self.new_followers_wake_at = self.new_followers_wake_at.max(self.now + hold);
            return;
        }
        while self.now >= self.new_followers_wake_at && self.campaigns_left > 0 && !self.too_awake()
        {
            let Some(id) = self.new_followers.pop() else {
                break;
            };
            if self
                .peers
                .get(&id)
                .is_some_and(|p| p.raw.raft.leader_id == raft::INVALID_ID)
            {
                // Woken, it may campaign once its timer runs out: count it in the budget.
                self.campaigns_left -= 1;
                self.wake(id, false);
            }
        }
    }

    /// True while so many replicas here are awake that a new range's election must wait.
    pub(crate) fn too_awake(&self) -> bool {
        let limit = self.cfg.awake_limit;
        limit > 0 && self.awake.len() >= limit
    }
}

impl Peer {
    /// True while this replica knows no leader and its log is still the bootstrapped one:
    /// any leader appends to it at once, so no range it is part of has had one that
    /// reached it.
    pub(crate) fn never_led(&self) -> bool {
        let r = &self.raw.raft;
        r.leader_id == raft::INVALID_ID
            && r.raft_log.last_index() == crate::storage::SPLIT_INIT_INDEX
    }

    /// True when this replica may stand for election: it holds the range's data and is a
    /// voter of the configuration raft-rs runs.
    pub(crate) fn may_campaign(&self) -> bool {
        self.raw.store().is_initialized() && self.raw.raft.promotable()
    }

    /// Starts the campaign asked for, if one was (the caller checked the budget).
    pub(crate) fn campaign_if_asked(&mut self) {
        if std::mem::take(&mut self.campaign_asked)
            && self.may_campaign()
            && self.raw.raft.state != StateRole::Leader
        {
            let _ = self.raw.campaign();
        }
    }

    /// True when this tick would start a campaign: one asked for (`campaign_asked`, or a
    /// split's retries on even ticks while no leader is known) or raft-rs's election timer
    /// running out.
    pub(crate) fn campaign_due(&self, now: u64, hold: bool) -> bool {
        let r = &self.raw.raft;
        if r.state == StateRole::Leader {
            return false;
        }
        let retry = self.campaign_until.is_some_and(|until| {
            now <= until && r.leader_id == raft::INVALID_ID && now.is_multiple_of(2)
        });
        let asked = self.campaign_asked || retry;
        let timer =
            !hold && r.promotable() && r.election_elapsed + 1 >= r.randomized_election_timeout();
        (asked && self.may_campaign()) || timer
    }

    /// Moves raft-rs's election clock to `silent` ticks (capped at the election timeout)
    /// if it reads less: the ticks since the leader's node was last heard from, which a
    /// quiesced replica did not count.
    fn age_election_clock(&mut self, silent: u64) {
        let r = &mut self.raw.raft;
        let aged = (silent.min(usize::MAX as u64) as usize).min(r.election_timeout());
        r.election_elapsed = r.election_elapsed.max(aged);
    }
}
