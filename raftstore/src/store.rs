//! [`Store`]: every replica one node hosts, on one engine, driven round by round.
//!
//! The store is a plain state machine with no threads, sockets or clocks of its own. Its
//! driver feeds it Raft messages ([`Store::on_raft_messages`]), requests
//! ([`Store::on_request`]) and ticks ([`Store::tick`]), then calls [`Store::end_round`],
//! which persists, applies and returns the messages to send, grouped per node. The
//! threaded driver (`node.rs`) and the deterministic test harness both drive this same
//! code.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use flotilla_engine::{keys, Cf, Engine, WriteBatch};
use prost::Message as _;

use crate::clock::{Clock, MonotonicClock};
use crate::config::StoreConfig;
use crate::error::{corrupt, Error, Result};
use crate::metapb::RangeDescriptor;
use crate::metrics::StoreMetrics;
use crate::peer::Peer;
use crate::snap::SnapManager;
use crate::storage::PeerStorage;
use crate::transport::RaftEnvelope;

/// Counts of a store's initialized replicas (see [`Store::summary`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreSummary {
    pub replicas: usize,
    /// Replicas that lead their range.
    pub leaders: usize,
    /// Leaders that hold their range's lease.
    pub leases: usize,
    /// Snapshots rebuilt for followers that had one within a minute, summed.
    pub snapshot_repeats: u64,
}

/// One replica's state as a status view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeStatus {
    pub descriptor: RangeDescriptor,
    pub replica_id: u64,
    pub is_leader: bool,
    pub leader: Option<crate::metapb::Replica>,
    pub term: u64,
    pub applied_index: u64,
    pub first_log_index: u64,
    pub last_log_index: u64,
    /// This replica holds the range's lease (it serves reads locally).
    pub has_lease: bool,
    /// Snapshots this replica built for a follower that had had one within a minute
    /// (see `storage::SnapshotPace`): more than a few mean a follower cannot install them.
    pub snapshot_repeats: u64,
}

/// The replicas of one node and the state shared by their rounds.
pub struct Store {
    pub(crate) node_id: u64,
    pub(crate) engine: Engine,
    pub(crate) cfg: StoreConfig,
    pub(crate) peers: BTreeMap<u64, Peer>,
    /// Ranges with something to do at the end of this round.
    pub(crate) touched: BTreeSet<u64>,
    /// Messages to send at the end of this round, per destination node.
    pub(crate) outbox: BTreeMap<u64, Vec<RaftEnvelope>>,
    /// Ticks executed since the store opened: schedules work, measures nothing that
    /// safety rests on (`clock.rs`).
    pub(crate) now: u64,
    /// Real monotonic time, read where a lease or a promise is judged (`lease.rs`).
    pub(crate) clock: Arc<dyn Clock>,
    /// Snapshots generated here for followers and received here (`snap.rs`).
    pub(crate) snaps: Arc<SnapManager>,
    /// The clock's reading when the store opened (ticks count from it).
    pub(crate) opened_at: Duration,
    pub(crate) next_read_id: u64,
    pub(crate) metrics: Arc<StoreMetrics>,
    pub(crate) election_seed: Option<u64>,
    pub(crate) logger: slog::Logger,
    /// Size checks waiting to be handed to a split checker.
    pub(crate) split_checks: Vec<crate::operation::SplitCheckTask>,
    /// Ranges whose leader here found them hot (`operation/load_split.rs`): looked at for a
    /// load split even while quiesced (lease reads do not wake a range).
    pub(crate) hot_ranges: std::collections::BTreeSet<u64>,
    /// Spans of snapshots stepped this round and not yet installed.
    pub(crate) pending_snapshots: Vec<RangeDescriptor>,
    /// Handing leadership away before stopping (`drain.rs`).
    pub(crate) draining: bool,
    /// Which log formats this store may write (`version.rs`).
    pub(crate) version: crate::version::ClusterVersion,
    /// Other nodes that said they are draining: no leadership is handed to them.
    pub(crate) draining_nodes: BTreeSet<u64>,
    /// Meta records to publish to the meta range (splits, new leaders).
    pub(crate) meta_updates: Vec<crate::metapb::MetaEntry>,
    /// Coalesced heartbeats to send at the end of this round, per destination node.
    pub(crate) beats: BTreeMap<u64, Vec<crate::metapb::Beat>>,
    /// Replicas that tick (the others are quiesced).
    pub(crate) awake: BTreeSet<u64>,
    /// Other nodes holding replicas of ranges here, when each was last heard from, and
    /// which are declared dead.
    pub(crate) neighbours: BTreeSet<u64>,
    pub(crate) node_heard: BTreeMap<u64, u64>,
    pub(crate) dead_nodes: BTreeSet<u64>,
    /// How many times this store has been opened (1: never before; see `lease.rs`).
    pub(crate) incarnation: u64,
    /// Store-liveness support (`lease.rs`), per neighbour: the latest `(incarnation,
    /// clock µs)` stamp received from it (echoed back), the latest of our clock readings
    /// it echoed, the support epoch it last reported for us, and our own support epoch
    /// for it.
    pub(crate) stamp_from: BTreeMap<u64, (u64, u64)>,
    /// When (our clock) each neighbour's newest batch arrived: support lasts a period
    /// from it.
    pub(crate) support_heard: BTreeMap<u64, Duration>,
    pub(crate) support_acked: BTreeMap<u64, Duration>,
    pub(crate) their_epoch: BTreeMap<u64, (u64, u64)>,
    pub(crate) my_epoch: BTreeMap<u64, u64>,
    /// Ranges whose leader here runs a membership change (`conf_change.rs`).
    pub(crate) changing: BTreeSet<u64>,
    /// Per range, the highest replica id this node destroyed (`life.rs`).
    pub(crate) tombstones: BTreeMap<u64, u64>,
    /// `ReplicaRemoved` answers and membership checks to send with the next batches, per
    /// node; answers received, handled at the end of the round.
    pub(crate) removed_notices: BTreeMap<u64, Vec<crate::metapb::ReplicaRemoved>>,
    pub(crate) membership_checks: BTreeMap<u64, Vec<crate::metapb::MembershipCheck>>,
    pub(crate) removed_received: Vec<crate::metapb::ReplicaRemoved>,
    /// A storage failure met outside a round (destroying a replica on a message): the
    /// next round fails with it, stopping the store.
    pub(crate) fatal: Option<Error>,
    /// The next range id to hand out, and the end of the block reserved on disk.
    pub(crate) next_range_id: u64,
    pub(crate) reserved_range_id: u64,
    /// Campaigns this store may still start in the current tick (`max_campaigns_per_tick`).
    pub(crate) campaigns_left: u64,
    /// New ranges whose preferred voter here has yet to campaign, and the new ranges'
    /// other replicas here, asleep until a vote request or the fallback tick
    /// (`operation/campaign.rs`).
    pub(crate) new_campaigns: std::collections::VecDeque<u64>,
    pub(crate) new_followers: Vec<u64>,
    pub(crate) new_followers_wake_at: u64,
    /// Quiesced replicas to wake because a node they share is live again, woken within
    /// the campaign budget and awake limit (`quiesce.rs::wake_pending`).
    /// A set, so a node flapping dead and live queues each range once.
    pub(crate) pending_wakes: BTreeSet<u64>,
    /// Vote requests a replica here had to ignore because its leader's node was heard
    /// from too recently, with the tick they came; stepped again if that node is declared
    /// dead within an election timeout (`operation/campaign.rs`).
    pub(crate) held_votes: HashMap<u64, (RaftEnvelope, u64)>,
}

