//! Leadership balance: each range has a *preferred leader*, and a leader that is not the
//! preferred replica hands leadership to it (raft-rs leader transfer) once that replica is
//! alive and fully caught up.
//!
//! The preferred replica of range `r` is `replicas[r % replicas.len()]`, so with ranges
//! on the same nodes each node is preferred for about 1/N of them. The rule is local and
//! deterministic: no node needs a global view, two leaders never contend for a range, and
//! after a node restarts and catches up its ranges move back to it. A preferred replica
//! that is down, cut off or behind is left alone, so balancing never costs availability.
//! (Placement by the meta range's leaseholder, as design.md sketches, can replace the
//! rule later without changing the mechanism.)

use crate::peer::Peer;
use crate::store::Store;

impl Peer {
    /// The replica that should lead this range when it is healthy.
    pub fn preferred_leader(&self) -> Option<crate::metapb::Replica> {
        let replicas = &self.descriptor().replicas;
        if replicas.is_empty() {
            return None;
        }
        Some(replicas[(self.range_id % replicas.len() as u64) as usize])
    }

    /// On a leader: transfer leadership to the preferred replica if it is caught up.
    fn maybe_transfer_to_preferred(&mut self) -> bool {
        if !self.is_leader() || self.raw.raft.lead_transferee.is_some() {
            return false;
        }
        let Some(preferred) = self.preferred_leader() else { return false };
        if preferred.replica_id == self.replica_id {
            return false;
        }
        let last = self.raw.raft.raft_log.last_index();
        let ready = self
            .raw
            .raft
            .prs()
            .get(preferred.replica_id)
            .is_some_and(|pr| pr.recent_active && pr.matched >= last);
        if ready {
            self.raw.transfer_leader(preferred.replica_id);
        }
        ready
    }
}

impl Store {
    /// Runs the balance rule on every leader, every `balance_interval_ticks` ticks.
    pub(crate) fn balance_leaders(&mut self) {
        let every = self.cfg.balance_interval_ticks;
        if every == 0 || self.now % every != 0 {
            return;
        }
        for (id, peer) in self.peers.iter_mut() {
            if peer.maybe_transfer_to_preferred() {
                tracing::debug!(range = id, "transferring leadership to the preferred replica");
                self.touched.insert(*id);
            }
        }
    }
}
