//! The operations a store performs on its replicas, one module per operation:
//! - `propose`: check a request (range, epoch, keys, leadership) and propose a write;
//! - `batch`: a range's writes of one round proposed as one entry;
//! - `read`: linearizable reads through ReadIndex, with retries and deadlines;
//! - `ready`: the end of a round — persist every replica's Ready in one write batch with
//!   one fsync, send messages per node, apply, answer;
//! - `apply`: execute committed commands on the state machine;
//! - `gc`: truncate applied log entries;
//! - `campaign`: elections started at once, after a node's death and in a new cluster;
//! - `balance`: hand leadership to each range's preferred replica;
//! - `drain`: hand every leadership away before the node stops;
//! - `heartbeat`: coalesce heartbeats per node pair, node liveness;
//! - `lease`: store-liveness support, leases, reads served under them;
//! - `quiesce`: let idle ranges stop ticking, wake them;
//! - `split`: split ranges, create the replicas splits imply, find split keys;
//! - `load_split`: find the key that halves a hot range's load, and split there;
//! - `conf_change`: membership change, learner → joint → leave → remove, step by step;
//! - `life`: which messages create or reach a replica, tombstones, destroying replicas
//!   and finding out about a removal missed while away.

mod apply;
mod balance;
mod batch;
mod campaign;
mod conf_change;
mod drain;
mod gc;
mod heartbeat;
mod lease;
mod life;
mod load_split;
mod propose;
mod quiesce;
mod read;
mod ready;
mod split;

pub(crate) use apply::ApplyContext;
pub(crate) use batch::{PendingWrites, Waiters};
pub(crate) use conf_change::ChangeJob;
pub use heartbeat::NODE_RANGE_ID;
pub(crate) use life::{load_tombstones, stage_destroy};
pub(crate) use load_split::LoadStats;
pub use split::{find_split_key, SplitCheckTask};