impl Store {
    /// Writes the initial state of `descs` into a fresh engine for node `node_id` and
    /// records the node id as the owner of the data directory. Fails if any of the
    /// ranges already exists there.
    pub fn bootstrap(engine: &Engine, node_id: u64, descs: &[RangeDescriptor]) -> Result<()> {
        let wb = bootstrap_batch(engine, node_id, descs)?;
        engine.write(wb, true)?;
        Ok(())
    }

    /// Like [`Store::bootstrap`], and records in the same synced write the identity of
    /// the cluster the store now belongs to: bytes the server defines (see
    /// [`Store::cluster_identity`]), and — where `descs` include the meta range — the
    /// `meta_pairs` the meta range starts with besides its range records (the server's
    /// node records).
    pub fn bootstrap_cluster(
        engine: &Engine,
        node_id: u64,
        identity: &[u8],
        descs: &[RangeDescriptor],
        meta_pairs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<()> {
        let mut wb = bootstrap_batch(engine, node_id, descs)?;
        let meta = descs
            .iter()
            .find(|d| d.range_id == crate::keyspace::META_RANGE_ID);
        for (k, v) in meta_pairs
            .iter()
            .filter(|(k, _)| meta.is_some_and(|m| m.contains(k)))
        {
            wb.put(Cf::Data, k, v);
        }
        wb.put(Cf::Meta, CLUSTER_IDENTITY_KEY, identity);
        engine.write(wb, true)?;
        Ok(())
    }

    /// Fails if the engine's data directory belongs to another node than `node_id`.
    pub fn check_owner(engine: &Engine, node_id: u64) -> Result<()> {
        check_identity(engine, node_id)
    }

    /// The node id the data directory belongs to, if one was recorded (by a bootstrap or
    /// by [`Store::claim_owner`]).
    pub fn owner(engine: &Engine) -> Result<Option<u64>> {
        Ok(engine
            .get(Cf::Meta, keys::STORE_IDENT_KEY)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(u64::from_be_bytes))
    }

    /// Records, durably, that the data directory belongs to node `node_id` (an id the
    /// cluster allocated, before the node has joined): a restart finds it again. Refused
    /// if the directory belongs to another node.
    pub fn claim_owner(engine: &Engine, node_id: u64) -> Result<()> {
        check_identity(engine, node_id)?;
        let mut wb = engine.batch();
        wb.put(Cf::Meta, keys::STORE_IDENT_KEY, &node_id.to_be_bytes());
        engine.write(wb, true)?;
        Ok(())
    }

    /// Records that node `node_id` has served in this store's cluster (Raft traffic from
    /// it arrived here). A blank data directory under that id later is a wiped or
    /// replaced disk, not a node whose bootstrap was cut short.
    pub fn record_member_seen(engine: &Engine, node_id: u64) -> Result<()> {
        let mut wb = engine.batch();
        wb.put(Cf::Meta, &seen_key(node_id), b"");
        engine.write(wb, true)?;
        Ok(())
    }

    /// The nodes recorded by [`Store::record_member_seen`].
    pub fn members_seen(engine: &Engine) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        let end = [SEEN_PREFIX, &[0xff]].concat();
        engine.scan(Cf::Meta, SEEN_PREFIX, &end, |k, _| {
            if let Ok(raw) = <[u8; 8]>::try_from(&k[SEEN_PREFIX.len()..]) {
                out.push(u64::from_be_bytes(raw));
            }
            true
        })?;
        Ok(out)
    }

