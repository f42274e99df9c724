//! Raft snapshots as files: generated off the poller, moved in chunks, ingested at once.
//!
//! A snapshot is what a replica that lags behind the truncated log (a new learner, above
//! all) installs instead of entries. Its Raft message carries only the range's descriptor
//! and the list of its files ([`SnapshotData`]); the keys are in SST files of the data
//! column family under the node's `snap/` directory, and travel beside the message:
//!
//! - **Generate** ([`SnapManager::snapshot`]): when raft-rs asks for a snapshot, a thread
//!   of its own takes a consistent engine view at the applied index (the poller waits only
//!   for the view, microseconds, because it is the poller that applies: nothing changes
//!   the range meanwhile) and writes the span to `snap/gen/<range>_<term>_<index>/` with
//!   RocksDB's SST writer, memory bounded by a block. raft-rs is told to ask again, and on
//!   a later heartbeat response gets the finished snapshot. One generated snapshot serves
//!   every follower that needs one, while it is not older than the leader's truncated log.
//! - **Move**: a transport sends the message and then the files' bytes as one stream of
//!   chunks ([`Outgoing`]); the receiver writes them into a private temporary directory,
//!   checks each file's size and CRC-32, syncs, and renames the directory to
//!   `snap/recv/<key>/` ([`Incoming`]) before it hands the message to its store. A store
//!   steps a snapshot message only when its files are complete here (`life.rs`), so a
//!   transfer cut short by a crash on either side leaves nothing the store would use; the
//!   leader simply sends again.
//! - **Install** (`storage.rs`, `operation/ready.rs`): one synced write clears the span
//!   and the log, records the new state and a [`PendingIngest`] marker; then the files
//!   are ingested into the data column family (atomic: all keys or none), then the marker
//!   goes. A store that finds a marker at open ([`recover`]) ingests what is left of those
//!   files before any replica starts: no reader ever sees the span half installed.
//!
//! In the deterministic harness (no [`SnapManager::set_background`]) generation runs on
//! the caller, so that the same seed gives the same run.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_engine::{keys, write_sst, Cf, Engine, EngineSnapshot};
use parking_lot::Mutex;
use prost::Message as _;
use raft::prelude::{ConfState, Snapshot};

use crate::clock::Clock;
use crate::metapb::{PendingIngest, RangeDescriptor, SnapshotData, SnapshotFile};

/// The one file a snapshot built here has (none when the range is empty).
const DATA_FILE: &str = "data.sst";
/// Generated snapshots, and received ones, are removed after this long unused.
const KEEP: Duration = Duration::from_secs(600);
/// Snapshots generated at once per store; more wait (raft-rs asks again).
const MAX_GENERATING: usize = 2;

/// What went wrong with a snapshot's files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapError {
    #[error("snapshot file {path}: could not {op}: {message}")]
    Io {
        op: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("snapshot of range {range_id}: {reason}")]
    Invalid { range_id: u64, reason: String },
    #[error("snapshot of range {range_id}: {source}")]
    Engine {
        range_id: u64,
        source: flotilla_engine::Error,
    },
}

