//! Discovery: a node learns the other nodes' ids and addresses by saying `Hello` to its
//! `--join` addresses and to every node it has heard of, every couple of seconds. A node
//! that finds its `--join` peers in another cluster than the one its data directory
//! belongs to stops with an error: it was started against the wrong cluster. So does a
//! node that learns from an answer that the cluster writes a log format its binary does
//! not read (`raftstore/src/version.rs`).

use std::sync::Arc;

use tonic::Status;

use crate::errors::ServerError;
use crate::proto::HelloResponse;
use crate::server::{State, DISCOVERY_INTERVAL};

/// Says hello to the node at `address` on behalf of `state`'s node.
pub async fn hello(state: &State, address: &str) -> Result<HelloResponse, Status> {
    say_hello(state, address, state.process_nonce).await
}

/// Asks the node at `address` who it is without claiming anything: the hello carries no
/// process nonce, so the callee does not check it against the process it knows under
/// this node's id (`identity::check_claim` probes with it; a probe that was itself
/// checked would probe back, and two nodes that know each other at other addresses
/// would probe each other without end).
pub async fn probe(state: &State, address: &str) -> Result<HelloResponse, Status> {
    say_hello(state, address, 0).await
}

async fn say_hello(state: &State, address: &str, nonce: u64) -> Result<HelloResponse, Status> {
    let channel = state
        .peers
        .dialer()
        .channel(address)
        .map_err(|e| Status::invalid_argument(format!("address {address}: {e}")))?;
    state.peers.hello(channel, nonce).await
}

/// Runs discovery until the process ends; returns an error only when the node must stop.
/// Each round also refreshes the cluster's node records (`cluster::refresh`).
pub async fn run(state: Arc<State>) -> Result<(), ServerError> {
    loop {
        discover_once(&state).await?;
        if let (Some(running), Ok(Some(identity))) = (state.running(), state.stored_identity()) {
            if let Err(e) =
                crate::cluster::refresh(&state, &running, identity.replication_factor).await
            {
                tracing::debug!(error = %e, "could not read the node records; next round");
            }
        }
        tokio::time::sleep(DISCOVERY_INTERVAL).await;
    }
}

/// One round: hello to every `--join` address and every known node. A node with no
/// identity whose `--join` node belongs to a running cluster joins it.
pub async fn discover_once(state: &Arc<State>) -> Result<(), ServerError> {
    let mut targets: Vec<(Option<u64>, String)> =
        state.cfg.join.iter().map(|a| (None, a.clone())).collect();
    for n in state
        .peers
        .known()
        .into_iter()
        .filter(|n| n.node_id != state.cfg.node_id)
    {
        if let Some(addr) = state.peers.address(n.node_id) {
            targets.push((Some(n.node_id), addr));
        }
    }
    for (expected, address) in targets {
        let resp = match hello(state, &address).await {
            Ok(resp) => resp,
            Err(s) => {
                crate::identity::refusal(&s)?;
                if state.peers.cluster_id().is_none() && expected.is_none() {
                    tracing::warn!(address, error = %state.peers.dialer().failure(&s), "--join node does not answer; still trying");
                }
                continue;
            }
        };
        crate::identity::check_blank_node(state, &address, &resp)?;
        if state.peers.cluster_id().is_none()
            && !resp.cluster_id.is_empty()
            && resp.node_id != state.cfg.node_id
        {
            if crate::cluster::join_via(state, &address).await? {
                return Ok(());
            }
            continue;
        }
        if resp.node_id == state.cfg.node_id || expected.is_some_and(|e| e != resp.node_id) {
            if expected.is_none()
                && resp.node_id == state.cfg.node_id
                && address != state.cfg.advertise
            {
                tracing::warn!(address, "a --join address answers with this node's own id");
            }
            continue;
        }
        if let (Some(mine), false) = (state.peers.cluster_id(), resp.cluster_id.is_empty()) {
            if mine != resp.cluster_id && expected.is_none() {
                return Err(ServerError::WrongCluster(format!(
                    "data directory {} belongs to cluster {mine}, but node {} at --join address {address} \
                     belongs to cluster {}; use a fresh data directory to join that cluster",
                    state.cfg.data_dir.display(),
                    resp.node_id,
                    resp.cluster_id
                )));
            }
        }
        if !state.peers.same_cluster(&resp.cluster_id) {
            continue;
        }
        // The cluster may have moved to a newer format while this node was away.
        state.follow_version(
            resp.cluster_version,
            &format!("node {} at {address}", resp.node_id),
        )?;
        state.peers.learn(resp.node_id, &address);
        state.peers.answered(resp.node_id);
        if let (Some(meta), Some(running)) = (resp.meta.clone(), state.running()) {
            running.db.router().learn_range(meta);
        }
        for k in resp.known {
            if state.peers.address(k.node_id).is_none() {
                // A member of this cluster vouches for the nodes it knows. Without this, a
                // node restarted with an identity older than a later member's join could
                // not learn that member's address until it read the node records from
                // the meta range, whose leader might be that very member (the `placement`
                // test's restart hung on this for its full 120 s).
                state.peers.admit(k.node_id);
                state.peers.learn(k.node_id, &k.address);
            }
        }
    }
    Ok(())
}