    /// The cluster identity recorded by [`Store::bootstrap_cluster`], if any.
    pub fn cluster_identity(engine: &Engine) -> Result<Option<Vec<u8>>> {
        Ok(engine.get(Cf::Meta, CLUSTER_IDENTITY_KEY)?)
    }

    /// Opens the store of node `node_id`: rebuilds a replica for every descriptor on disk.
    /// Committed entries that were not applied before a crash are applied in the first
    /// rounds.
    pub fn open(node_id: u64, engine: Engine, cfg: StoreConfig) -> Result<Store> {
        Store::open_with_seed(node_id, engine, cfg, None)
    }

    /// Like [`Store::open`], with fixed per-replica election timeouts derived from `seed`
    /// (for the deterministic harness).
    pub fn open_with_seed(
        node_id: u64,
        engine: Engine,
        cfg: StoreConfig,
        seed: Option<u64>,
    ) -> Result<Store> {
        Store::open_with_clock(node_id, engine, cfg, seed, Arc::new(MonotonicClock::new()))
    }

    /// Like [`Store::open_with_seed`], reading time from `clock` (the harness's manual
    /// clock, or a skewed one for fault injection).
    pub fn open_with_clock(
        node_id: u64,
        engine: Engine,
        cfg: StoreConfig,
        seed: Option<u64>,
        clock: Arc<dyn Clock>,
    ) -> Result<Store> {
        check_identity(&engine, node_id)?;
        let incarnation = next_incarnation(&engine)?;
        let logger = raft_logger();
        let mut peers = BTreeMap::new();
        let mut tombstones = crate::operation::load_tombstones(&engine)?;
        let snap_root = crate::snap::snap_root(engine.path());
        crate::snap::recover(&engine, &snap_root)?;
        let snaps = Arc::new(SnapManager::open(snap_root, clock.clone())?);
        for desc in load_descriptors(&engine)? {
            if desc.replica_on(node_id).is_none() {
                // It applied a configuration without this node and crashed before the
                // replica was destroyed: finish the job. No replica id of the range
                // below the next one can belong to a live replica here.
                finish_destroy(&engine, &desc, &mut tombstones)?;
                continue;
            }
            let storage =
                PeerStorage::load(engine.clone(), desc)?.with_store(clock.clone(), snaps.clone());
            let peer = Peer::new(node_id, storage, &cfg, seed, &logger)?;
            peers.insert(peer.range_id, peer);
        }
        let touched: BTreeSet<u64> = peers.keys().copied().collect();
        let version =
            crate::version::ClusterVersion::open(engine.clone(), cfg.initial_cluster_version)?;
        let mut store = Store {
            version,
            node_id,
            engine,
            cfg,
            peers,
            outbox: BTreeMap::new(),
            now: 0,
            opened_at: clock.now(),
            clock,
            snaps,
            next_read_id: 1,
            metrics: Arc::new(StoreMetrics::default()),
            election_seed: seed,
            logger,
            split_checks: Vec::new(),
            hot_ranges: Default::default(),
            pending_snapshots: Vec::new(),
            draining: false,
            draining_nodes: BTreeSet::new(),
            meta_updates: Vec::new(),
            next_range_id: 0,
            reserved_range_id: 0,
            beats: BTreeMap::new(),
            awake: touched.clone(),
            neighbours: BTreeSet::new(),
            node_heard: BTreeMap::new(),
            dead_nodes: BTreeSet::new(),
            incarnation,
            stamp_from: BTreeMap::new(),
            support_heard: BTreeMap::new(),
            support_acked: BTreeMap::new(),
            their_epoch: BTreeMap::new(),
            my_epoch: BTreeMap::new(),
            changing: BTreeSet::new(),
            tombstones,
            removed_notices: BTreeMap::new(),
            membership_checks: BTreeMap::new(),
            removed_received: Vec::new(),
            fatal: None,
            touched,
            campaigns_left: 0,
            new_campaigns: Default::default(),
            new_followers: Vec::new(),
            new_followers_wake_at: 0,
            pending_wakes: Default::default(),
            held_votes: HashMap::new(),
        };
        let replicas: Vec<_> = store
            .peers
            .values()
            .flat_map(|p| p.descriptor().replicas.clone())
            .collect();
        store.add_neighbours(&replicas);
        store.campaign_new_ranges();
        Ok(store)
    }

