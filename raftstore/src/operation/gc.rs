//! Raft log truncation after apply.
//!
//! Each replica truncates its own log once it holds more than `log_gc_threshold` applied
//! entries. A leader keeps the entries its followers still need, but at most the last
//! `log_gc_max_lag` applied entries: a follower further behind (down, or cut off) would
//! otherwise hold the log forever, so it catches up through a snapshot instead.
//!
//! The in-memory tail of the log (`entry_cache.rs`) is trimmed here too, on every round a
//! replica applies: what is applied and held by every follower that keeps up is dropped.

use flotilla_engine::WriteBatch;

use crate::config::StoreConfig;
use crate::error::Result;
use crate::peer::Peer;

impl Peer {
    /// Stages a log truncation when one is due; returns the new truncated index.
    pub(crate) fn maybe_compact_log(
        &mut self,
        cfg: &StoreConfig,
        wb: &mut WriteBatch,
    ) -> Result<Option<u64>> {
        let state = self.raw.store().apply_state();
        let applied = state.applied_index;
        if applied.saturating_sub(state.truncated_index) <= cfg.log_gc_threshold {
            return Ok(None);
        }
        let mut compact_to = applied;
        if self.is_leader() {
            // Keep what the slowest follower still needs, but never more than
            // `log_gc_max_lag` entries: a follower further behind gets a snapshot. Right
            // after an election raft-rs resets every follower's match index to 0, so the
            // cap is also what keeps a new leader from truncating everything at once.
            let slowest = self
                .raw
                .raft
                .prs()
                .iter()
                .filter(|(id, _)| **id != self.replica_id)
                .map(|(_, pr)| pr.matched)
                .min()
                .unwrap_or(applied);
            compact_to = slowest
                .max(applied.saturating_sub(cfg.log_gc_max_lag))
                .min(applied);
        }
        if compact_to <= state.truncated_index {
            return Ok(None);
        }
        self.raw.mut_store().compact_to(compact_to, wb)?;
        Ok(Some(compact_to))
    }

    /// Drops the cached log entries (`entry_cache.rs`) no one will read from memory again:
    /// those this replica has applied and, on a leader, every follower that keeps up holds
    /// (the entry at the boundary stays, for its term). A follower that is probing or
    /// waiting for a snapshot reads from disk.
    pub(crate) fn trim_entry_cache(&mut self) {
        let mut keep_from = self.raw.store().apply_state().applied_index;
        // Most rounds of an idle or electing range have nothing to drop: skip the walk.
        if self
            .raw
            .store()
            .cached_from()
            .is_none_or(|first| first >= keep_from)
        {
            return;
        }
        if self.is_leader() {
            for (id, pr) in self.raw.raft.prs().iter() {
                if *id != self.replica_id && pr.state == raft::ProgressState::Replicate {
                    keep_from = keep_from.min(pr.matched);
                }
            }
        }
        self.raw.mut_store().trim_cache(keep_from);
    }
}
