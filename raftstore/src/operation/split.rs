//! Splitting a range in two, and the replicas that splits create.
//!
//! A split is a Raft command like any write, so it applies at the same log position on
//! every replica. Applying it shrinks the range to `[start, split_key)` and bumps
//! `epoch.version`, and writes, in the same batch, the descriptor and initial Raft state
//! of the new range `[split_key, end)` (same replicas, log starting at
//! [`SPLIT_INIT_INDEX`](crate::storage::SPLIT_INIT_INDEX)). No data moves. Commands proposed under the old epoch fail at
//! apply with `EpochNotMatch`, so nothing is written on the wrong side of the split.
//!
//! A replica can hear from the new range before it has applied the split itself (or
//! without ever applying it, when a snapshot of the left range skipped past it). Such a
//! message creates an *uninitialized* replica: no span, no data, no votes. Its empty log
//! makes the leader send a snapshot, which is installed only if its span overlaps no
//! other replica here; otherwise the local left replica still owns the keys and will hand
//! them over by applying the split.
//!
//! Auto-split: leaders count the bytes their applied writes add. Past a step, a check is
//! scheduled; the check (a scan of the range, off the poller thread) finds the key at half
//! of the range's size, and if the range is over `split_size` the store proposes a split
//! there. New range ids come from a per-node allocator (`node_id` in the high bits, a
//! persisted counter below), so nodes never need to agree on one.

use flotilla_engine::{Cf, Engine, WriteBatch};

use super::ApplyContext;
use crate::cmd::{callback, Command, Request, Response};
use crate::error::{Error, Result};
use crate::metapb::{Epoch, MetaEntry, RangeDescriptor, SplitRequest};
use crate::peer::Peer;
use crate::storage::PeerStorage;
use crate::store::Store;

/// A split applied in this round whose new range must be created once the batch holding
/// it is written.
pub(crate) struct SplitOutcome {
    pub right: RangeDescriptor,
    /// The left replica led when the split applied: the new replica campaigns at once.
    pub campaign: bool,
    /// Set once the right range's initial state is staged in the batch.
    pub storage: Option<PeerStorage>,
}

/// A range whose size should be measured (off the poller thread).
#[derive(Debug, Clone)]
pub struct SplitCheckTask {
    pub range_id: u64,
    pub epoch: Epoch,
    pub start: Vec<u8>,
    pub end: Vec<u8>,
}

/// Meta key of the per-node range id allocator (the highest id reserved so far).
const RANGE_ID_ALLOC_KEY: &[u8] = b"\x01range_id_alloc";
/// A `written_since_check` that makes a leader check the range's size at the next look.
const RECHECK: u64 = u64::MAX / 2;
/// Ids reserved per durable allocator write.
const RANGE_ID_BLOCK: u64 = 64;

