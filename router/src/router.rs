//! [`Router`]: route one command, learn from routing errors, retry with backoff.
//!
//! Each attempt looks the key up in the cache (or asks the [`RangeSource`] on a miss),
//! sends the command to the cached leader (or, with no hint, to the replicas in turn), and
//! on failure learns what the error says: `NotLeader` names the leader to try next,
//! `EpochNotMatch` carries the current descriptors, `KeyNotInRange` / `RangeNotFound`
//! mean the cached route is wrong. Attempts that learned nothing new wait with exponential
//! backoff. Writes whose outcome is unknown (`Timeout`, a node stopping) are retried only
//! when idempotent; a compare-and-swap returns [`Error::Ambiguous`] instead, and so does any
//! write that runs out of attempts after one of them may have applied.

use std::time::Duration;

use flotilla_raftstore::{Command, Error as StoreError, RangeDescriptor, Request, Response, ResponseReceiver};
use parking_lot::Mutex;

use crate::cache::RangeCache;
use crate::error::{Error, Result};

/// Sends a request to a node's store.
pub trait NodeClient: Send + Sync {
    fn send(&self, node_id: u64, req: Request) -> ResponseReceiver;
}

/// Where descriptors come from on a cache miss (the meta range, once it exists).
pub trait RangeSource: Send + Sync {
    /// The current descriptor of the range holding `key`.
    fn locate(&self, key: &[u8]) -> Option<RangeDescriptor>;
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
pub struct Router<C, S> {
    client: C,
    source: S,
    cache: Mutex<RangeCache>,
    policy: RetryPolicy,
}

/// What an error taught the router, and so what to do next.
enum Next {
    /// Retry at once: the cache now knows better.
    RetryNow,
    /// Retry after backing off.
    Backoff,
    /// Give up with this error.
    Fail(Error),
}

/// Without a leader hint, the replicas are tried in turn.
fn pick_replica(desc: &RangeDescriptor, attempt: usize) -> Option<u64> {
    let n = desc.replicas.len();
    (n > 0).then(|| desc.replicas[attempt % n].node_id)
}

impl<C: NodeClient, S: RangeSource> Router<C, S> {
    /// A router with an empty cache.
    pub fn new(client: C, source: S, policy: RetryPolicy) -> Self {
        Router { client, source, cache: Mutex::new(RangeCache::new()), policy }
    }

    /// Runs `command` on the range holding `key`; returns the range it ran on and the
    /// answer.
    pub async fn execute(&self, key: &[u8], command: Command) -> Result<(RangeDescriptor, Response)> {
        let idempotent = !matches!(command, Command::CompareAndSwap { .. });
        let mut backoff = self.policy.initial_backoff;
        let mut last = None;
        let mut maybe_applied = None;
        for attempt in 0..self.policy.max_attempts {
            let (desc, leader) = self.route(key)?;
            if let Command::Batch { ops } = &command {
                if let Some(op) = ops.iter().find(|op| !desc.contains(&op.key)) {
                    let e = StoreError::key_not_in_range(&desc, &op.key);
                    return Err(Error::InvalidRequest(e));
                }
            }
            let Some(node) = leader.or_else(|| pick_replica(&desc, attempt)) else {
                self.cache.lock().invalidate(desc.range_id);
                return Err(Error::NoRange(key.to_vec()));
            };
            let req = Request { range_id: desc.range_id, epoch: desc.epoch(), command: command.clone() };
            let answer = self.client.send(node, req).await.unwrap_or_else(|_| {
                let reason = format!("node {node} stopped before answering");
                Err(StoreError::Ambiguous { range_id: desc.range_id, reason })
            });
            let err = match answer {
                Ok(resp) => {
                    self.cache.lock().set_leader(desc.range_id, Some(node));
                    return Ok((desc, resp));
                }
                Err(e) => e,
            };
            tracing::debug!(range = desc.range_id, node, attempt, error = %err, "retrying");
            match self.learn(&desc, node, &err, idempotent) {
                Next::RetryNow => {}
                Next::Backoff => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.policy.max_backoff);
                }
                Next::Fail(e) => return Err(e),
            }
            if err.is_ambiguous() && !command.is_read() {
                maybe_applied = Some(err.clone());
            }
            last = Some(err);
        }
        // A write one of whose attempts may have applied must not be reported as failed.
        if let Some(e) = maybe_applied {
            return Err(Error::Ambiguous(e));
        }
        let last = last.unwrap_or(StoreError::InvalidRequest("no attempt was made".into()));
        Err(Error::Unavailable { attempts: self.policy.max_attempts, last })
    }

    /// The cached route for `key`, filling the cache from the range source on a miss.
    fn route(&self, key: &[u8]) -> Result<(RangeDescriptor, Option<u64>)> {
        if let Some(hit) = self.cache.lock().lookup(key) {
            return Ok(hit);
        }
        let desc = self.source.locate(key).ok_or_else(|| Error::NoRange(key.to_vec()))?;
        self.cache.lock().insert(desc.clone());
        Ok((desc, None))
    }

    /// Updates the cache from `err` and decides what comes next.
    fn learn(&self, desc: &RangeDescriptor, node: u64, err: &StoreError, idempotent: bool) -> Next {
        let mut cache = self.cache.lock();
        match err {
            StoreError::NotLeader { leader: Some(l), .. } if l.node_id != node => {
                cache.set_leader(desc.range_id, Some(l.node_id));
                Next::RetryNow
            }
            StoreError::EpochNotMatch { current, .. } => {
                // A lagging replica may report an older shape than the cache holds: the
                // cache refuses it, nothing was learned, and the next attempt waits.
                let learned = current.iter().filter(|d| cache.insert((*d).clone())).count();
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
            e if e.is_retryable() || matches!(e, StoreError::StoreStopped { .. }) => {
                cache.set_leader(desc.range_id, None);
                Next::Backoff
            }
            e if e.is_ambiguous() && idempotent => {
                cache.set_leader(desc.range_id, None);
                Next::Backoff
            }
            e if e.is_ambiguous() => Next::Fail(Error::Ambiguous(e.clone())),
            e @ (StoreError::Engine(_) | StoreError::Corrupt { .. } | StoreError::Raft(_)) => {
                Next::Fail(Error::Storage(e.clone()))
            }
            e => Next::Fail(Error::InvalidRequest(e.clone())),
        }
    }
}
