//! [`Router`]: route one command, learn from routing errors, retry with backoff.
//!
//! Each attempt looks the key up in the cache (or reads the meta range on a miss: the
//! first meta record above the key names the range holding it and its last known leader),
//! sends the command to the cached leader (or, with no hint, to the replicas in turn), and
//! on failure learns what the error says: `NotLeader` names the leader to try next,
//! `EpochNotMatch` carries the current descriptors, `KeyNotInRange` / `RangeNotFound`
//! mean the cached route is wrong. Attempts that learned nothing new wait with exponential
//! backoff. An attempt whose outcome is unknown (`Timeout`, a node lost mid-call) is
//! retried only for commands [safe to repeat](Command::is_safe_to_repeat) (reads, splits,
//! meta updates); a put, delete, batch or compare-and-swap returns [`Error::Ambiguous`]
//! at once (sent again, a put could land after a later write and undo it), and so does
//! any write that runs out of attempts after one of them may have applied.

use std::time::Duration;

use std::future::Future;
use std::pin::Pin;

use flotilla_raftstore::keyspace::{is_meta_key, meta_key, meta_scan_end, META_RANGE_ID};
use flotilla_raftstore::{
    Command, Error as StoreError, MetaEntry, RangeDescriptor, Request, Response, ResponseReceiver,
};
use parking_lot::Mutex;
use prost::Message as _;

use crate::cache::RangeCache;
use crate::error::{Error, Result};

/// Sends a request to a node's store.
pub trait NodeClient: Send + Sync {
    fn send(&self, node_id: u64, req: Request) -> ResponseReceiver;
}

/// How hard the router tries.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: usize,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 30,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(500),
        }
    }
}

/// Routes commands to range leaders through a cache, retrying stale routes.
pub struct Router<C> {
    client: C,
    /// The freshest shape of the meta range known: where lookups go when the cache has
    /// nothing. Its replicas move like any range's, so it is updated from what the router
    /// learns ([`Router::learn_range`], `EpochNotMatch` answers).
    meta: Mutex<RangeDescriptor>,
    cache: Mutex<RangeCache>,
    policy: RetryPolicy,
    /// Turns of [`pick_replica`].
    turn: std::sync::atomic::AtomicUsize,
}

/// What an error taught the router, and so what to do next.
enum Next {
    /// Retry at once: the cache now knows better.
    RetryNow,
    /// Retry after backing off.
    Backoff,
    /// Retry after a short pause that does not grow: the range is electing a leader
    /// (a new range right after a split, or a failover) or handing leadership over, which
    /// takes a few round trips.
    Pause,
    /// Give up with this error.
    Fail(Error),
}

/// Without a leader hint, the replicas are tried in turn; `turn` comes from a counter
/// shared by all commands, so that commands after a failure do not all start at the
/// same (perhaps dead) replica.
fn pick_replica(desc: &RangeDescriptor, turn: usize) -> Option<u64> {
    // Only a voter can lead; a learner would only answer `NotLeader`.
    let voters = flotilla_raftstore::quorum::Voters::of(desc);
    let candidates: Vec<u64> = desc
        .replicas
        .iter()
        .filter(|r| voters.contains(r.replica_id))
        .map(|r| r.node_id)
        .collect();
    (!candidates.is_empty()).then(|| candidates[turn % candidates.len()])
}

impl<C: NodeClient> Router<C> {
    /// A router that finds ranges through the meta range `meta`, with an empty cache.
    pub fn new(client: C, meta: RangeDescriptor, policy: RetryPolicy) -> Self {
        let mut cache = RangeCache::new();
        cache.insert(meta.clone());
        Router {
            client,
            meta: Mutex::new(meta),
            cache: Mutex::new(cache),
            policy,
            turn: Default::default(),
        }
    }

    /// Remembers `desc` (for instance from a split this client made), unless the cache
    /// knows a newer shape.
    pub fn learn_range(&self, desc: RangeDescriptor) {
        self.note_meta(&desc);
        self.cache.lock().insert(desc);
    }

    /// The range holding stored key `key` and its leader, as cached here (asks no one).
    pub fn cached(&self, key: &[u8]) -> Option<(RangeDescriptor, Option<u64>)> {
        self.cache.lock().lookup(key)
    }

    /// The leader of the range holding stored key `key`, as cached here.
    pub fn cached_leader(&self, key: &[u8]) -> Option<u64> {
        self.cache.lock().leader_of(key)
    }

    /// The freshest descriptor of the meta range this router knows.
    pub fn meta(&self) -> RangeDescriptor {
        self.meta.lock().clone()
    }

    /// Keeps `desc` as the meta range's shape if it is that range, newer than the one
    /// known.
    fn note_meta(&self, desc: &RangeDescriptor) {
        if desc.range_id != META_RANGE_ID {
            return;
        }
        let mut meta = self.meta.lock();
        let shape = |d: &RangeDescriptor| (d.epoch().version, d.epoch().conf_ver);
        if shape(desc) > shape(&meta) {
            *meta = desc.clone();
        }
    }

