//! The end of a round: handling the Ready of every replica that has one, in the order
//! raft-rs requires, with one write batch and one fsync for all of them.
//!
//! Phase 1, for each replica with a Ready: set aside `messages()`; stage the snapshot, the
//! committed entries' effects, the new entries and the hard state into the shared batch;
//! note confirmed read indexes. Then hand the set-aside messages to the caller's `send_now`
//! *before* the write, and write once, synced when any Ready asked for it, and answer what
//! was applied.
//!
//! Sending before the write is what raft-rs's split of the Ready allows (Raft thesis
//! §10.2.1): `messages()` are a leader's — appends and heartbeats — and a leader counts its
//! own copy of an entry toward the commit quorum only once `advance` reports it persisted,
//! so the followers' fsyncs run while the leader's does, and a leader that crashes before
//! its write loses nothing a quorum acknowledged. Everything a follower or candidate says
//! (votes, append answers) is in `persisted_messages()` and waits for the write.
//!
//! Phase 2, once that write is durable: queue `persisted_messages()`, `advance` each
//! replica, and handle its `LightReady` (new commit index, more messages, more committed
//! entries) into a second batch. That batch needs no fsync: it holds only applied state,
//! which can be rebuilt from the synced log after a crash, and RocksDB keeps the order of
//! writes. Then `advance_apply`, serve reads whose index is applied, and truncate logs.

use raft::prelude::{Message, MessageType};
use raft::SnapshotStatus;

use super::heartbeat::as_beat;
use super::ApplyContext;
use crate::error::{Error, Result};
use crate::metrics::StoreMetrics;
use crate::peer::Peer;
use crate::store::Store;
use crate::transport::RaftEnvelope;

impl Store {
    /// Ends the round: persists and applies everything the touched replicas produced and
    /// returns the messages to send, one batch per destination node. Leaders' messages that
    /// may leave before the round's write (see the module doc) go to `send_now`, one batch
    /// per destination node, just before it. An `Err` is a storage failure; the store must
    /// stop.
    pub fn end_round(
        &mut self,
        send_now: impl FnMut(u64, Vec<RaftEnvelope>),
    ) -> Result<Vec<(u64, Vec<RaftEnvelope>)>> {
        let _span = tracing::trace_span!("round", node = self.node_id).entered();
        if let Err(e) = self.before_proposing() {
            // The writes waiting for this round's entries were never proposed: their
            // callers learn that for certain, not an unknown outcome.
            self.fail_pending_writes();
            return Err(e);
        }
        self.propose_pending_writes();
        let touched = std::mem::take(&mut self.touched);
        let mut ctx = ApplyContext::default();
        let readied = self.persist_readies(&touched, &mut ctx, send_now)?;
        self.advance_readies(readied, &mut ctx)?;
        // Only now, with every Ready of the round advanced, may a split-created replica
        // replace an uninitialized one.
        self.create_split_peers(&mut ctx)?;
        self.after_conf_changes(std::mem::take(&mut ctx.conf_changed))?;
        self.meta_updates.append(&mut ctx.meta);
        self.pending_snapshots.clear();
        for id in &touched {
            if let Some(peer) = self.peers.get_mut(id) {
                peer.serve_reads(&self.metrics, self.cfg.max_scan_bytes);
                if peer.raw.has_ready() {
                    self.touched.insert(*id);
                }
            }
        }
        // A step of a membership change applied: propose the next one.
        self.advance_changes();
        if !touched.is_empty() {
            StoreMetrics::add(&self.metrics.rounds, 1);
        }
        Ok(self.take_outbox())
    }

