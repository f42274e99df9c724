//! One server process: its data directory, its identity, the store once the node belongs
//! to a cluster, and its lifecycle from start to SIGTERM.
//!
//! A node starts in one of three ways:
//! - its data directory holds a cluster identity: it starts its store at once;
//! - it has no identity and no `--join`: it bootstraps a single-node cluster by itself;
//! - it has no identity and a `--join` list: it serves `Hello` and waits for a `Bootstrap`
//!   (sent by whichever node receives `flotilla init`).
//!
//! The cluster identity (cluster id, initial range count, members) is written together
//! with the initial ranges in one synced write, so a node is either fully bootstrapped or
//! not at all. The data directory also records its node id: starting it with another
//! `--node-id`, or against nodes of another cluster, is refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_engine::{Engine, EngineOptions};
use flotilla_raftstore::keyspace::initial_ranges_placed;
use flotilla_raftstore::node::{MetaSink, Node, StoreHandle, StoreMsg};
use flotilla_raftstore::version::{ClusterVersion, V1_SINGLE};
use flotilla_raftstore::{
    Clock, MonotonicClock, RangeDescriptor, SkewedClock, Store, StoreConfig, StoreMetrics,
};
use flotilla_router::{publish_meta, Db, RetryPolicy, Router};
use parking_lot::{Mutex, RwLock};
use prost::Message as _;
use tokio::runtime::Handle;

use crate::config::ServerConfig;
use crate::errors::ServerError;
use crate::gateway::Gateway;
use crate::peers::Peers;
use crate::proto::{BootstrapRequest, NodeAddress};
use crate::transport::{GrpcTransport, TransportMetrics};

/// A node's store once it belongs to a cluster. Handlers reach the store through its
/// handle (the mailbox), so stopping it never waits for them.
pub struct Running {
    pub cluster_id: String,
    pub store: StoreHandle,
    pub metrics: Arc<StoreMetrics>,
    pub db: Arc<Db<Gateway>>,
    /// The poller's owner; taken (and the store stopped) at shutdown.
    node: Mutex<Option<Node>>,
}

/// Everything the services of one server share.
pub struct State {
    pub cfg: ServerConfig,
    pub peers: Arc<Peers>,
    pub engine: Engine,
    pub transport: Arc<GrpcTransport>,
    pub transport_metrics: Arc<TransportMetrics>,
    /// The format version this node writes by, shared by its store and its transport
    /// (`raftstore/src/version.rs`); raised as the meta range's settings say.
    pub version: ClusterVersion,
    pub started: Instant,
    /// Client request counters and latencies.
    pub requests: crate::telemetry::RequestMetrics,
    /// Random per process (see `HelloResponse.process_nonce`).
    pub process_nonce: u64,
    running: RwLock<Option<Arc<Running>>>,
    /// Snapshots being received at once (each writes its files to disk as they come).
    pub snapshot_slots: tokio::sync::Semaphore,
    /// Set once shutdown has begun.
    stopping: std::sync::atomic::AtomicBool,
    /// Serialises bootstraps.
    bootstrap_lock: Mutex<()>,
    /// The members this node has had Raft traffic from (see `identity`).
    pub(crate) members_seen: Mutex<std::collections::BTreeSet<u64>>,
    /// The last claim of each node id accepted by `identity::check_claim`: (address,
    /// process nonce).
    pub(crate) accepted_claims: Mutex<std::collections::HashMap<u64, (String, u64)>>,
    /// What this node last read of the cluster's node records and settings.
    pub(crate) cluster: RwLock<crate::cluster::ClusterView>,
    /// True while this node drains because its record says it is leaving.
    pub(crate) draining_for_decommission: std::sync::atomic::AtomicBool,
    /// The placement loop's counters.
    pub placement: crate::replicate::PlacementMetrics,
    /// Set (once) to why the store stopped on its own; `start::serve` then exits.
    fatal: Arc<tokio::sync::watch::Sender<Option<String>>>,
    /// Set (once) to why the node must not go on (its binary is older than the cluster's
    /// format); `start::serve` then exits.
    halt: tokio::sync::watch::Sender<Option<String>>,
    runtime: Handle,
}

