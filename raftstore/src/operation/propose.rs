//! Accepting a request: validation, routing checks, and proposing writes to Raft.
//!
//! Every request is checked in this order: the range is hosted here, the caller's epoch
//! is current, the keys and values are well-formed and inside the range, and this
//! replica leads. Only then is a write proposed (or a read handed to `read`). Each
//! failure is a typed error sent on the callback; nothing here panics on bad input.

use prost::Message as _;

use crate::cmd::{Callback, Command, Request, Response};
use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::metapb::{
    Condition, RaftCommand, RangeDescriptor, SplitRequest, WriteOp, MAX_KEY_SIZE_CAP,
};
use crate::peer::{Peer, Proposal};
use crate::store::Store;

use super::batch::{batchable, Waiters};

impl Store {
    /// Accepts one request; its answer arrives on `callback`.
    pub fn on_request(&mut self, req: Request, callback: Callback) {
        let _span =
            tracing::debug_span!("request", node = self.node_id, range = req.range_id).entered();
        if let Err(e) = self.check_routing(&req) {
            let _ = callback.send(Err(e));
            return;
        }
        self.record_load(&req);
        let Some((req, callback)) = self.try_lease_read(req, callback) else {
            return;
        };
        let now = self.now;
        self.wake(req.range_id, true);
        self.touched.insert(req.range_id);
        if let Command::ChangeReplicas { add, remove } = req.command {
            self.start_change(req.range_id, add, remove, callback);
            return;
        }
        if req.command.is_read() {
            let id = self.next_read_id;
            self.next_read_id += 1;
            let clock = self.clock.now();
            self.peers
                .get_mut(&req.range_id)
                .expect("checked")
                .start_read(id, req, callback, now, clock);
            return;
        }
        let cmd = match self.prepare_command(&req) {
            Ok(Some(cmd)) => cmd,
            Ok(None) => return,
            Err(done) => {
                let _ = callback.send(done);
                return;
            }
        };
        let may_batch = self.version.allows(crate::version::V2_BATCHED);
        let peer = self.peers.get_mut(&req.range_id).expect("checked");
        if may_batch && batchable(&cmd) {
            peer.queue_write(cmd, callback, now);
            return;
        }
        // An admin command, or a write while the cluster has not moved to batched entries:
        // the writes accepted before it are proposed first.
        peer.propose_pending(now);
        if let Err(e) = peer.propose_write(&cmd, Waiters::One(callback), now) {
            tracing::debug!(range = req.range_id, error = %e, "proposal refused");
        }
    }

    /// Counts a request the leader accepted toward its range's load (admin commands
    /// aside), for splitting by load.
    fn record_load(&mut self, req: &Request) {
        let qps = self.cfg.load_split_qps;
        if qps == 0 || matches!(req.command, Command::Split { .. }) {
            return;
        }
        let Some(key) = req.command.key() else { return };
        let now = self.clock.now();
        let hot = self
            .peers
            .get_mut(&req.range_id)
            .is_some_and(|peer| peer.record_load(key, now, qps));
        if hot {
            self.hot_ranges.insert(req.range_id);
        }
    }

    /// The range is hosted here, the request fits it, and this replica leads.
    fn check_routing(&self, req: &Request) -> Result<()> {
        let hosted = self
            .peers
            .get(&req.range_id)
            .filter(|p| p.raw.store().is_initialized());
        let Some(peer) = hosted else {
            return Err(Error::RangeNotFound {
                range_id: req.range_id,
                node_id: self.node_id,
            });
        };
        if let Err(mut e) = check_request(req, peer.descriptor(), &self.cfg) {
            if let (Error::EpochNotMatch { current, .. }, Some(key)) = (&mut e, req.command.key()) {
                // Also name the range that holds the key now, so a router whose cache
                // predates a split learns where to go in one step.
                let initialized = self
                    .peers
                    .values()
                    .filter(|p| p.raw.store().is_initialized());
                let holder = initialized
                    .map(|p| p.descriptor())
                    .find(|d| d.contains(key));
                current.extend(holder.filter(|d| d.range_id != req.range_id).cloned());
            }
            return Err(e);
        }
        if !peer.is_leader() {
            return Err(peer.not_leader());
        }
        Ok(())
    }