    /// This store's node id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The cluster version this store writes by (a handle: raising it takes effect here).
    pub fn cluster_version(&self) -> crate::version::ClusterVersion {
        self.version.clone()
    }

    /// Makes the store write by `version` (the server's handle, shared with its transport:
    /// both must judge by the same number). Call before starting the store.
    pub fn share_cluster_version(&mut self, version: crate::version::ClusterVersion) {
        self.version = version;
    }

    /// The store's counters, shareable with other threads.
    pub fn metrics(&self) -> Arc<StoreMetrics> {
        self.metrics.clone()
    }

    /// The store's snapshots (transports read and write their files).
    pub fn snapshots(&self) -> &Arc<SnapManager> {
        &self.snaps
    }

    /// The engine the store's replicas live in.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The configuration the store runs with.
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// Ticks executed since the store opened (a schedule, not a clock: see `clock.rs`).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Ids of every range with a replica here, ascending.
    pub fn range_ids(&self) -> Vec<u64> {
        self.peers.keys().copied().collect()
    }

    /// The replica of `range_id`, if hosted here.
    pub fn peer(&self, range_id: u64) -> Option<&Peer> {
        self.peers.get(&range_id)
    }

    /// A snapshot of every replica's state, for status views.
    pub fn status(&self) -> Vec<RangeStatus> {
        self.peers
            .values()
            .filter(|p| p.raw.store().is_initialized())
            .map(|p| self.status_of(p))
            .collect()
    }

    /// The state of this node's replica of `range_id`, if it is initialized.
    pub fn range_status(&self, range_id: u64) -> Option<RangeStatus> {
        self.peers
            .get(&range_id)
            .filter(|p| p.raw.store().is_initialized())
            .map(|p| self.status_of(p))
    }

    /// Counts of this node's replicas, without a row per replica: what `flotilla status`
    /// and `/metrics` need, at a cost of a few nanoseconds per replica where
    /// [`Store::status`] builds a row of each (100,000 rows, polled every half second while
    /// 100,000 ranges elected, took a share of the very rounds being measured).
    pub fn summary(&self) -> StoreSummary {
        let mut s = StoreSummary::default();
        let now = self.clock.now();
        for p in self
            .peers
            .values()
            .filter(|p| p.raw.store().is_initialized())
        {
            s.replicas += 1;
            s.snapshot_repeats += p.raw.store().snapshot_repeats();
            if p.is_leader() {
                s.leaders += 1;
                s.leases += usize::from(p.lease_valid(now) || self.liveness_lease(p));
            }
        }
        s
    }

    fn status_of(&self, p: &Peer) -> RangeStatus {
        RangeStatus {
            descriptor: p.descriptor().clone(),
            replica_id: p.replica_id,
            is_leader: p.is_leader(),
            leader: p.leader(),
            term: p.term(),
            applied_index: p.applied_index(),
            first_log_index: p.first_log_index(),
            last_log_index: p.last_log_index(),
            has_lease: self.has_lease(p.range_id),
            snapshot_repeats: p.raw.store().snapshot_repeats(),
        }
    }

    /// True when a round has work to do even without new input.
    pub fn has_pending_work(&self) -> bool {
        !self.touched.is_empty()
    }

    /// Steps incoming Raft messages into their replicas.
    pub fn on_raft_messages(&mut self, batch: Vec<RaftEnvelope>) {
        StoreMetrics::add(&self.metrics.messages_received, batch.len() as u64);
        // One clock reading per batch, not per message.
        let at = self.clock_tick();
        for env in batch {
            self.heard_from(env.from.node_id, at);
            if env.range_id == crate::operation::NODE_RANGE_ID {
                self.on_heartbeat_batch(env);
            } else {
                self.step_envelope(env);
            }
        }
    }