impl State {
    /// Opens the data directory of the node `cfg` describes, checks it belongs to that
    /// node, and starts the store if the node is part of a cluster (bootstrapping a
    /// single-node cluster when there is nothing to join).
    pub fn open(mut cfg: ServerConfig, runtime: Handle) -> Result<Arc<State>, ServerError> {
        let engine = open_data_dir(&cfg)?;
        crate::node_id::resolve(&mut cfg, &engine, &runtime)?;
        let members_seen = Store::members_seen(&engine)?.into_iter().collect();
        // Twice the liveness timeout: a node silent that long has missed ten heartbeat
        // batches.
        let suspect_after = cfg.store.tick_interval * (2 * cfg.store.liveness_timeout_ticks) as u32;
        // A directory of another node is refused before anything else is asked of it.
        Store::check_owner(&engine, cfg.node_id)?;
        let version = ClusterVersion::open_as(engine.clone(), V1_SINGLE, cfg.binary_version)?;
        let peers = Arc::new(
            Peers::new(
                cfg.node_id,
                cfg.advertise.clone(),
                cfg.pinned.clone(),
                suspect_after,
                cfg.dialer.clone(),
            )
            .with_versions(cfg.binary_version, version.clone()),
        );
        let snap_root = flotilla_raftstore::snap::snap_root(engine.path());
        let transport = Arc::new(GrpcTransport::new(
            peers.clone(),
            runtime.clone(),
            version.clone(),
            snap_root,
            cfg.store.snapshot_rate,
        ));
        let state = Arc::new(State {
            transport_metrics: transport.metrics(),
            cfg,
            peers,
            engine,
            transport,
            version,
            started: Instant::now(),
            process_nonce: rand::random(),
            requests: Default::default(),
            running: RwLock::new(None),
            stopping: Default::default(),
            snapshot_slots: tokio::sync::Semaphore::new(2),
            bootstrap_lock: Mutex::new(()),
            fatal: Arc::new(tokio::sync::watch::channel(None).0),
            halt: tokio::sync::watch::channel(None).0,
            members_seen: Mutex::new(members_seen),
            accepted_claims: Mutex::default(),
            cluster: RwLock::default(),
            draining_for_decommission: Default::default(),
            placement: Default::default(),
            runtime,
        });
        if let Some(identity) = state.stored_identity()? {
            // Never two processes as one node: ask the members first.
            state
                .runtime
                .block_on(crate::identity::ensure_unique(&state, &identity))?;
            state.start_store(identity)?;
        } else if state.cfg.join.is_empty() {
            let me = state.cfg.node_id;
            let me = NodeAddress {
                node_id: me,
                address: state.cfg.advertise.clone(),
            };
            let identity = new_identity(
                state.cfg.initial_ranges,
                state.cfg.replication_factor,
                vec![me],
            );
            tracing::info!(cluster = %identity.cluster_id, "no --join given: bootstrapping a single-node cluster");
            state.bootstrap(identity)?;
        } else {
            // Refuse a directory of another node now rather than at bootstrap.
            Store::check_owner(&state.engine, state.cfg.node_id)?;
            tracing::info!(join = ?state.cfg.join, "waiting for `flotilla init`");
        }
        Ok(state)
    }

    /// The running store, if this node belongs to a cluster.
    pub fn running(&self) -> Option<Arc<Running>> {
        self.running.read().clone()
    }

