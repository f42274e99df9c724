//! Applying committed entries to the state machine.
//!
//! Each committed normal entry carries a [`RaftCommand`]; applying it is deterministic on
//! every replica: the epoch and key checks, the compare-and-swap condition and the writes
//! depend only on the log and the data. Writes go into the round's write batch together
//! with the new applied index, so data and apply state land atomically. An engine failure
//! while applying is not answered to the client; it stops the store (a replica must never
//! skip an entry and diverge).
//!
//! Several entries of one round may touch the same key before the batch is written, so
//! reads made while applying (the CAS condition) go through [`ApplyContext`]'s overlay of
//! the round's not-yet-written values first.

use std::collections::{HashMap, VecDeque};

use flotilla_engine::{Cf, Engine, WriteBatch};
use prost::Message as _;
use raft::prelude::{Entry, EntryType};

use crate::cmd::{Callback, Response};
use crate::error::{Error, Result};
use crate::metapb::{MetaEntry, RaftCommand, RangeDescriptor};
use crate::metrics::StoreMetrics;
use crate::peer::{Peer, Proposal};

use super::batch::{batchable, Waiters};

/// What a round's apply has staged but not yet written, and whom to answer once it is.
#[derive(Default)]
pub(crate) struct ApplyContext {
    overlay: HashMap<Vec<u8>, Option<Vec<u8>>>,
    answers: Vec<(Callback, Result<Response>)>,
    /// Splits applied in this round, to stage and then create (see `split`).
    pub(crate) splits: Vec<super::split::SplitOutcome>,
    /// Meta records this round's leaders publish (splits, membership changes).
    pub(crate) meta: Vec<MetaEntry>,
    /// Ranges whose configuration changed in this round (`life.rs` acts on them).
    pub(crate) conf_changed: Vec<u64>,
    pub commands_applied: u64,
    pub writes_answered: u64,
    pub writes_batched: u64,
}

impl ApplyContext {
    /// Forgets the overlay once the batch it shadows has been written.
    pub fn batch_written(&mut self) {
        self.overlay.clear();
    }

    /// Queues an answer to send once the batch is written.
    pub fn answer(&mut self, callback: Callback, result: Result<Response>) {
        self.answers.push((callback, result));
    }

    /// Counts what was applied, then sends every queued answer (counted first, so a caller
    /// holding its answer sees the metrics include it). Call only after the batch is written.
    pub fn send_answers(&mut self, metrics: &StoreMetrics) {
        StoreMetrics::add(
            &metrics.commands_applied,
            std::mem::take(&mut self.commands_applied),
        );
        StoreMetrics::add(
            &metrics.writes_answered,
            std::mem::take(&mut self.writes_answered),
        );
        StoreMetrics::add(
            &metrics.writes_batched,
            std::mem::take(&mut self.writes_batched),
        );
        for (cb, result) in self.answers.drain(..) {
            let _ = cb.send(result);
        }
    }

    fn read(&self, engine: &Engine, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.overlay.get(key) {
            Some(v) => Ok(v.clone()),
            None => Ok(engine.get(Cf::Data, key)?),
        }
    }
}

impl Peer {
    /// Applies committed `entries` into `wb`, queueing answers in `ctx`. An `Err` is an
    /// engine failure: the store must stop.
    pub(crate) fn apply_entries(
        &mut self,
        entries: Vec<Entry>,
        wb: &mut WriteBatch,
        ctx: &mut ApplyContext,
    ) -> Result<()> {
        let Some(last) = entries.last().map(|e| e.index) else {
            return Ok(());
        };
        for entry in entries {
            let outcome = match entry.get_entry_type() {
                EntryType::EntryNormal if !entry.data.is_empty() => {
                    Some(self.apply_normal(&entry.data, wb, ctx)?)
                }
                // (The leave-joint change is empty; ours always carry a context. raft-rs's
                // own automatic leave would carry none, and is never asked for.)
                EntryType::EntryConfChangeV2 if !entry.context.is_empty() => {
                    let outcome = self.apply_conf_change(&entry, wb, ctx)?;
                    if let Err(e) = &outcome {
                        tracing::warn!(range = self.range_id, index = entry.index, error = %e, "membership change refused at apply");
                    }
                    Some(Outcome::One(outcome))
                }
                _ => None,
            };
            if let Some(waiters) = self.take_proposal(entry.index, entry.term, ctx) {
                ctx.writes_answered += waiters.len() as u64;
                let outcome = outcome.unwrap_or(Outcome::One(Ok(Response::Done)));
                answer(ctx, self.range_id, waiters, outcome);
            }
        }
        self.raw.mut_store().set_applied(last);
        Ok(())
    }

