//! External SST files: writing a sorted run of keys to a file off the write path, and
//! ingesting such files into a column family atomically.
//!
//! This is how a range's data moves between nodes in bulk (Raft snapshots): the sender
//! writes the span it reads from a consistent view into a file, with memory bounded by
//! RocksDB's block size rather than the range's size; the receiver links the file into
//! the LSM tree in one manifest write. Either every key of the files becomes visible or
//! none does.

use std::path::{Path, PathBuf};

use crate::engine::{handle, Cf, Engine};
use crate::error::{Error, Result};

/// Writes keys, in ascending order, to one SST file.
pub struct SstSink<'a> {
    writer: rocksdb::SstFileWriter<'a>,
    keys: u64,
}

impl SstSink<'_> {
    /// Adds `key` = `value`. Keys must arrive in strictly ascending order.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.writer
            .put(key, value)
            .map_err(|e| Error::from_rocks("write a snapshot file", e))?;
        self.keys += 1;
        Ok(())
    }
}

/// Writes the SST file `path` with the keys `fill` adds. Returns the number of keys
/// written; with none, no file is left behind (RocksDB cannot write an empty SST).
pub fn write_sst(path: &Path, fill: impl FnOnce(&mut SstSink<'_>) -> Result<()>) -> Result<u64> {
    let mut opts = rocksdb::Options::default();
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    let writer = rocksdb::SstFileWriter::create(&opts);
    writer
        .open(path)
        .map_err(|e| Error::from_rocks("create a snapshot file", e))?;
    let mut sink = SstSink { writer, keys: 0 };
    fill(&mut sink)?;
    if sink.keys == 0 {
        drop(sink);
        let _ = std::fs::remove_file(path);
        return Ok(0);
    }
    sink.writer
        .finish()
        .map_err(|e| Error::from_rocks("finish a snapshot file", e))?;
    Ok(sink.keys)
}

impl Engine {
    /// Ingests the SST `files` into `cf` atomically: all their keys become visible, over
    /// anything older in their span, or none do. The files are moved (hard-linked), not
    /// copied, and are gone from their paths afterwards. Durable when this returns (the
    /// ingestion is recorded in RocksDB's manifest).
    pub fn ingest(&self, cf: Cf, files: &[PathBuf]) -> Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let mut opts = rocksdb::IngestExternalFileOptions::default();
        opts.set_move_files(true);
        self.db
            .ingest_external_file_cf_opts(handle(&self.db, cf), &opts, files.to_vec())
            .map_err(|e| Error::from_rocks("ingest a snapshot file", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineOptions;

    #[test]
    fn ingested_files_replace_nothing_outside_their_keys_and_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path().join("db"), &EngineOptions::default()).unwrap();
        let mut wb = engine.batch();
        wb.put(Cf::Data, b"a", b"old");
        wb.put(Cf::Data, b"z", b"keep");
        engine.write(wb, true).unwrap();
        let file = dir.path().join("one.sst");
        let n = write_sst(&file, |s| {
            s.put(b"a", b"new")?;
            s.put(b"b", b"2")
        })
        .unwrap();
        assert_eq!(n, 2);
        engine
            .ingest(Cf::Data, std::slice::from_ref(&file))
            .unwrap();
        assert_eq!(
            engine.get(Cf::Data, b"a").unwrap().as_deref(),
            Some(&b"new"[..])
        );
        assert_eq!(
            engine.get(Cf::Data, b"b").unwrap().as_deref(),
            Some(&b"2"[..])
        );
        assert_eq!(
            engine.get(Cf::Data, b"z").unwrap().as_deref(),
            Some(&b"keep"[..])
        );
        assert!(!file.exists(), "moved into the engine");
    }

    #[test]
    fn an_empty_file_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("empty.sst");
        assert_eq!(write_sst(&file, |_| Ok(())).unwrap(), 0);
        assert!(!file.exists());
    }

    #[test]
    fn keys_out_of_order_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let r = write_sst(&dir.path().join("bad.sst"), |s| {
            s.put(b"b", b"1")?;
            s.put(b"a", b"2")
        });
        assert!(r.is_err());
    }
}