    /// Steps one message into its replica (creating an uninitialized one if the message
    /// may), waking it if quiesced. Returns whether it was stepped.
    pub(crate) fn step_envelope(&mut self, env: RaftEnvelope) -> bool {
        if let Err(reason) = check_message(&env.message) {
            tracing::warn!(
                range = env.range_id,
                from = env.from.node_id,
                reason,
                "dropped malformed raft message"
            );
            StoreMetrics::add(&self.metrics.messages_dropped, 1);
            return false;
        }
        if self.refused_while_draining(env.message.get_msg_type()) || self.tombstoned(&env) {
            return false;
        }
        if let Err(e) = self.replace_old_incarnation(&env) {
            self.fatal = Some(e);
            return false;
        }
        if self.answer_removed(&env) {
            return false;
        }
        if !self.peers.contains_key(&env.range_id) && !self.maybe_create_peer(&env) {
            StoreMetrics::add(&self.metrics.messages_dropped, 1);
            return false;
        }
        let peer = &self.peers[&env.range_id];
        let misaddressed = env.to.node_id != self.node_id || env.to.replica_id != peer.replica_id;
        let admitted = if misaddressed {
            Err("misaddressed")
        } else {
            self.admit(peer, &env)
        };
        let snapshot = match admitted {
            Ok(snapshot) => snapshot,
            Err(reason) => {
                tracing::debug!(range = env.range_id, reason, "dropped raft message");
                StoreMetrics::add(&self.metrics.messages_dropped, 1);
                if !misaddressed {
                    self.hold_vote(&env, false);
                }
                return false;
            }
        };
        if commits_past_log(peer, &env.message) {
            // raft-rs takes this for a lost log and panics; a real leader never sends it
            // to a replica with a durable log. Dropped: the leader's probe repairs a
            // replica that really is behind.
            tracing::warn!(
                range = env.range_id,
                from = env.from.node_id,
                "dropped heartbeat committing past the log"
            );
            StoreMetrics::add(&self.metrics.messages_dropped, 1);
            return false;
        }
        self.pending_snapshots.extend(snapshot);
        let vote = matches!(
            env.message.get_msg_type(),
            raft::prelude::MessageType::MsgRequestVote
                | raft::prelude::MessageType::MsgRequestPreVote
        );
        if vote {
            self.age_if_leader_silent(env.range_id);
            self.hold_vote(&env, true);
        }
        let peer = &self.peers[&env.range_id];
        let from_leader = peer.raw.raft.leader_id == env.from.replica_id;
        self.wake(env.range_id, !from_leader);
        let peer = self.peers.get_mut(&env.range_id).expect("replica exists");
        peer.raw.mut_store().learn_replica(env.from);
        if peer
            .descriptor()
            .replica_by_id(env.from.replica_id)
            .is_none()
        {
            peer.peer_cache.insert(env.from.replica_id, env.from);
        }
        peer.last_heard.insert(env.from.replica_id, self.now);
        peer.forget_leader_if_it_campaigns(&env);
        if let Err(e) = peer.raw.step(env.message) {
            tracing::debug!(range = env.range_id, error = %e, "dropped raft message");
        }
        self.touched.insert(env.range_id);
        true
    }

    /// Runs every tick the clock says is due and has not run, before the caller handles
    /// anything else: a store that was frozen (or starved of CPU) wakes with its election
    /// timers, node liveness and request deadlines where real time puts them. Past a few
    /// election and liveness periods every timer has fired, so a longer stall only moves
    /// the tick count on. The missed ticks move every awake replica's Raft timers one by
    /// one, but the store's own periodic work runs once, at the new time: a round that ran
    /// long (a new cluster electing 100,000 ranges) must not make the next one longer.
    /// Returns how many ticks ran.
    pub fn catch_up(&mut self) -> u64 {
        let due = self.ticks_due();
        let behind = due.saturating_sub(self.now);
        if behind == 0 {
            return 0;
        }
        let longest = self
            .cfg
            .liveness_timeout_ticks
            .max(self.cfg.election_ticks as u64);
        if behind > 2 {
            let stalled = self.cfg.tick_interval * behind.min(u32::MAX as u64) as u32;
            tracing::warn!(
                node = self.node_id,
                ?stalled,
                ticks = behind,
                "store was stalled; catching up missed ticks"
            );
            StoreMetrics::add(&self.metrics.ticks_caught_up, behind);
        }
        let cap = 2 * longest + 2;
        if behind > cap {
            self.now = due - cap;
        }
        let ran = due - self.now;
        self.advance(ran);
        ran
    }

    /// How many ticks the clock says have elapsed since the store opened.
    /// The tick the clock is at: never behind the ticks run, possibly ahead of them.
    pub(crate) fn clock_tick(&self) -> u64 {
        self.ticks_due().max(self.now)
    }

    fn ticks_due(&self) -> u64 {
        let elapsed = self.clock.now().saturating_sub(self.opened_at);
        (elapsed.as_nanos() / self.cfg.tick_interval.as_nanos().max(1)) as u64
    }

