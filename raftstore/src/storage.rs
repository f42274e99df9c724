//! [`PeerStorage`]: one replica's Raft log and state on the engine, implementing
//! `raft::Storage`.
//!
//! The in-memory fields mirror what is on disk once the round's write batch lands. The
//! mutators (`append`, `set_hard_state`, `apply_snapshot`, `compact_to`, ...) update the
//! mirror at once and stage log entries in the caller's [`WriteBatch`]; the two small
//! records (raft state, apply state) are only marked dirty and staged once per batch by
//! [`PeerStorage::stage_dirty`], however many mutators touched them. The store stages and
//! writes the batch before it calls `advance` on the Raft node, which is the first time
//! raft-rs reads back what was staged. Raft never sees state that is not yet durable.

use flotilla_engine::{keys, Cf, Engine, WriteBatch};
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::entry_cache::{EntryCache, Fetched};
use crate::error::{corrupt, Result};
use crate::metapb::{
    ApplyState, KvPair, RaftLocalState, RangeDescriptor, ReplicaState, SnapshotData, SnapshotFile,
};
use crate::snap::{files_of, SnapKey, SnapManager, SnapSource};

/// The log position a range created by a split starts at (TiKV's convention). A replica
/// created from a Raft message has an empty log at index 0, so the leader cannot append to
/// it and must send a snapshot; a replica created by applying the split starts here with
/// the same state on every node.
pub const SPLIT_INIT_INDEX: u64 = 5;
/// The term of the entry at [`SPLIT_INIT_INDEX`].
pub const SPLIT_INIT_TERM: u64 = 5;

/// One replica's durable Raft state, read through `raft::Storage`.
pub struct PeerStorage {
    engine: Engine,
    desc: RangeDescriptor,
    hard_state: HardState,
    last_index: u64,
    last_term: u64,
    apply_state: ApplyState,
    /// The raft state / apply state changed since they were last staged.
    raft_state_dirty: bool,
    apply_state_dirty: bool,
    /// Loaded from the two records of data directories before stop 28: the first staging
    /// deletes them.
    legacy_keys: bool,
    /// Pacing of snapshots per follower (replica id), on the store's clock.
    pace: parking_lot::Mutex<std::collections::HashMap<u64, SnapshotPace>>,
    clock: std::sync::Arc<dyn crate::clock::Clock>,
    /// Where snapshots for followers are generated (`snap.rs`); none until the store
    /// gives it (a replica without one cannot build snapshots).
    snaps: Option<std::sync::Arc<SnapManager>>,
    /// The log's recent tail in memory (`entry_cache.rs`); when not empty it ends at
    /// `last_index`.
    cache: EntryCache,
}

/// Paces the snapshots a leader builds for one follower. The first three go at once; a
/// follower that keeps needing them cannot install what it is sent (it has no room for
/// the range, or refuses it), and building and shipping the whole range again and again
/// would only burn the leader's disk and the network. After the third, each waits twice
/// as long as the one before (1 s, 2 s, … up to 30 s); a follower that needed none for a
/// minute starts afresh. Time on the store's clock (real time, or the harness's manual
/// one), not ticks: this paces work, it protects nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct SnapshotPace {
    last: Option<std::time::Duration>,
    wait: std::time::Duration,
    /// Snapshots built for the follower within a minute of the previous one.
    pub repeats: u64,
}

impl SnapshotPace {
    const FIRST_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
    const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
    const CALM: std::time::Duration = std::time::Duration::from_secs(60);

    /// True when a snapshot may be built at `now` (and records it).
    pub fn allow(&mut self, now: std::time::Duration) -> bool {
        match self.last.map(|t| now.saturating_sub(t)) {
            Some(since) if since < Self::CALM && since < self.wait => return false,
            Some(since) if since < Self::CALM => {
                self.repeats += 1;
                self.wait = if self.repeats == 1 {
                    std::time::Duration::ZERO
                } else {
                    Self::FIRST_WAIT.max(self.wait * 2)
                };
                self.wait = self.wait.min(Self::MAX_WAIT);
            }
            _ => self.wait = std::time::Duration::ZERO,
        }
        self.last = Some(now);
        true
    }
}

