//! Draining: before a node stops, its leaders hand leadership to caught-up followers, so
//! the ranges it led keep serving instead of waiting out an election timeout (CockroachDB
//! drains leases the same way before a node shuts down).
//!
//! [`Store::drain`] marks the store as draining. From then on, every tick, each leader here
//! with a replica elsewhere (woken if quiesced) transfers leadership to a follower heard
//! from within two heartbeats that has the whole log and is not on a draining node. The
//! store's heartbeat batches say it is draining, so the other nodes' balance rule stops
//! handing it leadership, and replicas here refuse `MsgTimeoutNow` meanwhile. Draining never blocks anything: a range with
//! no fit follower keeps its leader, and the node stops anyway when its caller gives up
//! waiting. The old leader gives up its lease for the term before the transfer, exactly
//! as a balance transfer does.

use std::collections::BTreeSet;

use raft::prelude::MessageType;

use crate::peer::Peer;
use crate::store::Store;

impl Peer {
    /// On a leader: transfers leadership to a caught-up follower heard from within
    /// `fresh` ticks, if there is one and no transfer is under way.
    fn transfer_away(&mut self, now: u64, fresh: u64, draining: &BTreeSet<u64>) -> bool {
        if !self.is_leader() || self.raw.raft.lead_transferee.is_some() {
            return false;
        }
        let Some(target) = self.drain_target(now, fresh, draining) else {
            return false;
        };
        // The writes accepted this round are proposed before leadership is handed away.
        self.propose_pending(now);
        self.no_lease_term = Some(self.term());
        self.raw.transfer_leader(target);
        true
    }

    /// A follower fit to take over: heard from within `fresh` ticks, with the whole log,
    /// on a node that is not draining itself.
    fn drain_target(&self, now: u64, fresh: u64, draining: &BTreeSet<u64>) -> Option<u64> {
        let last = self.raw.raft.raft_log.last_index();
        let voters = crate::quorum::Voters::of(self.descriptor());
        let fit = |r: &&crate::metapb::Replica| {
            r.replica_id != self.replica_id
                && voters.contains(r.replica_id)
                && !draining.contains(&r.node_id)
                && self
                    .last_heard
                    .get(&r.replica_id)
                    .is_some_and(|t| now.saturating_sub(*t) <= fresh)
                && self
                    .raw
                    .raft
                    .prs()
                    .get(r.replica_id)
                    .is_some_and(|pr| pr.matched >= last)
        };
        self.descriptor()
            .replicas
            .iter()
            .find(fit)
            .map(|r| r.replica_id)
    }

    /// True for a leader that has a replica elsewhere to hand over to at all.
    fn can_hand_over(&self) -> bool {
        let voters = crate::quorum::Voters::of(self.descriptor());
        self.is_leader() && voters.ids().iter().any(|id| *id != self.replica_id)
    }
}

impl Store {
    /// Starts draining (see the module docs) and returns how many replicas here still
    /// lead. Call again to watch the count fall.
    pub fn drain(&mut self) -> usize {
        if !self.draining {
            self.draining = true;
            tracing::info!(
                node = self.node_id,
                "draining: handing leadership to other nodes"
            );
            self.drain_leaders();
        }
        self.peers.values().filter(|p| p.can_hand_over()).count()
    }

    /// Stops draining: a decommission was undone, and the node may lead again.
    pub fn undrain(&mut self) {
        if self.draining {
            self.draining = false;
            tracing::info!(node = self.node_id, "no longer draining");
        }
    }

    /// One draining step, every tick while draining.
    pub(crate) fn drain_leaders(&mut self) {
        if !self.draining {
            return;
        }
        let leaders: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| p.can_hand_over())
            .map(|(id, _)| *id)
            .collect();
        let (now, fresh) = (self.now, 2 * self.cfg.heartbeat_ticks as u64);
        for id in leaders {
            self.wake(id, false);
            let draining = &self.draining_nodes;
            if self
                .peers
                .get_mut(&id)
                .is_some_and(|p| p.transfer_away(now, fresh, draining))
            {
                self.touched.insert(id);
            }
        }
    }

    /// True for a message a draining store must not step: an invitation to take
    /// leadership.
    pub(crate) fn refused_while_draining(&self, t: MessageType) -> bool {
        self.draining && t == MessageType::MsgTimeoutNow
    }
}