    /// How long until the next tick is due (zero when one is due already).
    pub fn until_next_tick(&self) -> Duration {
        let next_at = self
            .cfg
            .tick_interval
            .saturating_mul((self.now + 1).min(u32::MAX as u64) as u32);
        (self.opened_at + next_at).saturating_sub(self.clock.now())
    }

    /// The clock's reading now (what leases and support are judged against).
    pub fn clock_now(&self) -> Duration {
        self.clock.now()
    }

    /// `n` tick intervals as a duration of the clock.
    pub(crate) fn ticks_as_time(&self, n: u64) -> Duration {
        self.cfg
            .tick_interval
            .saturating_mul(n.min(u32::MAX as u64) as u32)
    }

    /// Advances logical time by one tick for every awake replica; checks node liveness,
    /// expires requests that waited too long, balances leaders, schedules size checks and
    /// lets idle ranges go quiet.
    pub fn tick(&mut self) {
        self.advance(1);
    }

    /// Advances logical time by `n` ticks: each awake replica's Raft timers tick `n` times,
    /// then the store's periodic work runs once, at the new time (work due every `k`
    /// ticks runs if any of the `n` ticks was due).
    fn advance(&mut self, n: u64) {
        let from = self.now;
        self.now = from + n;
        let idle_leaders = self.walk_awake(from);
        self.start_new_campaigns();
        self.wake_pending();
        if crossed(from, self.now, self.cfg.liveness_interval_ticks, 0) {
            self.send_liveness();
        }
        self.advance_changes();
        if crossed(from, self.now, self.cfg.replica_gc_check_ticks, 0) {
            self.send_membership_checks();
        }
        self.drain_leaders();
        if crossed(from, self.now, self.cfg.split_check_ticks, 0) {
            self.schedule_split_checks();
            self.split_hot_ranges();
        }
        if self.cfg.quiesce {
            self.maybe_quiesce(idle_leaders);
        }
    }

    /// One walk over the awake replicas does each one's share of the advance from tick
    /// `from` to now, while its state is at hand: its Raft ticks (within the campaign
    /// budget: a replica whose campaign falls due once `max_campaigns_per_tick` have
    /// started waits, its clocks stopped, for a later advance), request expiry, the
    /// leadership balance rule and lease renewal (both staggered by range id). Returns
    /// the idle leaders, which may go quiet. (At 100,000 awake replicas, one walk per
    /// operation cost more than the tick interval.)
    fn walk_awake(&mut self, from: u64) -> Vec<u64> {
        let hold = self.election_hold();
        let now = self.now;
        // A store behind its clock starts fewer: campaigns must not outrun the rounds.
        self.campaigns_left = match self.cfg.max_campaigns_per_tick {
            0 => u64::MAX,
            k => (k / (now - from).max(1)).max(1),
        };
        let cfg = &self.cfg;
        let (timeout, retry) = (cfg.request_timeout_ticks, cfg.read_index_retry_ticks);
        let (balance_every, fresh) = (cfg.balance_interval_ticks, 2 * cfg.heartbeat_ticks as u64);
        let renew = cfg
            .lease_reads
            .then_some((cfg.heartbeat_ticks.max(1) as u64, cfg.election_ticks as u64));
        let clock_now = self.clock.now();
        let (mut deferred, mut idle_leaders) = (0u64, Vec::new());
        let Store {
            peers,
            awake,
            touched,
            campaigns_left: budget,
            draining_nodes,
            next_read_id,
            ..
        } = self;
        each_awake(peers, awake, |id, peer| {
            let holds = hold.holds(peer) || from < peer.election_held_until;
            for t in from + 1..=now {
                if peer.campaign_due(t, holds) {
                    if *budget == 0 {
                        deferred += 1;
                        break;
                    }
                    *budget -= 1;
                    peer.campaign_if_asked();
                }
                peer.tick(t, holds);
            }
            if !peer.reads.is_empty() || !peer.proposals.is_empty() {
                peer.expire(now, timeout, retry);
                touched.insert(id);
            }
            if crossed(from, now, balance_every, id)
                && peer.maybe_transfer_to_preferred(now, fresh, 4 * balance_every, draining_nodes)
            {
                tracing::debug!(
                    range = id,
                    "transferring leadership to the preferred replica"
                );
            }
            if let Some((_, recent)) = renew.filter(|(every, _)| crossed(from, now, *every, id)) {
                if peer.renew_lease(next_read_id, now, clock_now, recent) {
                    touched.insert(id);
                }
            }
            if peer.raw.has_ready() || !peer.reads.is_empty() {
                touched.insert(id);
            }
            let idle =
                peer.proposals.is_empty() && peer.pending.is_empty() && peer.reads.is_empty();
            if peer.is_leader() && idle {
                idle_leaders.push(id);
            }
        });
        StoreMetrics::add(&self.metrics.campaigns_deferred, deferred);
        idle_leaders
    }

