//! The admin calls about nodes: the `flotilla nodes` view, decommission, recommission and
//! the replication factor. The view joins three sources: the node records (membership,
//! address, zone) in the meta range, this node's observation of each node's liveness
//! (`cluster`), and what each live node reports holding; its under-replicated and
//! unavailable counts come from running the placement rules over the range records
//! (without acting on them), so any node answers the same way the placement loop sees it.

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_raftstore::keyspace::META_RANGE_ID;
use flotilla_router::placement::{plan, ClusterState, Limits, Liveness};
use tonic::Status;

use crate::errors::router_status;
use crate::proto::{NodeInfo, NodeMembership, NodeRecord, NodesResponse};
use crate::server::State;
use crate::service::admin::node_ranges;

/// The `Admin.Nodes` answer.
pub async fn nodes(state: &Arc<State>, with_sizes: bool) -> Result<NodesResponse, Status> {
    let running = state.serving()?;
    let identity = state.stored_identity().ok().flatten().unwrap_or_default();
    crate::cluster::refresh(state, &running, identity.replication_factor)
        .await
        .map_err(router_status)?;
    let view = state.cluster_view();
    let mut ranges = crate::replicate::read_ranges(&running)
        .await
        .map_err(router_status)?;
    ranges.retain(|d| d.range_id != META_RANGE_ID);
    ranges.push(running.db.router().meta());
    let mut rows = Vec::new();
    let mut sizes: BTreeMap<u64, u64> = BTreeMap::new();
    let mut held: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut placement_node = 0;
    for record in &view.nodes {
        let mut row = NodeInfo {
            node_id: record.node_id,
            address: record.address.clone(),
            zone: record.zone.clone(),
            liveness: liveness_name(state.liveness(record)).to_string(),
            version: record.version.max(flotilla_raftstore::version::V1_SINGLE),
            replicas_in_meta: ranges
                .iter()
                .filter(|d| d.replica_on(record.node_id).is_some())
                .count() as u32,
            ..Default::default()
        };
        match node_ranges(state, record.node_id, with_sizes).await {
            Ok(r) => {
                row.replicas = r.ranges.len() as u32;
                row.leaders = r.leaders;
                row.leases = r.ranges.iter().filter(|i| i.lease).count() as u32;
                for info in &r.ranges {
                    let Some(d) = &info.descriptor else { continue };
                    if info.leader_node == r.node_id {
                        sizes.insert(d.range_id, info.approximate_size);
                        if d.range_id == META_RANGE_ID && info.lease {
                            placement_node = r.node_id;
                        }
                    }
                    held.entry(r.node_id).or_default().push(d.range_id);
                }
            }
            Err(e) => row.error = e.message().to_string(),
        }
        rows.push(row);
    }
    for row in &mut rows {
        row.bytes = held
            .get(&row.node_id)
            .into_iter()
            .flatten()
            .filter_map(|id| sizes.get(id))
            .sum();
    }
    let counts = plan(
        &placement_state(state, &view.nodes, ranges, view.replication_factor),
        Limits {
            max_changes: 0,
            ..Limits::default()
        },
    );
    Ok(NodesResponse {
        cluster_id: running.cluster_id.clone(),
        answered_by: state.cfg.node_id,
        replication_factor: view.replication_factor,
        nodes: rows,
        placement_node,
        under_replicated: counts.under_replicated as u32,
        unavailable: counts.unavailable as u32,
        cluster_version: view.cluster_version,
    })
}

/// The cluster as placement sees it from here.
fn placement_state(
    state: &State,
    records: &[NodeRecord],
    ranges: Vec<flotilla_raftstore::RangeDescriptor>,
    factor: u32,
) -> ClusterState {
    let nodes = crate::replicate::node_states(state, records, &ranges);
    ClusterState {
        nodes,
        ranges,
        replication_factor: factor as usize,
        snapshots_in_flight: BTreeMap::new(),
    }
}

/// How a liveness reads in views and JSON.
pub fn liveness_name(l: Liveness) -> &'static str {
    match l {
        Liveness::Live => "live",
        Liveness::Suspect => "suspect",
        Liveness::Dead => "dead",
        Liveness::Decommissioning => "decommissioning",
        Liveness::Decommissioned => "decommissioned",
    }
}

/// `Admin.Decommission` / `Admin.Recommission`, answered with the view after the change.
pub async fn set_membership(
    state: &Arc<State>,
    node: u64,
    to: NodeMembership,
) -> Result<NodesResponse, Status> {
    crate::cluster::set_membership(state, node, to).await?;
    nodes(state, false).await
}

/// `Admin.SetReplicationFactor`, answered with the view after the change.
pub async fn set_replication_factor(
    state: &Arc<State>,
    factor: u32,
) -> Result<NodesResponse, Status> {
    crate::cluster::set_replication_factor(state, factor).await?;
    nodes(state, false).await
}
