//! The node-to-node service: discovery (`Hello`), bootstrap, the Raft message stream,
//! snapshots, forwarded range commands (`Execute`) and a node's replica list.
//!
//! Every call but `Hello`, `Bootstrap`, `Join` and `AllocateNodeId` (whose callers have
//! no cluster yet) must come from the same cluster: the caller's
//! `flotilla-cluster-id` is checked against this node's, and a mismatch is refused with
//! `FAILED_PRECONDITION`, so a node started against the wrong cluster cannot disturb it.
//! (`Bootstrap` has its own rule: a first one only from the lowest-id member.) They must
//! also come from a binary that reads the cluster's format version (`flotilla-version`,
//! `raftstore/src/version.rs`): a node left on an older binary after the cluster moved
//! on is refused, and says so, instead of taking part in a format it would misread.

use std::sync::Arc;

use flotilla_engine::Cf;
use flotilla_raftstore::node::StoreMsg;
use flotilla_raftstore::snap;
use flotilla_raftstore::{Error as StoreError, RangeStatus};
use tonic::{Code, Request, Response, Status, Streaming};

use crate::convert::{envelope_from_proto, request_from_proto, response_to_proto};
use crate::errors::{invalid, status, stopping, ServerError};
use crate::peers::{caller, caller_versions};
use crate::proto::internal_server::Internal;
use crate::proto::*;
use crate::server::{Running, State};

/// `Internal` over a server's shared state.
pub struct InternalService(pub Arc<State>);

impl InternalService {
    /// The running store, for a call from node `from` of the same cluster.
    fn admit<T>(&self, req: &Request<T>) -> Result<(u64, Arc<Running>), Status> {
        let (from, cluster) = caller(req);
        let from = from.ok_or_else(|| invalid("node-to-node call without flotilla-from-node"))?;
        let running = self.0.serving()?;
        if cluster.as_deref() != Some(running.cluster_id.as_str()) {
            return Err(wrong_cluster(
                self.0.cfg.node_id,
                &running.cluster_id,
                from,
                cluster.as_deref(),
            ));
        }
        let (theirs, their_cluster) = caller_versions(req);
        // Raised before anything of the call is taken: a Raft stream from a node at a newer
        // version may carry entries in its format, which this node may hold only once its
        // disk says so (and must refuse if its binary cannot read them). Checked first: this
        // runs on every forwarded request.
        if their_cluster > self.0.version.get() {
            self.0
                .follow_version(their_cluster, &format!("node {from}"))
                .map_err(|e| match e {
                    ServerError::Halted(m) => status(Code::FailedPrecondition, "binary_too_old", m),
                    e => status(Code::Internal, "storage", e.to_string()),
                })?;
        }
        if theirs < self.0.version.get() {
            return Err(too_old(
                self.0.cfg.node_id,
                from,
                theirs,
                self.0.version.get(),
            ));
        }
        Ok((from, running))
    }
}

fn wrong_cluster(me: u64, mine: &str, from: u64, theirs: Option<&str>) -> Status {
    status(
        Code::FailedPrecondition,
        "wrong_cluster",
        format!(
            "node {me} belongs to cluster {mine}; node {from} says it belongs to {}",
            theirs.unwrap_or("no cluster")
        ),
    )
}

/// The refusal of a call from node `from`, whose binary reads formats up to `theirs`,
/// by a cluster at version `cluster`.
pub(crate) fn too_old(me: u64, from: u64, theirs: u32, cluster: u32) -> Status {
    status(
        Code::FailedPrecondition,
        "binary_too_old",
        format!(
            "node {me} refuses node {from}: its binary reads format versions up to {theirs}, and the \
             cluster writes version {cluster}; start node {from} with a binary of this release or newer"
        ),
    )
}

/// The status a failed bootstrap becomes.
pub(crate) fn bootstrap_status(e: ServerError) -> Status {
    match e {
        ServerError::WrongCluster(m) => status(Code::FailedPrecondition, "wrong_cluster", m),
        e @ ServerError::Config(_) => invalid(e.to_string()),
        e => status(Code::Internal, "storage", e.to_string()),
    }
}

