//! `flotilla status`, `flotilla ranges`, `flotilla split` and `flotilla change-replicas`:
//! the cluster's nodes and ranges as a person and a script read them.

use flotilla_raftstore::keyspace::{decode_user_key, META_RANGE_ID};
use flotilla_raftstore::metapb::RangeDescriptor;
use serde_json::{json, Value};

use super::{human_bytes, Out, Outcome, Remote, EXIT_NOT_LIVE, EXIT_OK};
use crate::display;
use crate::proto::{RangeInfo, SplitResponse, StatusResponse};

/// `flotilla status`.
pub(super) async fn status(r: &Remote, out: &mut Out) -> Outcome {
    let s = r.check(r.client.status().await)?;
    out.show(|| status_text(&s), || status_json(&s))?;
    Ok(if s.nodes.iter().all(|n| n.live) {
        EXIT_OK
    } else {
        EXIT_NOT_LIVE
    })
}

fn status_text(s: &StatusResponse) -> String {
    let mut t = format!(
        "cluster {} (as seen by node {})\n",
        s.cluster_id, s.answered_by
    );
    t += &format!(
        "{:>6}  {:<22} {:<5} {:>8} {:>8} {:>7}\n",
        "node", "address", "live", "replicas", "leaders", "leases"
    );
    for n in &s.nodes {
        let live = if n.live { "yes" } else { "NO" };
        t += &format!(
            "{:>6}  {:<22} {:<5} {:>8} {:>8} {:>7}\n",
            n.node_id, n.address, live, n.replicas, n.leaders, n.leases
        );
        if !n.live {
            t += &format!("        {}\n", n.error);
        }
        if n.snapshot_retries > 0 {
            t += &format!(
                "        WARNING: {} snapshots rebuilt for followers that cannot install them (see /status)\n",
                n.snapshot_retries
            );
        }
    }
    t
}

fn status_json(s: &StatusResponse) -> Value {
    let nodes: Vec<Value> = s
        .nodes
        .iter()
        .map(|n| {
            json!({
                "node_id": n.node_id,
                "address": n.address,
                "live": n.live,
                "replicas": n.replicas,
                "leaders": n.leaders,
                "leases": n.leases,
                "error": if n.live { None } else { Some(&n.error) },
                "snapshot_retries": n.snapshot_retries,
            })
        })
        .collect();
    json!({"cluster_id": s.cluster_id, "answered_by": s.answered_by, "nodes": nodes})
}

/// `flotilla ranges`.
pub(super) async fn ranges(r: &Remote, out: &mut Out) -> Outcome {
    let resp = r.check(r.client.ranges().await)?;
    out.show(
        || ranges_text(&resp.ranges),
        || json!({"ranges": resp.ranges.iter().filter_map(range_info_json).collect::<Vec<_>>()}),
    )?;
    Ok(EXIT_OK)
}

fn ranges_text(ranges: &[RangeInfo]) -> String {
    let row = |cols: [&str; 8]| {
        let [range, start, end, leader, prefer, lease, size, replicas] = cols;
        format!("{range:>16}  {start:<20} {end:<20} {leader:>6} {prefer:>6} {lease:>5} {size:>10}  {replicas}\n")
    };
    let mut t = row([
        "range", "start", "end", "leader", "prefer", "lease", "size", "replicas",
    ]);
    for info in ranges {
        let Some(d) = &info.descriptor else { continue };
        let known = info.leader_node != 0;
        let leader = if known {
            info.leader_node.to_string()
        } else {
            "-".to_string()
        };
        let size = if known {
            human_bytes(info.approximate_size)
        } else {
            "?".to_string()
        };
        let replicas = display::replicas(d);
        let (start, end) = if d.range_id == META_RANGE_ID {
            ("(meta range)".to_string(), String::new())
        } else {
            (display::key(&d.start), display::end_key(&d.end))
        };
        let id = d.range_id.to_string();
        let lease = if info.lease { "yes" } else { "-" };
        let prefer = d
            .preferred_voter()
            .map_or("-".to_string(), |r| r.node_id.to_string());
        t += &row([&id, &start, &end, &leader, &prefer, lease, &size, &replicas]);
    }
    t
}

/// A range in JSON: its bounds as escaped user keys (`null`: unbounded; the meta range
/// sorts before every user key, so it ends at `""`).
pub fn range_json(d: &RangeDescriptor) -> Value {
    let bound = |stored: &[u8]| match decode_user_key(stored) {
        _ if stored.is_empty() => Value::Null,
        Some(user) => Value::String(display::bytes(user)),
        None => Value::String(format!("meta:{}", display::bytes(stored))),
    };
    let epoch = d.epoch.unwrap_or_default();
    let replicas: Vec<Value> = d
        .replicas
        .iter()
        .map(|r| json!({"node_id": r.node_id, "replica_id": r.replica_id, "role": r.role().name()}))
        .collect();
    json!({
        "range_id": d.range_id,
        "meta": d.range_id == META_RANGE_ID,
        "start": bound(&d.start),
        "end": bound(&d.end),
        "epoch": {"version": epoch.version, "conf_ver": epoch.conf_ver},
        "replicas": replicas,
        "preferred_leader": d.preferred_voter().map(|r| r.node_id),
        "preferred_node_chosen": d.preferred_node != 0,
    })
}

fn range_info_json(info: &RangeInfo) -> Option<Value> {
    let mut v = range_json(info.descriptor.as_ref()?);
    let known = info.leader_node != 0;
    v["leader_node"] = if known {
        info.leader_node.into()
    } else {
        Value::Null
    };
    v["term"] = info.term.into();
    v["lease"] = info.lease.into();
    v["approximate_size"] = if known {
        info.approximate_size.into()
    } else {
        Value::Null
    };
    v["applied_index"] = info.applied_index.into();
    Some(v)
}

/// `flotilla split KEY`.
pub(super) async fn split(r: &Remote, out: &mut Out, key: &[u8]) -> Outcome {
    let resp = r.check(r.client.split(key).await)?;
    out.show(
        || split_text(&resp),
        || json!({"left": resp.left.as_ref().map(range_json), "right": resp.right.as_ref().map(range_json)}),
    )?;
    Ok(EXIT_OK)
}

/// `flotilla change-replicas RANGE --add N --remove M`.
pub(super) async fn change_replicas(
    r: &Remote,
    out: &mut Out,
    range: u64,
    add: &[u64],
    remove: &[u64],
) -> Outcome {
    let resp = r.check(r.client.change_replicas(range, add, remove).await)?;
    let desc = resp.descriptor.unwrap_or_default();
    out.show(
        || {
            format!(
                "range {}: replicas {} (conf_ver {})\n",
                desc.range_id,
                display::replicas(&desc),
                desc.epoch().conf_ver
            )
        },
        || range_json(&desc),
    )?;
    Ok(EXIT_OK)
}

fn split_text(r: &SplitResponse) -> String {
    let show = |d: &Option<RangeDescriptor>| match d {
        Some(d) => format!(
            "range {} [{}, {})",
            d.range_id,
            display::key(&d.start),
            display::end_key(&d.end)
        ),
        None => "?".into(),
    };
    format!("split: {} and {}\n", show(&r.left), show(&r.right))
}
