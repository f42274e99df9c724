//! The deterministic cluster harness: several stores in one thread, time advanced by
//! explicit ticks, every message through a filter chain.
//!
//! [`Cluster`] owns a temporary directory with one data directory per node. Nothing runs
//! unless a test drives it: [`Cluster::tick`] advances every live store by one tick and
//! then settles — delivers due messages and ends rounds until no store has work left.
//! Requests go straight into a store ([`Cluster::request`]); helpers like
//! [`Cluster::put`] find the leader, send, and tick until the answer arrives or a tick
//! budget runs out. Stores can be stopped and reopened from their data directories.
//! Randomness (filters, fault schedules) comes from one seeded generator, and election
//! timeouts are fixed per replica from the same seed, so a failing run reproduces from
//! its seed.

pub mod filter;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use flotilla_engine::{Engine, EngineOptions};
use flotilla_raftstore::local::even_ranges;
use flotilla_raftstore::metapb::{HeartbeatBatch, Replica};
use flotilla_raftstore::snap::{self, snap_root};
use flotilla_raftstore::{
    callback, find_split_key, Callback, Command, Error, ManualClock, RaftEnvelope, RangeDescriptor,
    Request, Response, ResponseReceiver, Store, StoreConfig, NODE_RANGE_ID,
};
use prost::Message as _;
use raft::prelude::MessageType;
use rand::rngs::StdRng;
use rand::SeedableRng;

pub use filter::{Filter, Verdict};

/// A harness error: the store's own error, or no answer within the tick budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    Store(Error),
    NoAnswer { ticks: u64 },
}

impl CallError {
    /// True when the store answered that the request certainly failed or that its
    /// outcome is unknown: what a write that cannot commit must get (never success, and
    /// never silence).
    pub fn is_failure_or_unknown(&self) -> bool {
        matches!(self, CallError::Store(e) if e.is_retryable() || e.is_ambiguous())
    }
}

/// Configuration the harness uses by default: short timeouts, small log GC thresholds,
/// no fsync (the harness restarts stores, not machines; durability across process kill
/// does not need it).
pub fn harness_config() -> StoreConfig {
    StoreConfig {
        election_ticks: 10,
        heartbeat_ticks: 2,
        request_timeout_ticks: 30,
        read_index_retry_ticks: 3,
        log_gc_threshold: 64,
        log_gc_max_lag: 256,
        change_timeout_ticks: 300,
        sync_log: false,
        ..StoreConfig::default()
    }
}

struct InFlight {
    due: u64,
    env: RaftEnvelope,
}

/// A cluster of stores driven by the test.
pub struct Cluster {
    pub seed: u64,
    pub rng: StdRng,
    cfg: StoreConfig,
    root: tempfile::TempDir,
    stores: BTreeMap<u64, Option<Store>>,
    ranges: Vec<RangeDescriptor>,
    filters: Vec<(u64, Box<dyn Filter>)>,
    next_filter: u64,
    in_flight: Vec<InFlight>,
    now: u64,
    /// Messages delivered and dropped so far.
    pub delivered: u64,
    pub dropped: u64,
    /// Messages delivered so far per (from node, to node).
    pub delivered_between: BTreeMap<(u64, u64), u64>,
    /// Each node's clock; it keeps running across restarts, as the OS's monotonic clock
    /// does, and while the node is stalled.
    clocks: BTreeMap<u64, Arc<ManualClock>>,
    /// Stalled nodes (frozen processes) and the requests queued for them meanwhile.
    stalled: BTreeMap<u64, Vec<(Request, Callback)>>,
}

impl Cluster {
    /// `nodes` stores holding `range_count` ranges (every node a replica of each).
    pub fn new(nodes: u64, range_count: u64, seed: u64) -> Cluster {
        Cluster::with_config(
            nodes,
            even_ranges(range_count, nodes),
            seed,
            harness_config(),
        )
    }