#[tonic::async_trait]
impl Internal for InternalService {
    async fn hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        let hello = req.into_inner();
        let mine = self.0.peers.cluster_id();
        if self.0.peers.same_cluster(&hello.cluster_id) {
            crate::identity::check_claim(&self.0, &hello).await?;
        }
        // Once in a cluster, only its members teach this node addresses (a member always
        // says its cluster id), so a stray node reusing an id cannot redirect traffic.
        if self.0.peers.same_cluster(&hello.cluster_id) {
            self.0.peers.learn(hello.node_id, &hello.address);
        }
        Ok(Response::new(HelloResponse {
            node_id: self.0.cfg.node_id,
            cluster_id: mine.unwrap_or_default(),
            known: self.0.peers.known(),
            process_nonce: self.0.process_nonce,
            members_seen: self.0.members_seen(),
            meta: freshest_meta(&self.0).await,
            version: self.0.peers.binary_version(),
            cluster_version: self.0.version.get(),
        }))
    }

    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<BootstrapRequest>, Status> {
        let identity = crate::cluster::admit(&self.0, req.into_inner()).await?;
        Ok(Response::new(identity))
    }

    async fn allocate_node_id(
        &self,
        req: Request<AllocateNodeIdRequest>,
    ) -> Result<Response<AllocateNodeIdResponse>, Status> {
        Ok(Response::new(
            crate::node_id::allocate(&self.0, req.into_inner()).await?,
        ))
    }

    async fn bootstrap(
        &self,
        req: Request<BootstrapRequest>,
    ) -> Result<Response<BootstrapResponse>, Status> {
        let (from, _) = caller(&req);
        let identity = req.into_inner();
        let state = self.0.clone();
        let stored = state
            .stored_identity()
            .map_err(|e| status(Code::Internal, "storage", e.to_string()))?;
        // A first bootstrap comes only from the member with the lowest id (see `Admin.Init`);
        // a repeat of the identity this node already has is accepted from anyone.
        let first = crate::service::admin::first_member(&identity.nodes).node_id;
        if stored.is_none() && from != Some(first) {
            return Err(status(
                Code::FailedPrecondition,
                "wrong_cluster",
                format!("a bootstrap must come from node {first}, the member with the lowest id, not {from:?}"),
            ));
        }
        tokio::task::spawn_blocking(move || state.bootstrap(identity))
            .await
            .map_err(|e| status(Code::Internal, "storage", e.to_string()))?
            .map_err(bootstrap_status)?;
        Ok(Response::new(BootstrapResponse {}))
    }

    async fn raft(&self, req: Request<Streaming<RaftBatch>>) -> Result<Response<Done>, Status> {
        let (from, running) = self.admit(&req)?;
        let me = self.0.cfg.node_id;
        let store = running.store.clone();
        drop(running);
        let mut stream = req.into_inner();
        self.0.note_member_seen(from);
        while let Some(batch) = stream.message().await? {
            self.0.peers.heard_from(from);
            let envelopes = batch
                .envelopes
                .into_iter()
                .map(|e| envelope_from_proto(e, from, me))
                .collect::<Result<Vec<_>, _>>()
                .map_err(invalid)?;
            if !store.send(StoreMsg::Raft(envelopes)) {
                return Err(stopping(me));
            }
        }
        Ok(Response::new(Done {}))
    }

    async fn snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Done>, Status> {
        let (from, running) = self.admit(&req)?;
        let me = self.0.cfg.node_id;
        // A few at a time: each writes to the disk the other ranges need too. Refused at
        // once rather than queued, so that no sender's bytes wait unread in a connection.
        let _slot = self.0.snapshot_slots.try_acquire().map_err(|e| match e {
            tokio::sync::TryAcquireError::Closed => stopping(me),
            tokio::sync::TryAcquireError::NoPermits => status(
                Code::ResourceExhausted,
                "busy",
                format!("node {me} is receiving as many snapshots as it takes at once; the sender retries later"),
            ),
        })?;
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .and_then(|c| c.envelope)
            .ok_or_else(|| invalid("snapshot stream without its message"))?;
        let env = envelope_from_proto(first, from, me).map_err(invalid)?;
        let root = snap::snap_root(self.0.engine.path());
        let incoming = snap::Incoming::begin(&root, env.range_id, env.message.get_snapshot())
            .map_err(|e| invalid(e.to_string()))?;
        if let Some(mut incoming) = incoming {
            while let Some(chunk) = stream.message().await? {
                // Small writes into the page cache; the file is synced once complete.
                incoming
                    .write(&chunk.data)
                    .map_err(|e| invalid(e.to_string()))?;
            }
            // Dropped unfinished on any error above: nothing half-written stays.
            incoming.finish().map_err(|e| invalid(e.to_string()))?;
        }
        running.store.send(StoreMsg::Raft(vec![env]));
        Ok(Response::new(Done {}))
    }

    async fn execute(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let (_, running) = self.admit(&req)?;
        let request = request_from_proto(req.into_inner())
            .ok_or_else(|| invalid("range request without a command"))?;
        let range_id = request.range_id;
        let answer = running.store.request(request).await.unwrap_or_else(|_| {
            Err(StoreError::Ambiguous {
                range_id,
                reason: "the store stopped before answering".into(),
            })
        });
        Ok(Response::new(response_to_proto(answer)))
    }

    async fn node_ranges(
        &self,
        req: Request<NodeRangesRequest>,
    ) -> Result<Response<NodeRangesResponse>, Status> {
        self.admit(&req)?;
        let NodeRangesRequest {
            with_sizes,
            summary_only,
        } = *req.get_ref();
        let answer = if summary_only {
            local_summary(&self.0).await
        } else {
            local_ranges(&self.0, with_sizes).await
        };
        answer.map(Response::new)
    }
}

