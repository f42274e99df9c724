//! The admin service: `init`, the cluster's status, the range table and manual splits.
//!
//! `Init` is CockroachDB's convention: nodes start with `--join` and wait; `flotilla init`
//! asks one of them to bootstrap the cluster. That node says `Hello` to every `--join`
//! address (all must answer: the initial ranges are replicated on every member) and hands
//! the call to the member with the lowest id, which picks a cluster id, bootstraps
//! itself, then the others (members accept a first `Bootstrap` only from that node).
//! Repeating `init` re-sends the stored identity to every member (finishing an init that
//! was cut short) and then answers `ALREADY_EXISTS`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tonic::{Code, Request, Response, Status};

use crate::discovery::hello;
use crate::errors::{invalid, router_status, status};
use crate::proto::admin_client::AdminClient;
use crate::proto::admin_server::Admin;
use crate::proto::internal_client::InternalClient;
use crate::proto::*;
use crate::server::{new_identity, State};
use crate::service::internal::{bootstrap_status, local_ranges, local_summary};
use crate::tls::auth::caller;

/// How long a status call waits for each node.
const NODE_TIMEOUT: Duration = Duration::from_secs(2);

/// `Admin` over a server's shared state.
pub struct AdminService(pub Arc<State>);

#[tonic::async_trait]
impl Admin for AdminService {
    async fn init(&self, req: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        let state = &self.0;
        let caller = caller(&req);
        let req = req.into_inner();
        tracing::info!(%caller, ranges = req.initial_ranges, "admin: init");
        if let Some(identity) = state
            .stored_identity()
            .map_err(|e| status(Code::Internal, "storage", e.to_string()))?
        {
            let first = first_member(&identity.nodes);
            if first.node_id != state.cfg.node_id {
                return forward_init(state, &first.address, req).await;
            }
            send_bootstraps(state, &identity).await?;
            return Err(already_initialized(&identity.cluster_id));
        }
        let members = match gather_members(state).await? {
            Gathered::Members(m) => m,
            // A `--join` node already has the cluster (an init was cut short): it finishes.
            Gathered::Initialized(address) => return forward_init(state, &address, req).await,
        };
        // Only the member with the lowest id bootstraps, so two `init`s sent to different
        // nodes cannot give the members different cluster ids: both end up at that node,
        // which can hold only one identity.
        let first = first_member(&members);
        if first.node_id != state.cfg.node_id {
            return forward_init(state, &first.address, req).await;
        }
        let factor = match req.replication_factor {
            0 => crate::config::DEFAULT_REPLICATION_FACTOR,
            f => f,
        };
        crate::config::check_replication_factor(factor).map_err(invalid)?;
        let ranges = req.initial_ranges.max(1);
        flotilla_raftstore::keyspace::check_initial_ranges(u64::from(ranges)).map_err(invalid)?;
        let identity = new_identity(ranges, factor, members);
        let (s, id) = (state.clone(), identity.clone());
        let bootstrapped = tokio::task::spawn_blocking(move || s.bootstrap(id))
            .await
            .map_err(|e| status(Code::Internal, "storage", e.to_string()))?;
        if let Err(e) = bootstrapped {
            // A concurrent init here won: the cluster is initialized all the same.
            if let Ok(Some(winner)) = state.stored_identity() {
                if winner.cluster_id != identity.cluster_id {
                    return Err(already_initialized(&winner.cluster_id));
                }
            }
            return Err(bootstrap_status(e));
        }
        send_bootstraps(state, &identity).await?;
        tracing::info!(cluster = %identity.cluster_id, nodes = identity.nodes.len(), "cluster initialized");
        Ok(Response::new(InitResponse {
            cluster_id: identity.cluster_id,
            nodes: identity.nodes,
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let state = &self.0;
        let running = state.serving()?;
        let mut nodes = Vec::new();
        let view = state.cluster_view();
        for n in state.peers.known() {
            let gone = view
                .node(n.node_id)
                .is_some_and(|r| r.membership() == NodeMembership::Decommissioned);
            let mut row = NodeStatus {
                node_id: n.node_id,
                address: n.address.clone(),
                ..Default::default()
            };
            match node_summary(state, n.node_id).await {
                Ok(r) => {
                    row.live = true;
                    row.replicas = r.replicas;
                    row.leaders = r.leaders;
                    row.leases = r.leases;
                    row.snapshot_retries = r.snapshot_retries;
                }
                // A decommissioned node that was stopped is no longer part of the cluster.
                Err(_) if gone => continue,
                Err(e) => row.error = e.message().to_string(),
            }
            nodes.push(row);
        }
        let answered_by = state.cfg.node_id;
        Ok(Response::new(StatusResponse {
            cluster_id: running.cluster_id.clone(),
            answered_by,
            nodes,
        }))
    }

    async fn ranges(&self, _: Request<RangesRequest>) -> Result<Response<RangesResponse>, Status> {
        let state = &self.0;
        state.serving()?;
        let mut best: BTreeMap<u64, RangeInfo> = BTreeMap::new();
        for n in state.peers.known() {
            let Ok(resp) = node_ranges(state, n.node_id, true).await else {
                continue;
            };
            for info in resp.ranges {
                let id = info
                    .descriptor
                    .as_ref()
                    .map(|d| d.range_id)
                    .unwrap_or_default();
                let leads = info.leader_node == resp.node_id;
                let better = match best.get(&id) {
                    None => true,
                    Some(old) => leads || newer_shape(&info, old),
                };
                if better {
                    best.insert(id, info);
                }
            }
        }
        Ok(Response::new(RangesResponse {
            ranges: best.into_values().collect(),
        }))
    }

    async fn split(&self, req: Request<SplitRequest>) -> Result<Response<SplitResponse>, Status> {
        let state = &self.0;
        let running = state.serving()?;
        let caller = caller(&req);
        let key = req.into_inner().key;
        tracing::info!(%caller, key = %crate::display::bytes(&key), "admin: split");
        let (left, right) = running.db.split(&key).await.map_err(router_status)?;
        Ok(Response::new(SplitResponse {
            left: Some(left),
            right: Some(right),
        }))
    }

    async fn change_replicas(
        &self,
        req: Request<ChangeReplicasRequest>,
    ) -> Result<Response<ChangeReplicasResponse>, Status> {
        let state = &self.0;
        let running = state.serving()?;
        let caller = caller(&req);
        let req = req.into_inner();
        tracing::info!(%caller, range = req.range_id, add = ?req.add, remove = ?req.remove, "admin: change replicas");
        check_members(state, &req.add)?;
        let desc = find_range(state, req.range_id).await?;
        let changed = running
            .db
            .change_range_replicas(&desc, req.add, req.remove)
            .await
            .map_err(router_status)?;
        Ok(Response::new(ChangeReplicasResponse {
            descriptor: Some(changed),
        }))
    }

    async fn nodes(&self, req: Request<NodesRequest>) -> Result<Response<NodesResponse>, Status> {
        let sizes = !req.into_inner().skip_sizes;
        Ok(Response::new(
            crate::service::nodes::nodes(&self.0, sizes).await?,
        ))
    }

    async fn decommission(
        &self,
        req: Request<DecommissionRequest>,
    ) -> Result<Response<NodesResponse>, Status> {
        let caller = caller(&req);
        let node = req.into_inner().node_id;
        tracing::info!(%caller, node, "admin: decommission");
        Ok(Response::new(
            crate::service::nodes::set_membership(&self.0, node, NodeMembership::Decommissioning)
                .await?,
        ))
    }

    async fn recommission(
        &self,
        req: Request<DecommissionRequest>,
    ) -> Result<Response<NodesResponse>, Status> {
        let caller = caller(&req);
        let node = req.into_inner().node_id;
        tracing::info!(%caller, node, "admin: recommission");
        Ok(Response::new(
            crate::service::nodes::set_membership(&self.0, node, NodeMembership::Active).await?,
        ))
    }

    async fn set_replication_factor(
        &self,
        req: Request<SetReplicationFactorRequest>,
    ) -> Result<Response<NodesResponse>, Status> {
        let caller = caller(&req);
        let factor = req.into_inner().replication_factor;
        tracing::info!(%caller, factor, "admin: set the replication factor");
        Ok(Response::new(
            crate::service::nodes::set_replication_factor(&self.0, factor).await?,
        ))
    }
}

/// The newest descriptor of range `range_id` any node reports.
async fn find_range(
    state: &Arc<State>,
    range_id: u64,
) -> Result<flotilla_raftstore::RangeDescriptor, Status> {
    let mut best: Option<flotilla_raftstore::RangeDescriptor> = None;
    for n in state.peers.known() {
        let Ok(resp) = node_ranges(state, n.node_id, false).await else {
            continue;
        };
        for d in resp
            .ranges
            .into_iter()
            .filter_map(|i| i.descriptor)
            .filter(|d| d.range_id == range_id)
        {
            let shape =
                |d: &flotilla_raftstore::RangeDescriptor| (d.epoch().version, d.epoch().conf_ver);
            if best.as_ref().is_none_or(|b| shape(&d) > shape(b)) {
                best = Some(d);
            }
        }
    }
    best.ok_or_else(|| {
        invalid(format!(
            "no node reports range {range_id}; `flotilla ranges` lists the ranges"
        ))
    })
}

/// Refuses to add replicas on nodes that are not members of the cluster.
fn check_members(state: &State, add: &[u64]) -> Result<(), Status> {
    let known: Vec<u64> = state.peers.known().iter().map(|n| n.node_id).collect();
    match add.iter().find(|n| !known.contains(n) && **n != state.cfg.node_id) {
        Some(n) => Err(invalid(format!(
            "node {n} is not a member of this cluster (members: {known:?}); start it and let it join first"
        ))),
        None => Ok(()),
    }
}

fn already_initialized(cluster_id: &str) -> Status {
    status(
        Code::AlreadyExists,
        "already_initialized",
        format!("cluster {cluster_id} is already initialized; every member has its identity"),
    )
}

/// What asking the `--join` nodes found.
enum Gathered {
    /// This node and every `--join` node, none in a cluster yet.
    Members(Vec<NodeAddress>),
    /// The node at this address already belongs to a cluster.
    Initialized(String),
}

/// Says hello to every `--join` node: all must answer. Refuses a member set that leaves
/// out a node some member knows of (their `--join` lists differ), so two inits cannot
/// bootstrap overlapping member sets.
async fn gather_members(state: &State) -> Result<Gathered, Status> {
    let mut members = vec![NodeAddress {
        node_id: state.cfg.node_id,
        address: state.cfg.advertise.clone(),
    }];
    let mut known: Vec<NodeAddress> = state.peers.known();
    for address in &state.cfg.join {
        let resp = hello(state, address).await.map_err(|e| {
            status(
                Code::Unavailable,
                "unavailable",
                format!(
                    "--join node at {address} did not answer ({}); init needs every node up",
                    e.message()
                ),
            )
        })?;
        if !resp.cluster_id.is_empty() {
            return Ok(Gathered::Initialized(address.clone()));
        }
        if resp.node_id == state.cfg.node_id && resp.process_nonce != state.process_nonce {
            return Err(invalid(format!(
                "the node at {address} also has id {}, this node's id; give every node its own --node-id",
                resp.node_id
            )));
        }
        match members.iter().find(|n| n.node_id == resp.node_id) {
            Some(n) if resp.node_id == state.cfg.node_id || n.address == *address => {}
            Some(n) => {
                return Err(invalid(format!(
                    "node id {} answers at both {} and {address}",
                    resp.node_id, n.address
                )))
            }
            None => members.push(NodeAddress {
                node_id: resp.node_id,
                address: address.clone(),
            }),
        }
        known.extend(resp.known);
    }
    if let Some(stray) = known
        .iter()
        .find(|k| !members.iter().any(|m| m.node_id == k.node_id))
    {
        return Err(invalid(format!(
            "node {} at {} is known to the cluster's nodes but not in this node's --join list; \
             list every node in --join (or run init on a node that does)",
            stray.node_id, stray.address
        )));
    }
    Ok(Gathered::Members(members))
}

/// The member with the lowest id: the one that bootstraps the others.
pub(crate) fn first_member(nodes: &[NodeAddress]) -> NodeAddress {
    nodes
        .iter()
        .min_by_key(|n| n.node_id)
        .cloned()
        .unwrap_or_default()
}

/// Hands `init` to the node at `address`.
async fn forward_init(
    state: &State,
    address: &str,
    req: InitRequest,
) -> Result<Response<InitResponse>, Status> {
    tracing::info!(
        to = address,
        "forwarding init to the member with the lowest id"
    );
    let channel = state
        .peers
        .dialer()
        .channel(address)
        .map_err(|e| invalid(format!("address {address}: {e}")))?;
    let mut call = Request::new(req);
    call.set_timeout(Duration::from_secs(30));
    state.peers.stamp(&mut call);
    AdminClient::new(channel).init(call).await
}

fn newer_shape(a: &RangeInfo, b: &RangeInfo) -> bool {
    let epoch = |i: &RangeInfo| i.descriptor.as_ref().map(|d| d.epoch()).unwrap_or_default();
    let (ea, eb) = (epoch(a), epoch(b));
    (ea.version, ea.conf_ver, a.term) > (eb.version, eb.conf_ver, b.term) && b.leader_node == 0
}

/// Node `node`'s replicas: from the store here, or by asking that node.
pub(crate) async fn node_ranges(
    state: &Arc<State>,
    node: u64,
    with_sizes: bool,
) -> Result<NodeRangesResponse, Status> {
    if node == state.cfg.node_id {
        return local_ranges(state, with_sizes).await;
    }
    ask_node_ranges(
        state,
        node,
        NodeRangesRequest {
            with_sizes,
            summary_only: false,
        },
    )
    .await
}

/// A node's counts of replicas, leaders and leases (no rows: cheap at any range count).
pub(crate) async fn node_summary(
    state: &Arc<State>,
    node: u64,
) -> Result<NodeRangesResponse, Status> {
    if node == state.cfg.node_id {
        return local_summary(state).await;
    }
    ask_node_ranges(
        state,
        node,
        NodeRangesRequest {
            with_sizes: false,
            summary_only: true,
        },
    )
    .await
}

async fn ask_node_ranges(
    state: &Arc<State>,
    node: u64,
    req: NodeRangesRequest,
) -> Result<NodeRangesResponse, Status> {
    let channel = state
        .peers
        .channel(node)
        .ok_or_else(|| Status::unavailable(format!("no address for node {node}")))?;
    let mut req = Request::new(req);
    req.set_timeout(NODE_TIMEOUT);
    state.peers.stamp(&mut req);
    // 100,000 replicas' rows pass tonic's default 4 MiB limit.
    let mut client =
        InternalClient::new(channel).max_decoding_message_size(crate::transport::MAX_FRAME_BYTES);
    Ok(client.node_ranges(req).await?.into_inner())
}

/// Sends `identity` to every other member; fails naming those that did not accept it.
async fn send_bootstraps(state: &State, identity: &BootstrapRequest) -> Result<(), Status> {
    let mut failed = Vec::new();
    // A member that has served never gets a bootstrap again: if its disk is blank now, it
    // lost its data (see `identity`), and the initial ranges would not bring it back.
    let seen = state.members_seen();
    for n in identity
        .nodes
        .iter()
        .filter(|n| n.node_id != state.cfg.node_id && !seen.contains(&n.node_id))
    {
        let Some(channel) = state.peers.channel(n.node_id) else {
            failed.push(format!("node {}: address unknown", n.node_id));
            continue;
        };
        let mut req = Request::new(identity.clone());
        req.set_timeout(Duration::from_secs(10));
        state.peers.stamp(&mut req);
        if let Err(e) = InternalClient::new(channel).bootstrap(req).await {
            failed.push(format!(
                "node {} at {}: {}",
                n.node_id,
                n.address,
                e.message()
            ));
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(status(
        Code::Unavailable,
        "unavailable",
        format!(
            "bootstrapped here, but not yet on: {}; run init again once they are up",
            failed.join("; ")
        ),
    ))
}