    /// A cluster with explicit ranges and configuration.
    pub fn with_config(
        nodes: u64,
        ranges: Vec<RangeDescriptor>,
        seed: u64,
        cfg: StoreConfig,
    ) -> Cluster {
        let root = tempfile::tempdir().expect("temp dir");
        let mut cluster = Cluster {
            seed,
            rng: StdRng::seed_from_u64(seed),
            cfg,
            root,
            stores: BTreeMap::new(),
            ranges,
            filters: Vec::new(),
            next_filter: 1,
            in_flight: Vec::new(),
            now: 0,
            delivered: 0,
            dropped: 0,
            delivered_between: BTreeMap::new(),
            clocks: BTreeMap::new(),
            stalled: BTreeMap::new(),
        };
        for node_id in 1..=nodes {
            let engine = cluster.open_engine(node_id);
            Store::bootstrap(&engine, node_id, &cluster.ranges).expect("bootstrap");
            drop(engine);
            cluster.start(node_id);
        }
        cluster
    }

    fn dir(&self, node_id: u64) -> PathBuf {
        self.root.path().join(format!("node-{node_id}"))
    }

    fn open_engine(&self, node_id: u64) -> Engine {
        Engine::open(
            self.dir(node_id),
            &EngineOptions {
                block_cache_bytes: 1 << 20,
                background_jobs: 1,
            },
        )
        .expect("open engine")
    }

    /// Opens node `node_id`'s store from its data directory.
    pub fn start(&mut self, node_id: u64) {
        let engine = self.open_engine(node_id);
        let clock = self.clocks.entry(node_id).or_default().clone();
        let store =
            Store::open_with_clock(node_id, engine, self.cfg.clone(), Some(self.seed), clock)
                .expect("open store");
        self.stores.insert(node_id, Some(store));
    }

    /// Adds a node holding no replica yet (it gets them by membership changes); returns
    /// its id.
    pub fn add_node(&mut self) -> u64 {
        let node_id = self.stores.keys().max().copied().unwrap_or(0) + 1;
        let engine = self.open_engine(node_id);
        Store::bootstrap(&engine, node_id, &[]).expect("bootstrap");
        drop(engine);
        self.start(node_id);
        node_id
    }

    /// Stops node `node_id` as a crash would: its in-memory state is gone, its data
    /// directory stays.
    pub fn stop(&mut self, node_id: u64) {
        self.stalled.remove(&node_id);
        if let Some(slot) = self.stores.get_mut(&node_id) {
            *slot = None;
        }
    }

    /// Stops and reopens a node.
    pub fn restart(&mut self, node_id: u64) {
        self.stop(node_id);
        self.start(node_id);
    }

    /// Node ids, ascending.
    pub fn node_ids(&self) -> Vec<u64> {
        self.stores.keys().copied().collect()
    }

    /// True when the node is running.
    pub fn is_running(&self, node_id: u64) -> bool {
        matches!(self.stores.get(&node_id), Some(Some(_)))
    }

    /// The store of a running node.
    pub fn store(&self, node_id: u64) -> &Store {
        self.stores[&node_id].as_ref().expect("node is running")
    }

    /// The store of a running node, mutably (to inject input by hand).
    pub fn store_mut(&mut self, node_id: u64) -> &mut Store {
        self.stores
            .get_mut(&node_id)
            .and_then(|s| s.as_mut())
            .expect("node is running")
    }

    /// The ranges the cluster was bootstrapped with.
    pub fn ranges(&self) -> &[RangeDescriptor] {
        &self.ranges
    }

    /// Current logical time.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Adds a filter to the chain; returns its id for [`Cluster::remove_filter`].
    pub fn add_filter(&mut self, f: impl Filter + 'static) -> u64 {
        let id = self.next_filter;
        self.next_filter += 1;
        self.filters.push((id, Box::new(f)));
        id
    }