    /// The running store, or the status to answer without one: `stopping` during
    /// shutdown, `not_initialized` before the node joined a cluster. Neither ran anything,
    /// so callers may send the call elsewhere.
    pub fn serving(&self) -> Result<Arc<Running>, tonic::Status> {
        match self.running() {
            Some(r) => Ok(r),
            None if self.is_stopping() => Err(crate::errors::stopping(self.cfg.node_id)),
            None => Err(crate::errors::not_initialized(self.cfg.node_id)),
        }
    }

    /// The identity recorded in the data directory, if any.
    pub fn stored_identity(&self) -> Result<Option<BootstrapRequest>, ServerError> {
        let Some(raw) = Store::cluster_identity(&self.engine)? else {
            return Ok(None);
        };
        let identity =
            BootstrapRequest::decode(raw.as_slice()).map_err(|e| ServerError::Identity {
                path: self.cfg.data_dir.clone(),
                detail: e.to_string(),
            })?;
        Ok(Some(identity))
    }

    /// Makes this node a member of the cluster `identity` describes: records it with the
    /// initial ranges (one synced write) and starts the store. A repeat for the same
    /// cluster changes nothing; another cluster's bootstrap is refused.
    pub fn bootstrap(&self, identity: BootstrapRequest) -> Result<(), ServerError> {
        let _guard = self.bootstrap_lock.lock();
        let me = self.cfg.node_id;
        if let Some(existing) = self.stored_identity()? {
            if existing.cluster_id == identity.cluster_id {
                // A store that failed to start after the identity was written starts now.
                if self.running.read().is_none() && !self.is_stopping() {
                    return self.start_store(existing);
                }
                return Ok(());
            }
            return Err(ServerError::WrongCluster(format!(
                "node {me} already belongs to cluster {}, not {}",
                existing.cluster_id, identity.cluster_id
            )));
        }
        if !identity.nodes.iter().any(|n| n.node_id == me) {
            return Err(ServerError::Config(format!(
                "the cluster's member list does not include node {me}"
            )));
        }
        // Only the initial ranges placed on this node (a node that joined has none: the
        // placement loop sends it replicas).
        let mine: Vec<RangeDescriptor> = match identity.joined {
            true => Vec::new(),
            false => initial_descriptors(&identity)
                .into_iter()
                .filter(|d| d.replica_on(me).is_some())
                .collect(),
        };
        let records = crate::cluster::initial_records(&identity);
        Store::bootstrap_cluster(&self.engine, me, &identity.encode_to_vec(), &mine, &records)?;
        self.start_store(identity)
    }

    fn start_store(&self, identity: BootstrapRequest) -> Result<(), ServerError> {
        self.peers.set_cluster(
            &identity.cluster_id,
            identity.nodes.iter().map(|n| n.node_id).collect(),
        );
        for n in &identity.nodes {
            self.peers.learn(n.node_id, &n.address);
        }
        let clock: Arc<dyn Clock> = match self.cfg.clock_rate {
            Some(rate) => {
                tracing::warn!(
                    node = self.cfg.node_id,
                    rate,
                    "fault injection: this node's clock runs skewed"
                );
                Arc::new(SkewedClock::new(rate))
            }
            None => Arc::new(MonotonicClock::new()),
        };
        let cfg = StoreConfig {
            // The server learns the cluster's version from the meta range (`cluster.rs`).
            initial_cluster_version: V1_SINGLE,
            ..self.cfg.store.clone()
        };
        let mut store =
            Store::open_with_clock(self.cfg.node_id, self.engine.clone(), cfg, None, clock)?;
        store.share_cluster_version(self.version.clone());
        let (meta_tx, meta_rx) = tokio::sync::mpsc::unbounded_channel();
        let sink: MetaSink = Arc::new(move |entries| {
            let _ = meta_tx.send(entries);
        });
        let node = Node::start(store, self.transport.clone(), Some(sink));
        let (mut failure, fatal) = (node.failure(), self.fatal.clone());
        self.runtime.spawn(async move {
            if let Ok(cause) = failure.wait_for(Option::is_some).await {
                fatal.send_replace(cause.clone());
            }
        });
        let gateway = Gateway::new(self.peers.clone(), node.handle());
        let meta = meta_descriptor(&identity);
        let db = Arc::new(Db::new(Router::new(gateway, meta, RetryPolicy::default())));
        let publisher = db.clone();
        self.runtime
            .spawn(async move { publish_meta(publisher.router(), meta_rx).await });
        tracing::info!(node = self.cfg.node_id, cluster = %identity.cluster_id, "store started");
        let running = Running {
            cluster_id: identity.cluster_id.clone(),
            store: node.handle(),
            metrics: node.metrics().clone(),
            db,
            node: Mutex::new(Some(node)),
        };
        *self.running.write() = Some(Arc::new(running));
        Ok(())
    }

