//! The life of a replica on a node: which messages may create one, which are refused,
//! and how one is destroyed.
//!
//! Admission. A message for a range with no replica here may create an *uninitialized*
//! replica (no span, no data, no votes) when it is an append, heartbeat or snapshot
//! addressed to this node — that is how a new learner, or the right half of a split
//! this node has not applied yet, comes into being. Messages to a replica id this node
//! has destroyed (at or below the range's tombstone) are refused, so an old incarnation
//! is never re-created. A message to a *higher* replica id than the one here means this
//! node's replica was removed and a new one added since: the old one is destroyed and
//! the new one created.
//!
//! Destruction. A replica that applies a configuration without itself, or that is told
//! by a current member that a committed configuration no longer lists it, deletes the
//! range's data span, log and state in one synced write that also records its tombstone
//! (range id, replica id). A node that was down or cut off while its replica was removed
//! finds out by asking: a follower that has not heard from a leader for
//! `replica_gc_check_ticks` sends a `MembershipCheck` to the other members (inside the
//! node-level heartbeat batch), and a member whose applied descriptor no longer lists the
//! asker — with an id below the range's next replica id, so it was a member once and is
//! not one the member has yet to learn of — answers `ReplicaRemoved` with that
//! descriptor. Any Raft message from a removed replica (a removed voter campaigning) gets
//! the same answer. The answer is from applied, hence committed, state: a replica it
//! destroys cannot be needed for any quorum again.

use super::batch::Waiters;
use flotilla_engine::{keys, Cf, WriteBatch};
use prost::Message as _;
use raft::prelude::MessageType;

use crate::error::Result;
use crate::metapb::{MembershipCheck, RangeDescriptor, ReplicaRemoved, Tombstone};
use crate::metrics::StoreMetrics;
use crate::peer::Peer;
use crate::storage::PeerStorage;
use crate::store::Store;
use crate::transport::RaftEnvelope;

impl Store {
    /// Handles a message for a range with no replica here. Returns true when a new,
    /// uninitialized replica was created for it.
    pub(crate) fn maybe_create_peer(&mut self, env: &RaftEnvelope) -> bool {
        let creates = matches!(
            env.message.get_msg_type(),
            MessageType::MsgAppend | MessageType::MsgHeartbeat | MessageType::MsgSnapshot
        );
        if !creates || env.to.node_id != self.node_id || env.range_id == 0 {
            return false;
        }
        let storage =
            PeerStorage::uninitialized(self.engine.clone(), env.range_id, vec![env.to, env.from])
                .with_store(self.clock.clone(), self.snaps.clone());
        match Peer::new(
            self.node_id,
            storage,
            &self.cfg,
            self.election_seed,
            &self.logger,
        ) {
            Ok(peer) => {
                tracing::debug!(
                    range = env.range_id,
                    "created uninitialized replica from a message"
                );
                self.awake.insert(env.range_id);
                self.peers.insert(env.range_id, peer);
                self.add_neighbours(&[env.from]);
                true
            }
            Err(e) => {
                tracing::warn!(range = env.range_id, error = %e, "could not create replica");
                false
            }
        }
    }

