//! How Raft messages leave a store: the [`Transport`] trait, the envelope that carries a
//! raft-rs message with its routing information, and an in-process transport.
//!
//! The store hands over its outgoing messages once per round, already grouped by
//! destination node, so a transport flushes each destination once per round.

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
}

impl LocalTransport {
    /// An empty transport.
    pub fn new() -> LocalTransport {
        LocalTransport::default()
    }

    /// Routes batches for `node_id` to `deliver`, replacing an earlier route.
    pub fn register(&self, node_id: u64, deliver: impl Fn(Vec<RaftEnvelope>) + Send + Sync + 'static) {
        self.routes.write().insert(node_id, Arc::new(deliver));
    }

    /// Drops the route to `node_id`: its messages are lost, as if it were down.
    pub fn unregister(&self, node_id: u64) {
        self.routes.write().remove(&node_id);
    }
}

impl Transport for LocalTransport {
    fn send(&self, to: u64, batch: Vec<RaftEnvelope>) {
        let route = self.routes.read().get(&to).cloned();
        if let Some(deliver) = route {
            deliver(batch);
        }
    }
}