impl Peer {
    /// Applies a split command. The outer `Result` is an engine failure; the inner one is
    /// the command's outcome.
    pub(crate) fn apply_split(
        &mut self,
        req: &SplitRequest,
        wb: &mut WriteBatch,
        ctx: &mut ApplyContext,
    ) -> Result<Response> {
        let desc = self.descriptor().clone();
        let key = &req.split_key;
        if !desc.contains(key) || *key == desc.start {
            return Err(Error::key_not_in_range(&desc, key));
        }
        if crate::quorum::Voters::of(&desc).is_joint() {
            // Refused at proposal too. A split proposed before the joint step applied
            // does not get here (its epoch is older: `EpochNotMatch` first); this guards
            // against any path that skips the epoch check.
            return Err(Error::ConfChangeInProgress {
                range_id: desc.range_id,
            });
        }
        if req.new_range_id == desc.range_id || req.new_range_id == 0 {
            return Err(Error::InvalidRequest(format!(
                "bad new range id {}",
                req.new_range_id
            )));
        }
        let epoch = Epoch {
            version: desc.epoch().version + 1,
            conf_ver: desc.epoch().conf_ver,
        };
        let right = RangeDescriptor {
            range_id: req.new_range_id,
            start: key.clone(),
            end: desc.end.clone(),
            epoch: Some(epoch),
            replicas: desc.replicas.clone(),
            next_replica_id: desc.next_replica_id,
            // A new range is placed like any other: until placement chooses, its leader
            // is the fallback rule's pick for its new id, which spreads the halves of
            // ranges split by load over their voters.
            preferred_node: 0,
            preference_ver: 0,
        };
        let left = RangeDescriptor {
            end: key.clone(),
            epoch: Some(epoch),
            ..desc
        };
        self.raw.mut_store().set_descriptor(left.clone(), wb);
        // Both halves are measured again soon: one split may not bring a range that grew
        // quickly under the threshold, and without new writes nothing else would.
        self.written_since_check = RECHECK;
        let campaign = self.is_leader();
        if campaign {
            let leader = self.descriptor().replica_on(self.node_id);
            ctx.meta.push(MetaEntry {
                descriptor: Some(left.clone()),
                leader,
                term: self.term(),
            });
            ctx.meta.push(MetaEntry {
                descriptor: Some(right.clone()),
                leader: None,
                term: 0,
            });
        }
        tracing::info!(
            range = left.range_id,
            new_range = right.range_id,
            "split applied"
        );
        ctx.splits.push(SplitOutcome {
            right: right.clone(),
            campaign,
            storage: None,
        });
        Ok(Response::Split { left, right })
    }
}

impl Store {
    /// Stages the initial state of every range split off in this round into `wb` (the
    /// batch that holds the split itself). A range that already has an initialized
    /// replica here keeps it.
    pub(crate) fn stage_splits(&mut self, wb: &mut WriteBatch, ctx: &mut ApplyContext) {
        for outcome in ctx.splits.iter_mut().filter(|o| o.storage.is_none()) {
            let id = outcome.right.range_id;
            if self
                .peers
                .get(&id)
                .is_some_and(|p| p.raw.store().is_initialized())
            {
                tracing::warn!(range = id, "split target already exists here; keeping it");
                continue;
            }
            let storage = PeerStorage::split_init(self.engine.clone(), outcome.right.clone(), wb)
                .with_store(self.clock.clone(), self.snaps.clone());
            outcome.storage = Some(storage);
        }
    }

    /// Creates the replicas of ranges split off in a batch that is now written. An
    /// uninitialized replica of the same range is replaced.
    pub(crate) fn create_split_peers(&mut self, ctx: &mut ApplyContext) -> Result<()> {
        for outcome in ctx.splits.drain(..) {
            let Some(storage) = outcome.storage else {
                continue;
            };
            let replaces = self.peers.contains_key(&outcome.right.range_id);
            let mut peer = Peer::new(
                self.node_id,
                storage,
                &self.cfg,
                self.election_seed,
                &self.logger,
            )?;
            peer.written_since_check = RECHECK;
            if replaces {
                // The uninitialized replica it replaces may have answered a leader (and so
                // helped a lease); the new one starts with no leader, so it must not vote
                // or campaign until any such promise has run out.
                let window = self
                    .cfg
                    .liveness_timeout_ticks
                    .max(self.cfg.election_ticks as u64);
                peer.no_votes_until = self.clock.now() + self.ticks_as_time(window);
            }
            if outcome.campaign {
                peer.raw.campaign()?;
                // The other replicas may not have applied the split yet and drop this
                // first vote request: campaign again until a leader is known.
                peer.campaign_until = Some(self.now + self.cfg.election_ticks as u64);
            }
            self.touched.insert(peer.range_id);
            self.awake.insert(peer.range_id);
            let replicas = peer.descriptor().replicas.clone();
            self.peers.insert(peer.range_id, peer);
            self.add_neighbours(&replicas);
        }
        Ok(())
    }

