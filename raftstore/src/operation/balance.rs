//! Leadership balance: each range has a *preferred leader*, and a leader that is not the
//! preferred replica hands leadership to it (raft-rs leader transfer) once that replica is
//! alive and fully caught up.
//!
//! Which replica is preferred is written in the range's descriptor: the placement loop
//! (`flotilla_router::placement::leaders`, on the meta range's leaseholder) chooses the
//! node and proposes [`Command::PreferLeader`](crate::Command::PreferLeader), a replicated
//! admin command applied here, so every replica agrees and the choice survives restarts and
//! leader changes (a split's left half keeps it; the right half, a new range, starts
//! from the fallback rule). Without a choice (a new
//! cluster, or the chosen node no longer holds a voter) the preferred voter is
//! `voters[range_id % voters.len()]`, which spreads leaders evenly over ranges on the
//! same nodes with nothing decided at all.
//!
//! The mechanism stays local: no node needs a global view to act, two leaders never
//! contend for a range, and after a node restarts and catches up its ranges move back to
//! it. A preferred replica that was not heard from within two heartbeats, or is behind,
//! is left alone, and after each attempt a range waits four intervals, so a preferred
//! replica that keeps failing costs at most an occasional transfer window (raft-rs
//! pauses proposals during one). A replica on a node that announced it is draining
//! (`drain.rs`) is never handed leadership: it would refuse, and the refused transfer
//! would pause the range.

use std::collections::BTreeSet;

use crate::peer::Peer;

impl Peer {
    /// The replica that should lead this range when it is healthy.
    pub fn preferred_leader(&self) -> Option<crate::metapb::Replica> {
        self.descriptor().preferred_voter()
    }

    /// On a leader: transfer leadership to the preferred replica if it was heard from
    /// within `fresh` ticks and has the whole log. After an attempt, waits `cooldown`
    /// ticks before the next, so a preferred replica that keeps failing is not handed
    /// leadership (and proposals paused) over and over.
    pub(crate) fn maybe_transfer_to_preferred(
        &mut self,
        now: u64,
        fresh: u64,
        cooldown: u64,
        draining: &BTreeSet<u64>,
    ) -> bool {
        if !self.is_leader() || self.raw.raft.lead_transferee.is_some() || self.change_job.is_some()
        {
            // (A membership change moves leadership itself when it must.)
            return false;
        }
        if self
            .last_transfer
            .is_some_and(|t| now.saturating_sub(t) < cooldown)
        {
            return false;
        }
        let Some(preferred) = self.preferred_leader() else {
            return false;
        };
        if preferred.replica_id == self.replica_id || draining.contains(&preferred.node_id) {
            return false;
        }
        let last = self.raw.raft.raft_log.last_index();
        let heard = self
            .last_heard
            .get(&preferred.replica_id)
            .is_some_and(|t| now.saturating_sub(*t) <= fresh);
        let caught_up = self
            .raw
            .raft
            .prs()
            .get(preferred.replica_id)
            .is_some_and(|pr| pr.matched >= last);
        if heard && caught_up {
            // The transferee's campaign bypasses support: no lease for the rest of the term.
            // The writes accepted this round are proposed before leadership is handed away.
            self.propose_pending(now);
            self.no_lease_term = Some(self.term());
            self.raw.transfer_leader(preferred.replica_id);
            self.last_transfer = Some(now);
        }
        heard && caught_up
    }
}

impl Peer {
    /// Applies a `PreferLeader` command: records `node_id` as the preferred leader (a
    /// no-op when it already is). Refused, the same way on every replica, when the node
    /// holds no voter of the range. A leader publishes the descriptor to the meta range
    /// either way, so a record that missed an earlier preference is brought up to date.
    pub(crate) fn apply_prefer_leader(
        &mut self,
        node_id: u64,
        wb: &mut flotilla_engine::WriteBatch,
        ctx: &mut super::apply::ApplyContext,
    ) -> crate::Result<crate::Response> {
        let desc = self.descriptor().clone();
        if desc.voter_on(node_id).is_none() {
            return Err(crate::Error::not_a_voter(&desc, node_id));
        }
        let new = if desc.preferred_node == node_id {
            desc
        } else {
            let new = crate::metapb::RangeDescriptor {
                preferred_node: node_id,
                preference_ver: desc.preference_ver + 1,
                ..desc
            };
            self.raw.mut_store().set_descriptor(new.clone(), wb);
            tracing::debug!(
                range = self.range_id,
                node = node_id,
                "preferred leader recorded"
            );
            new
        };
        if self.is_leader() && self.range_id != crate::keyspace::META_RANGE_ID {
            let leader = new.replica_on(self.node_id);
            ctx.meta.push(crate::metapb::MetaEntry {
                descriptor: Some(new.clone()),
                leader,
                term: self.term(),
            });
        }
        Ok(crate::Response::Replicas(new))
    }
}
