//! The [`Engine`] handle: opening RocksDB with our column families, point reads, bounded
//! scans, consistent snapshots, and atomic write batches with explicit sync control.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions, DB,
};

use crate::error::{Error, Result};

/// The column families Flotilla keeps. See the crate docs for what lives where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cf {
    /// User keys and values.
    Data,
    /// Raft log entries.
    Raft,
    /// Per-range Raft and apply metadata, store identity.
    Meta,
}

impl Cf {
    /// Every column family, in a fixed order.
    pub const ALL: [Cf; 3] = [Cf::Data, Cf::Raft, Cf::Meta];

    /// The RocksDB name of the column family.
    pub fn name(self) -> &'static str {
        match self {
            Cf::Data => "default",
            Cf::Raft => "raft",
            Cf::Meta => "meta",
        }
    }
}

/// Tunables for opening an engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Size of RocksDB's shared block cache in bytes.
    pub block_cache_bytes: usize,
    /// Background threads for flushes and compactions.
    pub background_jobs: i32,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            block_cache_bytes: 64 << 20,
            background_jobs: 2,
        }
    }
}

/// A handle to one node's RocksDB instance. Cheap to clone; the database closes when the
/// last clone is dropped.
#[derive(Clone)]
pub struct Engine {
    pub(crate) db: Arc<DB>,
    path: PathBuf,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("path", &self.path).finish()
    }
}

/// A column family's options before the shared ones (block cache, compression). Each
/// insert into a memtable walks a skip list, a cache miss a level; under 100 put clients
/// these walks were a fifth of a node's CPU (`docs/benchmarks.md`, stop 27). So:
/// - the Raft log's keys are `range id (8 bytes) ‖ index`, appended in order within each
///   range but interleaved across ranges: with the range id as the memtable's insert-hint
///   prefix, RocksDB starts each insert where the last one of the same range ended instead
///   of at the top of the skip list (the crate has no setter for the option);
/// - the data family's memtable is 8 MiB rather than 64: a rewritten key adds a version,
///   and a smaller list of them is a shorter, warmer walk;
/// - the meta family's is 4 MiB: its records (hard state, apply state) are rewritten
///   every round, and 64 MiB held about a million versions of them.
///
/// Never `inplace_update_support` (it would keep one memtable entry per meta record):
/// with it on any column family RocksDB hands out no snapshots at all, for any family, so
/// a Raft snapshot or a split check would read data newer than the index it claims
/// (`engine/tests/engine.rs::snapshot_does_not_see_later_writes` caught it). It is also
/// unsafe with range deletions.
fn cf_base_options(cf: Cf) -> Result<Options> {
    match cf {
        Cf::Raft => Options::default()
            .get_options_from_string(
                "memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.8",
            )
            .map_err(|e| Error::from_rocks("set the Raft log's options", e)),
        Cf::Data => {
            let mut o = Options::default();
            o.set_write_buffer_size(DATA_MEMTABLE_BYTES);
            Ok(o)
        }
        Cf::Meta => {
            let mut o = Options::default();
            o.set_write_buffer_size(META_MEMTABLE_BYTES);
            Ok(o)
        }
    }
}

/// The data column family's memtable size (see [`cf_base_options`]).
const DATA_MEMTABLE_BYTES: usize = 8 << 20;
/// The meta column family's memtable size (see [`cf_base_options`]).
const META_MEMTABLE_BYTES: usize = 4 << 20;

impl Engine {
    /// Opens (or creates) the engine in `path` with all column families.
    pub fn open(path: impl AsRef<Path>, options: &EngineOptions) -> Result<Engine> {
        let path = path.as_ref().to_path_buf();
        // Replay the WAL into memtables at open instead of flushing it to new SST files
        // first: a node restarted on a nearly full disk (after its ballast was deleted)
        // needs no more room than the WAL already takes. (The crate has no setter for it.)
        let mut db_opts = Options::default()
            .get_options_from_string("avoid_flush_during_recovery=true")
            .map_err(|e| Error::from_rocks("set the engine's options", e))?;
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(options.background_jobs);
        let cache = rocksdb::Cache::new_lru_cache(options.block_cache_bytes);
        let cfs = Cf::ALL.iter().map(|cf| -> Result<ColumnFamilyDescriptor> {
            let mut o = cf_base_options(*cf)?;
            let mut table = rocksdb::BlockBasedOptions::default();
            table.set_block_cache(&cache);
            o.set_block_based_table_factory(&table);
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            Ok(ColumnFamilyDescriptor::new(cf.name(), o))
        });
        let cfs = cfs.collect::<Result<Vec<_>>>()?;
        let db = DB::open_cf_descriptors(&db_opts, &path, cfs)
            .map_err(|e| Error::from_rocks("open the data directory", e))?;
        Ok(Engine {
            db: Arc::new(db),
            path,
        })
    }