    /// Runs `command` on the range holding `key`; returns the range it ran on and the
    /// answer.
    pub async fn execute(
        &self,
        key: &[u8],
        command: Command,
    ) -> Result<(RangeDescriptor, Response)> {
        let mut maybe_applied = None;
        let result = self.attempts(key, &command, &mut maybe_applied).await;
        // A write one of whose attempts may have applied must not be reported as failed,
        // whichever way the later attempts ended.
        match (result, maybe_applied) {
            (Err(Error::Ambiguous(e)), _) | (Err(_), Some(e)) => Err(Error::Ambiguous(e)),
            (result, _) => result,
        }
    }

    /// The attempts of [`Router::execute`]; records in `maybe_applied` an attempt of a
    /// write whose outcome is unknown.
    async fn attempts(
        &self,
        key: &[u8],
        command: &Command,
        maybe_applied: &mut Option<StoreError>,
    ) -> Result<(RangeDescriptor, Response)> {
        let repeatable = command.is_safe_to_repeat();
        let mut backoff = self.policy.initial_backoff;
        let mut last = None;
        // Short pauses while a range elects do not use up attempts, up to this many.
        let mut free_pauses = 100usize;
        let mut attempt = 0;
        while attempt < self.policy.max_attempts {
            let (desc, leader) = self.route(key).await?;
            // A batch whose first key is in this range but another key is not spans
            // ranges: refused here, final. (A route that does not hold the first key is
            // stale; the store's answer corrects it.)
            if let (Command::Batch { ops }, true) = (command, desc.contains(key)) {
                if let Some(op) = ops.iter().find(|op| !desc.contains(&op.key)) {
                    let e = StoreError::key_not_in_range(&desc, &op.key);
                    return Err(Error::InvalidRequest(e));
                }
            }
            let turn = || self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(node) = leader.or_else(|| pick_replica(&desc, turn())) else {
                self.cache.lock().invalidate(desc.range_id);
                return Err(Error::NoRange(key.to_vec()));
            };
            let req = Request {
                range_id: desc.range_id,
                epoch: desc.epoch(),
                command: command.clone(),
            };
            let answer = self.client.send(node, req).await.unwrap_or_else(|_| {
                let reason = format!("node {node} stopped before answering");
                Err(StoreError::Ambiguous {
                    range_id: desc.range_id,
                    reason,
                })
            });
            let err = match answer {
                Ok(resp) => {
                    self.cache.lock().set_leader(desc.range_id, Some(node));
                    return Ok((desc, resp));
                }
                Err(e) => e,
            };
            tracing::debug!(range = desc.range_id, node, attempt, error = %err, "retrying");
            match self.learn(&desc, node, &err, repeatable) {
                Next::RetryNow => {}
                Next::Pause if free_pauses > 0 => {
                    free_pauses -= 1;
                    tokio::time::sleep(self.policy.initial_backoff).await;
                    continue;
                }
                Next::Backoff | Next::Pause => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.policy.max_backoff);
                }
                Next::Fail(e) => return Err(e),
            }
            if err.is_ambiguous() && !command.is_read() {
                *maybe_applied = Some(err.clone());
            }
            last = Some(err);
            attempt += 1;
        }
        let last = last.unwrap_or(StoreError::InvalidRequest("no attempt was made".into()));
        Err(Error::Unavailable {
            attempts: self.policy.max_attempts,
            last,
        })
    }

    /// Runs a `ChangeReplicas` on the range holding stored key `at` until the range's
    /// replicas are as asked. The command is safe to repeat (a repeat continues the
    /// change), but a repeat of a change that did finish is refused as having nothing to
    /// do; so after an attempt of unknown outcome the leader is asked where the range
    /// stands (an empty change answers its descriptor), and that decides.
    pub async fn change_replicas(
        &self,
        at: &[u8],
        add: Vec<u64>,
        remove: Vec<u64>,
    ) -> Result<RangeDescriptor> {
        let change = Command::ChangeReplicas {
            add: add.clone(),
            remove: remove.clone(),
        };
        let mut last = None;
        for _ in 0..3 {
            match self.execute(at, change.clone()).await {
                Ok((_, Response::Replicas(desc))) => return self.changed(desc),
                Ok((_, other)) => {
                    return Err(Error::InvalidRequest(StoreError::InvalidRequest(format!(
                        "unexpected answer {other:?}"
                    ))))
                }
                Err(Error::Ambiguous(e)) => last = Some(e),
                Err(e) => return Err(e),
            }
            let query = Command::ChangeReplicas {
                add: Vec::new(),
                remove: Vec::new(),
            };
            if let (_, Response::Replicas(desc)) = self.execute(at, query).await? {
                if reached(&desc, &add, &remove) {
                    return self.changed(desc);
                }
            }
        }
        Err(Error::Ambiguous(last.unwrap_or(
            StoreError::InvalidRequest("no attempt was made".into()),
        )))
    }

    fn changed(&self, desc: RangeDescriptor) -> Result<RangeDescriptor> {
        self.learn_range(desc.clone());
        Ok(desc)
    }

    /// The cached route for `key`, filling the cache from the meta range on a miss.
    async fn route(&self, key: &[u8]) -> Result<(RangeDescriptor, Option<u64>)> {
        if let Some(hit) = self.cache.lock().lookup(key) {
            return Ok(hit);
        }
        if is_meta_key(key) {
            return Ok((self.meta(), None));
        }
        let entry = self.lookup_meta(key).await?;
        let mut desc = entry
            .descriptor
            .ok_or_else(|| Error::NoRange(key.to_vec()))?;
        let leader = entry.leader.map(|r| r.node_id);
        if !desc.contains(key) {
            // The record of the range holding the key is not published yet (a split's
            // records land one by one). Ask the range the meta range did name, with an
            // epoch it is sure to refuse: its `EpochNotMatch` names the range that holds
            // the key now.
            desc.epoch = None;
            return Ok((desc, leader));
        }
        let mut cache = self.cache.lock();
        if cache.insert(desc.clone()) {
            cache.set_leader(desc.range_id, leader);
        }
        Ok((desc, leader))
    }

    /// Reads the meta record of the range holding `key`: the first record above
    /// `"m" ‖ key` (boxed: it routes through `execute` itself, to the meta range, whose
    /// route never needs a lookup).
    fn lookup_meta<'a>(
        &'a self,
        key: &'a [u8],
    ) -> Pin<Box<dyn Future<Output = Result<MetaEntry>> + Send + 'a>>
    where
        C: 'a,
    {
        Box::pin(async move {
            // Scanning from `"m" ‖ key` itself (not just above it) keeps the bound within
            // the scan limit for the longest keys; a record exactly there is the range
            // that ends at `key`, and is skipped.
            let at = meta_key(key);
            let scan = Command::Scan {
                start: at.clone(),
                end: meta_scan_end(),
                limit: 2,
                max_bytes: 0,
            };
            let (_, resp) = self.execute(&at, scan).await?;
            let Response::Pairs { pairs, .. } = resp else {
                return Err(Error::NoRange(key.to_vec()));
            };
            let (_, value) = pairs
                .into_iter()
                .find(|(k, _)| *k != at)
                .ok_or_else(|| Error::NoRange(key.to_vec()))?;
            MetaEntry::decode(value.as_slice()).map_err(|e| {
                Error::Storage(StoreError::Corrupt {
                    what: "meta record",
                    detail: e.to_string(),
                })
            })
        })
    }

    /// Updates the cache from `err` and decides what comes next.
    fn learn(&self, desc: &RangeDescriptor, node: u64, err: &StoreError, repeatable: bool) -> Next {
        let mut cache = self.cache.lock();
        match err {
            StoreError::NotLeader {
                leader: Some(l), ..
            } if l.node_id != node => {
                cache.set_leader(desc.range_id, Some(l.node_id));
                Next::RetryNow
            }
            StoreError::EpochNotMatch { current, .. } => {
                // A lagging replica may report an older shape than the cache holds: the
                // cache refuses it, nothing was learned, and the next attempt waits.
                current.iter().for_each(|d| self.note_meta(d));
                let learned = current
                    .iter()
                    .filter(|d| cache.insert((*d).clone()))
                    .count();
                if learned > 0 {
                    Next::RetryNow
                } else {
                    cache.set_leader(desc.range_id, None);
                    Next::Backoff
                }
            }
            StoreError::KeyNotInRange { .. } => {
                cache.invalidate(desc.range_id);
                Next::Backoff
            }
            StoreError::NotLeader { leader: None, .. } => {
                cache.set_leader(desc.range_id, None);
                Next::Pause
            }
            // A leadership transfer pauses proposals for a round trip or two.
            StoreError::ProposalDropped { .. } => Next::Pause,
            e if e.is_retryable()
                || matches!(
                    e,
                    StoreError::StoreStopped { .. } | StoreError::NodeUnreachable { .. }
                ) =>
            {
                cache.set_leader(desc.range_id, None);
                Next::Backoff
            }
            e if e.is_ambiguous() && repeatable => {
                cache.set_leader(desc.range_id, None);
                Next::Backoff
            }
            e if e.is_ambiguous() => {
                // The node may be gone: the caller's next command should not go there first.
                cache.set_leader(desc.range_id, None);
                Next::Fail(Error::Ambiguous(e.clone()))
            }
            e @ (StoreError::Engine(_)
            | StoreError::Corrupt { .. }
            | StoreError::VersionTooNew { .. }
            | StoreError::Raft(_)) => Next::Fail(Error::Storage(e.clone())),
            e => Next::Fail(Error::InvalidRequest(e.clone())),
        }
    }
}

/// True when `desc` has a voter on every node of `add` and no replica on any of `remove`.
fn reached(desc: &RangeDescriptor, add: &[u64], remove: &[u64]) -> bool {
    use flotilla_raftstore::metapb::ReplicaRole;
    let voter = |n: &u64| {
        desc.replica_on(*n)
            .is_some_and(|r| r.role() == ReplicaRole::Voter)
    };
    add.iter().all(voter) && remove.iter().all(|n| desc.replica_on(*n).is_none())
}