    /// Applies a normal entry's payload: one command, or a batch of them in order
    /// (`batch.rs`), each with its own outcome.
    fn apply_normal(
        &mut self,
        data: &[u8],
        wb: &mut WriteBatch,
        ctx: &mut ApplyContext,
    ) -> Result<Outcome> {
        let cmd = match RaftCommand::decode(data) {
            Ok(c) => c,
            Err(e) => {
                let err = Error::InvalidRequest(format!("undecodable command: {e}"));
                return Ok(Outcome::One(Err(err)));
            }
        };
        if !self.raw.store().is_initialized() {
            return Ok(Outcome::One(Err(Error::InvalidRequest(
                "an uninitialized replica applies nothing".into(),
            ))));
        }
        if cmd.batch.is_empty() {
            ctx.commands_applied += 1;
            return Ok(Outcome::One(self.apply_command(cmd, wb, ctx)?));
        }
        let mut outcomes = Vec::with_capacity(cmd.batch.len());
        ctx.writes_batched += cmd.batch.len() as u64;
        for one in cmd.batch {
            ctx.commands_applied += 1;
            let outcome = if batchable(&one) {
                self.apply_command(one, wb, ctx)?
            } else {
                Err(Error::InvalidRequest(
                    "an admin command inside a batch is not applied".into(),
                ))
            };
            outcomes.push(outcome);
        }
        Ok(Outcome::Many(outcomes))
    }

    /// Applies one command: a split, or writes to this range's data.
    fn apply_command(
        &mut self,
        cmd: RaftCommand,
        wb: &mut WriteBatch,
        ctx: &mut ApplyContext,
    ) -> Result<Result<Response>> {
        if let Some(err) = check_command(self.descriptor(), &cmd) {
            return Ok(Err(err));
        }
        if let Some(split) = &cmd.split {
            return Ok(self.apply_split(split, wb, ctx));
        }
        if let Some(prefer) = cmd.prefer {
            return Ok(self.apply_prefer_leader(prefer.node_id, wb, ctx));
        }
        let engine = self.raw.store().engine().clone();
        let written = execute(cmd, &engine, wb, ctx)?;
        if let Ok((_, bytes)) = &written {
            self.written_since_check = self.written_since_check.saturating_add(*bytes);
        }
        Ok(written.map(|(resp, _)| resp))
    }

    /// Finds the proposal for the entry at `(index, term)`. Proposals made in older terms
    /// at or before this position can never commit any more: they are answered
    /// `StaleCommand`.
    fn take_proposal(&mut self, index: u64, term: u64, ctx: &mut ApplyContext) -> Option<Waiters> {
        while let Some(front) = self.proposals.front() {
            let overwritten = front.term < term || (front.term == term && front.index < index);
            if overwritten {
                let p = self.proposals.pop_front().expect("front exists");
                for cb in p.waiters.into_callbacks() {
                    let range_id = self.range_id;
                    ctx.answer(cb, Err(Error::StaleCommand { range_id }));
                }
                continue;
            }
            if front.term == term && front.index == index {
                return self.proposals.pop_front().map(|p| p.waiters);
            }
            break;
        }
        None
    }

    /// After a snapshot replaced the log up to `index`, the outcome of proposals at or
    /// before it cannot be known here any more. The queue is ordered by time, not index (a
    /// re-elected leader may propose below an older proposal), so all of it is checked.
    pub(crate) fn abandon_proposals_through(&mut self, index: u64, ctx: &mut ApplyContext) {
        let range_id = self.range_id;
        let (gone, kept): (VecDeque<Proposal>, _) = std::mem::take(&mut self.proposals)
            .into_iter()
            .partition(|p| p.index <= index);
        self.proposals = kept;
        for cb in gone.into_iter().flat_map(|p| p.waiters.into_callbacks()) {
            let reason = "a snapshot replaced the log before the outcome was seen".into();
            ctx.answer(cb, Err(Error::Ambiguous { range_id, reason }));
        }
    }
}

