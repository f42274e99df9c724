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
//!   replica [`RangeDescriptor::successor_without`] names campaigns at once, and again
//!   every other tick for an election timeout while no leader is known. The others keep
//!   their randomised timers as the fallback;
//! - when a store opens for the first time, the preferred voter of each range that never
//!   had a leader campaigns the same way.
//!
//! Safety does not rest on any of this. A vote is still refused while the voter supports
//! the old leader's node or has promised not to vote (`lease.rs`), so an early campaign is
//! at worst refused and retried; and the election clock is only moved to what it would
//! have read anyway, which keeps raft-rs's check-quorum bound that the quorum lease
//! relies on (`lease.rs::quorum_lease_span`).
//!
//! [`RangeDescriptor::successor_without`]: crate::metapb::RangeDescriptor::successor_without

use raft::StateRole;

use crate::peer::Peer;
use crate::store::Store;

impl Store {
    /// Node `node` was declared dead: every range it led elects a successor now.
    pub(crate) fn elect_successors_of(&mut self, node: u64) {
        let silent = self.now.saturating_sub(self.node_heard.get(&node).copied().unwrap_or(0));
        let (me, until) = (self.node_id, self.now + self.cfg.election_ticks as u64);
        let mut campaigned = 0u64;
        for (id, peer) in self.peers.iter_mut() {
            if peer.raw.raft.state == StateRole::Leader || peer.leader().is_none_or(|l| l.node_id != node) {
                continue;
            }
            peer.age_election_clock(silent);
            let successor = peer.descriptor().successor_without(node);
            let named = successor.is_some_and(|s| s.node_id == me && s.replica_id == peer.replica_id);
            // raft-rs's `campaign` does not check that it may: an uninitialized replica
            // (no configuration) would "win" alone.
            if named && peer.may_campaign() {
                let _ = peer.raw.campaign();
                peer.campaign_until = Some(until);
                self.touched.insert(*id);
                campaigned += 1;
            }
        }
        if campaigned > 0 {
            tracing::info!(node = self.node_id, lost = node, ranges = campaigned, "campaigning for the ranges a dead node led");
        }
    }

    /// On a store opened for the first time: the preferred voter of every range that has
    /// never had a leader campaigns from its first ticks.
    pub(crate) fn campaign_new_ranges(&mut self) {
        if self.incarnation != 1 {
            return;
        }
        let until = self.now + self.cfg.election_ticks as u64;
        for peer in self.peers.values_mut() {
            let r = &peer.raw.raft;
            // A bootstrapped range starts with its log empty at the initial index; any
            // leader appends to it at once, and any vote is recorded.
            let never_led = r.raft_log.last_index() == crate::storage::SPLIT_INIT_INDEX
                && r.vote == raft::INVALID_ID
                && r.leader_id == raft::INVALID_ID
                && peer.may_campaign();
            let preferred = peer.preferred_leader().is_some_and(|p| p.replica_id == peer.replica_id);
            if never_led && preferred {
                peer.campaign_until = Some(until);
            }
        }
    }
}

impl Peer {
    /// True when this replica may stand for election: it holds the range's data and is a
    /// voter of the configuration raft-rs runs.
    pub(crate) fn may_campaign(&self) -> bool {
        self.raw.store().is_initialized() && self.raw.raft.promotable()
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