type SnapResult<T> = std::result::Result<T, SnapError>;

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SnapError + 'a {
    move |e| SnapError::Io {
        op,
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Names one snapshot of one range: its applied index and term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SnapKey {
    pub range_id: u64,
    pub term: u64,
    pub index: u64,
}

impl SnapKey {
    /// The key of the snapshot `snap` of range `range_id`.
    pub fn of(range_id: u64, snap: &Snapshot) -> SnapKey {
        let m = snap.get_metadata();
        SnapKey {
            range_id,
            term: m.term,
            index: m.index,
        }
    }

    fn dir_name(&self) -> String {
        format!("{}_{}_{}", self.range_id, self.term, self.index)
    }
}

/// The snapshot directory of the node whose engine lives in `data_dir`.
pub fn snap_root(data_dir: &Path) -> PathBuf {
    data_dir.join("snap")
}

/// The descriptor and files a snapshot message lists, checked: file names are plain
/// names (they become paths here), sizes are not zero.
pub fn files_of(
    range_id: u64,
    snap: &Snapshot,
) -> SnapResult<(RangeDescriptor, Vec<SnapshotFile>)> {
    let invalid = |reason: String| SnapError::Invalid { range_id, reason };
    let data = SnapshotData::decode(snap.get_data())
        .map_err(|e| invalid(format!("data does not decode: {e}")))?;
    let desc = data
        .descriptor
        .ok_or_else(|| invalid("no descriptor".into()))?;
    for f in &data.files {
        let plain = !f.name.is_empty()
            && !f.name.starts_with('.')
            && f.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !plain || f.size == 0 {
            return Err(invalid(format!(
                "bad file entry {:?} of {} bytes",
                f.name, f.size
            )));
        }
    }
    Ok((desc, data.files))
}

/// A store's snapshots: those it generated for followers and those it received.
pub struct SnapManager {
    root: PathBuf,
    clock: Arc<dyn Clock>,
    background: AtomicBool,
    generated: Mutex<HashMap<u64, Generated>>,
    /// Counters: snapshots generated, and their bytes.
    pub generated_count: AtomicU64,
    pub generated_bytes: AtomicU64,
}

enum Generated {
    Running,
    /// `epoch` is the descriptor's in the snapshot: one made before a membership change
    /// or split is not handed out (a replica just added would not find itself in it).
    Ready {
        snap: Snapshot,
        epoch: crate::metapb::Epoch,
        at: Duration,
    },
    Failed {
        at: Duration,
    },
}

/// What a snapshot is generated from: the replica's state at its applied index.
pub struct SnapSource<'a> {
    pub engine: &'a Engine,
    pub desc: &'a RangeDescriptor,
    pub term: u64,
    pub index: u64,
    pub conf_state: ConfState,
}

impl SnapManager {
    /// The snapshots under `root`. Generated snapshots do not survive a restart; received
    /// ones that no marker names are removed too (the leader sends again).
    pub fn open(root: PathBuf, clock: Arc<dyn Clock>) -> SnapResult<SnapManager> {
        for dir in [root.join("gen"), root.join("recv")] {
            if dir.exists() {
                fs::remove_dir_all(&dir).map_err(io("clear", &dir))?;
            }
            fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        }
        Ok(SnapManager {
            root,
            clock,
            background: AtomicBool::new(false),
            generated: Mutex::default(),
            generated_count: AtomicU64::new(0),
            generated_bytes: AtomicU64::new(0),
        })
    }

    /// The directory snapshots live under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Generate on threads of their own from now on (the threaded driver does this).
    pub fn set_background(&self, on: bool) {
        self.background.store(on, Ordering::Relaxed);
    }

    /// A snapshot of `src`'s range at least as new as `min_index`, if one is ready;
    /// otherwise starts building one and answers `SnapshotTemporarilyUnavailable`
    /// (raft-rs asks again). In the foreground mode it is built at once.
    pub fn snapshot(
        self: &Arc<Self>,
        src: SnapSource<'_>,
        min_index: u64,
    ) -> raft::Result<Snapshot> {
        let unavailable = || raft::Error::Store(raft::StorageError::SnapshotTemporarilyUnavailable);
        let range_id = src.desc.range_id;
        let now = self.clock.now();
        let mut generated = self.generated.lock();
        match generated.get(&range_id) {
            Some(Generated::Ready { snap, epoch, .. })
                if snap.get_metadata().index >= min_index && *epoch == src.desc.epoch() =>
            {
                return Ok(snap.clone())
            }
            Some(Generated::Running) => return Err(unavailable()),
            Some(Generated::Failed { at }) if now.saturating_sub(*at) < Duration::from_secs(1) => {
                return Err(unavailable())
            }
            _ => {}
        }
        let key = SnapKey {
            range_id,
            term: src.term,
            index: src.index,
        };
        let (desc, conf_state) = (src.desc.clone(), src.conf_state);
        if !self.background.load(Ordering::Relaxed) {
            let view = src.engine.snapshot();
            let built = self.build(&view, key, &desc, conf_state);
            let snap = self
                .finish(&mut generated, key, desc.epoch(), built)
                .ok_or_else(unavailable)?;
            return Ok(snap);
        }
        if generated
            .values()
            .filter(|g| matches!(g, Generated::Running))
            .count()
            >= MAX_GENERATING
        {
            return Err(unavailable());
        }
        generated.insert(range_id, Generated::Running);
        drop(generated);
        let (taken_tx, taken_rx) = crossbeam::channel::bounded::<()>(1);
        let (me, engine) = (self.clone(), src.engine.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("snap-gen-{range_id}"))
            .spawn(move || {
                let view = engine.snapshot();
                let _ = taken_tx.send(());
                let built = me.build(&view, key, &desc, conf_state);
                drop(view);
                me.finish(&mut me.generated.lock(), key, desc.epoch(), built);
            });
        match spawned {
            // The view is taken before the poller applies anything more.
            Ok(_) => drop(taken_rx.recv()),
            Err(e) => {
                tracing::warn!(range = range_id, error = %e, "could not start a snapshot thread");
                self.generated
                    .lock()
                    .insert(range_id, Generated::Failed { at: now });
            }
        }
        Err(unavailable())
    }

