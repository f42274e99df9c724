//! `flotilla nodes`, `flotilla node decommission|recommission N` and
//! `flotilla replication-factor N`: the cluster's members as a person and a script read
//! them.

use clap::Subcommand;
use serde_json::{json, Value};

use super::{human_bytes, Out, Outcome, Remote, EXIT_NOT_LIVE, EXIT_OK};
use crate::proto::NodesResponse;

/// `flotilla node ...`
#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// Move every replica and lease off node N; it reports `decommissioned` (holding
    /// nothing) once it may be stopped. Refused when it would leave fewer active nodes
    /// than the replication factor.
    Decommission { node: u64 },
    /// Undo a decommission that has not finished.
    Recommission { node: u64 },
}

/// `flotilla nodes`: exit code 3 when a range is short of replicas or a node is not live.
pub async fn nodes(r: &Remote, out: &mut Out, sizes: bool) -> Outcome {
    let resp = r.check(r.client.nodes(sizes).await)?;
    show(out, &resp)?;
    let healthy = resp.under_replicated == 0
        && resp.unavailable == 0
        && resp
            .nodes
            .iter()
            .all(|n| matches!(n.liveness.as_str(), "live" | "decommissioned"));
    Ok(if healthy { EXIT_OK } else { EXIT_NOT_LIVE })
}

pub async fn node(r: &Remote, out: &mut Out, cmd: NodeCmd) -> Outcome {
    let (node, leave) = match cmd {
        NodeCmd::Decommission { node } => (node, true),
        NodeCmd::Recommission { node } => (node, false),
    };
    let resp = r.check(r.client.decommission(node, leave).await)?;
    if !out.json {
        let what = if leave {
            "decommissioning: its replicas and leases are moving to other nodes"
        } else {
            "recommissioned"
        };
        out.bytes(format!("node {node}: {what}\n").as_bytes())?;
    }
    show(out, &resp)?;
    Ok(EXIT_OK)
}

pub async fn replication_factor(r: &Remote, out: &mut Out, factor: u32) -> Outcome {
    let resp = r.check(r.client.set_replication_factor(factor).await)?;
    show(out, &resp)?;
    Ok(EXIT_OK)
}

fn show(out: &mut Out, resp: &NodesResponse) -> std::io::Result<()> {
    out.show(|| text(resp), || to_json(resp))
}

/// The table a person reads.
pub fn text(s: &NodesResponse) -> String {
    let mut t = format!(
        "cluster {} (as seen by node {}), replication factor {}, format version {}, placement on node {}\n",
        s.cluster_id,
        s.answered_by,
        s.replication_factor,
        // Servers from before format versions do not say: theirs is the first.
        s.cluster_version.max(1),
        if s.placement_node == 0 {
            "?".to_string()
        } else {
            s.placement_node.to_string()
        }
    );
    let row = |c: [&str; 10]| {
        format!(
            "{:>6}  {:<22} {:<16} {:<6} {:>8} {:>8} {:>7} {:>10} {:>7}  {}\n",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9]
        )
    };
    t += &row([
        "node", "address", "liveness", "zone", "replicas", "leaders", "leases", "bytes", "version",
        "",
    ]);
    for n in &s.nodes {
        let zone = if n.zone.is_empty() { "-" } else { &n.zone };
        let (replicas, leaders, leases) = (
            n.replicas.to_string(),
            n.leaders.to_string(),
            n.leases.to_string(),
        );
        let note = if n.error.is_empty() {
            String::new()
        } else {
            format!("({})", n.error)
        };
        t += &row([
            &n.node_id.to_string(),
            &n.address,
            &n.liveness,
            zone,
            &replicas,
            &leaders,
            &leases,
            &human_bytes(n.bytes),
            &n.version.to_string(),
            &note,
        ]);
    }
    t += &format!(
        "ranges under-replicated: {}, unavailable: {}\n",
        s.under_replicated, s.unavailable
    );
    t
}

fn to_json(s: &NodesResponse) -> Value {
    let nodes: Vec<Value> = s
        .nodes
        .iter()
        .map(|n| {
            json!({
                "node_id": n.node_id, "address": n.address, "liveness": n.liveness, "zone": n.zone,
                "replicas": n.replicas, "leaders": n.leaders, "leases": n.leases, "bytes": n.bytes,
                "replicas_in_meta": n.replicas_in_meta, "version": n.version,
                "error": if n.error.is_empty() { None } else { Some(&n.error) },
            })
        })
        .collect();
    json!({
        "cluster_id": s.cluster_id, "answered_by": s.answered_by, "replication_factor": s.replication_factor,
        "placement_node": s.placement_node, "under_replicated": s.under_replicated, "unavailable": s.unavailable,
        "cluster_version": s.cluster_version,
        "nodes": nodes,
    })
}
