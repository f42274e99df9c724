//! How Raft messages leave a store: the [`Transport`] trait, the envelope that carries a
//! raft-rs message with its routing information, and an in-process transport.
//!
//! The store hands over its outgoing messages once per round, already grouped by
//! destination node, so a transport flushes each destination once per round.
//!
//! A snapshot message lists files that must reach the destination's snapshot directory
//! before the message does (`snap.rs`); a transport moves them, in chunks, and delivers
//! the message only once they are complete there.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use raft::prelude::Message;

use crate::metapb::Replica;

/// A raft-rs message for one replica of one range.
#[derive(Debug, Clone, PartialEq)]
pub struct RaftEnvelope {
    pub range_id: u64,
    pub from: Replica,
    pub to: Replica,
    pub message: Message,
}

/// Delivers a round's messages to other nodes. Implementations must not block the
/// poller for long: queue and return.
pub trait Transport: Send + Sync + 'static {
    /// Sends `batch` (all for node `to`) as one unit. Delivery is best effort: Raft
    /// retransmits what is lost.
    fn send(&self, to: u64, batch: Vec<RaftEnvelope>);
}

/// Where a local node's batches go.
type Route = Arc<dyn Fn(Vec<RaftEnvelope>) + Send + Sync>;

/// A transport between stores in one process: each node registers a function that
/// accepts a batch (usually pushing it into that store's mailbox).
#[derive(Clone, Default)]
pub struct LocalTransport {
    routes: Arc<RwLock<HashMap<u64, Route>>>,
    /// Each node's snapshot directory.
    snap_roots: Arc<RwLock<HashMap<u64, std::path::PathBuf>>>,
}

impl LocalTransport {
    /// An empty transport.
    pub fn new() -> LocalTransport {
        LocalTransport::default()
    }

    /// Routes batches for `node_id` to `deliver`, replacing an earlier route.
    pub fn register(
        &self,
        node_id: u64,
        deliver: impl Fn(Vec<RaftEnvelope>) + Send + Sync + 'static,
    ) {
        self.routes.write().insert(node_id, Arc::new(deliver));
    }

    /// Records where node `node_id` keeps its snapshots.
    pub fn register_snapshots(&self, node_id: u64, root: std::path::PathBuf) {
        self.snap_roots.write().insert(node_id, root);
    }

    /// Copies a snapshot's files to its destination on a thread of its own (never on the
    /// sender's poller), then delivers it.
    fn send_snapshot(&self, to: u64, env: RaftEnvelope, deliver: Route) {
        let roots = self.snap_roots.read();
        let (Some(from_root), Some(to_root)) = (
            roots.get(&env.from.node_id).cloned(),
            roots.get(&to).cloned(),
        ) else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("snap-send".into())
            .spawn(move || {
                match crate::snap::copy(
                    &from_root,
                    &to_root,
                    env.range_id,
                    env.message.get_snapshot(),
                ) {
                    Ok(()) => deliver(vec![env]),
                    Err(e) => {
                        tracing::warn!(to, error = %e, "snapshot not delivered; Raft will retry")
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(to, error = %e, "could not start a snapshot transfer");
        }
    }

    /// Drops the route to `node_id`: its messages are lost, as if it were down.
    pub fn unregister(&self, node_id: u64) {
        self.routes.write().remove(&node_id);
    }
}

impl Transport for LocalTransport {
    fn send(&self, to: u64, batch: Vec<RaftEnvelope>) {
        let Some(deliver) = self.routes.read().get(&to).cloned() else {
            return;
        };
        let (snapshots, batch): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|e| e.message.get_msg_type() == raft::prelude::MessageType::MsgSnapshot);
        for env in snapshots {
            self.send_snapshot(to, env, deliver.clone());
        }
        if !batch.is_empty() {
            deliver(batch);
        }
    }
}
