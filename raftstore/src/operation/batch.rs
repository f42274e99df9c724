//! Many writes per Raft entry.
//!
//! Under load a leader receives several writes for the same range in one round. Each one
//! as its own entry costs a log record written and fsynced on every replica, an entry
//! encoded, shipped and decoded, and raft-rs's per-entry bookkeeping. So a plain write
//! (puts, deletes, batches, compare-and-swap) that passed every check in `propose` is not
//! proposed at once: it waits in its replica's [`PendingWrites`] until the end of the
//! round's message handling, and then all of a range's waiting writes go into one entry
//! (`RaftCommand::batch`). A range with one waiting write proposes it as before, alone,
//! so the log of a lightly loaded range looks exactly as it did.
//!
//! What a batched entry means is what its commands would mean as consecutive entries:
//! each is checked (epoch, keys) and executed on its own when it applies, in order, and
//! each waiter gets its own command's answer — a compare-and-swap that fails, or a
//! command whose epoch is stale, fails alone. An entry-wide failure (the entry was
//! overwritten by a new leader, a snapshot replaced it, the replica went away) reaches
//! every waiter. Admin commands (splits, leader preferences, meta updates) are never
//! batched; a range's waiting writes are proposed before one, so they keep their order,
//! and before a membership step or a leadership transfer (balance, drain, a change that
//! hands leadership away), so that they are neither checked against a newer epoch nor
//! dropped by raft-rs during the transfer.
//!
//! A batch is closed at [`MAX_BATCH_COMMANDS`] commands or [`MAX_BATCH_BYTES`] bytes, so
//! one entry stays well below the Raft message size limit (1 MiB).
//!
//! This is a change of the log's format: a node built before it would apply a batched
//! entry as an empty command. So a leader batches only once the cluster version allows
//! it ([`crate::version::V2_BATCHED`]): every member then runs a binary that reads
//! batched entries, and older binaries are kept out (`version.rs`). Before, each write is
//! proposed at once, alone, as before batching existed.

use prost::Message as _;

use crate::cmd::Callback;
use crate::error::Error;
use crate::metapb::RaftCommand;
use crate::peer::Peer;
use crate::store::Store;

/// The most commands one batched entry holds.
pub(crate) const MAX_BATCH_COMMANDS: usize = 256;
/// About the most bytes (encoded commands) one batched entry holds; a single command
/// larger than this is proposed alone.
pub(crate) const MAX_BATCH_BYTES: usize = 256 << 10;

/// The writes a leader accepted this round and has not proposed yet.
#[derive(Default)]
pub(crate) struct PendingWrites {
    commands: Vec<RaftCommand>,
    callbacks: Vec<Callback>,
    bytes: usize,
}

impl PendingWrites {
    pub(crate) fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    pub(crate) fn take(&mut self) -> (Vec<RaftCommand>, Vec<Callback>) {
        self.bytes = 0;
        (
            std::mem::take(&mut self.commands),
            std::mem::take(&mut self.callbacks),
        )
    }
}

/// Who waits for a proposal's outcome: one caller, or one per command of a batch (in the
/// batch's order).
pub(crate) enum Waiters {
    One(Callback),
    Many(Vec<Callback>),
}

impl Waiters {
    /// Sends `err` to every waiter.
    pub(crate) fn fail(self, err: Error) {
        match self {
            Waiters::One(cb) => {
                let _ = cb.send(Err(err));
            }
            Waiters::Many(cbs) => {
                for cb in cbs {
                    let _ = cb.send(Err(err.clone()));
                }
            }
        }
    }

    /// How many callers wait.
    pub(crate) fn len(&self) -> usize {
        match self {
            Waiters::One(_) => 1,
            Waiters::Many(cbs) => cbs.len(),
        }
    }

    /// Every waiter's callback, in order.
    pub(crate) fn into_callbacks(self) -> Vec<Callback> {
        match self {
            Waiters::One(cb) => vec![cb],
            Waiters::Many(cbs) => cbs,
        }
    }
}

/// Whether `cmd` may share an entry with other writes: plain writes only.
pub(crate) fn batchable(cmd: &RaftCommand) -> bool {
    cmd.split.is_none()
        && cmd.prefer.is_none()
        && cmd.meta_update.is_empty()
        && cmd.change.is_none()
        && cmd.batch.is_empty()
}

impl Peer {
    /// Adds a checked write to this round's batch, proposing the batch first if the write
    /// would overflow it.
    pub(crate) fn queue_write(&mut self, cmd: RaftCommand, callback: Callback, now: u64) {
        let size = cmd.encoded_len();
        let full = self.pending.commands.len() >= MAX_BATCH_COMMANDS
            || self.pending.bytes + size > MAX_BATCH_BYTES;
        if full {
            self.propose_pending(now);
        }
        self.pending.bytes += size;
        self.pending.commands.push(cmd);
        self.pending.callbacks.push(callback);
    }

    /// Proposes the writes waiting in this round's batch: one alone as itself, several as
    /// one batched entry. If this replica no longer leads, each is answered `NotLeader`.
    pub(crate) fn propose_pending(&mut self, now: u64) {
        if self.pending.is_empty() {
            return;
        }
        let (mut commands, mut callbacks) = self.pending.take();
        if !self.is_leader() {
            Waiters::Many(callbacks).fail(self.not_leader());
            return;
        }
        let (cmd, waiters) = if commands.len() == 1 {
            let cmd = commands.pop().expect("one command");
            (cmd, Waiters::One(callbacks.pop().expect("one callback")))
        } else {
            let first = &commands[0];
            let cmd = RaftCommand {
                range_id: first.range_id,
                epoch: first.epoch,
                batch: commands,
                ..Default::default()
            };
            (cmd, Waiters::Many(callbacks))
        };
        if let Err(e) = self.propose_write(&cmd, waiters, now) {
            tracing::debug!(range = self.range_id, error = %e, "proposal refused");
        }
    }
}

impl Store {
    /// Answers every replica's waiting writes `StoreStopped` (not applied): the store
    /// stops before proposing them.
    pub(crate) fn fail_pending_writes(&mut self) {
        let node_id = self.node_id;
        for peer in self.peers.values_mut() {
            if !peer.pending.is_empty() {
                let (_, callbacks) = peer.pending.take();
                Waiters::Many(callbacks).fail(Error::StoreStopped { node_id });
            }
        }
    }

    /// Proposes every replica's waiting writes (called once a round's messages are
    /// handled, before its Readies are collected).
    pub(crate) fn propose_pending_writes(&mut self) {
        let now = self.now;
        for id in &self.touched {
            if let Some(peer) = self.peers.get_mut(id) {
                peer.propose_pending(now);
            }
        }
    }
}