/// What applying one entry came to: one command's outcome, or each of a batch's. Made
/// and consumed once per applied entry: boxing the larger variant would cost an
/// allocation per entry.
#[allow(clippy::large_enum_variant)]
enum Outcome {
    One(Result<Response>),
    Many(Vec<Result<Response>>),
}

/// Queues each waiter's answer: its own command's outcome, or the entry's when it failed
/// as a whole.
fn answer(ctx: &mut ApplyContext, range_id: u64, waiters: Waiters, outcome: Outcome) {
    match (waiters, outcome) {
        (Waiters::One(cb), Outcome::One(result)) => ctx.answer(cb, result),
        (Waiters::Many(cbs), Outcome::Many(results)) if cbs.len() == results.len() => {
            for (cb, result) in cbs.into_iter().zip(results) {
                ctx.answer(cb, result);
            }
        }
        (Waiters::Many(cbs), Outcome::One(result)) => {
            for cb in cbs {
                ctx.answer(cb, result.clone());
            }
        }
        (waiters, _) => {
            // This replica proposed the entry, so its shape matches the waiters; if it
            // ever does not, no waiter may be told a success it cannot be sure of.
            for cb in waiters.into_callbacks() {
                let reason = "the applied entry does not match its proposal".into();
                ctx.answer(cb, Err(Error::Ambiguous { range_id, reason }));
            }
        }
    }
}

/// Executes one (already checked) write command. The outer `Result` is an engine failure
/// (stop the store); the inner one is the command's deterministic outcome, sent to the
/// client, with the bytes it wrote.
fn execute(
    cmd: RaftCommand,
    engine: &Engine,
    wb: &mut WriteBatch,
    ctx: &mut ApplyContext,
) -> Result<Result<(Response, u64)>> {
    let mut response = Response::Done;
    if let Some(cond) = &cmd.condition {
        let current = ctx.read(engine, &cond.key)?;
        let expected = cond.expected_present.then_some(cond.expected.as_slice());
        let succeeded = current.as_deref() == expected;
        response = Response::Swapped {
            succeeded,
            previous: current,
        };
        if !succeeded {
            return Ok(Ok((response, 0)));
        }
    }
    let mut bytes = 0;
    for entry in cmd.meta_update {
        bytes += update_meta(entry, engine, wb, ctx)?;
    }
    for op in cmd.ops {
        bytes += (op.key.len() + op.value.len()) as u64;
        if op.delete {
            wb.delete(Cf::Data, &op.key);
            ctx.overlay.insert(op.key, None);
        } else {
            wb.put(Cf::Data, &op.key, &op.value);
            ctx.overlay.insert(op.key, Some(op.value));
        }
    }
    Ok(Ok((response, bytes)))
}

/// Records a meta entry under its key unless the stored one is as fresh or fresher.
fn update_meta(
    entry: MetaEntry,
    engine: &Engine,
    wb: &mut WriteBatch,
    ctx: &mut ApplyContext,
) -> Result<u64> {
    let Some(desc) = &entry.descriptor else {
        return Ok(0);
    };
    let key = crate::keyspace::meta_key(&desc.end);
    let stored = ctx
        .read(engine, &key)?
        .and_then(|b| MetaEntry::decode(b.as_slice()).ok());
    if stored.is_some_and(|s| s.freshness() >= entry.freshness()) {
        return Ok(0);
    }
    let value = entry.encode_to_vec();
    wb.put(Cf::Data, &key, &value);
    let bytes = (key.len() + value.len()) as u64;
    ctx.overlay.insert(key, Some(value));
    Ok(bytes)
}

/// The apply-time checks: the command was proposed under the current epoch and all its
/// keys are still inside the range.
fn check_command(desc: &RangeDescriptor, cmd: &RaftCommand) -> Option<Error> {
    let requested = cmd.epoch.unwrap_or_default();
    if requested != desc.epoch() {
        return Some(Error::epoch_not_match(desc, requested));
    }
    let meta_keys: Vec<Vec<u8>> = cmd
        .meta_update
        .iter()
        .filter_map(|e| {
            e.descriptor
                .as_ref()
                .map(|d| crate::keyspace::meta_key(&d.end))
        })
        .collect();
    let mut keys = cmd
        .ops
        .iter()
        .map(|op| &op.key)
        .chain(cmd.condition.iter().map(|c| &c.key))
        .chain(meta_keys.iter());
    keys.find(|k| !desc.contains(k))
        .map(|k| Error::key_not_in_range(desc, k))
}