    /// Meta records this store's leaders want published in the meta range (after splits
    /// and leader changes). The caller delivers them with `Command::UpdateMeta`.
    pub fn take_meta_updates(&mut self) -> Vec<crate::metapb::MetaEntry> {
        std::mem::take(&mut self.meta_updates)
    }

    /// A hash of the range's user data on this replica, for comparing replicas.
    pub fn range_digest(&self, range_id: u64) -> Result<u64> {
        let peer = self.peers.get(&range_id).ok_or(Error::RangeNotFound {
            range_id,
            node_id: self.node_id,
        })?;
        let desc = peer.descriptor();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.scan(Cf::Data, &desc.start, &desc.end, |k, v| {
            k.hash(&mut h);
            v.hash(&mut h);
            true
        })?;
        Ok(h.finish())
    }

    /// Hands out this round's outgoing messages, grouped per destination node.
    pub(crate) fn take_outbox(&mut self) -> Vec<(u64, Vec<RaftEnvelope>)> {
        use protobuf::Message as _;
        self.flush_beats();
        let out: Vec<_> = std::mem::take(&mut self.outbox).into_iter().collect();
        StoreMetrics::add(&self.metrics.batches_sent, out.len() as u64);
        for (node, batch) in &out {
            let bytes: u64 = batch.iter().map(|e| e.message.compute_size() as u64).sum();
            StoreMetrics::add(&self.metrics.messages_sent, batch.len() as u64);
            self.metrics.sent_to(*node, batch.len() as u64, bytes);
        }
        StoreMetrics::set(&self.metrics.quiesced_ranges, self.quiesced_count() as u64);
        out
    }
}

/// Rejects messages from the network that raft-rs would panic on or that would stop the
/// store: a ReadIndex without its context entry, a snapshot whose data does not decode.
fn check_message(m: &raft::prelude::Message) -> std::result::Result<(), &'static str> {
    use raft::prelude::MessageType;
    match m.get_msg_type() {
        MessageType::MsgReadIndex | MessageType::MsgReadIndexResp if m.entries.is_empty() => {
            Err("read index message without its context entry")
        }
        MessageType::MsgSnapshot => {
            let data = m.get_snapshot().get_data();
            match crate::metapb::SnapshotData::decode(data) {
                Ok(crate::metapb::SnapshotData {
                    descriptor: Some(d),
                    pairs,
                    ..
                }) => {
                    if !pairs.iter().all(|p| d.contains(&p.key)) {
                        return Err("snapshot holds keys outside its range");
                    }
                    match crate::snap::files_of(d.range_id, m.get_snapshot()) {
                        Ok(_) => Ok(()),
                        Err(_) => Err("snapshot lists a bad file"),
                    }
                }
                _ => Err("snapshot data does not decode"),
            }
        }
        _ => Ok(()),
    }
}

/// True for a heartbeat whose commit index lies past `peer`'s last log entry.
fn commits_past_log(peer: &Peer, m: &raft::prelude::Message) -> bool {
    m.get_msg_type() == raft::prelude::MessageType::MsgHeartbeat
        && m.commit > peer.raw.raft.raft_log.last_index()
}

/// True when some tick in `(from, to]` is due work that runs every `every` ticks,
/// `offset` ticks out of phase (`(t + offset) % every == 0`; `every` 0: never).
pub(crate) fn crossed(from: u64, to: u64, every: u64, offset: u64) -> bool {
    if every == 0 || to <= from {
        return false;
    }
    let offset = offset % every;
    (to + offset) / every > (from + offset) / every
}

/// Calls `f` on every awake replica, in range id order. With few awake it looks each one
/// up; with many (a new cluster electing, the ranges a dead node led) it walks both
/// ordered sets side by side, so a pass over the awake replicas costs a step per replica
/// rather than a tree search.
pub(crate) fn each_awake(
    peers: &mut BTreeMap<u64, Peer>,
    awake: &BTreeSet<u64>,
    mut f: impl FnMut(u64, &mut Peer),
) {
    if awake.len().saturating_mul(8) < peers.len() {
        for id in awake {
            if let Some(peer) = peers.get_mut(id) {
                f(*id, peer);
            }
        }
        return;
    }
    let mut ids = awake.iter().peekable();
    for (id, peer) in peers.iter_mut() {
        while ids.next_if(|a| *a < id).is_some() {}
        if ids.next_if_eq(&id).is_some() {
            f(*id, peer);
        }
    }
}

/// Node ids fill the top bits of the range ids a node allocates (`operation/split.rs`).
pub const MAX_NODE_ID: u64 = (1 << 24) - 1;