    /// Records the outcome of a generation, replacing (and removing) the range's older one.
    fn finish(
        &self,
        generated: &mut HashMap<u64, Generated>,
        key: SnapKey,
        epoch: crate::metapb::Epoch,
        built: SnapResult<Snapshot>,
    ) -> Option<Snapshot> {
        let at = self.clock.now();
        let snap = match built {
            Ok(snap) => snap,
            Err(e) => {
                tracing::warn!(range = key.range_id, error = %e, "snapshot generation failed; will retry");
                generated.insert(key.range_id, Generated::Failed { at });
                return None;
            }
        };
        let old = generated.insert(
            key.range_id,
            Generated::Ready {
                snap: snap.clone(),
                epoch,
                at,
            },
        );
        if let Some(Generated::Ready { snap: old, .. }) = old {
            let old_key = SnapKey::of(key.range_id, &old);
            if old_key != key {
                let _ = fs::remove_dir_all(self.gen_dir(old_key));
            }
        }
        Some(snap)
    }

    fn gen_dir(&self, key: SnapKey) -> PathBuf {
        self.root.join("gen").join(key.dir_name())
    }

    /// Writes the snapshot files of `desc`'s span as `view` sees it.
    fn build(
        &self,
        view: &EngineSnapshot<'_>,
        key: SnapKey,
        desc: &RangeDescriptor,
        conf_state: ConfState,
    ) -> SnapResult<Snapshot> {
        let _span = tracing::debug_span!("snapshot_build", range = key.range_id, index = key.index)
            .entered();
        let dir = self.gen_dir(key);
        let tmp = dir.with_extension("tmp");
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(io("create", &tmp))?;
        let path = tmp.join(DATA_FILE);
        let engine_err = |source| SnapError::Engine {
            range_id: key.range_id,
            source,
        };
        let mut failed = None;
        let written = write_sst(&path, |sink| {
            view.scan_uncached(Cf::Data, &desc.start, &desc.end, |k, v| {
                match sink.put(k, v) {
                    Ok(()) => true,
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                }
            })?;
            failed.take().map_or(Ok(()), Err)
        })
        .map_err(engine_err)?;
        let mut files = Vec::new();
        if written > 0 {
            let (size, crc32) = measure(&path)?;
            files.push(SnapshotFile {
                name: DATA_FILE.into(),
                size,
                crc32,
            });
            self.generated_bytes.fetch_add(size, Ordering::Relaxed);
        }
        let _ = fs::remove_dir_all(&dir);
        fs::rename(&tmp, &dir).map_err(io("rename", &dir))?;
        self.generated_count.fetch_add(1, Ordering::Relaxed);
        let data = SnapshotData {
            descriptor: Some(desc.clone()),
            pairs: Vec::new(),
            files,
        };
        let mut snap = Snapshot::default();
        snap.set_data(data.encode_to_vec().into());
        let meta = snap.mut_metadata();
        meta.index = key.index;
        meta.term = key.term;
        meta.set_conf_state(conf_state);
        Ok(snap)
    }

    /// Forgets the generated snapshot of a range (destroyed here) and removes its files.
    pub fn forget(&self, range_id: u64) {
        if let Some(Generated::Ready { snap, .. }) = self.generated.lock().remove(&range_id) {
            let _ = fs::remove_dir_all(self.gen_dir(SnapKey::of(range_id, &snap)));
        }
    }

