//! Node identity beyond the data directory's own records: one node id is one live
//! process, and a node that has served is never re-created from a blank disk.
//!
//! - **Two processes, one id.** A copied data directory started elsewhere would make two
//!   processes answer as the same node (and, worse, cast Raft votes as the same replica).
//!   Every `Hello` carries the caller's per-process nonce. A node that knows the caller's
//!   id at another address asks that address who it is; if a live process with another
//!   nonce answers there, the caller is refused with `FAILED_PRECONDITION`
//!   (`duplicate_node`), and a refused node exits. A restarting node checks this before
//!   its store starts, so the second process never sends a Raft message.
//! - **A wiped disk.** Each node records, durably, the members it has had Raft traffic
//!   from (`Store::record_member_seen`) and lists them in its `Hello` answers. A node with
//!   a blank data directory whose id is on that list lost its data: it exits with what to
//!   do instead of waiting for an `init` (which would hand it the initial ranges and
//!   leave it chasing snapshots), and `init` does not send it a bootstrap.

use std::time::Duration;

use flotilla_raftstore::Store;
use tonic::{Code, Status};

use crate::errors::{status, ServerError};
use crate::proto::{BootstrapRequest, HelloRequest, HelloResponse};
use crate::server::State;

/// The `flotilla-error` name of a refused duplicate.
pub const DUPLICATE_NODE: &str = "duplicate_node";

impl State {
    /// Records (once per node, durably) that `node` has sent this node Raft traffic.
    pub fn note_member_seen(&self, node: u64) {
        if !self.members_seen.lock().insert(node) {
            return;
        }
        if let Err(e) = Store::record_member_seen(&self.engine, node) {
            tracing::warn!(node, error = %e, "could not record a member as seen");
        }
    }

    /// The members this node has had Raft traffic from.
    pub fn members_seen(&self) -> Vec<u64> {
        self.members_seen.lock().iter().copied().collect()
    }
}

/// Refuses a `Hello` whose caller claims the id of a node another live process serves:
/// the id is known here at another address, and a process with another nonce answers
/// there.
pub async fn check_claim(state: &State, hello: &HelloRequest) -> Result<(), Status> {
    let Some(known) = state.peers.address(hello.node_id) else {
        return Ok(());
    };
    if hello.node_id == state.cfg.node_id || known == hello.address || hello.process_nonce == 0 {
        return Ok(());
    }
    let claim = (hello.address.clone(), hello.process_nonce);
    if state.accepted_claims.lock().get(&hello.node_id) == Some(&claim) {
        return Ok(());
    }
    let there = crate::discovery::probe(state, &known).await;
    if !there.is_ok_and(|t| t.node_id == hello.node_id && t.process_nonce != hello.process_nonce) {
        state.accepted_claims.lock().insert(hello.node_id, claim);
        return Ok(());
    }
    tracing::warn!(node = hello.node_id, live = %known, claimant = %hello.address, "refused a second process claiming a live node's id");
    Err(status(
        Code::FailedPrecondition,
        DUPLICATE_NODE,
        format!(
            "node {} is already served by a live process at {known}; refusing the process at {} \
             that claims the same id. Two processes must never run as one node (was its data \
             directory copied?): stop this one",
            hello.node_id, hello.address
        ),
    ))
}

/// Before a restarting node starts its store: asks the members it knows whether another
/// live process already serves its id; a refusal stops it.
pub async fn ensure_unique(state: &State, identity: &BootstrapRequest) -> Result<(), ServerError> {
    let me = state.cfg.node_id;
    // Say which cluster this node belongs to, or its hellos are not checked as a member's.
    state.peers.set_cluster(
        &identity.cluster_id,
        identity.nodes.iter().map(|n| n.node_id).collect(),
    );
    let mut targets: Vec<String> = state.cfg.join.clone();
    targets.extend(
        identity
            .nodes
            .iter()
            .filter(|n| n.node_id != me)
            .map(|n| n.address.clone()),
    );
    targets.sort();
    targets.dedup();
    for address in targets.into_iter().filter(|a| *a != state.cfg.advertise) {
        let answer = tokio::time::timeout(
            Duration::from_secs(3),
            crate::discovery::hello(state, &address),
        )
        .await;
        match answer {
            Ok(Err(s)) => refusal(&s)?,
            // Before the store starts: it must not apply an entry of a format this binary
            // does not read, and it must write by the version the cluster is at.
            Ok(Ok(resp)) if state.peers.same_cluster(&resp.cluster_id) => {
                let source = format!("node {} at {address}", resp.node_id);
                state.follow_version(resp.cluster_version, &source)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The error a refused claim becomes (nothing for any other failure).
pub fn refusal(s: &Status) -> Result<(), ServerError> {
    if crate::errors::error_name(s) == Some(DUPLICATE_NODE) {
        return Err(ServerError::DuplicateNode(s.message().to_string()));
    }
    Ok(())
}

/// For a node without a cluster identity, what a member of an initialized cluster
/// answered: if it says this node served before, its disk was wiped or replaced, and it
/// stops, saying why (it must not rejoin under the id whose data it lost). Otherwise the
/// caller asks to join (`cluster::join_via`).
pub fn check_blank_node(
    state: &State,
    address: &str,
    resp: &HelloResponse,
) -> Result<(), ServerError> {
    let me = state.cfg.node_id;
    if state.peers.cluster_id().is_some() || resp.cluster_id.is_empty() {
        return Ok(());
    }
    if !resp.members_seen.contains(&me) {
        return Ok(());
    }
    Err(ServerError::ReplacedNode(format!(
        "node {me} has served in cluster {} (node {} at {address} has had Raft traffic from it), but \
         data directory {} holds no cluster identity: it was wiped or replaced, and a node cannot \
         rejoin from a blank disk under the id whose data it lost. Restore its data directory, or \
         start this machine with a fresh --node-id: it joins as a new node, and placement replaces \
         node {me}'s replicas once it has been dead for --dead-node-timeout",
        resp.cluster_id,
        resp.node_id,
        state.cfg.data_dir.display()
    )))
}
