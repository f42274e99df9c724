//! The HTTP endpoint: `/metrics` in Prometheus' text format, `/status`, a plain-text
//! page of this node's replicas, leaders and leases, and the probes a supervisor or a
//! load balancer asks: `/health` (the process is alive and its HTTP server answers) and
//! `/ready` (the node serves: it belongs to a cluster, is not shutting down, and its
//! store answers within a second). A node whose store has failed exits (fail-stop), so
//! it never answers `/health` as a zombie.
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
use crate::service::internal::{local_ranges, local_summary};

/// The HTTP routes of a node.
pub fn routes(state: Arc<State>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(state)
}

/// How long `/ready` waits for the store to answer.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

async fn health(AxState(state): AxState<Arc<State>>) -> impl IntoResponse {
    let body = format!("{{\"status\":\"ok\",\"node_id\":{}}}\n", state.cfg.node_id);
    ([(header::CONTENT_TYPE, "application/json")], body)
}

async fn ready(AxState(state): AxState<Arc<State>>) -> impl IntoResponse {
    let (code, reason) = match readiness(&state).await {
        Ok(()) => (StatusCode::OK, String::new()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    };
    let body = format!(
        "{{\"ready\":{},\"node_id\":{},\"reason\":{:?}}}\n",
        code == StatusCode::OK,
        state.cfg.node_id,
        reason
    );
    (code, [(header::CONTENT_TYPE, "application/json")], body)
}

/// Why this node does not serve, if it does not.
async fn readiness(state: &State) -> Result<(), String> {
    if state.is_stopping() {
        return Err("shutting down".into());
    }
    let Some(running) = state.running() else {
        return Err(format!(
            "not initialized: waiting for `flotilla init` (join {:?})",
            state.cfg.join
        ));
    };
    match tokio::time::timeout(READY_TIMEOUT, running.store.ping()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err("the store has stopped".into()),
        Err(_) => Err(format!("the store did not answer within {READY_TIMEOUT:?}")),
    }
}

async fn metrics(AxState(state): AxState<Arc<State>>) -> impl IntoResponse {
    let mut root = Registry::default();
    process_metrics(&mut root);
    let registry = root.sub_registry_with_prefix("flotilla");
    let gauge = |registry: &mut Registry, name: &str, help: &str, v: i64| {
        let g: Gauge = Gauge::default();
        g.set(v);
        registry.register(name, help, g);
    };
    disk_metrics(registry, &state);
    gauge(
        registry,
        "node_id",
        "This node's id",
        state.cfg.node_id as i64,
    );
    gauge(
        registry,
        "uptime_seconds",
        "Seconds since the process started",
        state.started.elapsed().as_secs() as i64,
    );
    gauge(
        registry,
        "initialized",
        "1 once the node belongs to a cluster",
        state.running().is_some() as i64,
    );
    let t = &state.transport_metrics;
    counter(
        registry,
        "transport_batches_dropped",
        "Raft batches dropped (queue full or peer unreachable)",
        &t.batches_dropped,
    );
    counter(
        registry,
        "transport_streams_opened",
        "Raft streams opened to other nodes",
        &t.streams_opened,
    );
    counter(
        registry,
        "transport_streams_refused_version",
        "Raft streams not opened: the node's binary does not read the cluster's format version",
        &t.streams_refused_version,
    );
    gauge(
        registry,
        "cluster_version",
        "The format version this node writes by (raftstore/src/version.rs)",
        state.version.get() as i64,
    );
    counter(
        registry,
        "transport_snapshots_sent",
        "Snapshots sent",
        &t.snapshots_sent,
    );
    counter(
        registry,
        "transport_snapshots_failed",
        "Snapshots that failed to send",
        &t.snapshots_failed,
    );
    counter(
        registry,
        "transport_snapshot_bytes_sent",
        "Bytes of snapshot files sent",
        &t.snapshot_bytes_sent,
    );
    state.requests.register(registry);
    placement_metrics(registry, &state);
    if let Some(m) = state.store_metrics() {
        store_metrics(registry, &m);
    }
    if let Ok(counts) = local_summary(&state).await {
        gauge(
            registry,
            "replicas",
            "Replicas on this node",
            counts.replicas as i64,
        );
        gauge(
            registry,
            "leaders",
            "Ranges this node leads",
            counts.leaders as i64,
        );
        gauge(
            registry,
            "leases",
            "Ranges whose lease this node holds",
            counts.leases as i64,
        );
        let retries = counts.snapshot_retries;
        set_gauge(
            registry,
            "snapshot_retries",
            "Snapshots rebuilt for followers that had one within a minute",
            retries,
        );
    }
    let mut body = String::new();
    if encode(&mut body, &root).is_err() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed".to_string(),
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// The placement loop's figures (counts only on the node that runs it; see
/// `placement_active`).
fn placement_metrics(registry: &mut Registry, state: &State) {
    use std::sync::atomic::Ordering::Relaxed;
    let p = &state.placement;
    let active = p.active.load(Relaxed);
    set_gauge(
        registry,
        "placement_active",
        "1 on the node running the placement loop",
        active as u64,
    );
    let counts = if active {
        (
            p.under_replicated.load(Relaxed),
            p.unavailable.load(Relaxed),
        )
    } else {
        (0, 0)
    };
    set_gauge(
        registry,
        "ranges_under_replicated",
        "Ranges short of live voters (placement node only)",
        counts.0,
    );
    set_gauge(
        registry,
        "ranges_unavailable",
        "Ranges without a quorum of live voters (placement node only)",
        counts.1,
    );
    set_gauge(
        registry,
        "replica_moves_in_flight",
        "Membership changes placement has under way",
        p.moves_in_flight.load(Relaxed),
    );
    set_gauge(
        registry,
        "replica_moves_done",
        "Membership changes placement finished",
        p.moves_done.load(Relaxed),
    );
    set_gauge(
        registry,
        "replica_moves_failed",
        "Membership changes placement started that failed",
        p.moves_failed.load(Relaxed),
    );
    set_gauge(
        registry,
        "leader_moves_done",
        "Preferred leaders placement recorded",
        p.leader_moves_done.load(Relaxed),
    );
    let receiving = 2u64.saturating_sub(state.snapshot_slots.available_permits() as u64);
    set_gauge(
        registry,
        "snapshots_receiving",
        "Snapshots this node is receiving now",
        receiving,
    );
}

fn set_gauge(registry: &mut Registry, name: &str, help: &str, v: u64) {
    let g: Gauge = Gauge::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    registry.register(name, help, g);
}

/// The process's own figures, under the names Prometheus' client libraries use.
fn process_metrics(root: &mut Registry) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name (which may hold spaces) ends with ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    if let (Some(utime), Some(stime)) = (field(11), field(12)) {
        let c: Counter<f64, std::sync::atomic::AtomicU64> = Counter::default();
        c.inc_by((utime + stime) as f64 / ticks as f64);
        root.register(
            "process_cpu_seconds",
            "User and system CPU time of this process",
            c,
        );
    }
    if let Some(rss_pages) = field(21) {
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        set_gauge(
            root,
            "process_resident_memory_bytes",
            "Resident memory of this process",
            rss_pages * page,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        set_gauge(
            root,
            "process_open_fds",
            "Open file descriptors of this process",
            fds.count() as u64,
        );
    }
}

/// The data directory's disk and the engine's sizes: what a full-disk alert needs.
fn disk_metrics(registry: &mut Registry, state: &State) {
    let dir = &state.cfg.data_dir;
    if let Some(space) = crate::disk::space(dir) {
        set_gauge(
            registry,
            "disk_total_bytes",
            "Size of the data directory's filesystem",
            space.total,
        );
        set_gauge(
            registry,
            "disk_available_bytes",
            "Free space on the data directory's filesystem",
            space.available,
        );
    }
    let ballast = std::fs::metadata(dir.join(crate::disk::BALLAST_FILE)).map_or(0, |m| m.len());
    set_gauge(
        registry,
        "ballast_bytes",
        "Space held in reserve by the ballast file (0: none)",
        ballast,
    );
    let props = [
        (
            "rocksdb_sst_files_bytes",
            "rocksdb.total-sst-files-size",
            "Bytes of RocksDB SST files",
        ),
        (
            "rocksdb_live_data_bytes",
            "rocksdb.estimate-live-data-size",
            "Estimated live data in RocksDB",
        ),
        (
            "rocksdb_memtable_bytes",
            "rocksdb.cur-size-all-mem-tables",
            "Bytes in RocksDB memtables",
        ),
        (
            "rocksdb_pending_compaction_bytes",
            "rocksdb.estimate-pending-compaction-bytes",
            "Bytes RocksDB estimates compaction must rewrite",
        ),
        (
            "rocksdb_background_errors",
            "rocksdb.background-errors",
            "Background errors RocksDB has seen (any: the disk is failing or full)",
        ),
    ];
    for (name, prop, help) in props {
        if let Some(v) = state.engine.int_property(prop) {
            set_gauge(registry, name, help, v);
        }
    }
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: &AtomicU64) {
    let c: Counter = Counter::default();
    c.inc_by(StoreMetrics::get(value));
    registry.register(name, help, c);
}

fn store_metrics(registry: &mut Registry, m: &StoreMetrics) {
    counter(registry, "rounds", "Poll rounds that did work", &m.rounds);
    counter(
        registry,
        "raft_log_writes",
        "Write batches carrying Raft log entries or hard states",
        &m.raft_log_writes,
    );
    counter(
        registry,
        "raft_log_syncs",
        "Raft log writes made durable with fsync",
        &m.raft_log_syncs,
    );
    counter(
        registry,
        "commands_applied",
        "Write commands applied",
        &m.commands_applied,
    );
    counter(
        registry,
        "writes_answered",
        "Writes proposed here and answered",
        &m.writes_answered,
    );
    counter(
        registry,
        "writes_batched",
        "Writes applied that shared a Raft entry with others",
        &m.writes_batched,
    );
    counter(
        registry,
        "read_index_reads",
        "Reads served after a ReadIndex round",
        &m.read_index_reads,
    );
    counter(
        registry,
        "lease_reads",
        "Reads served locally under the lease",
        &m.lease_reads,
    );
    counter(
        registry,
        "ticks_caught_up",
        "Ticks run late after the store was stalled",
        &m.ticks_caught_up,
    );
    counter(
        registry,
        "campaigns_deferred",
        "Campaigns that waited for the per-tick campaign budget",
        &m.campaigns_deferred,
    );
    counter(
        registry,
        "votes_refused",
        "Vote requests refused while this node supports the range's leader's node, or just after it restarted",
        &m.votes_refused,
    );
    counter(
        registry,
        "messages_sent",
        "Raft messages sent",
        &m.messages_sent,
    );
    counter(
        registry,
        "batches_sent",
        "Message batches sent (one per destination per round)",
        &m.batches_sent,
    );
    counter(
        registry,
        "messages_received",
        "Raft messages received",
        &m.messages_received,
    );
    counter(
        registry,
        "messages_dropped",
        "Messages for replicas not on this node",
        &m.messages_dropped,
    );
    counter(
        registry,
        "snapshots_applied",
        "Snapshots installed",
        &m.snapshots_applied,
    );
    counter(
        registry,
        "conf_changes_applied",
        "Membership changes applied",
        &m.conf_changes_applied,
    );
    counter(
        registry,
        "replicas_destroyed",
        "Replicas destroyed (removed from their range)",
        &m.replicas_destroyed,
    );
    counter(
        registry,
        "tombstoned_messages",
        "Messages refused for destroyed replicas",
        &m.tombstoned_messages,
    );
    counter(
        registry,
        "log_compactions",
        "Raft log truncations",
        &m.log_compactions,
    );
    counter(
        registry,
        "heartbeats_coalesced",
        "Heartbeats sent inside coalesced batches",
        &m.heartbeats_coalesced,
    );
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
    registry.register(
        "peer_messages_sent",
        "Raft messages sent to each node",
        messages,
    );
    registry.register(
        "peer_bytes_sent",
        "Raft message bytes sent to each node",
        bytes,
    );
}

/// The placement lines of `/status`: membership and liveness as this node sees them,
/// and the loop's figures when it runs here.
fn status_placement(page: &mut String, state: &State) {
    use std::sync::atomic::Ordering::Relaxed;
    let view = state.cluster_view();
    let _ = writeln!(page, "replication factor {}", view.replication_factor);
    let members: Vec<String> = view
        .nodes
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r.node_id,
                crate::service::nodes::liveness_name(state.liveness(r))
            )
        })
        .collect();
    let _ = writeln!(page, "members {}", members.join(" "));
    let p = &state.placement;
    if p.active.load(Relaxed) {
        let _ = writeln!(
            page,
            "placement runs here: {} ranges under-replicated, {} unavailable, {} moves in flight, {} done, {} failed; {} leaders moved",
            p.under_replicated.load(Relaxed),
            p.unavailable.load(Relaxed),
            p.moves_in_flight.load(Relaxed),
            p.moves_done.load(Relaxed),
            p.moves_failed.load(Relaxed),
            p.leader_moves_done.load(Relaxed)
        );
    }
}

