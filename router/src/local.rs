//! The router over an in-process [`LocalCluster`]: requests go into the nodes' mailboxes,
//! and the cluster's bootstrap descriptors stand in for the meta range.

use std::sync::Arc;

use flotilla_raftstore::local::LocalCluster;
use flotilla_raftstore::{callback, Error, RangeDescriptor, Request, ResponseReceiver};

use crate::router::{NodeClient, RangeSource};

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

impl RangeSource for Arc<LocalCluster> {
    fn locate(&self, key: &[u8]) -> Option<RangeDescriptor> {
        Some(self.range_for(key).clone())
    }
}
