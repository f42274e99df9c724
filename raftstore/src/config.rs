//! Store configuration: Raft timing in ticks, request limits, log GC thresholds.
//!
//! All time inside the store is counted in ticks, so the deterministic harness controls
//! it completely; the threaded driver maps ticks to wall-clock time with `tick_interval`.

use std::time::Duration;

/// Tunables of one store. `Default` gives the documented defaults (docs/operations.md).
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Wall-clock length of one tick in the threaded driver.
    pub tick_interval: Duration,
    /// Ticks without hearing from a leader before a follower campaigns.
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// Largest accepted key, in bytes.
    pub max_key_size: usize,
    /// Largest accepted value, in bytes.
    pub max_value_size: usize,
    /// Largest number of pairs one scan returns.
    pub max_scan_limit: usize,
    /// Largest scan answer, in bytes of keys and values (an answer stops after the pair
    /// that reaches it, so it always holds at least one pair).
    pub max_scan_bytes: usize,
    /// Ticks a proposal or read may wait for its answer before it gets `Timeout`.
    pub request_timeout_ticks: u64,
    /// Ticks after which an unanswered ReadIndex request is issued again (raft-rs drops
    /// them silently while a new leader has not committed in its term).
    pub read_index_retry_ticks: u64,
    /// Truncate a replica's log once it holds more than this many applied entries.
    pub log_gc_threshold: u64,
    /// A leader keeps entries a follower still needs unless the follower lags by more
    /// than this many entries; past that the follower gets a snapshot.
    pub log_gc_max_lag: u64,
    /// fsync the Raft log write of every round. Only tests that restart processes, not
    /// machines, may turn this off.
    pub sync_log: bool,
    /// Most messages drained from the mailbox before a round ends.
    pub max_batch_messages: usize,
    /// Every this many ticks, leaders hand leadership to their range's preferred replica
    /// when it is caught up (0: never).
    pub balance_interval_ticks: u64,
    /// A range whose keys and values take more than this many bytes is split in two
    /// (0: never split automatically). Checked on leaders every `split_check_ticks`
    /// once their applied writes add up to an eighth of it.
    pub split_size: u64,
    /// Ticks between looks for ranges due a size check (and hot ranges due a load split).
    pub split_check_ticks: u64,
    /// A range whose leader accepts at least this many requests a second for
    /// `load_split_hot_secs` seconds in a row is split where its load divides in two
    /// (0: never split by load). See `operation/load_split.rs`.
    pub load_split_qps: u64,
    /// How many consecutive one-second windows a range must stay hot before a load split.
    pub load_split_hot_secs: u64,
    /// A node sends every node it shares a range with at least one message (its coalesced
    /// heartbeat batch, empty if need be) this often.
    pub liveness_interval_ticks: u64,
    /// A node not heard from for this long is declared dead: the quiesced ranges it led
    /// wake up and elect.
    pub liveness_timeout_ticks: u64,
    /// Let idle ranges stop ticking and heartbeating.
    pub quiesce: bool,
    /// How far apart two nodes' clocks may drift over `liveness_timeout_ticks`, in ticks.
    /// Leases end this much before the support they rest on (see `lease.rs`); a larger
    /// real drift can let a deposed leader serve a stale read.
    pub max_clock_offset_ticks: u64,
    /// Serve reads locally under the leader's lease (false: every read through ReadIndex).
    pub lease_reads: bool,
    /// How long a membership change (`Command::ChangeReplicas`) may take, new learners'
    /// catch-up included, before its caller is told it timed out (the change stays where
    /// it got to; repeating the call continues it).
    pub change_timeout_ticks: u64,
    /// A follower that has not heard from a leader for this long asks the other members
    /// whether it is still one (it may have been removed while cut off: `life.rs`).
    pub replica_gc_check_ticks: u64,
    /// The most elections a store's replicas start per tick (0: no limit); a replica
    /// whose campaign is due waits for a later tick. 100,000 ranges campaigning at once
    /// queue more vote traffic than the nodes handle in an election timeout, and then no
    /// election ever finishes (`operation/campaign.rs`).
    pub max_campaigns_per_tick: u64,
    /// Queued work that wakes replicas — a new cluster's campaigns, the fallback wake of
    /// its other replicas, the wake of ranges shared with a node live again — waits while
    /// this many replicas here are awake (0: no limit). Elections then start as fast
    /// as earlier ones finish and quiesce, not as fast as the budget allows: 100,000 new
    /// ranges at 1,000 campaigns a tick kept 100,000 replicas awake per node, rounds took
    /// 0.7 s, two of them outlasted an election timeout, and leaders stepped down by
    /// check-quorum faster than new ones were elected.
    pub awake_limit: usize,
    /// The most bytes per second a node sends of snapshot files (0: no limit). Keeps a
    /// replica being added from eating the disk and network the other ranges need.
    pub snapshot_rate: u64,
    /// The cluster version a store with none on its disk starts at (`version.rs`). An
    /// embedded store (one process, one binary) starts at the binary's; a server starts
    /// at the oldest and learns the cluster's from the meta range.
    pub initial_cluster_version: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            tick_interval: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            max_key_size: 8 << 10,
            max_value_size: 8 << 20,
            max_scan_limit: 10_000,
            max_scan_bytes: 4 << 20,
            request_timeout_ticks: 50,
            read_index_retry_ticks: 4,
            log_gc_threshold: 1024,
            log_gc_max_lag: 8192,
            sync_log: true,
            max_batch_messages: 4096,
            balance_interval_ticks: 10,
            split_size: 64 << 20,
            load_split_qps: 2500,
            load_split_hot_secs: 5,
            split_check_ticks: 10,
            liveness_interval_ticks: 2,
            liveness_timeout_ticks: 10,
            quiesce: true,
            max_clock_offset_ticks: 1,
            lease_reads: true,
            change_timeout_ticks: 1200,
            replica_gc_check_ticks: 100,
            max_campaigns_per_tick: 1000,
            awake_limit: 8192,
            snapshot_rate: 100 << 20,
            initial_cluster_version: crate::version::BINARY_VERSION,
        }
    }
}