impl PeerStorage {
    /// Stages the initial state of a brand-new replica of `desc`, as a split does: the log
    /// empty at [`SPLIT_INIT_INDEX`], everything before it applied, the replicas as the
    /// descriptor lists them. Starting past index 0 is what makes a leader send a replica
    /// created from a message (a new learner) a snapshot: its first append cannot match
    /// that replica's empty log (`life.rs` refuses appends at index 0 to it).
    pub fn bootstrap(desc: &RangeDescriptor, wb: &mut WriteBatch) {
        let hard_state = HardState {
            term: SPLIT_INIT_TERM,
            commit: SPLIT_INIT_INDEX,
            ..Default::default()
        };
        let local = RaftLocalState {
            hard_state: hard_state.write_to_bytes().expect("encode hard state"),
            last_index: SPLIT_INIT_INDEX,
            last_term: SPLIT_INIT_TERM,
        };
        let apply = ApplyState {
            applied_index: SPLIT_INIT_INDEX,
            truncated_index: SPLIT_INIT_INDEX,
            truncated_term: SPLIT_INIT_TERM,
        };
        let id = desc.range_id;
        let state = ReplicaState {
            raft: Some(local),
            apply: Some(apply),
        };
        wb.put(Cf::Meta, &keys::descriptor_key(id), &desc.encode_to_vec());
        wb.put(
            Cf::Meta,
            &keys::replica_state_key(id),
            &state.encode_to_vec(),
        );
    }

    /// Stages the initial state of the right-hand range `desc` of a split and returns its
    /// storage: log empty at [`SPLIT_INIT_INDEX`], everything before it applied. No data
    /// moves: the keys already lie in the engine.
    pub fn split_init(engine: Engine, desc: RangeDescriptor, wb: &mut WriteBatch) -> PeerStorage {
        let hard_state = HardState {
            term: SPLIT_INIT_TERM,
            commit: SPLIT_INIT_INDEX,
            ..Default::default()
        };
        let apply_state = ApplyState {
            applied_index: SPLIT_INIT_INDEX,
            truncated_index: SPLIT_INIT_INDEX,
            truncated_term: SPLIT_INIT_TERM,
        };
        wb.put(
            Cf::Meta,
            &keys::descriptor_key(desc.range_id),
            &desc.encode_to_vec(),
        );
        let mut storage = PeerStorage {
            engine,
            desc,
            hard_state,
            last_index: SPLIT_INIT_INDEX,
            last_term: SPLIT_INIT_TERM,
            apply_state,
            raft_state_dirty: true,
            apply_state_dirty: true,
            legacy_keys: false,
            pace: Default::default(),
            clock: std::sync::Arc::new(crate::clock::MonotonicClock::new()),
            snaps: None,
            cache: EntryCache::default(),
        };
        storage.stage_dirty(wb);
        storage
    }

    /// The storage of a replica created from a Raft message for a range this store does
    /// not know yet: no span, no voters, empty log. It stays in memory only, never votes
    /// (the store drops vote requests to it) and becomes a real replica when a snapshot
    /// arrives or the split that creates the range applies here.
    pub fn uninitialized(
        engine: Engine,
        range_id: u64,
        replicas: Vec<crate::metapb::Replica>,
    ) -> PeerStorage {
        let desc = RangeDescriptor {
            range_id,
            replicas,
            ..Default::default()
        };
        PeerStorage {
            engine,
            desc,
            hard_state: HardState::default(),
            last_index: 0,
            last_term: 0,
            apply_state: ApplyState::default(),
            raft_state_dirty: false,
            apply_state_dirty: false,
            legacy_keys: false,
            pace: Default::default(),
            clock: std::sync::Arc::new(crate::clock::MonotonicClock::new()),
            snaps: None,
            cache: EntryCache::default(),
        }
    }