    /// Phase 1: stage every Ready into one batch, send the leaders' messages, write.
    fn persist_readies(
        &mut self,
        touched: &std::collections::BTreeSet<u64>,
        ctx: &mut ApplyContext,
        mut send_now: impl FnMut(u64, Vec<RaftEnvelope>),
    ) -> Result<Vec<(u64, raft::Ready)>> {
        let mut wb = self.engine.batch();
        let mut early = std::collections::BTreeMap::new();
        let mut must_sync = false;
        let mut readied = Vec::new();
        for id in touched {
            let Some(peer) = self.peers.get_mut(id) else {
                continue;
            };
            if !peer.raw.has_ready() {
                continue;
            }
            let mut rd = peer.raw.ready();
            if rd
                .ss()
                .is_some_and(|ss| ss.raft_state == raft::StateRole::Leader)
            {
                self.meta_updates.extend(peer.meta_entry());
            }
            let out = Outbound {
                outbox: &mut early,
                beats: &mut self.beats,
                quiet: !self.awake.contains(id),
            };
            queue_messages(out, self.node_id, peer, rd.take_messages());
            if let Some(hs) = rd.hs() {
                // Staged first: an early flush for a snapshot must not persist the old term.
                peer.raw.mut_store().set_hard_state(hs);
            }
            if !rd.snapshot().is_empty() {
                let node_id = self.node_id;
                fail::fail_point!("raftstore::before_snapshot_apply", |_| Err(
                    Error::StoreStopped { node_id }
                ));
                let index = rd.snapshot().get_metadata().index;
                let files = peer
                    .raw
                    .mut_store()
                    .apply_snapshot(rd.snapshot(), &mut wb)?;
                peer.abandon_proposals_through(index, ctx);
                // Later entries of this round must read the snapshot's data: write the
                // cleared span and the new state now, then ingest the files over them.
                self.engine
                    .write(std::mem::replace(&mut wb, self.engine.batch()), true)?;
                if let Some((key, files)) = files {
                    fail::fail_point!("raftstore::before_snapshot_ingest", |_| Err(
                        Error::StoreStopped { node_id }
                    ));
                    self.snaps.ingest(&self.engine, key, &files)?;
                    wb.delete(
                        flotilla_engine::Cf::Meta,
                        &flotilla_engine::keys::pending_ingest_key(key.range_id),
                    );
                }
                ctx.batch_written();
                StoreMetrics::add(&self.metrics.snapshots_applied, 1);
            }
            peer.apply_entries(rd.take_committed_entries(), &mut wb, ctx)?;
            peer.raw.mut_store().append(rd.entries(), &mut wb);
            peer.raw.mut_store().stage_dirty(&mut wb);
            peer.on_read_states(rd.take_read_states(), &self.cfg);
            must_sync |= rd.must_sync();
            readied.push((*id, rd));
            self.stage_splits(&mut wb, ctx);
        }
        for (to, batch) in early {
            send_now(to, batch);
        }
        fail::fail_point!("raftstore::before_log_write", |_| Err(self.crashed_here()));
        if !wb.is_empty() {
            let sync = must_sync && self.cfg.sync_log;
            self.engine.write(wb, sync)?;
            StoreMetrics::add(&self.metrics.raft_log_writes, 1);
            if sync {
                StoreMetrics::add(&self.metrics.raft_log_syncs, 1);
            }
        }
        fail::fail_point!("raftstore::after_log_write", |_| Err(self.crashed_here()));
        ctx.batch_written();
        ctx.send_answers(&self.metrics);
        Ok(readied)
    }

    /// Phase 2: advance every replica whose Ready is now durable and handle its LightReady.
    fn advance_readies(
        &mut self,
        readied: Vec<(u64, raft::Ready)>,
        ctx: &mut ApplyContext,
    ) -> Result<()> {
        let mut wb = self.engine.batch();
        let mut advanced = Vec::with_capacity(readied.len());
        for (id, mut rd) in readied {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            let quiet = !self.awake.contains(&id);
            let out = Outbound {
                outbox: &mut self.outbox,
                beats: &mut self.beats,
                quiet,
            };
            queue_messages(out, self.node_id, peer, rd.take_persisted_messages());
            let mut light = peer.raw.advance(rd);
            if let Some(commit) = light.commit_index() {
                peer.raw.mut_store().set_commit(commit);
            }
            let out = Outbound {
                outbox: &mut self.outbox,
                beats: &mut self.beats,
                quiet,
            };
            queue_messages(out, self.node_id, peer, light.take_messages());
            peer.apply_entries(light.take_committed_entries(), &mut wb, ctx)?;
            advanced.push(id);
            self.stage_splits(&mut wb, ctx);
        }
        for id in &advanced {
            if let Some(peer) = self.peers.get_mut(id) {
                if let Some(compacted) = peer.maybe_compact_log(&self.cfg, &mut wb)? {
                    tracing::debug!(range = id, compacted, "truncated raft log");
                    StoreMetrics::add(&self.metrics.log_compactions, 1);
                }
                peer.trim_entry_cache();
                peer.raw.mut_store().stage_dirty(&mut wb);
            }
        }
        fail::fail_point!(
            "raftstore::before_apply_write",
            |_| Err(self.crashed_here())
        );
        if !wb.is_empty() {
            self.engine.write(wb, false)?;
        }
        ctx.batch_written();
        ctx.send_answers(&self.metrics);
        for id in advanced {
            if let Some(peer) = self.peers.get_mut(&id) {
                peer.raw.advance_apply();
                peer.report_snapshots_sent();
            }
        }
        Ok(())
    }
}

