//! The gateway: how a node's router reaches the replicas of a range. Requests for this
//! node go straight into the store's mailbox; requests for another node travel as an
//! `Internal.Execute` call.
//!
//! A call that failed before it could be sent (the node's address is unknown, the
//! connection could not be made, or the node has been silent for long enough to be
//! [suspected](crate::peers::Peers::suspected) down, so the call is not even tried) is
//! reported as `NodeUnreachable` (a refusal by the node itself, as `StoreStopped`):
//! certainly not applied, so the router may retry it
//! anywhere, and a partitioned gateway answers `UNAVAILABLE` instead of hanging. A call
//! that failed after it may have been delivered is `Ambiguous`: the router retries reads
//! and splits, and reports any other write as of unknown outcome.

use std::sync::Arc;
use std::time::Duration;

use flotilla_raftstore::node::StoreHandle;
use flotilla_raftstore::{callback, Error as StoreError, Request, ResponseReceiver};
use flotilla_router::NodeClient;

use crate::convert::{request_to_proto, response_from_proto};
use crate::peers::Peers;
use crate::proto::internal_client::InternalClient;
use crate::transport::MAX_FRAME_BYTES;

/// How long a forwarded command may take before its caller gives up on it. Longer than
/// the store's own request timeout, so the store's answer (`Timeout`) normally wins.
const EXECUTE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends range requests to the local store or over the network.
#[derive(Clone)]
pub struct Gateway {
    peers: Arc<Peers>,
    store: StoreHandle,
}

impl Gateway {
    /// A gateway for the node whose store is `store`.
    pub fn new(peers: Arc<Peers>, store: StoreHandle) -> Gateway {
        Gateway { peers, store }
    }
}

impl NodeClient for Gateway {
    fn send(&self, node_id: u64, req: Request) -> ResponseReceiver {
        if node_id == self.peers.me() {
            return self.store.request(req);
        }
        let (cb, rx) = callback();
        let peers = self.peers.clone();
        tokio::spawn(async move {
            let _ = cb.send(execute_remote(&peers, node_id, req).await);
        });
        rx
    }
}

pub(crate) async fn execute_remote(
    peers: &Peers,
    node_id: u64,
    req: Request,
) -> flotilla_raftstore::Result<flotilla_raftstore::Response> {
    let range_id = req.range_id;
    if peers.suspected(node_id) {
        let reason = "silent for too long: suspected down".to_string();
        return Err(StoreError::NodeUnreachable { node_id, reason });
    }
    let Some(channel) = peers.channel(node_id) else {
        return Err(StoreError::NodeUnreachable {
            node_id,
            reason: "its address is not known".into(),
        });
    };
    let mut call = tonic::Request::new(request_to_proto(req));
    call.set_timeout(EXECUTE_TIMEOUT);
    peers.stamp(&mut call);
    let mut client = InternalClient::new(channel)
        .max_decoding_message_size(MAX_FRAME_BYTES)
        .max_encoding_message_size(MAX_FRAME_BYTES);
    match client.execute(call).await {
        Ok(resp) => response_from_proto(resp.into_inner(), node_id),
        // Not connected, or refused before the store saw it (its stream refused by a
        // shutting-down connection; stopping, not initialized, another cluster):
        // certainly not applied.
        Err(status) if crate::client::not_delivered(&status) => Err(StoreError::NodeUnreachable {
            node_id,
            reason: crate::client::with_causes(&status),
        }),
        Err(status) if crate::errors::not_run(&status) => Err(StoreError::StoreStopped { node_id }),
        Err(status) => Err(StoreError::Ambiguous {
            range_id,
            reason: format!(
                "node {node_id} did not answer: {}",
                crate::client::with_causes(&status)
            ),
        }),
    }
}
