//! Flotilla's multi-Raft store: many replicated ranges per node on one engine.
//!
//! A [`Store`] hosts one [`Peer`] (replica) per range, each a raft-rs `RawNode` over a
//! [`PeerStorage`] in the node's engine. The store is driven in rounds: messages, requests
//! and ticks go in; at the end of the round every replica's Ready is persisted with one
//! write batch and one fsync, messages go out grouped per destination node, and committed
//! commands are applied and answered. The store itself has no threads or clocks, so the
//! same code runs under the threaded driver ([`node`]) and the deterministic test harness.
//! `docs/architecture.md` walks through the design.

// Errors carry descriptors (routing hints) and tonic statuses by value, as the
// callers match on them; boxing them all would cost more clarity than the copies cost.
#![allow(clippy::result_large_err)]

pub mod clock;
pub mod cmd;
pub mod config;
mod entry_cache;
pub mod error;
pub mod keyspace;
pub mod local;
pub mod metapb;
pub mod metrics;
pub mod node;
mod operation;
mod peer;
pub mod quorum;
pub mod snap;
mod storage;
mod store;
pub mod transport;
pub mod version;

pub use clock::{Clock, ManualClock, MonotonicClock, SkewedClock};
pub use cmd::{callback, Callback, Command, Request, Response, ResponseReceiver};
pub use config::StoreConfig;
pub use error::{Error, Result};
pub use metapb::{Epoch, MetaEntry, RangeDescriptor, Replica, WriteOp};
pub use metrics::StoreMetrics;
pub use operation::{find_split_key, SplitCheckTask, NODE_RANGE_ID};
pub use peer::Peer;
pub use storage::{PeerStorage, SPLIT_INIT_INDEX, SPLIT_INIT_TERM};
pub use store::{RangeStatus, Store, StoreSummary, MAX_NODE_ID};
pub use transport::{LocalTransport, RaftEnvelope, Transport};
pub use version::{ClusterVersion, BINARY_VERSION};