    /// Loads the replica of `desc` from the engine.
    pub fn load(engine: Engine, desc: RangeDescriptor) -> Result<PeerStorage> {
        let (local, apply_state, legacy_keys) = load_replica_state(&engine, desc.range_id)?;
        let hard_state = if local.hard_state.is_empty() {
            HardState::default()
        } else {
            HardState::parse_from_bytes(&local.hard_state).map_err(|e| corrupt("hard state", e))?
        };
        Ok(PeerStorage {
            engine,
            desc,
            hard_state,
            last_index: local.last_index,
            last_term: local.last_term,
            apply_state,
            raft_state_dirty: false,
            apply_state_dirty: false,
            legacy_keys,
            pace: Default::default(),
            clock: std::sync::Arc::new(crate::clock::MonotonicClock::new()),
            snaps: None,
            cache: EntryCache::default(),
        })
    }

    /// Paces snapshots on `clock` (the store's) and builds them with `snaps`.
    pub fn with_store(
        mut self,
        clock: std::sync::Arc<dyn crate::clock::Clock>,
        snaps: std::sync::Arc<SnapManager>,
    ) -> PeerStorage {
        self.clock = clock;
        self.snaps = Some(snaps);
        self
    }

    /// The range's descriptor as this replica knows it.
    pub fn descriptor(&self) -> &RangeDescriptor {
        &self.desc
    }

    /// False for a replica created from a message that has no data or span yet.
    pub fn is_initialized(&self) -> bool {
        self.desc.epoch().version > 0
    }

    /// Records a new descriptor (after a split) in memory and in `wb`.
    pub fn set_descriptor(&mut self, desc: RangeDescriptor, wb: &mut WriteBatch) {
        wb.put(
            Cf::Meta,
            &keys::descriptor_key(desc.range_id),
            &desc.encode_to_vec(),
        );
        self.desc = desc;
    }

    /// Remembers another replica of an uninitialized range (learned from its messages),
    /// so that answers to it can be addressed.
    pub(crate) fn learn_replica(&mut self, replica: crate::metapb::Replica) {
        if !self.is_initialized() && self.desc.replica_by_id(replica.replica_id).is_none() {
            self.desc.replicas.push(replica);
        }
    }

    /// How far this replica has applied, and where its log starts.
    pub fn apply_state(&self) -> ApplyState {
        self.apply_state
    }

    /// The engine this replica lives in.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The index of the last entry in the log.
    pub fn last_index_now(&self) -> u64 {
        self.last_index
    }

    fn conf_state(&self) -> ConfState {
        if !self.is_initialized() {
            return ConfState::default();
        }
        crate::quorum::conf_state(&self.desc)
    }

    /// Stages the raft state and apply state if they changed since last staged. Call once
    /// per replica before writing a batch its mutators were given.
    /// An uninitialized replica stages nothing: it holds no log and casts no votes, so it
    /// has nothing that must survive a restart.
    pub fn stage_dirty(&mut self, wb: &mut WriteBatch) {
        if !self.is_initialized() {
            return;
        }
        let raft = std::mem::take(&mut self.raft_state_dirty);
        let apply = std::mem::take(&mut self.apply_state_dirty);
        if !(raft || apply || self.legacy_keys) {
            return;
        }
        let id = self.desc.range_id;
        if std::mem::take(&mut self.legacy_keys) {
            wb.delete(Cf::Meta, &keys::hard_state_key(id));
            wb.delete(Cf::Meta, &keys::apply_state_key(id));
        }
        let state = ReplicaState {
            raft: Some(RaftLocalState {
                hard_state: self.hard_state.write_to_bytes().expect("encode hard state"),
                last_index: self.last_index,
                last_term: self.last_term,
            }),
            apply: Some(self.apply_state),
        };
        wb.put(
            Cf::Meta,
            &keys::replica_state_key(id),
            &state.encode_to_vec(),
        );
    }

