//! The router's error type: only final outcomes. Routing errors from stores are handled
//! inside the router and surface only when the retry budget is spent.

use flotilla_raftstore::Error as StoreError;

/// Result alias for router operations.
pub type Result<T> = std::result::Result<T, Error>;

/// A final error for a caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong (empty key, too large, ...); retrying will not help.
    #[error("{0}")]
    InvalidRequest(StoreError),
    /// The write may or may not have been applied (it timed out or a node stopped), and
    /// it is not safe to retry blindly (compare-and-swap).
    #[error("{0}")]
    Ambiguous(StoreError),
    /// No range or leader answered within the retry budget.
    #[error("unavailable after {attempts} attempts: {last}")]
    Unavailable { attempts: usize, last: StoreError },
    /// A storage failure reported by a node.
    #[error("storage failure: {0}")]
    Storage(StoreError),
    /// No range covers the key (the range source knows none).
    #[error("no range covers key {} (the meta range has no record for it)", flotilla_raftstore::keyspace::show_key(.0))]
    NoRange(Vec<u8>),
}