impl Store {
    /// The part of a round before its waiting writes are proposed; an `Err` stops the store.
    fn before_proposing(&mut self) -> Result<()> {
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
        // Deaths are judged here, after the round's messages were handled, never while
        // catching up ticks: a store that was busy (or frozen) for a second has the other
        // nodes' beats waiting in its mailbox, and they are not dead.
        self.check_liveness();
        let removed = std::mem::take(&mut self.removed_received);
        self.on_removed_notices(removed)?;
        // Fails the round of the node whose id is the fault point's argument.
        fail::fail_point!("raftstore::before_propose_pending", |node: Option<
            String,
        >| {
            match node.is_some_and(|n| n == self.node_id.to_string()) {
                true => Err(self.crashed_here()),
                false => Ok(()),
            }
        });
        Ok(())
    }

    /// The error a configured fault point returns: the round fails as on a storage error.
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    fn crashed_here(&self) -> Error {
        Error::StoreStopped {
            node_id: self.node_id,
        }
    }
}

/// Where a replica's messages go: envelopes per node, coalescable heartbeats per node.
struct Outbound<'a> {
    outbox: &'a mut std::collections::BTreeMap<u64, Vec<RaftEnvelope>>,
    beats: &'a mut std::collections::BTreeMap<u64, Vec<crate::metapb::Beat>>,
    /// The replica is quiesced.
    quiet: bool,
}

/// Wraps raft-rs messages in envelopes and queues them per destination node; heartbeats
/// without a read context join the node's coalesced batch (`heartbeat.rs`). Snapshots
/// handed out are noted in the peer, to be reported once the peer may be stepped again.
fn queue_messages(out: Outbound<'_>, node_id: u64, peer: &mut Peer, messages: Vec<Message>) {
    if messages.is_empty() {
        return;
    }
    let desc = peer.descriptor();
    let Some(from) = desc.replica_on(node_id) else {
        return;
    };
    let mut snapshots_to = Vec::new();
    for message in messages {
        let Some(to) = desc
            .replica_by_id(message.to)
            .or_else(|| peer.peer_cache.get(&message.to).copied())
        else {
            tracing::debug!(
                range = peer.range_id,
                to = message.to,
                "message to unknown replica"
            );
            continue;
        };
        if message.get_msg_type() == MessageType::MsgSnapshot {
            snapshots_to.push(to.replica_id);
        }
        if let Some(beat) = as_beat(peer.range_id, &message) {
            // A quiesced follower does not answer the heartbeat that quiesced it.
            if !(beat.response && out.quiet) {
                out.beats.entry(to.node_id).or_default().push(beat);
            }
            continue;
        }
        let env = RaftEnvelope {
            range_id: peer.range_id,
            from,
            to,
            message,
        };
        out.outbox.entry(to.node_id).or_default().push(env);
    }
    peer.snapshots_sent.extend(snapshots_to);
}

impl Peer {
    /// Tells raft-rs that the snapshots queued this round have been handed to the
    /// transport. Without it a leader waits forever for a snapshot that was lost in
    /// transit. Reporting `Finish` moves the follower to probing: if the snapshot never
    /// arrived, the next heartbeat response shows the follower still behind and a new
    /// snapshot is sent. Must run after `advance`, never between `ready` and `advance`.
    fn report_snapshots_sent(&mut self) {
        for to in std::mem::take(&mut self.snapshots_sent) {
            self.raw.report_snapshot(to, SnapshotStatus::Finish);
        }
    }
}