    /// The store's counters, once it runs.
    pub fn store_metrics(&self) -> Option<Arc<StoreMetrics>> {
        self.running().map(|r| r.metrics.clone())
    }

    /// Hands this node's leaderships to the other nodes (waiting up to two election
    /// timeouts for them to go), then stops the store (waiting for its last round and its
    /// threads); calls arriving afterwards are refused as `stopping`. Call from a
    /// blocking context.
    pub fn stop(&self) {
        if let Some(running) = self.running() {
            let timeout = self.cfg.store.tick_interval * (2 * self.cfg.store.election_ticks) as u32;
            drain(&running, timeout);
        }
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let running = self.running.write().take();
        if let Some(node) = running.and_then(|r| r.node.lock().take()) {
            node.stop();
        }
    }

    /// Raises the cluster version this node writes by to `to`, seen at `source` (durably,
    /// before anything from that source is taken). A version this binary does not know
    /// halts the node: `start::serve` exits saying why.
    pub(crate) fn follow_version(&self, to: u32, source: &str) -> Result<(), ServerError> {
        let raise = || self.version.raise_from(to, source);
        // A rise writes and syncs the store's record: off the async workers, so that one
        // fsync does not stall the calls that share this worker. (Once per version.)
        let raised = if to > self.version.get() {
            off_the_reactor(raise)
        } else {
            raise()
        };
        match raised {
            Ok(true) => {
                tracing::info!(
                    version = to,
                    source,
                    "this node now writes by cluster version {to}"
                );
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e @ flotilla_raftstore::Error::VersionTooNew { .. }) => {
                let cause = e.to_string();
                self.halt.send_if_modified(|c| {
                    let first = c.is_none();
                    if first {
                        tracing::error!(%cause, "this node cannot go on");
                        *c = Some(cause.clone());
                    }
                    first
                });
                Err(ServerError::Halted(cause))
            }
            Err(e) => Err(ServerError::Store(e)),
        }
    }

    /// Resolves to the cause once the node was halted ([`State::follow_version`]).
    pub async fn halted(&self) -> String {
        first_cause(&self.halt).await
    }

    /// Resolves to the cause once the store has stopped on its own.
    pub async fn store_failed(&self) -> String {
        first_cause(&self.fatal).await
    }