    /// Decides whether a message for an existing replica may be stepped. Refused: votes to
    /// an uninitialized replica (it has no log to judge a candidate by), appends that its
    /// empty log would accept (an honest leader's appends start past index 5, where split
    /// ranges begin), and snapshots whose span overlaps another initialized replica here or a
    /// snapshot already accepted this round (the other replica still owns the keys; it
    /// gives them up by applying the split). An accepted snapshot's descriptor is
    /// returned, to be recorded until the round installs it.
    pub(crate) fn admit(
        &self,
        peer: &Peer,
        env: &RaftEnvelope,
    ) -> std::result::Result<Option<RangeDescriptor>, &'static str> {
        let m = &env.message;
        let initialized = peer.raw.store().is_initialized();
        if self.vote_refused(peer, env) {
            crate::metrics::StoreMetrics::add(&self.metrics.votes_refused, 1);
            return Err("vote refused: a lease may rest on this node's support");
        }
        if self.higher_term_refused(peer, env) {
            return Err("higher term refused: the replica is bound to its leader");
        }
        match m.get_msg_type() {
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote if !initialized => {
                Err("vote request to an uninitialized replica")
            }
            MessageType::MsgAppend if !initialized && m.index == 0 && !m.entries.is_empty() => {
                // Would match its empty log and be accepted without a snapshot. (An honest
                // append starts past the split's initial index, is rejected, and the
                // rejection is what makes the leader send the snapshot.)
                Err("entries at index 0 for an uninitialized replica")
            }
            MessageType::MsgSnapshot => {
                use prost::Message as _;
                let data = crate::metapb::SnapshotData::decode(m.get_snapshot().get_data());
                let desc = data
                    .ok()
                    .and_then(|d| d.descriptor)
                    .ok_or("snapshot without descriptor")?;
                if desc.range_id != peer.range_id {
                    return Err("snapshot of another range");
                }
                if !self.snaps.is_received(peer.range_id, m.get_snapshot()) {
                    // The transport hands the message over only after its files; a
                    // message without them is stale or forged. The leader sends again.
                    return Err("snapshot whose files are not here");
                }
                let installed = self
                    .peers
                    .values()
                    .filter(|p| p.range_id != peer.range_id && p.raw.store().is_initialized());
                let mut others = installed
                    .map(|p| p.descriptor())
                    .chain(self.pending_snapshots.iter());
                if others.any(|d| d.range_id != peer.range_id && overlap(d, &desc)) {
                    return Err("snapshot overlaps another replica here");
                }
                Ok(Some(desc))
            }
            _ => Ok(None),
        }
    }

    /// True (and counted) when `env` is for a replica this node destroyed.
    pub(crate) fn tombstoned(&self, env: &RaftEnvelope) -> bool {
        let dead = self
            .tombstones
            .get(&env.range_id)
            .is_some_and(|t| env.to.replica_id <= *t);
        if dead {
            StoreMetrics::add(&self.metrics.tombstoned_messages, 1);
        }
        dead
    }

    /// A message to a newer incarnation of this node's replica of the range: the one
    /// here was removed (a node never holds two replicas of a range, so the new id was
    /// allocated after the old one left). Destroys the old one so the message can create
    /// the new one.
    pub(crate) fn replace_old_incarnation(&mut self, env: &RaftEnvelope) -> Result<()> {
        let old = self.peers.get(&env.range_id).map(|p| p.replica_id);
        if let Some(old) =
            old.filter(|old| env.to.node_id == self.node_id && env.to.replica_id > *old)
        {
            tracing::info!(
                range = env.range_id,
                old,
                new = env.to.replica_id,
                "a newer replica of this node was added"
            );
            self.destroy_replica(env.range_id, old)?;
        }
        Ok(())
    }

    /// Answers a message from a replica that its range no longer lists (see the module
    /// docs); returns true when it was such a message (it is then not stepped).
    pub(crate) fn answer_removed(&mut self, env: &RaftEnvelope) -> bool {
        let notice = self
            .peers
            .get(&env.range_id)
            .and_then(|p| removal_notice(p, env.from.replica_id));
        let removed = notice.is_some();
        if let Some(notice) = notice {
            self.removed_notices
                .entry(env.from.node_id)
                .or_default()
                .push(notice);
            StoreMetrics::add(&self.metrics.messages_dropped, 1);
        }
        removed
    }

    /// Membership checks from another node's replicas: answers those that are removed.
    pub(crate) fn on_membership_checks(&mut self, from_node: u64, checks: Vec<MembershipCheck>) {
        for c in checks {
            let peer = self.peers.get(&c.range_id).filter(|p| p.replica_id == c.to);
            if let Some(notice) = peer.and_then(|p| removal_notice(p, c.replica_id)) {
                self.removed_notices
                    .entry(from_node)
                    .or_default()
                    .push(notice);
            }
        }
    }

    /// Destroys the replicas here that a member says are removed.
    pub(crate) fn on_removed_notices(&mut self, notices: Vec<ReplicaRemoved>) -> Result<()> {
        for n in notices {
            let Some(desc) = n.descriptor else { continue };
            let Some(peer) = self.peers.get(&desc.range_id) else {
                continue;
            };
            let mine = desc.epoch().conf_ver > peer.descriptor().epoch().conf_ver
                || !peer.raw.store().is_initialized();
            if peer.replica_id == n.replica_id && desc.replica_by_id(n.replica_id).is_none() && mine
            {
                tracing::info!(
                    range = desc.range_id,
                    replica = n.replica_id,
                    "replica was removed while away; destroying it"
                );
                self.destroy_replica(desc.range_id, n.replica_id)?;
            }
        }
        Ok(())
    }

    /// Every `replica_gc_check_ticks` (the tick decides when): followers that have not heard from a leader for
    /// that long ask the other members whether they are still members.
    pub(crate) fn send_membership_checks(&mut self) {
        let period = self.cfg.replica_gc_check_ticks;
        if period == 0 {
            return;
        }
        self.snaps.collect_garbage();
        for id in self.awake.iter() {
            let Some(peer) = self
                .peers
                .get(id)
                .filter(|p| p.raw.store().is_initialized() && !p.is_leader())
            else {
                continue;
            };
            let leader = peer.raw.raft.leader_id;
            let heard = peer
                .last_heard
                .get(&leader)
                .is_some_and(|t| self.now.saturating_sub(*t) < period);
            if leader != raft::INVALID_ID && heard {
                continue;
            }
            for r in peer
                .descriptor()
                .replicas
                .iter()
                .filter(|r| r.node_id != self.node_id)
            {
                let check = MembershipCheck {
                    range_id: *id,
                    replica_id: peer.replica_id,
                    to: r.replica_id,
                };
                self.membership_checks
                    .entry(r.node_id)
                    .or_default()
                    .push(check);
            }
        }
    }

    /// After a round: destroys the replicas that applied a configuration without
    /// themselves, and meets the new members' nodes.
    pub(crate) fn after_conf_changes(&mut self, changed: Vec<u64>) -> Result<()> {
        for id in changed {
            let Some(peer) = self.peers.get(&id) else {
                continue;
            };
            StoreMetrics::add(&self.metrics.conf_changes_applied, 1);
            let replicas = peer.descriptor().replicas.clone();
            if peer.descriptor().replica_by_id(peer.replica_id).is_none() {
                let replica = peer.replica_id;
                tracing::info!(
                    range = id,
                    replica,
                    "this replica was removed from its range; destroying it"
                );
                self.destroy_replica(id, replica)?;
                continue;
            }
            self.add_neighbours(&replicas);
            self.wake(id, false);
        }
        Ok(())
    }

    /// Destroys the replica of `range_id` here: its data span, log and state go, and a
    /// tombstone refusing replica ids up to `replica_id` stays — all in one synced write.
    /// Requests waiting on it are answered (`RangeNotFound`: not applied; or `Ambiguous`
    /// for proposals whose fate this replica can no longer learn).
    pub(crate) fn destroy_replica(&mut self, range_id: u64, replica_id: u64) -> Result<()> {
        let Some(peer) = self.peers.remove(&range_id) else {
            return Ok(());
        };
        let initialized = peer.raw.store().is_initialized();
        let mut wb = self.engine.batch();
        stage_destroy(peer.descriptor(), initialized, &mut wb);
        let tombstone = self
            .tombstones
            .get(&range_id)
            .copied()
            .unwrap_or(0)
            .max(replica_id);
        let record = Tombstone {
            range_id,
            replica_id: tombstone,
        };
        wb.put(
            Cf::Meta,
            &keys::tombstone_key(range_id),
            &record.encode_to_vec(),
        );
        self.engine.write(wb, true)?;
        self.tombstones.insert(range_id, tombstone);
        self.changing.remove(&range_id);
        self.snaps.forget(range_id);
        self.awake.remove(&range_id);
        self.touched.remove(&range_id);
        StoreMetrics::add(&self.metrics.replicas_destroyed, 1);
        peer.abandon_requests(self.node_id);
        Ok(())
    }
}

