//! Flotilla's router: finds the range and the leader for a key, sends the command there,
//! and retries on stale routes, so that a caller sees success or a final error — never a
//! routing error it must handle itself.
//!
//! - [`RangeCache`] maps keys to range descriptors and leader hints; newer epochs replace
//!   older, overlapping entries.
//! - [`Router`] runs one command: look up (in the cache, else in the meta range), send,
//!   and on a retryable error refresh the cache from the error's hints (`NotLeader`
//!   leader, `EpochNotMatch` descriptors) or the meta range, back off, and try again,
//!   within a bounded number of attempts.
//! - [`Db`] is the embeddable key-value API on top: get, put, delete, compare-and-swap,
//!   batch (atomic within one range) and scans across ranges in key order.
//! - [`publish_meta`] writes the meta records nodes produce (splits, new leaders) into
//!   the meta range.
//!
//! - [`placement::plan`] decides which replicas should move (a pure function of the
//!   cluster's state, for the placement loop).
//!
//! How commands reach nodes is a trait ([`NodeClient`]): in-process today
//! ([`local::open_local`]), the network later.

mod cache;
mod db;
mod error;
pub mod local;
mod meta;
pub mod placement;
mod router;

pub use cache::RangeCache;
pub use db::{Db, ScanPage, DEFAULT_SCAN_BYTES};
pub use error::{Error, Result};
pub use meta::publish_meta;
pub use router::{NodeClient, RetryPolicy, Router};