    /// Removes one filter.
    pub fn remove_filter(&mut self, id: u64) {
        self.filters.retain(|(i, _)| *i != id);
    }

    /// Removes every filter (heals partitions).
    pub fn clear_filters(&mut self) {
        self.filters.clear();
    }

    /// One tick interval on every clock; every live store that is not stalled runs its
    /// tick; then settle.
    pub fn tick(&mut self) {
        self.now += 1;
        let interval = self.cfg.tick_interval;
        for clock in self.clocks.values() {
            clock.advance(interval);
        }
        for (id, store) in self.stores.iter_mut() {
            let Some(store) = store.as_mut().filter(|_| !self.stalled.contains_key(id)) else {
                continue;
            };
            store.catch_up();
            // Size checks run inline here; the threaded driver runs them on a worker.
            for task in store.take_split_checks() {
                let split_size = store.config().split_size;
                if let Ok(Some(key)) = find_split_key(store.engine(), &task, split_size) {
                    store.on_split_key(task.range_id, task.epoch, key);
                }
            }
        }
        self.settle();
    }

    /// One tick for the live stores in `nodes` only, then settle: the others' clocks stand
    /// still (a clock running slow, for the lease tests).
    pub fn tick_only(&mut self, nodes: &[u64]) {
        self.now += 1;
        let interval = self.cfg.tick_interval;
        for (id, store) in self.stores.iter_mut() {
            if let (true, Some(store)) = (nodes.contains(id), store.as_mut()) {
                self.clocks[id].advance(interval);
                store.catch_up();
            }
        }
        self.settle();
    }

    /// Freezes node `node_id` as `SIGSTOP` would: its clock runs on with everyone else's,
    /// but it executes nothing — no ticks, no messages (they wait for it), no requests
    /// (queued, see [`Cluster::request`]) — until [`Cluster::resume`].
    pub fn stall(&mut self, node_id: u64) {
        self.stalled.entry(node_id).or_default();
    }

    /// Wakes a stalled node the worst way round: the requests queued while it was frozen
    /// are handled first, before its messages and before it catches up the ticks it
    /// missed, so only the store's own judgement of time stands between them and a stale
    /// answer. Then the cluster settles.
    pub fn resume(&mut self, node_id: u64) {
        let queued = self.stalled.remove(&node_id).unwrap_or_default();
        if let Some(Some(store)) = self.stores.get_mut(&node_id) {
            for (req, cb) in queued {
                store.on_request(req, cb);
            }
        }
        self.settle();
        if let Some(Some(store)) = self.stores.get_mut(&node_id) {
            store.catch_up();
        }
        self.settle();
    }

    /// True while the node is stalled.
    pub fn is_stalled(&self, node_id: u64) -> bool {
        self.stalled.contains_key(&node_id)
    }

    /// `n` ticks.
    pub fn ticks(&mut self, n: u64) {
        for _ in 0..n {
            self.tick();
        }
    }

    /// Delivers due messages and ends rounds until nothing is left to do this tick.
    pub fn settle(&mut self) {
        for _ in 0..1000 {
            let delivered = self.deliver_due();
            let mut busy = false;
            for (id, store) in self.stores.iter() {
                busy |= !self.stalled.contains_key(id)
                    && store.as_ref().is_some_and(|s| s.has_pending_work());
            }
            self.end_rounds();
            if delivered == 0 && !busy && !self.has_due() {
                return;
            }
        }
        for (id, store) in self.stores.iter() {
            eprintln!(
                "not settled: node {id} has work: {:?}",
                store.as_ref().map(|s| s.has_pending_work())
            );
        }
        for m in &self.in_flight {
            eprintln!(
                "not settled: in flight {} -> {} range {} {:?}",
                m.env.from.node_id,
                m.env.to.node_id,
                m.env.range_id,
                m.env.message.get_msg_type()
            );
        }
        panic!(
            "cluster did not settle within 1000 rounds (seed {})",
            self.seed
        );
    }