/// Stages the deletion of everything a replica of `desc` keeps: its data span (when it
/// holds data), its log, its raft state, apply state and descriptor.
pub(crate) fn stage_destroy(desc: &RangeDescriptor, initialized: bool, wb: &mut WriteBatch) {
    let id = desc.range_id;
    if initialized {
        wb.delete_range(Cf::Data, &desc.start, &desc.end_bound());
    }
    wb.delete_range(
        Cf::Raft,
        &keys::raft_log_key(id, 0),
        &keys::raft_log_key(id, u64::MAX),
    );
    wb.delete(Cf::Meta, &keys::descriptor_key(id));
    wb.delete(Cf::Meta, &keys::replica_state_key(id));
    // (A replica loaded from a data directory before stop 28 and never staged since.)
    wb.delete(Cf::Meta, &keys::hard_state_key(id));
    wb.delete(Cf::Meta, &keys::apply_state_key(id));
}

/// Every tombstone on the engine, by range id.
pub(crate) fn load_tombstones(
    engine: &flotilla_engine::Engine,
) -> Result<std::collections::BTreeMap<u64, u64>> {
    let (start, end) = keys::tombstone_span();
    let mut out = std::collections::BTreeMap::new();
    engine.scan(Cf::Meta, &start, &end, |_, v| {
        if let Ok(t) = Tombstone::decode(v) {
            out.insert(t.range_id, t.replica_id);
        }
        true
    })?;
    Ok(out)
}

