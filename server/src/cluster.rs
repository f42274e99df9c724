//! Cluster membership as data: which nodes belong to the cluster, where they are, and
//! whether they are leaving, kept in the meta range itself — not in a list frozen at
//! `init`.
//!
//! - **Node records** live under `"n" ‖ node id (big-endian)` in the meta range (below
//!   the user span, above the range records `"m…"`), one [`NodeRecord`] each: address,
//!   zone, membership (active, decommissioning, decommissioned). Every write is a
//!   compare-and-swap against the record read, so two writers never lose each other's
//!   change. A node writes its own record when it starts (and when its address changes);
//!   a joining node's record is written by the member that admits it, before the new
//!   node has any data, so the id is taken exactly once.
//! - **Settings** (the replication factor, the cluster version) live under `"csettings"`;
//!   until the factor is changed, the value the cluster was initialized with (in every
//!   identity) counts. Settings are changed by compare-and-swap, one field at a time.
//! - **Cluster version** (`raftstore/src/version.rs`). Each node records in its own record
//!   the newest format its binary reads. A refresh reads the settings, then the records;
//!   if every member not decommissioned (and every record decodable) is at a version above
//!   the settings', it raises the settings to it by compare-and-swap against what it
//!   read. An admission writes the joiner's record, then counts itself in the settings
//!   (`admissions`, also by compare-and-swap) unless the cluster's version is above the
//!   joiner's binary — then it removes the record and refuses. So a raise that did not
//!   see a joiner's record fails, and a joiner admitted after a raise is refused. Every
//!   node follows the version (recorded on its disk first) from the settings, from `Hello`
//!   answers and from the callers of its node-to-node calls; a node whose binary is older
//!   than the cluster's version stops.
//! - **Refresh.** Every discovery round each node reads the records: it admits new
//!   members to its address book (so every node and router learns a joined node), and a
//!   node that finds itself decommissioning drains its leaderships (and stops draining
//!   when recommissioned).
//! - **Join.** A node with no identity started with `--join` asks a member to admit it
//!   (`Internal.Join`). The member refuses an id another record holds — unless it is the
//!   same node at the same address repeating a join that was cut short (no range lists
//!   it yet) — records the node, and answers the cluster's identity, which the new node
//!   writes (with no ranges: placement sends it replicas) before starting its store. An
//!   initial member that asks before its `Bootstrap` arrived (the two race at `init`) is
//!   answered with the init identity itself; one that has served (a wiped disk) is
//!   refused.
//! - **Liveness** is what this node observes: the last Raft frame or `Hello` answer from
//!   each node, against its own monotonic clock. A node silent for `dead_node_timeout`
//!   (counted from this process's start at the earliest) is dead.

use std::time::{Duration, Instant};

use flotilla_raftstore::version::V1_SINGLE;
use flotilla_raftstore::{Command, Response};
use flotilla_router::placement::Liveness;
use prost::Message as _;
use tonic::{Code, Status};

use crate::errors::{invalid, router_status, status, ServerError};
use crate::proto::{
    BootstrapRequest, ClusterSettings, JoinRequest, NodeAddress, NodeMembership, NodeRecord,
};
use crate::server::{Running, State};

/// The first byte of a node record's key.
pub const NODE_PREFIX: u8 = b'n';
/// The key of the cluster's settings record.
pub const SETTINGS_KEY: &[u8] = b"csettings";
/// A node silent this long is suspect (shown, not yet replaced).
pub const SUSPECT_AFTER: Duration = Duration::from_secs(6);

/// The key of node `id`'s record.
pub fn node_key(id: u64) -> Vec<u8> {
    let mut k = vec![NODE_PREFIX];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The node records a new cluster's meta range starts with: one per initial member, so
/// a member that dies before it ever writes its own record is still known (and judged
/// dead, and replaced, like any other). None for a node that joined.
pub fn initial_records(identity: &BootstrapRequest) -> Vec<(Vec<u8>, Vec<u8>)> {
    if identity.joined {
        return Vec::new();
    }
    identity
        .nodes
        .iter()
        .map(|n| {
            let r = NodeRecord {
                node_id: n.node_id,
                address: n.address.clone(),
                ..Default::default()
            };
            (node_key(n.node_id), r.encode_to_vec())
        })
        .collect()
}

/// What this node last read of the cluster's membership.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub nodes: Vec<NodeRecord>,
    pub replication_factor: u32,
    /// The settings' cluster version (1 while none is recorded).
    pub cluster_version: u32,
    /// True once read at least once from the meta range.
    pub loaded: bool,
}