    fn has_due(&self) -> bool {
        self.in_flight
            .iter()
            .any(|m| m.due <= self.now && !self.stalled.contains_key(&m.env.to.node_id))
    }

    fn end_rounds(&mut self) {
        let mut sent = Vec::new();
        for (node_id, slot) in self.stores.iter_mut() {
            if self.stalled.contains_key(node_id) {
                continue;
            }
            let Some(store) = slot.as_mut() else { continue };
            // Leaders' messages leave before the round's write, so they are on their way
            // even when that write fails.
            let mut early = Vec::new();
            let result = store.end_round(|_, batch| early.extend(batch));
            sent.append(&mut early);
            match result {
                Ok(out) => sent.extend(out.into_iter().flat_map(|(_, batch)| batch)),
                Err(e) => {
                    // A failed round stops the store, as the threaded driver does: the
                    // node is down until the test starts it again.
                    eprintln!("node {node_id} stopped: {e}");
                    *slot = None;
                }
            }
        }
        for env in sent {
            self.route(env);
        }
    }

    fn route(&mut self, mut env: RaftEnvelope) {
        if env.range_id == NODE_RANGE_ID {
            self.filter_beats(&mut env);
        }
        let mut delay = 0;
        let mut copies = 1;
        for (_, f) in self.filters.iter_mut() {
            match f.check(&env, &mut self.rng) {
                Verdict::Deliver => {}
                Verdict::Drop => {
                    self.dropped += 1;
                    return;
                }
                Verdict::Delay(t) => delay += t,
                Verdict::Duplicate => copies += 1,
            }
        }
        for _ in 1..copies {
            self.in_flight.push(InFlight {
                due: self.now + delay,
                env: env.clone(),
            });
        }
        self.in_flight.push(InFlight {
            due: self.now + delay,
            env,
        });
    }

    /// Filters the heartbeats inside a node's coalesced batch one by one, as if each
    /// were its range's own message, so that filters selecting ranges or message types
    /// see them; the batch itself then passes the filters as a whole (node-to-node).
    fn filter_beats(&mut self, env: &mut RaftEnvelope) {
        let Ok(mut batch) = HeartbeatBatch::decode(env.message.context.as_ref()) else {
            return;
        };
        let before = batch.beats.len();
        let (filters, rng) = (&mut self.filters, &mut self.rng);
        batch.beats.retain(|b| {
            let mut m = raft::prelude::Message::default();
            let t = if b.response {
                MessageType::MsgHeartbeatResponse
            } else {
                MessageType::MsgHeartbeat
            };
            m.set_msg_type(t);
            let one = RaftEnvelope {
                range_id: b.range_id,
                from: Replica::voter(env.from.node_id, b.from),
                to: Replica::voter(env.to.node_id, b.to),
                message: m,
            };
            filters
                .iter_mut()
                .all(|(_, f)| f.check(&one, rng) != Verdict::Drop)
        });
        self.dropped += (before - batch.beats.len()) as u64;
        env.message.context = batch.encode_to_vec().into();
    }

