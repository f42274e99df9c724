//! The router over an in-process [`LocalCluster`]: requests go into the nodes' mailboxes,
//! and [`open_local`] wires a [`Db`] to the cluster, with a task publishing the nodes'
//! meta records.

use std::sync::{Arc, Weak};

use flotilla_raftstore::keyspace::META_RANGE_ID;
use flotilla_raftstore::local::LocalCluster;
use flotilla_raftstore::{callback, Error, Request, ResponseReceiver};

use crate::db::Db;
use crate::router::{NodeClient, RetryPolicy, Router};

impl NodeClient for Arc<LocalCluster> {
    fn send(&self, node_id: u64, req: Request) -> ResponseReceiver {
        match self.node(node_id) {
            Some(node) => node.request(req),
            None => {
                let (cb, rx) = callback();
                let _ = cb.send(Err(Error::StoreStopped { node_id }));
                rx
            }
        }
    }
}

/// The meta publisher holds the cluster weakly, so that it does not keep it alive.
impl NodeClient for Weak<LocalCluster> {
    fn send(&self, node_id: u64, req: Request) -> ResponseReceiver {
        match self.upgrade() {
            Some(cluster) => cluster.send(node_id, req),
            None => {
                let (cb, rx) = callback();
                let _ = cb.send(Err(Error::StoreStopped { node_id }));
                rx
            }
        }
    }
}

/// A router for `cluster` (reached through `client`), finding ranges through its meta
/// range.
pub fn local_router<C: NodeClient>(
    cluster: &LocalCluster,
    client: C,
    policy: RetryPolicy,
) -> Router<C> {
    let meta = cluster
        .ranges()
        .iter()
        .find(|r| r.range_id == META_RANGE_ID)
        .cloned()
        .unwrap_or_default();
    Router::new(client, meta, policy)
}

/// A [`Db`] over `cluster`. The first call also starts (on the current tokio runtime) the
/// task that publishes the cluster's meta records; it ends when the cluster is dropped.
pub fn open_local(cluster: &Arc<LocalCluster>) -> Arc<Db<Arc<LocalCluster>>> {
    if let Some(updates) = cluster.take_meta_updates() {
        let publisher = local_router(cluster, Arc::downgrade(cluster), RetryPolicy::default());
        tokio::spawn(async move { crate::meta::publish_meta(&publisher, updates).await });
    }
    Arc::new(Db::new(local_router(
        cluster,
        cluster.clone(),
        RetryPolicy::default(),
    )))
}
