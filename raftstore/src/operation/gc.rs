//! Raft log truncation after apply.
//!
//! Each replica truncates its own log once it holds more than `log_gc_threshold` applied
//! entries. A leader keeps the entries its followers still need, unless a follower lags
//! by more than `log_gc_max_lag` entries: such a follower (down, or cut off) would hold
//! the log forever, so it is left behind and catches up through a snapshot instead.

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
            let slowest = self
                .raw
                .raft
                .prs()
                .iter()
                .filter(|(id, _)| **id != self.replica_id)
                .map(|(_, pr)| pr.matched)
                .min()
                .unwrap_or(applied);
            if applied.saturating_sub(slowest) <= cfg.log_gc_max_lag {
                compact_to = slowest.min(applied);
            }
        }
        if compact_to <= state.truncated_index {
            return Ok(None);
        }
        self.raw.mut_store().compact_to(compact_to, wb)?;
        Ok(Some(compact_to))
    }
}