    fn deliver_due(&mut self) -> usize {
        let now = self.now;
        let stalled = &self.stalled;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|m| m.due <= now && !stalled.contains_key(&m.env.to.node_id));
        self.in_flight = later;
        let mut per_node: BTreeMap<u64, Vec<RaftEnvelope>> = BTreeMap::new();
        for m in due {
            if !self.carry_snapshot_files(&m.env) {
                self.dropped += 1;
                continue;
            }
            per_node.entry(m.env.to.node_id).or_default().push(m.env);
        }
        let mut n = 0;
        for (node, batch) in per_node {
            match self.stores.get_mut(&node) {
                Some(Some(store)) => {
                    n += batch.len();
                    self.delivered += batch.len() as u64;
                    for env in &batch {
                        *self
                            .delivered_between
                            .entry((env.from.node_id, node))
                            .or_default() += 1;
                    }
                    store.on_raft_messages(batch);
                }
                _ => self.dropped += batch.len() as u64,
            }
        }
        n
    }

    /// Moves a snapshot message's files to its destination before the message, as a
    /// network transport does; false (the message is lost) when they cannot be read.
    fn carry_snapshot_files(&self, env: &RaftEnvelope) -> bool {
        if env.message.get_msg_type() != raft::prelude::MessageType::MsgSnapshot {
            return true;
        }
        let (from, to) = (
            snap_root(&self.dir(env.from.node_id)),
            snap_root(&self.dir(env.to.node_id)),
        );
        snap::copy(&from, &to, env.range_id, env.message.get_snapshot()).is_ok()
    }

    /// The node whose replica of `range_id` leads in the highest term, if any.
    pub fn leader_of(&self, range_id: u64) -> Option<u64> {
        let mut best: Option<(u64, u64)> = None;
        for (node, store) in &self.stores {
            let Some(peer) = store.as_ref().and_then(|s| s.peer(range_id)) else {
                continue;
            };
            if peer.is_leader() && best.is_none_or(|(t, _)| peer.term() > t) {
                best = Some((peer.term(), *node));
            }
        }
        best.map(|(_, n)| n)
    }

    /// Ticks until `range_id` has a leader that is not `not` (at most `max_ticks`).
    pub fn wait_leader_except(
        &mut self,
        range_id: u64,
        not: Option<u64>,
        max_ticks: u64,
    ) -> Option<u64> {
        for _ in 0..=max_ticks {
            match self.leader_of(range_id) {
                Some(l) if Some(l) != not => return Some(l),
                _ => self.tick(),
            }
        }
        None
    }

    /// Ticks until `range_id` has a leader (at most `max_ticks`).
    pub fn wait_leader(&mut self, range_id: u64, max_ticks: u64) -> Option<u64> {
        self.wait_leader_except(range_id, None, max_ticks)
    }

    /// Sends a request into a node's store; the answer arrives as the cluster runs. A
    /// stalled node's requests wait in its queue until it resumes.
    pub fn request(&mut self, node_id: u64, range_id: u64, command: Command) -> ResponseReceiver {
        let newest = self.current_ranges();
        let known = newest
            .iter()
            .chain(self.ranges.iter())
            .find(|r| r.range_id == range_id);
        let epoch = known.map(|r| r.epoch());
        self.request_with_epoch(node_id, range_id, epoch.unwrap_or_default(), command)
    }

    /// Like [`Cluster::request`], routed with an explicit epoch.
    pub fn request_with_epoch(
        &mut self,
        node_id: u64,
        range_id: u64,
        epoch: flotilla_raftstore::Epoch,
        command: Command,
    ) -> ResponseReceiver {
        let (cb, rx) = callback();
        let req = Request {
            range_id,
            epoch,
            command,
        };
        if let (Some(queue), Some(Some(_))) =
            (self.stalled.get_mut(&node_id), self.stores.get(&node_id))
        {
            queue.push((req, cb));
            return rx;
        }
        match self.stores.get_mut(&node_id) {
            Some(Some(store)) => store.on_request(req, cb),
            _ => {
                let _ = cb.send(Err(Error::StoreStopped { node_id }));
            }
        }
        rx
    }

    /// Ticks until `rx` is answered, at most `max_ticks`.
    pub fn wait_answer(
        &mut self,
        rx: &mut ResponseReceiver,
        max_ticks: u64,
    ) -> Result<Response, CallError> {
        self.settle();
        for _ in 0..=max_ticks {
            match rx.try_recv() {
                Ok(r) => return r.map_err(CallError::Store),
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    let reason = "the store stopped before answering".to_string();
                    return Err(CallError::Store(Error::Ambiguous {
                        range_id: 0,
                        reason,
                    }));
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => self.tick(),
            }
        }
        Err(CallError::NoAnswer { ticks: max_ticks })
    }

    /// Sends `command` to the range's leader (waiting up to `max_ticks` for one) and waits
    /// for the answer. Retries within the budget as the router does: on retryable errors,
    /// and on ambiguous ones (timeouts) only for commands safe to repeat (reads, splits).
    pub fn call(
        &mut self,
        range_id: u64,
        command: Command,
        max_ticks: u64,
    ) -> Result<Response, CallError> {
        let repeat = command.is_safe_to_repeat();
        self.call_routed(|_| range_id, command, max_ticks, repeat)
    }

    /// Like [`Cluster::call`] for the range holding `key`, found again before every
    /// attempt (ranges split).
    pub fn call_at(
        &mut self,
        key: &[u8],
        command: Command,
        max_ticks: u64,
    ) -> Result<Response, CallError> {
        let repeat = command.is_safe_to_repeat();
        self.call_routed(|c| c.range_of(key), command, max_ticks, repeat)
    }

    fn call_routed(
        &mut self,
        route: impl Fn(&Cluster) -> u64,
        command: Command,
        max_ticks: u64,
        repeat_ambiguous: bool,
    ) -> Result<Response, CallError> {
        let deadline = self.now + max_ticks;
        loop {
            let left = deadline.saturating_sub(self.now);
            let range_id = route(self);
            let Some(leader) = self.wait_leader(range_id, left) else {
                return Err(CallError::NoAnswer { ticks: max_ticks });
            };
            let mut rx = self.request(leader, range_id, command.clone());
            let left = deadline.saturating_sub(self.now);
            match self.wait_answer(&mut rx, left) {
                Err(CallError::Store(e))
                    if (e.is_retryable() || (repeat_ambiguous && e.is_ambiguous()))
                        && self.now < deadline =>
                {
                    self.tick()
                }
                other => return other,
            }
        }
    }

    /// Splits the range holding `key` at `key`; returns the two ranges on either side of
    /// `key` (a retry after an ambiguous attempt finds the split done, which also counts).
    pub fn split(&mut self, key: &[u8]) -> Result<(RangeDescriptor, RangeDescriptor), CallError> {
        match self.call_at(
            key,
            Command::Split {
                split_key: key.to_vec(),
            },
            200,
        ) {
            Ok(Response::Split { left, right }) => Ok((left, right)),
            Ok(other) => panic!("unexpected answer to split: {other:?}"),
            // A retry after an ambiguous attempt, routed before the split became visible,
            // finds the key outside the (already split) range: the split is done.
            Err(CallError::Store(Error::KeyNotInRange { .. })) if self.split_at(key).is_some() => {
                Ok(self.split_at(key).expect("checked"))
            }
            Err(e) => Err(e),
        }
    }

    /// Changes the replicas of `range_id` (see `Command::ChangeReplicas`), retrying as
    /// the router does; returns the descriptor after the change. A repeat refused as
    /// having nothing to do after an attempt of unknown outcome counts as done when the
    /// replicas are as asked.
    pub fn change_replicas(
        &mut self,
        range_id: u64,
        add: &[u64],
        remove: &[u64],
    ) -> Result<RangeDescriptor, CallError> {
        let cmd = Command::ChangeReplicas {
            add: add.to_vec(),
            remove: remove.to_vec(),
        };
        match self.call(range_id, cmd, 600) {
            Ok(Response::Replicas(desc)) => Ok(desc),
            Ok(other) => panic!("unexpected answer to change_replicas: {other:?}"),
            Err(CallError::Store(Error::InvalidMembership { .. }))
                if self.replicas_are(range_id, add, remove) =>
            {
                Ok(self.descriptor(range_id).expect("known"))
            }
            Err(e) => Err(e),
        }
    }

    /// True when the newest descriptor of `range_id` has a voter on every node of `add`
    /// and no replica on `remove`.
    pub fn replicas_are(&self, range_id: u64, add: &[u64], remove: &[u64]) -> bool {
        use flotilla_raftstore::metapb::ReplicaRole;
        let Some(d) = self.descriptor(range_id) else {
            return false;
        };
        let voter = |n: &u64| {
            d.replica_on(*n)
                .is_some_and(|r| r.role() == ReplicaRole::Voter)
        };
        add.iter().all(voter) && remove.iter().all(|n| d.replica_on(*n).is_none())
    }

    /// The newest descriptor of `range_id` a live store knows.
    pub fn descriptor(&self, range_id: u64) -> Option<RangeDescriptor> {
        self.current_ranges()
            .into_iter()
            .find(|d| d.range_id == range_id)
    }

    /// The two ranges that meet at `key`, if a range starts there.
    fn split_at(&self, key: &[u8]) -> Option<(RangeDescriptor, RangeDescriptor)> {
        let ranges = self.current_ranges();
        let right = ranges.iter().position(|r| r.start == key)?;
        let left = ranges.iter().find(|r| r.end == key)?;
        Some((left.clone(), ranges[right].clone()))
    }

    /// The newest descriptor of every range any live store knows, in key order.
    pub fn current_ranges(&self) -> Vec<RangeDescriptor> {
        let mut newest: BTreeMap<u64, RangeDescriptor> = BTreeMap::new();
        for store in self.stores.values().flatten() {
            for st in store.status() {
                let d = st.descriptor;
                let shape =
                    |d: &RangeDescriptor| (d.epoch().version, d.epoch().conf_ver, d.preference_ver);
                match newest.get(&d.range_id) {
                    Some(old) if shape(old) >= shape(&d) => {}
                    _ => {
                        newest.insert(d.range_id, d);
                    }
                }
            }
        }
        let mut out: Vec<_> = newest.into_values().collect();
        out.sort_by(|a, b| a.start.cmp(&b.start));
        out
    }

    /// Puts `key` = `value` in the range holding `key`, repeating an attempt of unknown
    /// outcome. That is safe only because the test is the key's one writer and waits for
    /// each put: every copy of a put applies before the answer to its last attempt, so no
    /// copy can land after a later write. (The router may not assume this; see
    /// `Command::is_safe_to_repeat`.)
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), CallError> {
        let cmd = Command::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        };
        self.call_routed(|c| c.range_of(key), cmd, 200, true)
            .map(|_| ())
    }

    /// Reads `key` linearizably.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, CallError> {
        match self.call_at(key, Command::Get { key: key.to_vec() }, 200)? {
            Response::Value(v) => Ok(v),
            other => panic!("unexpected answer to get: {other:?}"),
        }
    }

    /// The id of the range holding `key`, by the newest descriptors live stores know.
    pub fn range_of(&self, key: &[u8]) -> u64 {
        let newest = self.current_ranges();
        let holder = newest.iter().rev().find(|r| r.contains(key));
        holder
            .or_else(|| self.ranges.iter().find(|r| r.contains(key)))
            .expect("ranges cover all keys")
            .range_id
    }

    /// Ticks until every live replica of `range_id` has applied the same index as the
    /// leader, then returns each live node's data digest of the range.
    pub fn digests(&mut self, range_id: u64, max_ticks: u64) -> BTreeMap<u64, u64> {
        for _ in 0..max_ticks {
            let applied: Vec<u64> = self
                .stores
                .values()
                .flatten()
                .filter_map(|s| s.peer(range_id).map(|p| p.applied_index()))
                .collect();
            if applied.windows(2).all(|w| w[0] == w[1]) {
                break;
            }
            self.tick();
        }
        self.stores
            .iter()
            .filter_map(|(n, s)| {
                s.as_ref()
                    .filter(|s| s.peer(range_id).is_some())
                    .map(|s| (*n, s.range_digest(range_id).expect("digest")))
            })
            .collect()
    }
}
