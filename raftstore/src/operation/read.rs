//! Linearizable reads through raft-rs ReadIndex.
//!
//! A read on the leader asks raft-rs for a read index; raft-rs confirms leadership with a
//! heartbeat round to a quorum and returns the commit index in a `ReadState`. The read is
//! served once this replica has applied up to that index, so it sees every write
//! acknowledged before it began. raft-rs silently drops a ReadIndex request while a new
//! leader has not yet committed an entry of its term, so an unanswered read is asked again
//! every `read_index_retry_ticks` and fails with `Timeout` after `request_timeout_ticks`.
//! A leader holding a lease (`lease.rs`) answers reads before any of this.

use std::time::Duration;

use flotilla_engine::Cf;

use crate::cmd::{Callback, Command, Request, Response};
use crate::error::{Error, Result};
use crate::metrics::StoreMetrics;
use crate::peer::{Peer, PendingRead};

impl Peer {
    /// Starts a read: registers it and asks raft-rs for a read index.
    pub(crate) fn start_read(
        &mut self,
        id: u64,
        req: Request,
        callback: Callback,
        now: u64,
        clock: Duration,
    ) {
        self.raw.read_index(id.to_be_bytes().to_vec());
        self.reads.push_back(PendingRead {
            id,
            command: req.command,
            epoch: req.epoch,
            callback,
            issued_at: now,
            issued_clock: clock,
            last_try: now,
            read_index: None,
        });
    }

    /// Records the read indexes raft-rs confirmed.
    /// Each confirmation also renews the lease from the clock time its round was first
    /// issued (`lease.rs`); lease renewals are confirmations with no read attached.
    pub(crate) fn on_read_states(
        &mut self,
        states: Vec<raft::ReadState>,
        cfg: &crate::config::StoreConfig,
    ) {
        let span = super::lease::quorum_lease_span(cfg);
        for rs in states {
            let Ok(bytes) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) else {
                continue;
            };
            let id = u64::from_be_bytes(bytes);
            if let Some(issued) = self.take_probe(id) {
                self.extend_lease(issued, span);
            } else if let Some(read) = self.reads.iter_mut().find(|r| r.id == id) {
                read.read_index.get_or_insert(rs.index);
                let issued = read.issued_clock;
                self.extend_lease(issued, span);
            }
        }
    }

    /// Answers every read whose read index has been applied.
    pub(crate) fn serve_reads(&mut self, metrics: &StoreMetrics, max_scan_bytes: usize) {
        if self.reads.is_empty() {
            return;
        }
        let applied = self.applied_index();
        let mut waiting = std::collections::VecDeque::with_capacity(self.reads.len());
        for read in std::mem::take(&mut self.reads) {
            match read.read_index {
                Some(index) if index <= applied => {
                    // The range may have changed shape (split) since the read was checked.
                    let result = if read.epoch != self.descriptor().epoch() {
                        Err(Error::epoch_not_match(self.descriptor(), read.epoch))
                    } else {
                        self.execute_read(&read.command, max_scan_bytes)
                    };
                    StoreMetrics::add(&metrics.read_index_reads, 1);
                    let _ = read.callback.send(result);
                }
                _ => waiting.push_back(read),
            }
        }
        self.reads = waiting;
    }

    pub(crate) fn execute_read(
        &self,
        command: &Command,
        max_scan_bytes: usize,
    ) -> Result<Response> {
        let engine = self.raw.store().engine();
        let desc = self.descriptor();
        match command {
            Command::Get { key } => {
                if !desc.contains(key) {
                    return Err(Error::key_not_in_range(desc, key));
                }
                Ok(Response::Value(engine.get(Cf::Data, key)?))
            }
            Command::Scan {
                start,
                end,
                limit,
                max_bytes,
            } => {
                if !desc.contains(start) {
                    return Err(Error::key_not_in_range(desc, start));
                }
                let end = clip_end(end, &desc.end);
                let budget = scan_budget(*max_bytes, max_scan_bytes);
                let (mut pairs, mut bytes) = (Vec::new(), 0);
                engine.scan(Cf::Data, start, end, |k, v| {
                    bytes += k.len() + v.len();
                    pairs.push((k.to_vec(), v.to_vec()));
                    pairs.len() < *limit && bytes < budget
                })?;
                // Stopped by a limit, not by the end: there may be more.
                let more = pairs.len() >= *limit || bytes >= budget;
                Ok(Response::Pairs { pairs, more })
            }
            _ => Err(Error::InvalidRequest("not a read".into())),
        }
    }

    /// Re-asks for read indexes that did not come, fails reads that can no longer be
    /// served here, and expires old reads and proposals.
    pub(crate) fn expire(&mut self, now: u64, timeout: u64, retry: u64) {
        let range_id = self.range_id;
        let is_leader = self.is_leader();
        let mut keep = std::collections::VecDeque::with_capacity(self.reads.len());
        for mut read in std::mem::take(&mut self.reads) {
            if now.saturating_sub(read.issued_at) >= timeout {
                let _ = read.callback.send(Err(Error::Timeout {
                    range_id,
                    ticks: timeout,
                }));
            } else if read.read_index.is_none() && !is_leader {
                let _ = read.callback.send(Err(self.not_leader()));
            } else {
                if read.read_index.is_none() && now.saturating_sub(read.last_try) >= retry {
                    self.raw.read_index(read.id.to_be_bytes().to_vec());
                    read.last_try = now;
                }
                keep.push_back(read);
            }
        }
        self.reads = keep;
        while let Some(p) = self.proposals.front() {
            if now.saturating_sub(p.proposed_at) < timeout {
                break;
            }
            let p = self.proposals.pop_front().expect("front exists");
            p.waiters.fail(Error::Timeout {
                range_id,
                ticks: timeout,
            });
        }
    }
}

/// The end of a scan: the request's end, clipped to the range's end (empty = unbounded).
fn clip_end<'a>(requested: &'a [u8], range_end: &'a [u8]) -> &'a [u8] {
    match (requested.is_empty(), range_end.is_empty()) {
        (true, _) => range_end,
        (false, true) => requested,
        (false, false) => requested.min(range_end),
    }
}

/// The byte budget of one scan answer: what the caller asked for, at most `max` (0: `max`).
pub fn scan_budget(asked: usize, max: usize) -> usize {
    if asked == 0 {
        max
    } else {
        asked.min(max)
    }
}