    /// Removes generated snapshots unused for a while, and received ones never installed.
    pub fn collect_garbage(&self) {
        let now = self.clock.now();
        let mut generated = self.generated.lock();
        generated.retain(|range_id, g| match g {
            Generated::Ready { snap, at, .. } if now.saturating_sub(*at) > KEEP => {
                let _ = fs::remove_dir_all(self.gen_dir(SnapKey::of(*range_id, snap)));
                false
            }
            _ => true,
        });
        drop(generated);
        let recv = self.root.join("recv");
        let Ok(entries) = fs::read_dir(&recv) else {
            return;
        };
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok());
            if old.is_some_and(|age| age > KEEP) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }

    /// True when every file of `snap` (of range `range_id`) has been received here.
    pub fn is_received(&self, range_id: u64, snap: &Snapshot) -> bool {
        let Ok((_, files)) = files_of(range_id, snap) else {
            return false;
        };
        let dir = recv_dir(&self.root, SnapKey::of(range_id, snap));
        files
            .iter()
            .all(|f| fs::metadata(dir.join(&f.name)).is_ok_and(|m| m.len() == f.size))
    }

    /// Ingests the received files of snapshot `key` into the data column family and
    /// removes them. Call after the write that cleared the span is durable.
    pub fn ingest(&self, engine: &Engine, key: SnapKey, files: &[SnapshotFile]) -> SnapResult<()> {
        let dir = recv_dir(&self.root, key);
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(&f.name)).collect();
        engine
            .ingest(Cf::Data, &paths)
            .map_err(|source| SnapError::Engine {
                range_id: key.range_id,
                source,
            })?;
        let _ = fs::remove_dir_all(&dir);
        Ok(())
    }
}

fn recv_dir(root: &Path, key: SnapKey) -> PathBuf {
    root.join("recv").join(key.dir_name())
}