    /// The answer to a split at a key that already starts range `right`: done, as a retry
    /// after an ambiguous attempt expects (the left neighbour must be hosted here too).
    pub(crate) fn already_split(&self, right: RangeDescriptor) -> Result<Response> {
        let left = self
            .peers
            .values()
            .map(|p| p.descriptor())
            .find(|d| d.end == right.start && !d.end.is_empty());
        match left {
            Some(left) => Ok(Response::Split {
                left: left.clone(),
                right,
            }),
            None => Err(Error::InvalidRequest(
                "the range already starts at the split key".into(),
            )),
        }
    }

    /// Reserves a range id no other node can hand out: this node's id in the high 24
    /// bits, a counter persisted in blocks below.
    pub(crate) fn alloc_range_id(&mut self) -> Result<u64> {
        if self.next_range_id >= self.reserved_range_id {
            let stored = match self.engine.get(Cf::Meta, RANGE_ID_ALLOC_KEY)? {
                Some(b) => <[u8; 8]>::try_from(b.as_slice())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0),
                None => 0,
            };
            let from = stored.max(self.next_range_id).max(1);
            let reserved = from + RANGE_ID_BLOCK;
            let mut wb = self.engine.batch();
            wb.put(Cf::Meta, RANGE_ID_ALLOC_KEY, &reserved.to_be_bytes());
            self.engine.write(wb, true)?;
            self.next_range_id = from;
            self.reserved_range_id = reserved;
        }
        let counter = self.next_range_id;
        self.next_range_id += 1;
        Ok((self.node_id << 40) | counter)
    }

    /// Schedules size checks for leaders whose applied writes passed a step of
    /// `split_size / 8` bytes since their last check.
    pub(crate) fn schedule_split_checks(&mut self) {
        let step = (self.cfg.split_size / 8).max(1);
        if self.cfg.split_size == 0 {
            return;
        }
        // A range written to is awake; quiesced ones have nothing new to measure.
        let Store {
            awake,
            peers,
            split_checks,
            ..
        } = self;
        crate::store::each_awake(peers, awake, |_, peer| {
            if peer.written_since_check < step || !peer.is_leader() {
                return;
            }
            if peer.range_id == crate::keyspace::META_RANGE_ID {
                return;
            }
            peer.written_since_check = 0;
            let d = peer.descriptor();
            split_checks.push(SplitCheckTask {
                range_id: d.range_id,
                epoch: d.epoch(),
                start: d.start.clone(),
                end: d.end.clone(),
            });
        });
    }

    /// Size checks to run off the poller thread (see [`find_split_key`]).
    pub fn take_split_checks(&mut self) -> Vec<SplitCheckTask> {
        std::mem::take(&mut self.split_checks)
    }

    /// Proposes a split of `range_id` at `split_key` if the range still has `epoch`
    /// (the result of a size check). The outcome is only logged.
    pub fn on_split_key(&mut self, range_id: u64, epoch: Epoch, split_key: Vec<u8>) {
        let (cb, mut rx) = callback();
        self.on_request(
            Request {
                range_id,
                epoch,
                command: Command::Split { split_key },
            },
            cb,
        );
        if let Ok(Err(e)) = rx.try_recv() {
            tracing::debug!(range = range_id, error = %e, "automatic split not proposed");
        }
    }
}

/// Scans the task's range (twice, on one engine snapshot, holding one key at a time) and
/// returns the first key past half its size when the range holds more than `split_size`
/// bytes of keys and values. Runs on any thread.
pub fn find_split_key(
    engine: &Engine,
    task: &SplitCheckTask,
    split_size: u64,
) -> Result<Option<Vec<u8>>> {
    let snap = engine.snapshot();
    let mut total = 0u64;
    snap.scan(Cf::Data, &task.start, &task.end, |k, v| {
        total += (k.len() + v.len()) as u64;
        true
    })?;
    if total <= split_size {
        return Ok(None);
    }
    let (mut seen, mut first, mut found) = (0u64, true, None);
    snap.scan(Cf::Data, &task.start, &task.end, |k, v| {
        if seen >= total / 2 && !first {
            found = Some(k.to_vec());
            return false;
        }
        seen += (k.len() + v.len()) as u64;
        first = false;
        true
    })?;
    Ok(found)
}
