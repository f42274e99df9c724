//! Flotilla's storage engine: one RocksDB instance per node, split into column families.
//!
//! This crate owns everything that touches RocksDB and nothing that knows about Raft. The
//! layers above see only [`Engine`], [`WriteBatch`], [`EngineSnapshot`], the [`Cf`] names and
//! the key encodings in [`keys`]; no RocksDB type crosses this crate's boundary, so the
//! storage backend can change without touching the replication logic.
//!
//! Three column families keep data with different life cycles apart (see
//! `docs/storage.md` for the full key layout):
//! - [`Cf::Data`]: user keys and values, stored under the user key itself so that a range of
//!   user keys is a contiguous span of RocksDB keys and a split moves no data.
//! - [`Cf::Raft`]: Raft log entries, keyed by `(range_id, index)` big-endian so that one
//!   range's log is contiguous and truncation is one range deletion.
//! - [`Cf::Meta`]: small per-range records (hard state, apply state, descriptor) and the
//!   store identity.

mod engine;
mod error;
pub mod keys;
mod sst;

pub use engine::{Cf, Engine, EngineOptions, EngineSnapshot, WriteBatch};
pub use error::{Error, Result};
pub use sst::{write_sst, SstSink};