/// The `ReplicaRemoved` answer for replica `replica_id` of `peer`'s range, when `peer`'s
/// applied descriptor no longer lists it and it was a member once (its id is below the
/// next one: not a member `peer` has yet to learn of).
fn removal_notice(peer: &Peer, replica_id: u64) -> Option<ReplicaRemoved> {
    let desc = peer.descriptor();
    let removed = peer.raw.store().is_initialized()
        && desc.replica_by_id(replica_id).is_none()
        && replica_id < desc.next_replica_id();
    removed.then(|| ReplicaRemoved {
        replica_id,
        descriptor: Some(desc.clone()),
    })
}

impl Peer {
    /// Answers everything waiting on a replica that is going away.
    fn abandon_requests(mut self, node_id: u64) {
        let range_id = self.range_id;
        for p in self.proposals {
            let reason = "the replica was removed before the outcome was seen".into();
            p.waiters
                .fail(crate::error::Error::Ambiguous { range_id, reason });
        }
        // Writes accepted but not yet proposed were not done: the range is elsewhere now.
        let (_, callbacks) = self.pending.take();
        Waiters::Many(callbacks).fail(crate::error::Error::RangeNotFound { range_id, node_id });
        for r in self.reads {
            let _ = r.callback.send(Err(crate::error::Error::RangeNotFound {
                range_id,
                node_id,
            }));
        }
        if let Some(job) = self.change_job {
            let _ = job.callback.send(Err(crate::error::Error::RangeNotFound {
                range_id,
                node_id,
            }));
        }
    }
}

fn overlap(a: &RangeDescriptor, b: &RangeDescriptor) -> bool {
    let a_below_b_end = b.end.is_empty() || a.start < b.end;
    let b_below_a_end = a.end.is_empty() || b.start < a.end;
    a_below_b_end && b_below_a_end
}