impl ClusterView {
    /// The record of `node`, if any.
    pub fn node(&self, node: u64) -> Option<&NodeRecord> {
        self.nodes.iter().find(|n| n.node_id == node)
    }
}

/// Every pair of stored keys in `[start, end)` of the meta range, paged.
pub async fn scan_meta(
    running: &Running,
    start: Vec<u8>,
    end: Vec<u8>,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, flotilla_router::Error> {
    let mut out = Vec::new();
    let mut from = start;
    loop {
        let scan = Command::Scan {
            start: from.clone(),
            end: end.clone(),
            limit: 1000,
            max_bytes: 0,
        };
        let (_, resp) = running.db.router().execute(&from, scan).await?;
        let Response::Pairs { pairs, more } = resp else {
            return Ok(out);
        };
        let last = pairs.last().map(|(k, _)| k.clone());
        out.extend(pairs);
        match (more, last) {
            (true, Some(mut k)) => {
                k.push(0);
                from = k;
            }
            _ => return Ok(out),
        }
    }
}

/// Every node record in the meta range (undecodable ones skipped).
pub async fn read_nodes(running: &Running) -> Result<Vec<NodeRecord>, flotilla_router::Error> {
    Ok(read_nodes_counted(running).await?.0)
}

/// Every decodable node record in the meta range, and how many were not.
async fn read_nodes_counted(
    running: &Running,
) -> Result<(Vec<NodeRecord>, usize), flotilla_router::Error> {
    let pairs = scan_meta(running, vec![NODE_PREFIX], vec![NODE_PREFIX + 1]).await?;
    let mut out = Vec::with_capacity(pairs.len());
    let mut skipped = 0;
    for (key, value) in pairs {
        match NodeRecord::decode(value.as_slice()) {
            Ok(r) => out.push(r),
            Err(e) => {
                skipped += 1;
                tracing::warn!(key = ?key, error = %e, "undecodable node record; skipped")
            }
        }
    }
    Ok((out, skipped))
}

/// The settings record as stored (`None`: never written), and decoded (an undecodable
/// one counts as empty, and is replaced by the next change).
pub async fn read_settings(
    running: &Running,
) -> Result<(Option<Vec<u8>>, ClusterSettings), flotilla_router::Error> {
    let get = Command::Get {
        key: SETTINGS_KEY.to_vec(),
    };
    let (_, resp) = running.db.router().execute(SETTINGS_KEY, get).await?;
    let stored = match resp {
        Response::Value(v) => v,
        _ => None,
    };
    let settings = stored
        .as_deref()
        .and_then(|v| ClusterSettings::decode(v).ok())
        .unwrap_or_default();
    Ok((stored, settings))
}

/// Whether a settings record as stored is absent or decodes (one that does not is never
/// overwritten on a guess of what it held).
fn decodable(raw: &Option<Vec<u8>>) -> bool {
    raw.as_deref()
        .is_none_or(|v| ClusterSettings::decode(v).is_ok())
}

/// The replication factor in force: the settings record's, else the identity's.
pub fn factor_in_force(settings: &ClusterSettings, identity_factor: u32) -> u32 {
    if settings.replication_factor > 0 {
        settings.replication_factor
    } else {
        identity_factor_or_default(identity_factor)
    }
}

/// The replication factor in force, read from the meta range.
pub async fn read_replication_factor(
    running: &Running,
    identity_factor: u32,
) -> Result<u32, flotilla_router::Error> {
    let (_, settings) = read_settings(running).await?;
    Ok(factor_in_force(&settings, identity_factor))
}

/// The newest format every member's binary reads: the lowest version recorded by a node
/// that is not decommissioned (records from before versions count as 1).
pub fn readable_version(nodes: &[NodeRecord]) -> u32 {
    nodes
        .iter()
        .filter(|n| n.membership() != NodeMembership::Decommissioned)
        .map(|n| n.version.max(V1_SINGLE))
        .min()
        .unwrap_or(V1_SINGLE)
}

/// The identity's factor (0 in identities written before factors existed: 3).
pub fn identity_factor_or_default(factor: u32) -> u32 {
    if factor == 0 {
        crate::config::DEFAULT_REPLICATION_FACTOR
    } else {
        factor
    }
}

/// Writes `new` where the record read was `old` (`None`: absent). False when another
/// writer changed it first.
pub async fn swap_record(
    running: &Running,
    old: Option<&NodeRecord>,
    new: &NodeRecord,
) -> Result<bool, flotilla_router::Error> {
    put_record(running, new.node_id, old, Some(new)).await
}

/// Sets node `id`'s record to `new` (`None`: deletes it) where it was `old`. False when
/// another writer changed it first.
async fn put_record(
    running: &Running,
    id: u64,
    old: Option<&NodeRecord>,
    new: Option<&NodeRecord>,
) -> Result<bool, flotilla_router::Error> {
    let cas = Command::CompareAndSwap {
        key: node_key(id),
        expected: old.map(|o| o.encode_to_vec()),
        new: new.map(|n| n.encode_to_vec()),
    };
    let (_, resp) = running.db.router().execute(&node_key(id), cas).await?;
    Ok(matches!(
        resp,
        Response::Swapped {
            succeeded: true,
            ..
        }
    ))
}

/// Writes `new` where the settings record read was `old` (`None`: absent). False when
/// another writer changed it first.
pub async fn swap_settings(
    running: &Running,
    old: Option<Vec<u8>>,
    new: &ClusterSettings,
) -> Result<bool, flotilla_router::Error> {
    let cas = Command::CompareAndSwap {
        key: SETTINGS_KEY.to_vec(),
        expected: old,
        new: Some(new.encode_to_vec()),
    };
    let (_, resp) = running.db.router().execute(SETTINGS_KEY, cas).await?;
    Ok(matches!(
        resp,
        Response::Swapped {
            succeeded: true,
            ..
        }
    ))
}

impl State {
    /// What this node last read of the membership.
    pub fn cluster_view(&self) -> ClusterView {
        self.cluster.read().clone()
    }

    /// The liveness of `record` as this node observes it now.
    pub fn liveness(&self, record: &NodeRecord) -> Liveness {
        if record.membership() == NodeMembership::Decommissioned {
            return Liveness::Decommissioned;
        }
        let now = Instant::now();
        let silent = if record.node_id == self.cfg.node_id {
            Duration::ZERO
        } else {
            let since = self
                .peers
                .last_contact(record.node_id)
                .unwrap_or(self.started)
                .max(self.started);
            now.saturating_duration_since(since)
        };
        match silent {
            s if s >= self.cfg.dead_node_timeout => Liveness::Dead,
            _ if record.membership() == NodeMembership::Decommissioning => {
                Liveness::Decommissioning
            }
            s if s >= SUSPECT_AFTER => Liveness::Suspect,
            _ => Liveness::Live,
        }
    }

    /// The record this node should have: its address and zone, its membership kept.
    fn own_record(&self, current: Option<&NodeRecord>) -> NodeRecord {
        let mut r = current.cloned().unwrap_or_default();
        r.node_id = self.cfg.node_id;
        r.address = self.cfg.advertise.clone();
        r.zone = self.cfg.zone.clone().unwrap_or_default();
        r.version = self.peers.binary_version();
        r
    }
}

/// One refresh: reads the records and settings, admits new members, keeps this node's
/// own record current, and drains or undrains this node by its membership.
pub async fn refresh(
    state: &State,
    running: &Running,
    identity_factor: u32,
) -> Result<(), flotilla_router::Error> {
    // The settings first: a raise of the cluster version swaps against them, and must fail
    // if a node was admitted after the records below were read (see `admit`).
    let (raw_settings, settings) = read_settings(running).await?;
    let (nodes, skipped) = read_nodes_counted(running).await?;
    let replication_factor = factor_in_force(&settings, identity_factor);
    let cluster_version = settings.cluster_version.max(V1_SINGLE);
    let cluster_version = match skipped {
        // A record this node cannot read may be an older node's: no raise on a guess.
        0 => follow_cluster_version(state, running, &nodes, raw_settings, &settings)
            .await
            .unwrap_or_else(|e| {
                tracing::debug!(error = %e, "cluster version not raised; next round");
                cluster_version
            }),
        _ => cluster_version,
    };
    if let Err(e) = state.follow_version(cluster_version, "the cluster's settings") {
        tracing::warn!(error = %e, "could not follow the cluster version");
    }
    for n in &nodes {
        state.peers.admit(n.node_id);
        state.peers.learn(n.node_id, &n.address);
    }
    let me = state.cfg.node_id;
    let mine = nodes.iter().find(|n| n.node_id == me);
    let wanted = state.own_record(mine);
    if mine != Some(&wanted) && !swap_record(running, mine, &wanted).await? {
        tracing::debug!("own node record changed meanwhile; rewritten next round");
    }
    let leaving = mine.is_some_and(|r| r.membership() != NodeMembership::Active);
    if state
        .draining_for_decommission
        .swap(leaving, std::sync::atomic::Ordering::SeqCst)
        != leaving
    {
        tracing::info!(
            node = me,
            leaving,
            "decommission state changed: {}",
            if leaving { "draining" } else { "leading again" }
        );
        running.store.set_draining(leaving);
    }
    *state.cluster.write() = ClusterView {
        nodes,
        replication_factor,
        cluster_version,
        loaded: true,
    };
    Ok(())
}

/// Raises the cluster version in the settings when every member's binary reads a newer
/// one (see the module docs); returns the settings' version, raised or not.
async fn follow_cluster_version(
    state: &State,
    running: &Running,
    nodes: &[NodeRecord],
    raw_settings: Option<Vec<u8>>,
    settings: &ClusterSettings,
) -> Result<u32, flotilla_router::Error> {
    let mut cluster = settings.cluster_version.max(V1_SINGLE);
    let readable = readable_version(nodes).min(state.peers.binary_version());
    if readable > cluster && decodable(&raw_settings) {
        let new = ClusterSettings {
            cluster_version: readable,
            ..*settings
        };
        if swap_settings(running, raw_settings, &new).await? {
            tracing::info!(
                from = cluster,
                to = readable,
                "every member reads a newer format: cluster version raised"
            );
            cluster = readable;
        }
    }
    Ok(cluster)
}

/// `Internal.Join` on a member: admits the node `req` describes (see the module docs).
pub async fn admit(state: &State, req: JoinRequest) -> Result<BootstrapRequest, Status> {
    let running = state.serving()?;
    let identity = state
        .stored_identity()
        .map_err(|e| status(Code::Internal, "storage", e.to_string()))?
        .ok_or_else(|| crate::errors::not_initialized(state.cfg.node_id))?;
    if req.version.max(V1_SINGLE) < state.version.get() {
        let cluster = state.version.get();
        return Err(crate::service::internal::too_old(
            state.cfg.node_id,
            req.node_id,
            req.version.max(V1_SINGLE),
            cluster,
        ));
    }
    if req.node_id == 0
        || req.node_id > flotilla_raftstore::MAX_NODE_ID
        || req.address.trim().is_empty()
    {
        return Err(invalid(format!(
            "a joining node needs an id in 1..={} and an address (got id {}, address {:?}); start it with --node-id and --advertise",
            flotilla_raftstore::MAX_NODE_ID,
            req.node_id,
            req.address
        )));
    }
    if state.members_seen().contains(&req.node_id) {
        return Err(status(
            Code::FailedPrecondition,
            "replaced_node",
            format!(
                "node {} has served in cluster {} and now asks to join with no data: its disk was wiped or \
                 replaced. Restore its data directory, or start it under a fresh --node-id",
                req.node_id, identity.cluster_id
            ),
        ));
    }
    if !identity.joined && identity.nodes.iter().any(|n| n.node_id == req.node_id) {
        // An initial member whose `Bootstrap` has not arrived (or is on its way): it gets
        // exactly what `init` sends it.
        return Ok(identity);
    }
    let nodes = read_nodes(&running).await.map_err(router_status)?;
    let existing = nodes.iter().find(|n| n.node_id == req.node_id);
    if let Some(old) = existing {
        let listed = crate::replicate::ranges_listing(&running, req.node_id)
            .await
            .map_err(router_status)?;
        if old.address != req.address || listed > 0 || old.membership() != NodeMembership::Active {
            return Err(status(
                Code::AlreadyExists,
                "node_id_in_use",
                format!(
                    "node id {} is already a member of cluster {} (recorded at {}, {:?}, {listed} replicas); \
                     start the new node with an unused --node-id (`flotilla nodes` lists the ids in use)",
                    req.node_id, identity.cluster_id, old.address, old.membership()
                ),
            ));
        }
    }
    let record = NodeRecord {
        node_id: req.node_id,
        address: req.address.clone(),
        zone: req.zone.clone(),
        membership: NodeMembership::Active as i32,
        version: req.version,
    };
    if existing != Some(&record)
        && !swap_record(&running, existing, &record)
            .await
            .map_err(router_status)?
    {
        return Err(status(
            Code::Aborted,
            "retry",
            format!(
                "node {}'s record changed meanwhile; join again",
                req.node_id
            ),
        ));
    }
    if let Err(refused) = count_admission(state, &running, &req).await {
        // Best effort: a record left behind only holds the cluster version back (until the
        // node is decommissioned).
        if !matches!(
            put_record(&running, req.node_id, Some(&record), existing).await,
            Ok(true)
        ) {
            tracing::warn!(
                node = req.node_id,
                "the record of a refused joiner stays; decommission it"
            );
        }
        return Err(refused);
    }
    state.peers.admit(req.node_id);
    state.peers.learn(req.node_id, &req.address);
    tracing::info!(node = req.node_id, address = %req.address, "admitted a node into the cluster");
    let mut members: Vec<NodeAddress> = nodes
        .iter()
        .map(|n| NodeAddress {
            node_id: n.node_id,
            address: n.address.clone(),
        })
        .collect();
    if !members.iter().any(|n| n.node_id == req.node_id) {
        members.push(NodeAddress {
            node_id: req.node_id,
            address: req.address,
        });
    }
    members.sort_by_key(|n| n.node_id);
    Ok(BootstrapRequest {
        nodes: members,
        joined: true,
        ..identity
    })
}

/// Counts the admission of the node `req` describes in the settings (its record is
/// written), refusing it if the cluster's version is above what its binary reads. With
/// `follow_cluster_version` swapping against the settings read before the records, a raise
/// and an admission it did not see never both succeed.
async fn count_admission(
    state: &State,
    running: &Running,
    req: &JoinRequest,
) -> Result<(), Status> {
    let theirs = req.version.max(V1_SINGLE);
    for _ in 0..5 {
        let (raw, settings) = read_settings(running).await.map_err(router_status)?;
        if !decodable(&raw) {
            return Err(status(
                Code::Internal,
                "corrupt_settings",
                "the cluster's settings record cannot be decoded; no node is admitted until it is \
                 rewritten (`flotilla replication-factor N`)"
                    .to_string(),
            ));
        }
        let cluster = settings.cluster_version.max(V1_SINGLE);
        if theirs < cluster {
            let me = state.cfg.node_id;
            return Err(crate::service::internal::too_old(
                me,
                req.node_id,
                theirs,
                cluster,
            ));
        }
        let counted = ClusterSettings {
            admissions: settings.admissions + 1,
            ..settings
        };
        if swap_settings(running, raw, &counted)
            .await
            .map_err(router_status)?
        {
            return Ok(());
        }
    }
    Err(status(
        Code::Aborted,
        "retry",
        format!(
            "the cluster's settings changed five times while node {} was being admitted; join again",
            req.node_id
        ),
    ))
}

/// On a node with no identity: asks the member at `address` to admit it, then records
/// the identity it answers and starts the store. An unreachable member is tried again
/// next round (`Ok(false)`); a refusal stops the node.
pub async fn join_via(state: &std::sync::Arc<State>, address: &str) -> Result<bool, ServerError> {
    let req = JoinRequest {
        node_id: state.cfg.node_id,
        address: state.cfg.advertise.clone(),
        zone: state.cfg.zone.clone().unwrap_or_default(),
        process_nonce: state.process_nonce,
        version: state.peers.binary_version(),
    };
    let channel = match state.peers.dialer().channel(address) {
        Ok(c) => c,
        Err(e) => return Err(ServerError::Config(format!("--join {address}: {e}"))),
    };
    let mut call = tonic::Request::new(req);
    call.set_timeout(Duration::from_secs(10));
    state.peers.stamp(&mut call);
    let identity = match crate::proto::internal_client::InternalClient::new(channel)
        .join(call)
        .await
    {
        Ok(resp) => resp.into_inner(),
        // An `init`'s bootstrap may have made this node a member meanwhile.
        Err(_) if state.peers.cluster_id().is_some() => return Ok(true),
        Err(s)
            if matches!(
                s.code(),
                Code::AlreadyExists | Code::InvalidArgument | Code::FailedPrecondition
            ) =>
        {
            return Err(ServerError::NotAMember(format!(
                "the node at {address} refused to admit node {}: {}",
                state.cfg.node_id,
                s.message()
            )));
        }
        Err(s) => {
            tracing::warn!(address, error = %state.peers.dialer().failure(&s), "join failed; trying again");
            return Ok(false);
        }
    };
    tracing::info!(cluster = %identity.cluster_id, via = address, "joining a running cluster");
    let s = state.clone();
    tokio::task::spawn_blocking(move || s.bootstrap(identity))
        .await
        .map_err(|e| ServerError::Config(format!("join task failed: {e}")))??;
    Ok(true)
}

/// Sets `node`'s membership (decommission, recommission). Refuses an unknown node, a
/// decommission that would leave fewer active nodes than the replication factor, and a
/// recommission of a node already emptied.
pub async fn set_membership(state: &State, node: u64, to: NodeMembership) -> Result<(), Status> {
    let running = state.serving()?;
    let identity_factor = state
        .stored_identity()
        .ok()
        .flatten()
        .map(|i| i.replication_factor)
        .unwrap_or(0);
    let nodes = read_nodes(&running).await.map_err(router_status)?;
    let factor = read_replication_factor(&running, identity_factor)
        .await
        .map_err(router_status)?;
    let Some(old) = nodes.iter().find(|n| n.node_id == node) else {
        let ids: Vec<u64> = nodes.iter().map(|n| n.node_id).collect();
        return Err(status(
            Code::NotFound,
            "unknown_node",
            format!("node {node} is not a member of this cluster (members: {ids:?})"),
        ));
    };
    let from = old.membership();
    if from == to {
        return Ok(());
    }
    match to {
        NodeMembership::Decommissioning => {
            let active = nodes
                .iter()
                .filter(|n| n.membership() == NodeMembership::Active && n.node_id != node)
                .count();
            if from == NodeMembership::Decommissioned {
                return Ok(());
            }
            if (active as u32) < factor {
                return Err(status(
                    Code::FailedPrecondition,
                    "too_few_nodes",
                    format!(
                        "decommissioning node {node} would leave {active} active nodes, fewer than the replication \
                         factor {factor}: add a node first (or lower the factor with `flotilla replication-factor`)"
                    ),
                ));
            }
        }
        NodeMembership::Active if from == NodeMembership::Decommissioned => {
            return Err(status(
                Code::FailedPrecondition,
                "decommissioned",
                format!("node {node} has finished decommissioning and holds no data; start it afresh under a new --node-id to use it again"),
            ));
        }
        _ => {}
    }
    let new = NodeRecord {
        membership: to as i32,
        ..old.clone()
    };
    if !swap_record(&running, Some(old), &new)
        .await
        .map_err(router_status)?
    {
        return Err(status(
            Code::Aborted,
            "retry",
            format!("node {node}'s record changed meanwhile; try again"),
        ));
    }
    tracing::info!(node, from = ?from, to = ?to, "node membership changed");
    Ok(())
}

/// Sets the replication factor (refused outside 1..=7; above the number of nodes it is
/// accepted, and ranges show as under-replicated until enough nodes join).
pub async fn set_replication_factor(state: &State, factor: u32) -> Result<(), Status> {
    let running = state.serving()?;
    crate::config::check_replication_factor(factor).map_err(invalid)?;
    let (raw, settings) = read_settings(&running).await.map_err(router_status)?;
    let new = ClusterSettings {
        replication_factor: factor,
        ..settings
    };
    if !swap_settings(&running, raw, &new)
        .await
        .map_err(router_status)?
    {
        return Err(status(
            Code::Aborted,
            "retry",
            "the cluster's settings changed meanwhile; try again".to_string(),
        ));
    }
    tracing::info!(factor, "replication factor changed");
    Ok(())
}