    /// The directory this engine lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, cf: Cf) -> &ColumnFamily {
        handle(&self.db, cf)
    }

    /// A RocksDB integer property (for example `rocksdb.total-sst-files-size`) summed over
    /// every column family; `None` if RocksDB does not know it. For metrics.
    pub fn int_property(&self, name: &str) -> Option<u64> {
        let mut total = None;
        for cf in Cf::ALL {
            if let Ok(Some(v)) = self.db.property_int_value_cf(self.cf(cf), name) {
                total = Some(total.unwrap_or(0) + v);
            }
        }
        total
    }

    /// Reads one key.
    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db
            .get_cf(self.cf(cf), key)
            .map_err(|e| Error::from_rocks("read a key", e))
    }

    /// Calls `f` for each key in `[start, end)` in order until it returns `false`. An empty
    /// `end` means no upper bound.
    pub fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        scan_with(&self.db, self.cf(cf), ReadOptions::default(), start, end, f)
    }

    /// Takes a consistent point-in-time view of every column family.
    pub fn snapshot(&self) -> EngineSnapshot<'_> {
        EngineSnapshot {
            engine: self,
            snap: self.db.snapshot(),
        }
    }

    /// Starts an empty write batch for this engine.
    pub fn batch(&self) -> WriteBatch {
        WriteBatch {
            db: self.db.clone(),
            inner: rocksdb::WriteBatch::default(),
        }
    }

    /// Writes a batch atomically. With `sync` the write is on stable storage (the WAL is
    /// fsynced) before this returns.
    pub fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(sync);
        self.db
            .write_opt(batch.inner, &opts)
            .map_err(|e| Error::from_rocks("write a batch", e))
    }
}

pub(crate) fn handle(db: &DB, cf: Cf) -> &ColumnFamily {
    // Every column family is created in `Engine::open`, so the handle always exists.
    db.cf_handle(cf.name())
        .expect("column family created at open")
}

fn scan_with(
    db: &DB,
    cf: &ColumnFamily,
    mut opts: ReadOptions,
    start: &[u8],
    end: &[u8],
    mut f: impl FnMut(&[u8], &[u8]) -> bool,
) -> Result<()> {
    if !end.is_empty() {
        opts.set_iterate_upper_bound(end.to_vec());
    }
    let iter = db.iterator_cf_opt(cf, opts, IteratorMode::From(start, Direction::Forward));
    for item in iter {
        let (k, v) = item.map_err(|e| Error::from_rocks("scan keys", e))?;
        if !f(&k, &v) {
            break;
        }
    }
    Ok(())
}

/// A consistent read-only view of the engine at one point in time.
pub struct EngineSnapshot<'a> {
    engine: &'a Engine,
    snap: rocksdb::Snapshot<'a>,
}

impl EngineSnapshot<'_> {
    /// Reads one key as of the snapshot.
    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.snap
            .get_cf(self.engine.cf(cf), key)
            .map_err(|e| Error::from_rocks("read a key from a snapshot", e))
    }

    /// Like [`EngineSnapshot::scan`], for one pass over much data (a Raft snapshot):
    /// the blocks read do not enter the block cache, so the pass neither grows memory
    /// nor pushes out what the cache holds for reads.
    pub fn scan_uncached(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&self.snap);
        opts.fill_cache(false);
        scan_with(&self.engine.db, self.engine.cf(cf), opts, start, end, f)
    }

    /// Like [`Engine::scan`], as of the snapshot.
    pub fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&self.snap);
        scan_with(&self.engine.db, self.engine.cf(cf), opts, start, end, f)
    }
}

/// An atomic group of writes across column families.
pub struct WriteBatch {
    db: Arc<DB>,
    inner: rocksdb::WriteBatch,
}

impl WriteBatch {
    /// Sets `key` to `value`.
    pub fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.inner.put_cf(handle(&self.db, cf), key, value);
    }

    /// Removes `key`.
    pub fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.inner.delete_cf(handle(&self.db, cf), key);
    }

    /// Removes every key in `[start, end)`.
    pub fn delete_range(&mut self, cf: Cf, start: &[u8], end: &[u8]) {
        self.inner.delete_range_cf(handle(&self.db, cf), start, end);
    }

    /// Number of operations in the batch.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// True when the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Size of the batch's encoded form in bytes.
    pub fn size_in_bytes(&self) -> usize {
        self.inner.size_in_bytes()
    }
}