/// The size and CRC-32 of the file at `path`, read in chunks.
fn measure(path: &Path) -> SnapResult<(u64, u32)> {
    let mut file = File::open(path).map_err(io("open", path))?;
    let (mut hasher, mut buf, mut size) = (crc32fast::Hasher::new(), vec![0u8; CHUNK_BYTES], 0u64);
    loop {
        let n = file.read(&mut buf).map_err(io("read", path))?;
        if n == 0 {
            return Ok((size, hasher.finalize()));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

/// Finishes, at store open, the installation of snapshots whose marker is still there:
/// the synced write that cleared the span was done, the ingestion may not have been.
/// Ingests whatever files of it are left (ingesting one again is harmless: nothing
/// written after the marker's removal can have survived without it), then removes the
/// markers. Runs before [`SnapManager::open`] clears the received snapshots.
pub fn recover(engine: &Engine, root: &Path) -> crate::error::Result<usize> {
    let (start, end) = keys::pending_ingest_span();
    let mut pending = Vec::new();
    engine.scan(Cf::Meta, &start, &end, |k, v| {
        pending.push((k.to_vec(), v.to_vec()));
        true
    })?;
    for (k, v) in &pending {
        let range_id = u64::from_be_bytes(
            k[1..9]
                .try_into()
                .map_err(|_| crate::error::corrupt("pending ingest key", "length"))?,
        );
        let mark = PendingIngest::decode(v.as_slice())
            .map_err(|e| crate::error::corrupt("pending ingest", e))?;
        let dir = recv_dir(
            root,
            SnapKey {
                range_id,
                term: mark.term,
                index: mark.index,
            },
        );
        let mut left: Vec<PathBuf> = match fs::read_dir(&dir) {
            Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
            Err(_) => Vec::new(),
        };
        left.sort();
        tracing::info!(
            range = range_id,
            files = left.len(),
            "finishing an interrupted snapshot installation"
        );
        engine.ingest(Cf::Data, &left)?;
        let mut wb = engine.batch();
        wb.delete(Cf::Meta, k);
        engine.write(wb, true)?;
        let _ = fs::remove_dir_all(&dir);
    }
    Ok(pending.len())
}

/// The size of one chunk of a snapshot's bytes on the wire.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Reads a generated snapshot's files, in order, as one stream of chunks.
pub struct Outgoing {
    files: Vec<(PathBuf, File)>,
    at: usize,
    total: u64,
}

impl Outgoing {
    /// Opens the files of `snap` (range `range_id`) generated under `root`. Open files stay
    /// readable even if the snapshot is replaced meanwhile.
    pub fn open(root: &Path, range_id: u64, snap: &Snapshot) -> SnapResult<Outgoing> {
        let (_, listed) = files_of(range_id, snap)?;
        let dir = root
            .join("gen")
            .join(SnapKey::of(range_id, snap).dir_name());
        let mut files = Vec::new();
        for f in &listed {
            let path = dir.join(&f.name);
            let file = File::open(&path).map_err(io("open", &path))?;
            files.push((path, file));
        }
        Ok(Outgoing {
            files,
            at: 0,
            total: listed.iter().map(|f| f.size).sum(),
        })
    }

    /// The bytes of all files together.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// The next chunk of at most `max` bytes, or `None` at the end.
    pub fn next_chunk(&mut self, max: usize) -> SnapResult<Option<Vec<u8>>> {
        while let Some((path, file)) = self.files.get_mut(self.at) {
            let mut buf = vec![0u8; max];
            let n = file.read(&mut buf).map_err(io("read", path))?;
            if n > 0 {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            self.at += 1;
        }
        Ok(None)
    }
}

/// Writes a snapshot's files as their chunks arrive, into a private temporary directory
/// that becomes the received snapshot only once every file is complete and checked.
pub struct Incoming {
    tmp: PathBuf,
    dir: PathBuf,
    range_id: u64,
    files: Vec<SnapshotFile>,
    at: usize,
    written: u64,
    hasher: crc32fast::Hasher,
    out: Option<File>,
}

static INCOMING: AtomicU64 = AtomicU64::new(0);

impl Incoming {
    /// Starts receiving `snap` of range `range_id` under `root`; `None` when it is here
    /// already (complete) or has no files.
    pub fn begin(root: &Path, range_id: u64, snap: &Snapshot) -> SnapResult<Option<Incoming>> {
        let (_, files) = files_of(range_id, snap)?;
        let dir = recv_dir(root, SnapKey::of(range_id, snap));
        if files.is_empty() || dir.exists() {
            return Ok(None);
        }
        let nonce = INCOMING.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.with_extension(format!("{}.{nonce}.tmp", std::process::id()));
        fs::create_dir_all(&tmp).map_err(io("create", &tmp))?;
        let hasher = crc32fast::Hasher::new();
        Ok(Some(Incoming {
            tmp,
            dir,
            range_id,
            files,
            at: 0,
            written: 0,
            hasher,
            out: None,
        }))
    }

    /// Bytes still expected.
    pub fn remaining(&self) -> u64 {
        self.files[self.at.min(self.files.len())..]
            .iter()
            .map(|f| f.size)
            .sum::<u64>()
            - self.written
    }

    /// Writes the next bytes of the stream.
    pub fn write(&mut self, mut data: &[u8]) -> SnapResult<()> {
        while !data.is_empty() {
            let Some(f) = self.files.get(self.at) else {
                return Err(self.invalid("more bytes than its files hold".into()));
            };
            let path = self.tmp.join(&f.name);
            if self.out.is_none() {
                self.out = Some(File::create(&path).map_err(io("create", &path))?);
            }
            let n = (f.size - self.written).min(data.len() as u64) as usize;
            let out = self.out.as_mut().expect("opened above");
            out.write_all(&data[..n]).map_err(io("write", &path))?;
            self.hasher.update(&data[..n]);
            self.written += n as u64;
            data = &data[n..];
            if self.written == f.size {
                self.close_file()?;
            }
        }
        Ok(())
    }

    fn close_file(&mut self) -> SnapResult<()> {
        let f = &self.files[self.at];
        let path = self.tmp.join(&f.name);
        let out = self.out.take().expect("a file is open");
        out.sync_all().map_err(io("sync", &path))?;
        let crc = std::mem::take(&mut self.hasher).finalize();
        if crc != f.crc32 {
            return Err(self.invalid(format!(
                "file {} has CRC-32 {crc:08x}, expected {:08x}",
                f.name, f.crc32
            )));
        }
        self.at += 1;
        self.written = 0;
        Ok(())
    }

    fn invalid(&self, reason: String) -> SnapError {
        SnapError::Invalid {
            range_id: self.range_id,
            reason,
        }
    }

    /// Checks that every file is complete and makes the snapshot visible to the store.
    pub fn finish(mut self) -> SnapResult<()> {
        if self.at < self.files.len() {
            return Err(self.invalid(format!("stream ended {} bytes short", self.remaining())));
        }
        let tmp = std::mem::take(&mut self.tmp);
        File::open(&tmp)
            .and_then(|d| d.sync_all())
            .map_err(io("sync", &tmp))?;
        match fs::rename(&tmp, &self.dir) {
            Ok(()) => {}
            // Another transfer of the same snapshot finished first.
            Err(_) if self.dir.exists() => {
                let _ = fs::remove_dir_all(&tmp);
            }
            Err(e) => return Err(io("rename", &self.dir)(e)),
        }
        if let Some(parent) = self.dir.parent() {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(io("sync", parent))?;
        }
        Ok(())
    }
}

impl Drop for Incoming {
    /// A transfer abandoned part-way leaves nothing behind.
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Moves the files of `snap` from one node's snapshot directory to another's, through
/// the same chunked path a network transport uses (in-process transports and the
/// deterministic harness).
pub fn copy(from_root: &Path, to_root: &Path, range_id: u64, snap: &Snapshot) -> SnapResult<()> {
    let Some(mut incoming) = Incoming::begin(to_root, range_id, snap)? else {
        return Ok(());
    };
    let mut outgoing = Outgoing::open(from_root, range_id, snap)?;
    while let Some(chunk) = outgoing.next_chunk(CHUNK_BYTES)? {
        incoming.write(&chunk)?;
    }
    incoming.finish()
}

/// The marker staged with a snapshot's state (see [`recover`]).
pub fn pending_marker(key: SnapKey) -> ([u8; 9], Vec<u8>) {
    (
        keys::pending_ingest_key(key.range_id),
        PendingIngest {
            term: key.term,
            index: key.index,
        }
        .encode_to_vec(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::metapb::{Epoch, Replica};
    use flotilla_engine::EngineOptions;

    fn desc() -> RangeDescriptor {
        RangeDescriptor {
            range_id: 7,
            start: b"b".to_vec(),
            end: b"y".to_vec(),
            epoch: Some(Epoch {
                version: 2,
                conf_ver: 3,
            }),
            replicas: vec![Replica::voter(1, 71)],
            ..Default::default()
        }
    }

    /// An engine with keys inside and outside `desc()`, and a snapshot of it at index 9.
    fn generated(dir: &Path) -> (Engine, Arc<SnapManager>, Snapshot) {
        let engine = Engine::open(dir.join("db"), &EngineOptions::default()).unwrap();
        let mut wb = engine.batch();
        for k in [&b"a"[..], b"b", b"c", b"x", b"y", b"z"] {
            wb.put(Cf::Data, k, &vec![k[0]; 3000]);
        }
        engine.write(wb, true).unwrap();
        let mgr = Arc::new(
            SnapManager::open(dir.join("snap"), Arc::new(ManualClock::default())).unwrap(),
        );
        let d = desc();
        let src = SnapSource {
            engine: &engine,
            desc: &d,
            term: 4,
            index: 9,
            conf_state: ConfState::default(),
        };
        let snap = mgr.snapshot(src, 0).unwrap();
        (engine, mgr, snap)
    }

    #[test]
    fn a_snapshot_holds_its_span_moves_in_chunks_and_ingests() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mgr, snap) = generated(dir.path());
        let (d, files) = files_of(7, &snap).unwrap();
        assert_eq!((d, files.len()), (desc(), 1));
        assert_eq!(
            SnapKey::of(7, &snap),
            SnapKey {
                range_id: 7,
                term: 4,
                index: 9
            }
        );
        // To another node, through small chunks.
        let other = Engine::open(dir.path().join("db2"), &EngineOptions::default()).unwrap();
        let theirs =
            SnapManager::open(dir.path().join("snap2"), Arc::new(ManualClock::default())).unwrap();
        assert!(!theirs.is_received(7, &snap));
        let mut out = Outgoing::open(mgr.root(), 7, &snap).unwrap();
        let mut inc = Incoming::begin(theirs.root(), 7, &snap).unwrap().unwrap();
        while let Some(chunk) = out.next_chunk(1000).unwrap() {
            assert!(
                !theirs.is_received(7, &snap),
                "not visible before it is complete"
            );
            inc.write(&chunk).unwrap();
        }
        inc.finish().unwrap();
        assert!(theirs.is_received(7, &snap));
        theirs
            .ingest(&other, SnapKey::of(7, &snap), &files)
            .unwrap();
        let mut keys = Vec::new();
        other
            .scan(Cf::Data, b"", b"", |k, _| {
                keys.push(k.to_vec());
                true
            })
            .unwrap();
        assert_eq!(
            keys,
            vec![b"b".to_vec(), b"c".to_vec(), b"x".to_vec()],
            "the span only"
        );
    }

    #[test]
    fn a_transfer_cut_short_or_corrupted_leaves_nothing_received() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mgr, snap) = generated(dir.path());
        let theirs =
            SnapManager::open(dir.path().join("snap2"), Arc::new(ManualClock::default())).unwrap();
        let mut out = Outgoing::open(mgr.root(), 7, &snap).unwrap();
        let first = out.next_chunk(1000).unwrap().unwrap();
        // Cut short: the sender died after one chunk.
        let mut inc = Incoming::begin(theirs.root(), 7, &snap).unwrap().unwrap();
        inc.write(&first).unwrap();
        let err = inc.finish().unwrap_err();
        assert!(err.to_string().contains("bytes short"), "{err}");
        // The receiver died mid-transfer: dropped.
        let mut inc = Incoming::begin(theirs.root(), 7, &snap).unwrap().unwrap();
        inc.write(&first).unwrap();
        drop(inc);
        // A flipped bit.
        let mut inc = Incoming::begin(theirs.root(), 7, &snap).unwrap().unwrap();
        let mut bad = first.clone();
        bad[10] ^= 1;
        inc.write(&bad).unwrap();
        let mut failed = None;
        while let Some(chunk) = out.next_chunk(1000).unwrap() {
            if let Err(e) = inc.write(&chunk) {
                failed = Some(e);
                break;
            }
        }
        assert!(failed.is_some_and(|e| e.to_string().contains("CRC-32")));
        drop(inc);
        assert!(!theirs.is_received(7, &snap));
        let left: Vec<_> = fs::read_dir(theirs.root().join("recv")).unwrap().collect();
        assert!(left.is_empty(), "nothing half-written stays: {left:?}");
    }

    #[test]
    fn a_generated_snapshot_is_reused_until_the_log_or_the_epoch_passes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, mgr, snap) = generated(dir.path());
        let mut d = desc();
        fn src<'a>(engine: &'a Engine, d: &'a RangeDescriptor, index: u64) -> SnapSource<'a> {
            SnapSource {
                engine,
                desc: d,
                term: 4,
                index,
                conf_state: ConfState::default(),
            }
        }
        assert_eq!(
            mgr.snapshot(src(&engine, &d, 12), 9).unwrap(),
            snap,
            "still as new as the log's start"
        );
        assert_eq!(
            mgr.snapshot(src(&engine, &d, 12), 10)
                .unwrap()
                .get_metadata()
                .index,
            12,
            "older than the log's start"
        );
        d.epoch = Some(Epoch {
            version: 2,
            conf_ver: 4,
        });
        assert_eq!(
            mgr.snapshot(src(&engine, &d, 13), 0)
                .unwrap()
                .get_metadata()
                .index,
            13,
            "made before a membership change"
        );
        let gens: Vec<_> = fs::read_dir(mgr.root().join("gen")).unwrap().collect();
        assert_eq!(gens.len(), 1, "older generations are removed: {gens:?}");
    }

    #[test]
    fn file_names_that_are_paths_are_refused() {
        for name in ["../x", "a/b", ".hidden", ""] {
            let data = SnapshotData {
                descriptor: Some(desc()),
                pairs: vec![],
                files: vec![SnapshotFile {
                    name: name.into(),
                    size: 1,
                    crc32: 0,
                }],
            };
            let mut snap = Snapshot::default();
            snap.set_data(data.encode_to_vec().into());
            assert!(files_of(7, &snap).is_err(), "{name:?}");
        }
    }
}
