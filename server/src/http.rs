//! The HTTP endpoint: `/metrics` in Prometheus' text format and `/status`, a plain-text
//! page of this node's replicas, leaders and leases.
//!
//! Metrics are read at scrape time from the store's atomic counters (which the poller
//! updates without locks) into a fresh registry, so the hot path pays nothing for them.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::extract::State as AxState;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use flotilla_raftstore::StoreMetrics;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::server::State;
use crate::service::internal::local_ranges;

/// The HTTP routes of a node.
pub fn routes(state: Arc<State>) -> Router {
    Router::new().route("/metrics", get(metrics)).route("/status", get(status)).with_state(state)
}

async fn metrics(AxState(state): AxState<Arc<State>>) -> impl IntoResponse {
    let mut registry = Registry::with_prefix("flotilla");
    let gauge = |registry: &mut Registry, name: &str, help: &str, v: i64| {
        let g: Gauge = Gauge::default();
        g.set(v);
        registry.register(name, help, g);
    };
    gauge(&mut registry, "node_id", "This node's id", state.cfg.node_id as i64);
    gauge(&mut registry, "uptime_seconds", "Seconds since the process started", state.started.elapsed().as_secs() as i64);
    gauge(&mut registry, "initialized", "1 once the node belongs to a cluster", state.running().is_some() as i64);
    let t = &state.transport_metrics;
    counter(&mut registry, "transport_batches_dropped", "Raft batches dropped (queue full or peer unreachable)", &t.batches_dropped);
    counter(&mut registry, "transport_streams_opened", "Raft streams opened to other nodes", &t.streams_opened);
    counter(&mut registry, "transport_snapshots_sent", "Snapshots sent", &t.snapshots_sent);
    counter(&mut registry, "transport_snapshots_failed", "Snapshots that failed to send", &t.snapshots_failed);
    state.requests.register(&mut registry);
    if let Some(m) = state.store_metrics() {
        store_metrics(&mut registry, &m);
    }
    if let Ok(ranges) = local_ranges(&state, false).await {
        let me = state.cfg.node_id;
        gauge(&mut registry, "replicas", "Replicas on this node", ranges.ranges.len() as i64);
        gauge(&mut registry, "leaders", "Ranges this node leads", ranges.leaders as i64);
        let leases = ranges.ranges.iter().filter(|r| r.lease && r.leader_node == me).count();
        gauge(&mut registry, "leases", "Ranges whose lease this node holds", leases as i64);
    }
    let mut body = String::new();
    if encode(&mut body, &registry).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed".to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: &AtomicU64) {
    let c: Counter = Counter::default();
    c.inc_by(StoreMetrics::get(value));
    registry.register(name, help, c);
}

fn store_metrics(registry: &mut Registry, m: &StoreMetrics) {
    counter(registry, "rounds", "Poll rounds that did work", &m.rounds);
    counter(registry, "raft_log_writes", "Write batches carrying Raft log entries or hard states", &m.raft_log_writes);
    counter(registry, "raft_log_syncs", "Raft log writes made durable with fsync", &m.raft_log_syncs);
    counter(registry, "commands_applied", "Write commands applied", &m.commands_applied);
    counter(registry, "writes_answered", "Writes proposed here and answered", &m.writes_answered);
    counter(registry, "read_index_reads", "Reads served after a ReadIndex round", &m.read_index_reads);
    counter(registry, "lease_reads", "Reads served locally under the lease", &m.lease_reads);
    counter(registry, "ticks_caught_up", "Ticks run late after the store was stalled", &m.ticks_caught_up);
    counter(registry, "messages_sent", "Raft messages sent", &m.messages_sent);
    counter(registry, "batches_sent", "Message batches sent (one per destination per round)", &m.batches_sent);
    counter(registry, "messages_received", "Raft messages received", &m.messages_received);
    counter(registry, "messages_dropped", "Messages for replicas not on this node", &m.messages_dropped);
    counter(registry, "snapshots_applied", "Snapshots installed", &m.snapshots_applied);
    counter(registry, "log_compactions", "Raft log truncations", &m.log_compactions);
    counter(registry, "heartbeats_coalesced", "Heartbeats sent inside coalesced batches", &m.heartbeats_coalesced);
    let q: Gauge = Gauge::default();
    q.set(StoreMetrics::get(&m.quiesced_ranges) as i64);
    registry.register("quiesced_ranges", "Replicas quiesced now", q);
    let messages = Family::<Vec<(String, String)>, Counter>::default();
    let bytes = Family::<Vec<(String, String)>, Counter>::default();
    for (peer, c) in m.per_node() {
        let labels = vec![("peer".to_string(), peer.to_string())];
        messages.get_or_create(&labels).inc_by(c.messages);
        bytes.get_or_create(&labels).inc_by(c.bytes);
    }
    registry.register("peer_messages_sent", "Raft messages sent to each node", messages);
    registry.register("peer_bytes_sent", "Raft message bytes sent to each node", bytes);
}

async fn status(AxState(state): AxState<Arc<State>>) -> impl IntoResponse {
    let mut page = String::new();
    let me = state.cfg.node_id;
    let _ = writeln!(page, "flotilla node {me}  advertise {}  data {}", state.cfg.advertise, state.cfg.data_dir.display());
    let _ = writeln!(page, "uptime {:?}", state.started.elapsed());
    let Some(running) = state.running() else {
        let _ = writeln!(page, "not initialized: waiting for `flotilla init` (join {:?})", state.cfg.join);
        return page;
    };
    let _ = writeln!(page, "cluster {}", running.cluster_id);
    let known: Vec<String> = state.peers.known().iter().map(|n| format!("{}={}", n.node_id, n.address)).collect();
    let _ = writeln!(page, "nodes {}", known.join(" "));
    let ranges = match local_ranges(&state, false).await {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(page, "store unavailable: {}", e.message());
            return page;
        }
    };
    let _ = writeln!(page, "\n{:>20}  {:<24} {:<24} {:>6} {:>5} {:>6} {:>9}", "range", "start", "end", "leader", "lease", "term", "applied");
    for r in &ranges.ranges {
        let Some(d) = &r.descriptor else { continue };
        let lease = if r.lease { "yes" } else { "-" };
        let _ = writeln!(
            page,
            "{:>20}  {:<24} {:<24} {:>6} {:>5} {:>6} {:>9}",
            d.range_id,
            crate::display::key(&d.start),
            crate::display::end_key(&d.end),
            r.leader_node,
            lease,
            r.term,
            r.applied_index
        );
    }
    page
}