    /// True once shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Resolves to the cause `cause` is set to (never, if its sender goes away first).
async fn first_cause(cause: &tokio::sync::watch::Sender<Option<String>>) -> String {
    let mut rx = cause.subscribe();
    let set = rx
        .wait_for(Option::is_some)
        .await
        .map(|c| c.clone().unwrap_or_default());
    match set {
        Ok(cause) => cause,
        Err(_) => std::future::pending().await,
    }
}

/// Refuses a `--data-dir` that exists and is not a directory. `serve` calls it before it
/// binds its ports, so that a bad path is reported as such whatever the ports' state.
pub(crate) fn check_data_dir(cfg: &ServerConfig) -> Result<(), ServerError> {
    let dir = &cfg.data_dir;
    if dir.exists() && !dir.is_dir() {
        return Err(ServerError::Config(format!(
            "--data-dir {}: exists and is not a directory; give the path of a directory (it is created if missing)",
            dir.display()
        )));
    }
    Ok(())
}

/// Creates (if needed) and opens the data directory: its engine, and its ballast.
fn open_data_dir(cfg: &ServerConfig) -> Result<Engine, ServerError> {
    let dir = &cfg.data_dir;
    check_data_dir(cfg)?;
    std::fs::create_dir_all(dir).map_err(|source| ServerError::DataDir {
        path: dir.clone(),
        source,
    })?;
    let engine = Engine::open(dir.join("db"), &EngineOptions::default()).map_err(|e| {
        if e.to_string().contains("lock") {
            ServerError::DataDirInUse { path: dir.clone() }
        } else {
            ServerError::Engine(e)
        }
    })?;
    let size = cfg
        .ballast_size
        .unwrap_or_else(|| crate::disk::default_ballast_size(dir));
    match crate::disk::ensure_ballast(dir, size)? {
        crate::disk::Ballast::Present(bytes) => tracing::info!(bytes, "ballast in place"),
        crate::disk::Ballast::Absent { reason } => {
            tracing::warn!(%reason, "no ballast: a full disk will need space freed elsewhere")
        }
    }
    Ok(engine)
}

/// Asks the store to drain until it leads nothing or `timeout` passes.
fn drain(running: &Running, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !running.store.send(StoreMsg::Drain(tx)) {
            return;
        }
        match wait_answer(rx, deadline) {
            Some(0) | None => return,
            Some(left) if Instant::now() >= deadline => {
                tracing::warn!(
                    left,
                    "stopping while still leading some ranges; they elect new leaders"
                );
                return;
            }
            Some(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The store's answer, if it comes before `deadline` (a store stuck in a slow round does
/// not hold shutdown past it).
fn wait_answer(mut rx: tokio::sync::oneshot::Receiver<usize>, deadline: Instant) -> Option<usize> {
    loop {
        match rx.try_recv() {
            Ok(n) => return Some(n),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => return None,
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) if Instant::now() >= deadline => {
                return None
            }
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                std::thread::sleep(Duration::from_millis(10))
            }
        }
    }
}

/// A fresh identity for a cluster of `nodes`, `replication_factor` voters per range.
pub fn new_identity(
    initial_ranges: u32,
    replication_factor: u32,
    mut nodes: Vec<NodeAddress>,
) -> BootstrapRequest {
    let cluster_id = format!("{:032x}", rand::random::<u128>());
    nodes.sort_by_key(|n| n.node_id);
    BootstrapRequest {
        cluster_id,
        initial_ranges,
        nodes,
        replication_factor,
        joined: false,
    }
}

/// The initial ranges, derived from the identity (the same on every member): each on
/// `replication_factor` of the initial members, spread evenly.
pub fn initial_descriptors(identity: &BootstrapRequest) -> Vec<RangeDescriptor> {
    let ids: Vec<u64> = identity.nodes.iter().map(|n| n.node_id).collect();
    // Identities from before replication factors put every range on every member.
    let factor = match identity.replication_factor {
        0 => ids.len(),
        f => f as usize,
    };
    initial_ranges_placed(u64::from(identity.initial_ranges.max(1)), &ids, factor)
}

/// The meta range's descriptor at bootstrap (it never splits; its replicas move, and
/// routers learn its later shapes from `Hello` answers and `EpochNotMatch`).
pub fn meta_descriptor(identity: &BootstrapRequest) -> RangeDescriptor {
    initial_descriptors(identity).swap_remove(0)
}

/// How long discovery waits between rounds of `Hello`s.
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(2);

/// Runs `f`, which blocks (a synced write), without stalling the async worker it is called
/// on: `block_in_place` on a multi-threaded runtime, directly elsewhere (a test's
/// single-threaded runtime, or no runtime).
fn off_the_reactor<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}