/// This node's replicas; `with_sizes` also measures each range it leads.
pub async fn local_ranges(
    state: &Arc<State>,
    with_sizes: bool,
) -> Result<NodeRangesResponse, Status> {
    let me = state.cfg.node_id;
    let statuses = state
        .serving()?
        .store
        .status()
        .await
        .map_err(|_| stopping(me))?;
    let engine = state.engine.clone();
    let infos = move || {
        statuses
            .into_iter()
            .map(|s| range_info(&engine, s, with_sizes))
            .collect::<Vec<_>>()
    };
    let ranges = if with_sizes {
        // Measuring scans every range this node leads: off the async workers.
        tokio::task::spawn_blocking(infos)
            .await
            .map_err(|e| status(Code::Internal, "storage", e.to_string()))?
    } else {
        infos()
    };
    let leaders = ranges.iter().filter(|r| r.leader_node == me).count() as u32;
    let leases = ranges
        .iter()
        .filter(|r| r.lease && r.leader_node == me)
        .count() as u32;
    let snapshot_retries = ranges.iter().map(|r| r.snapshot_retries).sum();
    let replicas = ranges.len() as u32;
    Ok(NodeRangesResponse {
        node_id: me,
        ranges,
        leaders,
        replicas,
        leases,
        snapshot_retries,
    })
}

/// This node's counts of replicas, leaders and leases, without a row per replica.
pub async fn local_summary(state: &Arc<State>) -> Result<NodeRangesResponse, Status> {
    let me = state.cfg.node_id;
    let s = state
        .serving()?
        .store
        .summary()
        .await
        .map_err(|_| stopping(me))?;
    Ok(NodeRangesResponse {
        node_id: me,
        ranges: Vec::new(),
        leaders: s.leaders as u32,
        replicas: s.replicas as u32,
        leases: s.leases as u32,
        snapshot_retries: s.snapshot_repeats,
    })
}

/// A replica's status as the admin service reports it. Only leaders measure their range
/// (a scan of its keys and values), so each range is measured once per report.
fn range_info(engine: &flotilla_engine::Engine, s: RangeStatus, with_sizes: bool) -> RangeInfo {
    let mut size = 0u64;
    if s.is_leader && with_sizes {
        let d = &s.descriptor;
        let _ = engine.scan(Cf::Data, &d.start, &d.end, |k, v| {
            size += (k.len() + v.len()) as u64;
            true
        });
    }
    RangeInfo {
        leader_node: s.leader.map(|l| l.node_id).unwrap_or_default(),
        term: s.term,
        lease: s.has_lease,
        approximate_size: size,
        applied_index: s.applied_index,
        snapshot_retries: s.snapshot_repeats,
        descriptor: Some(s.descriptor),
    }
}

/// The freshest meta range descriptor this node knows: its own replica's, or its
/// router's (whichever is newer); `None` before the node runs a store.
async fn freshest_meta(state: &State) -> Option<flotilla_raftstore::RangeDescriptor> {
    let running = state.running()?;
    let known = running.db.router().meta();
    let local = running
        .store
        .range_status(flotilla_raftstore::keyspace::META_RANGE_ID)
        .await
        .ok()
        .flatten();
    let shape = |d: &flotilla_raftstore::RangeDescriptor| (d.epoch().version, d.epoch().conf_ver);
    match local.map(|s| s.descriptor) {
        Some(d) if shape(&d) > shape(&known) => Some(d),
        _ => Some(known),
    }
}