    /// Stages new log entries, replacing any conflicting suffix.
    pub fn append(&mut self, entries: &[Entry], wb: &mut WriteBatch) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        let id = self.desc.range_id;
        for e in entries {
            let bytes = e.write_to_bytes().expect("encode entry");
            wb.put(Cf::Raft, &keys::raft_log_key(id, e.index), &bytes);
        }
        if last.index < self.last_index {
            // The new entries overwrite a longer, conflicting tail: drop what lies past them.
            let from = keys::raft_log_key(id, last.index + 1);
            let to = keys::raft_log_key(id, self.last_index + 1);
            wb.delete_range(Cf::Raft, &from, &to);
        }
        debug_assert!(first.index <= self.last_index + 1);
        self.cache.append(entries);
        self.last_index = last.index;
        self.last_term = last.term;
        self.raft_state_dirty = true;
    }

    /// Records a new hard state (staged by [`PeerStorage::stage_dirty`]).
    pub fn set_hard_state(&mut self, hs: &HardState) {
        self.hard_state = hs.clone();
        self.raft_state_dirty = true;
    }

    /// Records a new commit index from a `LightReady` (staged by `stage_dirty`).
    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = commit;
        self.raft_state_dirty = true;
    }

    /// Records the applied index (staged by `stage_dirty`).
    pub fn set_applied(&mut self, index: u64) {
        self.apply_state.applied_index = index;
        self.apply_state_dirty = true;
    }

    /// Stages the installation of a snapshot: the data in the snapshot's span is cleared,
    /// the whole log is dropped, and the log restarts after the snapshot. Only the
    /// snapshot's span is cleared: when this replica's old span was wider (it missed a
    /// split), the rest belongs to the split-off range, whose own snapshot clears it. (The
    /// store refuses snapshots that overlap another replica.) The snapshot's keys are in
    /// files (`snap.rs`): returned with the marker staged for them, to be ingested once
    /// this batch is durable.
    pub fn apply_snapshot(
        &mut self,
        snap: &Snapshot,
        wb: &mut WriteBatch,
    ) -> Result<Option<(SnapKey, Vec<SnapshotFile>)>> {
        let id = self.desc.range_id;
        let (desc, files) = files_of(id, snap).map_err(|e| corrupt("snapshot", e))?;
        let data = SnapshotData::decode(snap.get_data()).map_err(|e| corrupt("snapshot", e))?;
        let meta = snap.get_metadata();
        wb.delete_range(Cf::Data, &desc.start, &desc.end_bound());
        for KvPair { key, value } in &data.pairs {
            wb.put(Cf::Data, key, value);
        }
        let key = SnapKey::of(id, snap);
        if !files.is_empty() {
            let (marker, value) = crate::snap::pending_marker(key);
            wb.put(Cf::Meta, &marker, &value);
        }
        wb.delete_range(
            Cf::Raft,
            &keys::raft_log_key(id, 0),
            &keys::raft_log_key(id, u64::MAX),
        );
        wb.put(Cf::Meta, &keys::descriptor_key(id), &desc.encode_to_vec());
        self.cache.clear();
        self.desc = desc;
        self.apply_state = ApplyState {
            applied_index: meta.index,
            truncated_index: meta.index,
            truncated_term: meta.term,
        };
        self.last_index = meta.index;
        self.last_term = meta.term;
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.raft_state_dirty = true;
        self.apply_state_dirty = true;
        self.stage_dirty(wb);
        Ok((!files.is_empty()).then_some((key, files)))
    }

    /// Stages the removal of every log entry up to and including `index`.
    pub fn compact_to(&mut self, index: u64, wb: &mut WriteBatch) -> Result<()> {
        if index <= self.apply_state.truncated_index {
            return Ok(());
        }
        let term = raft::Storage::term(self, index)?;
        let id = self.desc.range_id;
        wb.delete_range(
            Cf::Raft,
            &keys::raft_log_key(id, 0),
            &keys::raft_log_key(id, index + 1),
        );
        self.cache.trim_before(index + 1);
        self.apply_state.truncated_index = index;
        self.apply_state.truncated_term = term;
        self.apply_state_dirty = true;
        Ok(())
    }

    /// The first index the entry cache holds, if it holds any.
    pub fn cached_from(&self) -> Option<u64> {
        self.cache.first_index()
    }

    /// Drops the cached entries below `index`: no one reads them again but from disk.
    pub fn trim_cache(&mut self, index: u64) {
        self.cache.trim_before(index);
    }

    /// Reads the entries `[low, high)` from disk into `into` until its limit stops it.
    fn read_entries(&self, low: u64, high: u64, into: &mut Fetched) -> raft::Result<()> {
        let id = self.desc.range_id;
        let (from, to) = (keys::raft_log_key(id, low), keys::raft_log_key(id, high));
        let mut failure = None;
        let scanned =
            self.engine.scan(Cf::Raft, &from, &to, |_, v| {
                match Entry::parse_from_bytes(v) {
                    Ok(e) => into.take(e, v.len() as u64),
                    Err(e) => {
                        failure = Some(e);
                        false
                    }
                }
            });
        if let Some(e) = failure {
            return Err(raft::Error::CodecError(e));
        }
        scanned.map_err(|e| raft::Error::Store(StorageError::Other(Box::new(e))))
    }

    fn read_entry(&self, index: u64) -> raft::Result<Entry> {
        let key = keys::raft_log_key(self.desc.range_id, index);
        match self.engine.get(Cf::Raft, &key) {
            Ok(Some(b)) => Entry::parse_from_bytes(&b).map_err(raft::Error::CodecError),
            Ok(None) => Err(raft::Error::Store(StorageError::Unavailable)),
            Err(e) => Err(raft::Error::Store(StorageError::Other(Box::new(e)))),
        }
    }
}