async fn status(AxState(state): AxState<Arc<State>>) -> impl IntoResponse {
    let mut page = String::new();
    let me = state.cfg.node_id;
    let _ = writeln!(
        page,
        "flotilla node {me}  advertise {}  data {}",
        state.cfg.advertise,
        state.cfg.data_dir.display()
    );
    let _ = writeln!(page, "uptime {:?}", state.started.elapsed());
    let Some(running) = state.running() else {
        let _ = writeln!(
            page,
            "not initialized: waiting for `flotilla init` (join {:?})",
            state.cfg.join
        );
        return page;
    };
    let _ = writeln!(page, "cluster {}", running.cluster_id);
    let known: Vec<String> = state
        .peers
        .known()
        .iter()
        .map(|n| format!("{}={}", n.node_id, n.address))
        .collect();
    let _ = writeln!(page, "nodes {}", known.join(" "));
    status_placement(&mut page, &state);
    let ranges = match local_ranges(&state, false).await {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(page, "store unavailable: {}", e.message());
            return page;
        }
    };
    let retrying: Vec<String> = ranges
        .ranges
        .iter()
        .filter(|r| r.snapshot_retries > 0)
        .map(|r| {
            format!(
                "{} ({})",
                r.descriptor.as_ref().map_or(0, |d| d.range_id),
                r.snapshot_retries
            )
        })
        .collect();
    if !retrying.is_empty() {
        let _ = writeln!(page, "WARNING snapshots rebuilt for a follower that cannot install them, by range (retries): {}", retrying.join(" "));
    }
    let _ = writeln!(
        page,
        "\n{:>20}  {:<24} {:<24} {:>6} {:>5} {:>6} {:>9}  replicas",
        "range", "start", "end", "leader", "lease", "term", "applied"
    );
    for r in &ranges.ranges {
        let Some(d) = &r.descriptor else { continue };
        let lease = if r.lease { "yes" } else { "-" };
        let _ = writeln!(
            page,
            "{:>20}  {:<24} {:<24} {:>6} {:>5} {:>6} {:>9}  {}",
            d.range_id,
            crate::display::key(&d.start),
            crate::display::end_key(&d.end),
            r.leader_node,
            lease,
            r.term,
            r.applied_index,
            crate::display::replicas(d)
        );
    }
    page
}