    /// The replicated form of a write, with a new range id for a split. `Err` holds the
    /// answer when there is nothing to propose (a split that is already done, or an
    /// allocation failure).
    fn prepare_command(
        &mut self,
        req: &Request,
    ) -> std::result::Result<Option<RaftCommand>, Result<Response>> {
        let Some(mut cmd) = to_raft_command(req) else {
            return Ok(None);
        };
        if let Some(split) = cmd.split.as_mut() {
            let desc = self.peers[&req.range_id].descriptor();
            if split.split_key == desc.start {
                return Err(self.already_split(desc.clone()));
            }
            split.new_range_id = self.alloc_range_id().map_err(Err)?;
        }
        Ok(Some(cmd))
    }
}

impl Peer {
    /// Proposes `cmd`; on success its waiters wait in the proposal queue until the entry
    /// applies (or is found overwritten).
    pub(crate) fn propose_write(
        &mut self,
        cmd: &RaftCommand,
        waiters: Waiters,
        now: u64,
    ) -> Result<()> {
        let index = self.raw.raft.raft_log.last_index() + 1;
        let term = self.raw.raft.term;
        let dropped = match self.raw.propose(Vec::new(), cmd.encode_to_vec()) {
            Ok(()) if self.raw.raft.raft_log.last_index() >= index => None,
            Ok(()) => Some("not appended".to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(reason) = dropped {
            let err = Error::ProposalDropped {
                range_id: self.range_id,
                reason,
            };
            waiters.fail(err.clone());
            return Err(err);
        }
        self.proposals.push_back(Proposal {
            index,
            term,
            proposed_at: now,
            waiters,
        });
        Ok(())
    }
}

/// Checks a request against the range's current descriptor and the size limits.
pub(crate) fn check_request(
    req: &Request,
    desc: &RangeDescriptor,
    cfg: &StoreConfig,
) -> Result<()> {
    if req.epoch != desc.epoch() {
        return Err(Error::epoch_not_match(desc, req.epoch));
    }
    match &req.command {
        Command::Get { key } | Command::Delete { key } => check_key(key, desc, key_limit(cfg)),
        Command::Put { key, value } => {
            check_key(key, desc, key_limit(cfg)).and(check_value(value, cfg))
        }
        Command::Scan {
            start, end, limit, ..
        } => {
            // A scan bound is never stored. It may be one byte longer than the longest key,
            // so that a scan can resume right after a key of maximum length, and one more
            // for the meta lookup of such a resume point (`"m" ‖ key`).
            check_key(start, desc, key_limit(cfg) + 2)?;
            if !end.is_empty() && end <= start {
                return Err(Error::InvalidRequest(
                    "scan end must be above its start".into(),
                ));
            }
            if *limit == 0 || *limit > cfg.max_scan_limit {
                let max = cfg.max_scan_limit;
                return Err(Error::InvalidRequest(format!(
                    "scan limit must be 1..={max}"
                )));
            }
            Ok(())
        }
        Command::Batch { ops } => {
            if ops.is_empty() {
                return Err(Error::InvalidRequest(
                    "a batch needs at least one write".into(),
                ));
            }
            ops.iter().try_for_each(|op| {
                check_key(&op.key, desc, key_limit(cfg))?;
                if op.delete {
                    Ok(())
                } else {
                    check_value(&op.value, cfg)
                }
            })
        }
        Command::CompareAndSwap { key, expected, new } => {
            check_key(key, desc, key_limit(cfg))?;
            expected
                .iter()
                .chain(new.iter())
                .try_for_each(|v| check_value(v, cfg))
        }
        Command::Split { split_key } => {
            check_key(split_key, desc, key_limit(cfg))?;
            if req.range_id == crate::keyspace::META_RANGE_ID {
                return Err(Error::InvalidRequest(
                    "the meta range does not split".into(),
                ));
            }
            if crate::quorum::Voters::of(desc).is_joint() {
                // Both halves would inherit a joint configuration no change job leads.
                return Err(Error::ConfChangeInProgress {
                    range_id: req.range_id,
                });
            }
            Ok(())
        }
        Command::ChangeReplicas { .. } => Ok(()),
        Command::PreferLeader { node_id } => match desc.voter_on(*node_id) {
            Some(_) => Ok(()),
            None => Err(Error::not_a_voter(desc, *node_id)),
        },
        Command::UpdateMeta { entries } => {
            if req.range_id != crate::keyspace::META_RANGE_ID {
                return Err(Error::InvalidRequest(
                    "meta updates go to the meta range".into(),
                ));
            }
            if entries.is_empty() || entries.iter().any(|e| e.descriptor.is_none()) {
                return Err(Error::InvalidRequest(
                    "meta updates need descriptors".into(),
                ));
            }
            Ok(())
        }
    }
}

/// The longest key accepted: the configured size, never above the hard cap.
fn key_limit(cfg: &StoreConfig) -> usize {
    cfg.max_key_size.min(MAX_KEY_SIZE_CAP)
}

fn check_key(key: &[u8], desc: &RangeDescriptor, max_len: usize) -> Result<()> {
    if key.is_empty() {
        return Err(Error::EmptyKey);
    }
    let limit = max_len;
    if key.len() > limit {
        return Err(Error::KeyTooLarge {
            size: key.len(),
            limit,
        });
    }
    if !desc.contains(key) {
        return Err(Error::key_not_in_range(desc, key));
    }
    Ok(())
}

fn check_value(value: &[u8], cfg: &StoreConfig) -> Result<()> {
    if value.len() > cfg.max_value_size {
        return Err(Error::ValueTooLarge {
            size: value.len(),
            limit: cfg.max_value_size,
        });
    }
    Ok(())
}

/// The replicated form of a write request.
fn to_raft_command(req: &Request) -> Option<RaftCommand> {
    let (ops, condition) = match &req.command {
        Command::Put { key, value } => (vec![WriteOp::put(key.clone(), value.clone())], None),
        Command::Delete { key } => (vec![WriteOp::delete(key.clone())], None),
        Command::Batch { ops } => (ops.clone(), None),
        Command::CompareAndSwap { key, expected, new } => {
            let op = match new {
                Some(v) => WriteOp::put(key.clone(), v.clone()),
                None => WriteOp::delete(key.clone()),
            };
            let cond = Condition {
                key: key.clone(),
                expected_present: expected.is_some(),
                expected: expected.clone().unwrap_or_default(),
            };
            (vec![op], Some(cond))
        }
        Command::Split { split_key } => {
            let split = SplitRequest {
                split_key: split_key.clone(),
                new_range_id: 0,
            };
            return Some(RaftCommand {
                split: Some(split),
                ..base(req)
            });
        }
        Command::UpdateMeta { entries } => {
            return Some(RaftCommand {
                meta_update: entries.clone(),
                ..base(req)
            });
        }
        Command::PreferLeader { node_id } => {
            let prefer = crate::metapb::PreferLeader { node_id: *node_id };
            return Some(RaftCommand {
                prefer: Some(prefer),
                ..base(req)
            });
        }
        Command::Get { .. } | Command::Scan { .. } | Command::ChangeReplicas { .. } => return None,
    };
    Some(RaftCommand {
        ops,
        condition,
        ..base(req)
    })
}

fn base(req: &Request) -> RaftCommand {
    RaftCommand {
        range_id: req.range_id,
        epoch: Some(req.epoch),
        ..Default::default()
    }
}
