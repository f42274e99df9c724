//! Counters a store keeps about itself. Plain atomics, readable from any thread while the
//! poller runs; the server exports them to Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters of one store.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    /// Poll rounds that did any work.
    pub rounds: AtomicU64,
    /// Write batches that carried Raft log entries or hard states (one per round at most).
    pub raft_log_writes: AtomicU64,
    /// Of those, the ones written with fsync.
    pub raft_log_syncs: AtomicU64,
    /// Write commands applied on this store (as leader or follower).
    pub commands_applied: AtomicU64,
    /// Write commands applied that this store proposed and answered.
    pub writes_answered: AtomicU64,
    /// Write commands applied here that shared a Raft entry with others (`batch.rs`).
    pub writes_batched: AtomicU64,
    /// Reads served after a ReadIndex round.
    pub read_index_reads: AtomicU64,
    /// Reads served locally under the leader's lease.
    pub lease_reads: AtomicU64,
    /// Ticks run late because the store was stalled (frozen, starved of CPU) and caught
    /// them up when it woke (`Store::catch_up`).
    pub ticks_caught_up: AtomicU64,
    /// Campaigns that fell due past the store's per-tick budget and waited
    /// (`max_campaigns_per_tick`).
    pub campaigns_deferred: AtomicU64,
    /// Vote and pre-vote requests refused because this node still supports the range's
    /// leader's node, or just reopened (`lease.rs`); the candidate retries later.
    pub votes_refused: AtomicU64,
    /// Raft messages handed to the transport.
    pub messages_sent: AtomicU64,
    /// Batches handed to the transport (one per destination node per round).
    pub batches_sent: AtomicU64,
    /// Raft messages received.
    pub messages_received: AtomicU64,
    /// Messages dropped on arrival because no such replica lives here.
    pub messages_dropped: AtomicU64,
    /// Snapshots installed on this store.
    pub snapshots_applied: AtomicU64,
    /// Membership changes (Raft configuration changes) applied on this store.
    pub conf_changes_applied: AtomicU64,
    /// Replicas destroyed here (removed from their range, or found removed).
    pub replicas_destroyed: AtomicU64,
    /// Messages refused because they were for a destroyed replica (a tombstone).
    pub tombstoned_messages: AtomicU64,
    /// Log truncations performed.
    pub log_compactions: AtomicU64,
    /// Heartbeats and heartbeat responses sent inside coalesced batches.
    pub heartbeats_coalesced: AtomicU64,
    /// Replicas quiesced right now (a gauge, updated each round).
    pub quiesced_ranges: AtomicU64,
    /// Messages and bytes sent to each other node.
    pub per_node: std::sync::Mutex<std::collections::BTreeMap<u64, PairCounters>>,
}

/// Traffic to one other node.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PairCounters {
    pub messages: u64,
    pub bytes: u64,
}

impl StoreMetrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a gauge.
    pub(crate) fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Ordering::Relaxed);
    }

    /// Counts `messages` messages of `bytes` bytes sent to `node`.
    pub(crate) fn sent_to(&self, node: u64, messages: u64, bytes: u64) {
        if let Ok(mut m) = self.per_node.lock() {
            let c = m.entry(node).or_default();
            c.messages += messages;
            c.bytes += bytes;
        }
    }

    /// Traffic sent to each other node so far.
    pub fn per_node(&self) -> std::collections::BTreeMap<u64, PairCounters> {
        self.per_node.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
