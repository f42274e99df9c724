//! Format versions: which log and storage formats this binary may write, so that a
//! cluster keeps working while its nodes are upgraded one at a time.
//!
//! A node built before a format existed cannot read it: a node from before batched
//! entries applies one as an empty command (its decoder skips the unknown field), and
//! one from before the single replica-state record finds no Raft state at all. So a
//! new format is written only once the **cluster version** allows it, and the cluster
//! version rises only once every member runs a binary that reads it — CockroachDB's
//! cluster versions, reduced to one number.
//!
//! - [`BINARY_VERSION`] is the newest format this binary reads and writes. Each node
//!   records it in its node record in the meta range.
//! - The cluster version lives in the meta range's settings record. A node raises it
//!   (compare-and-swap) once every member that is not decommissioned records a binary
//!   version at least as high; absent, it is [`V1_SINGLE`].
//! - Each store keeps the highest cluster version it has seen in its own engine
//!   ([`ClusterVersion`]), written (synced) before anything is written in a format it
//!   allows, so a restarted node never falls back to an older format that a newer replica
//!   record on its disk would hide.
//! - Once it has risen, nodes with older binaries are refused on every node-to-node call,
//!   and no node opens a Raft stream to one (`server/src/transport.rs`), so no new-format
//!   entry can reach a node that would misread it. Downgrading below it is not possible.
//!
//! The store itself only asks [`ClusterVersion::allows`]; embedded stores (one process,
//! one binary) start at [`BINARY_VERSION`], the server at what its disk says.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use flotilla_engine::{Cf, Engine};

use crate::error::{corrupt, Result};

/// Every format of the first releases: one command per entry, a replica's Raft state and
/// apply state in two records.
pub const V1_SINGLE: u32 = 1;
/// Many writes per entry (`RaftCommand::batch`) and one replica-state record ('r').
pub const V2_BATCHED: u32 = 2;
/// The newest format this binary reads and writes.
pub const BINARY_VERSION: u32 = V2_BATCHED;

/// Where a store keeps the highest cluster version it has seen.
const CLUSTER_VERSION_KEY: &[u8] = b"\x01cluster-version";

/// The cluster version as this store knows it: shared by the store (which formats to
/// write) and the server (which peers to talk to).
#[derive(Clone)]
pub struct ClusterVersion {
    active: Arc<AtomicU32>,
    /// Held while a raise writes: two raises at once never leave the disk behind.
    raising: Arc<Mutex<()>>,
    engine: Engine,
    /// The newest format the binary reads ([`BINARY_VERSION`], lower only when a test
    /// has a node pose as an older binary).
    binary: u32,
}

impl std::fmt::Debug for ClusterVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterVersion({})", self.get())
    }
}

impl ClusterVersion {
    /// The version recorded in `engine`, raised to `at_least` (and recorded) if lower.
    pub fn open(engine: Engine, at_least: u32) -> Result<ClusterVersion> {
        ClusterVersion::open_as(engine, at_least, BINARY_VERSION)
    }

    /// Like [`ClusterVersion::open`], for a binary that reads formats up to `binary`
    /// only: refused if the disk already records a newer cluster version.
    pub fn open_as(engine: Engine, at_least: u32, binary: u32) -> Result<ClusterVersion> {
        let stored = match engine.get(Cf::Meta, CLUSTER_VERSION_KEY)? {
            Some(b) => {
                let bytes: [u8; 4] = b
                    .as_slice()
                    .try_into()
                    .map_err(|_| corrupt("cluster version", format!("{} bytes", b.len())))?;
                u32::from_be_bytes(bytes)
            }
            None => V1_SINGLE,
        };
        if stored > binary {
            return Err(crate::error::Error::VersionTooNew {
                cluster: stored,
                binary,
                seen_at: format!("data directory {}", engine.path().display()),
            });
        }
        let version = ClusterVersion {
            active: Arc::new(AtomicU32::new(stored)),
            raising: Arc::default(),
            engine,
            binary,
        };
        version.raise(at_least)?;
        Ok(version)
    }

    /// The cluster version in force here.
    pub fn get(&self) -> u32 {
        self.active.load(Ordering::Acquire)
    }

    /// The newest format this binary reads.
    pub fn binary(&self) -> u32 {
        self.binary
    }

    /// Whether the format introduced at `version` may be written.
    pub fn allows(&self, version: u32) -> bool {
        self.get() >= version
    }

    /// Raises the version to `to` (never lowers it), recording it durably first. True if
    /// it rose. A version this binary does not know is refused: the node must not keep
    /// writing formats the rest of the cluster has moved past.
    pub fn raise(&self, to: u32) -> Result<bool> {
        self.raise_from(to, "the cluster's settings")
    }

    /// Like [`ClusterVersion::raise`], naming where `to` was seen in a refusal.
    pub fn raise_from(&self, to: u32, source: &str) -> Result<bool> {
        if to > self.binary {
            return Err(crate::error::Error::VersionTooNew {
                cluster: to,
                binary: self.binary,
                seen_at: source.to_string(),
            });
        }
        if to <= self.get() {
            return Ok(false);
        }
        let _one_at_a_time = self.raising.lock();
        if to <= self.get() {
            return Ok(false);
        }
        let mut wb = self.engine.batch();
        wb.put(Cf::Meta, CLUSTER_VERSION_KEY, &to.to_be_bytes());
        self.engine.write(wb, true)?;
        self.active.fetch_max(to, Ordering::AcqRel);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(dir: &tempfile::TempDir) -> Engine {
        Engine::open(dir.path(), &flotilla_engine::EngineOptions::default()).unwrap()
    }

    #[test]
    fn the_version_only_rises_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let v = ClusterVersion::open(engine(&dir), V1_SINGLE).unwrap();
        assert_eq!(v.get(), V1_SINGLE);
        assert!(!v.allows(V2_BATCHED));
        assert!(v.raise(V2_BATCHED).unwrap());
        assert!(!v.raise(V1_SINGLE).unwrap(), "never lowered");
        assert!(v.allows(V2_BATCHED));
        drop(v);
        let again = ClusterVersion::open(engine(&dir), V1_SINGLE).unwrap();
        assert_eq!(again.get(), V2_BATCHED, "recorded on disk");
    }

    #[test]
    fn a_version_newer_than_the_binary_is_refused_with_the_next_step() {
        let dir = tempfile::tempdir().unwrap();
        let v = ClusterVersion::open(engine(&dir), V1_SINGLE).unwrap();
        let err = v.raise(BINARY_VERSION + 1).unwrap_err().to_string();
        assert!(err.contains("newer binary"), "{err}");
        assert!(err.contains(&format!("{}", BINARY_VERSION + 1)), "{err}");
        assert_eq!(v.get(), V1_SINGLE);
    }

    #[test]
    fn a_binary_older_than_the_version_on_disk_refuses_to_open_it() {
        let dir = tempfile::tempdir().unwrap();
        let v = ClusterVersion::open(engine(&dir), V2_BATCHED).unwrap();
        drop(v);
        let err = ClusterVersion::open_as(engine(&dir), V1_SINGLE, V1_SINGLE).unwrap_err();
        assert!(
            err.to_string().contains("format version 2") && err.to_string().contains("up to 1"),
            "{err}"
        );
    }
}