fn check_identity(engine: &Engine, node_id: u64) -> Result<()> {
    if node_id == 0 || node_id > MAX_NODE_ID {
        return Err(Error::InvalidRequest(format!(
            "node id {node_id} is out of range 1..={MAX_NODE_ID}"
        )));
    }
    match engine.get(Cf::Meta, keys::STORE_IDENT_KEY)? {
        None => Ok(()),
        Some(b) if b.as_slice() == node_id.to_be_bytes() => Ok(()),
        Some(b) => {
            let owner = match <[u8; 8]>::try_from(b.as_slice()) {
                Ok(raw) => format!("node {}", u64::from_be_bytes(raw)),
                Err(_) => format!("an unreadable node id ({} bytes)", b.len()),
            };
            let dir = engine.path().parent().unwrap_or(engine.path());
            Err(Error::InvalidRequest(format!(
                "data directory {} belongs to {owner}, not node {node_id}; \
                 start it with --node-id of its owner, or give node {node_id} another data directory",
                dir.display(),
            )))
        }
    }
}

/// The write that bootstraps `descs` on node `node_id` (refused if one already exists).
fn bootstrap_batch(engine: &Engine, node_id: u64, descs: &[RangeDescriptor]) -> Result<WriteBatch> {
    check_identity(engine, node_id)?;
    let mut wb = engine.batch();
    wb.put(Cf::Meta, keys::STORE_IDENT_KEY, &node_id.to_be_bytes());
    for desc in descs {
        if engine
            .get(Cf::Meta, &keys::descriptor_key(desc.range_id))?
            .is_some()
        {
            return Err(Error::InvalidRequest(format!(
                "range {} already exists on node {node_id}",
                desc.range_id
            )));
        }
        PeerStorage::bootstrap(desc, &mut wb);
    }
    let meta = descs
        .iter()
        .find(|d| d.range_id == crate::keyspace::META_RANGE_ID);
    if let Some(meta) = meta.filter(|m| m.contains(&crate::keyspace::meta_key(b""))) {
        // The meta range starts out listing every other range (no leaders yet).
        for desc in descs.iter().filter(|d| d.range_id != meta.range_id) {
            let entry = crate::metapb::MetaEntry {
                descriptor: Some(desc.clone()),
                leader: None,
                term: 0,
            };
            wb.put(
                Cf::Data,
                &crate::keyspace::meta_key(&desc.end),
                &entry.encode_to_vec(),
            );
        }
    }
    Ok(wb)
}

/// Where the cluster identity is recorded.
const CLUSTER_IDENTITY_KEY: &[u8] = b"\x01cluster-identity";
/// Prefix of the keys recording members seen (`SEEN_PREFIX ‖ node id, big-endian`).
const SEEN_PREFIX: &[u8] = b"\x01member-seen/";

fn seen_key(node_id: u64) -> Vec<u8> {
    [SEEN_PREFIX, &node_id.to_be_bytes()].concat()
}

/// Counts this opening of the store (a synced write), returning the new count.
fn next_incarnation(engine: &Engine) -> Result<u64> {
    const KEY: &[u8] = b"\x01incarnation";
    let last = engine
        .get(Cf::Meta, KEY)?
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(u64::from_be_bytes);
    let next = last.unwrap_or(0) + 1;
    let mut wb = engine.batch();
    wb.put(Cf::Meta, KEY, &next.to_be_bytes());
    engine.write(wb, true)?;
    Ok(next)
}

/// Completes the destruction of a replica whose descriptor no longer lists this node.
fn finish_destroy(
    engine: &Engine,
    desc: &RangeDescriptor,
    tombstones: &mut BTreeMap<u64, u64>,
) -> Result<()> {
    let replica_id = desc.next_replica_id() - 1;
    tracing::info!(
        range = desc.range_id,
        "finishing the destruction of a removed replica"
    );
    let mut wb = engine.batch();
    crate::operation::stage_destroy(desc, true, &mut wb);
    let tombstone = crate::metapb::Tombstone {
        range_id: desc.range_id,
        replica_id,
    };
    wb.put(
        Cf::Meta,
        &keys::tombstone_key(desc.range_id),
        &tombstone.encode_to_vec(),
    );
    engine.write(wb, true)?;
    tombstones.insert(desc.range_id, replica_id);
    Ok(())
}

fn load_descriptors(engine: &Engine) -> Result<Vec<RangeDescriptor>> {
    let (start, end) = keys::descriptor_span();
    let mut raw = Vec::new();
    engine.scan(Cf::Meta, &start, &end, |_, v| {
        raw.push(v.to_vec());
        true
    })?;
    raw.iter()
        .map(|v| RangeDescriptor::decode(v.as_slice()).map_err(|e| corrupt("range descriptor", e)))
        .collect()
}

/// raft-rs logs through slog; this sends it to `tracing` so there is one log stream.
fn raft_logger() -> slog::Logger {
    slog::Logger::root(tracing_slog::TracingSlogDrain, slog::o!())
}