impl PeerStorage {
    /// Snapshots built for a follower within a minute of the previous one, summed over
    /// followers: more than a few mean a follower cannot install them.
    pub fn snapshot_repeats(&self) -> u64 {
        self.pace.lock().values().map(|p| p.repeats).sum()
    }
}

impl raft::Storage for PeerStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.apply_state.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut into = Fetched::new(max_size.into().unwrap_or(u64::MAX), (high - low) as usize);
        // The cache, when not empty, holds the log's tail: read below it from disk.
        let cached_from = self
            .cache
            .first_index()
            .map_or(high, |first| first.clamp(low, high));
        if low < cached_from {
            self.read_entries(low, cached_from, &mut into)?;
        }
        if cached_from < high && !into.full() {
            self.cache.fetch(cached_from, high, &mut into);
        }
        let full = into.full();
        let out = into.entries;
        let contiguous = out
            .iter()
            .enumerate()
            .all(|(i, e)| e.index == low + i as u64);
        let complete = out.len() as u64 == high - low || full;
        if !contiguous || !complete {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let truncated = self.apply_state.truncated_index;
        if idx == truncated {
            return Ok(self.apply_state.truncated_term);
        }
        if idx < truncated {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if idx == self.last_index {
            return Ok(self.last_term);
        }
        if let Some(term) = self.cache.term(idx) {
            return Ok(term);
        }
        Ok(self.read_entry(idx)?.term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.apply_state.truncated_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        if self.apply_state.applied_index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let Some(snaps) = &self.snaps else {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        };
        let index = self.apply_state.applied_index;
        let src = SnapSource {
            engine: &self.engine,
            desc: &self.desc,
            term: raft::Storage::term(self, index)?,
            index,
            conf_state: self.conf_state(),
        };
        // A snapshot older than the log's start would need another one at once.
        let snap = snaps.snapshot(src, request_index.max(self.apply_state.truncated_index))?;
        // raft-rs asks again on the follower's next heartbeat response.
        if !self
            .pace
            .lock()
            .entry(to)
            .or_default()
            .allow(self.clock.now())
        {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(snap)
    }
}

/// A replica's Raft state and apply state: from its one record, or from the two records
/// of data directories before stop 28 (then `true`: the next staging replaces them).
fn load_replica_state(engine: &Engine, id: u64) -> Result<(RaftLocalState, ApplyState, bool)> {
    if let Some(b) = engine.get(Cf::Meta, &keys::replica_state_key(id))? {
        let state = ReplicaState::decode(b.as_slice()).map_err(|e| corrupt("replica state", e))?;
        let missing = |what| corrupt("replica state", format!("no {what} for range {id}"));
        let raft = state.raft.ok_or_else(|| missing("raft state"))?;
        let apply = state.apply.ok_or_else(|| missing("apply state"))?;
        return Ok((raft, apply, false));
    }
    let local = match engine.get(Cf::Meta, &keys::hard_state_key(id))? {
        Some(b) => RaftLocalState::decode(b.as_slice()).map_err(|e| corrupt("raft state", e))?,
        None => return Err(corrupt("raft state", format!("missing for range {id}"))),
    };
    let apply = match engine.get(Cf::Meta, &keys::apply_state_key(id))? {
        Some(b) => ApplyState::decode(b.as_slice()).map_err(|e| corrupt("apply state", e))?,
        None => return Err(corrupt("apply state", format!("missing for range {id}"))),
    };
    Ok((local, apply, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metapb::{Epoch, Replica};
    use std::time::Duration;

    #[test]
    fn a_replica_kept_in_the_two_old_records_loads_and_moves_to_one() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), &Default::default()).unwrap();
        let desc = RangeDescriptor {
            range_id: 7,
            epoch: Some(Epoch {
                version: 1,
                conf_ver: 1,
            }),
            replicas: vec![Replica {
                node_id: 1,
                replica_id: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        let hard_state = HardState {
            term: 6,
            vote: 1,
            commit: 9,
            ..Default::default()
        };
        let local = RaftLocalState {
            hard_state: hard_state.write_to_bytes().unwrap(),
            last_index: 12,
            last_term: 6,
        };
        let apply = ApplyState {
            applied_index: 9,
            truncated_index: 5,
            truncated_term: 5,
        };
        // The layout before stop 28: two records.
        let mut wb = engine.batch();
        wb.put(Cf::Meta, &keys::hard_state_key(7), &local.encode_to_vec());
        wb.put(Cf::Meta, &keys::apply_state_key(7), &apply.encode_to_vec());
        engine.write(wb, true).unwrap();

        let check = |s: &PeerStorage| {
            let state = raft::Storage::initial_state(s).unwrap();
            assert_eq!(state.hard_state, hard_state);
            assert_eq!(s.apply_state(), apply);
            assert_eq!(s.last_index_now(), 12);
        };
        let mut old = PeerStorage::load(engine.clone(), desc.clone()).unwrap();
        check(&old);
        // Its first staging, even with nothing changed, moves it to the one record.
        let mut wb = engine.batch();
        old.stage_dirty(&mut wb);
        engine.write(wb, true).unwrap();
        for gone in [keys::hard_state_key(7), keys::apply_state_key(7)] {
            assert_eq!(engine.get(Cf::Meta, &gone).unwrap(), None);
        }
        assert!(engine
            .get(Cf::Meta, &keys::replica_state_key(7))
            .unwrap()
            .is_some());
        let new = PeerStorage::load(engine.clone(), desc).unwrap();
        check(&new);
        // And nothing further is staged while nothing changes.
        let mut wb = engine.batch();
        let mut new = new;
        new.stage_dirty(&mut wb);
        assert!(wb.is_empty());
    }

    #[test]
    fn repeated_snapshots_to_one_follower_back_off() {
        let (mut pace, t0) = (SnapshotPace::default(), Duration::from_secs(100));
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(
            pace.allow(at(0)) && pace.allow(at(10)) && pace.allow(at(20)),
            "three at once"
        );
        assert!(!pace.allow(at(500)), "the fourth waits a second");
        assert!(pace.allow(at(1_100)));
        assert!(
            !pace.allow(at(2_500)) && pace.allow(at(3_200)),
            "then two seconds"
        );
        assert_eq!(pace.repeats, 4);
        // A minute without one: afresh.
        assert!(pace.allow(at(70_000)) && pace.allow(at(70_001)));
    }
}
