//! Membership change: moving a range's replicas by Raft configuration changes.
//!
//! `Command::ChangeReplicas { add, remove }` asks the leader to reach a replica set in
//! which every node of `add` holds a voter and no node of `remove` holds anything. The
//! leader gets there one raft-rs `ConfChangeV2` at a time, each proposed only once the
//! previous one has applied, each bumping `epoch.conf_ver`:
//!
//! 1. add each new replica as a learner (a fresh replica id from the descriptor's
//!    `next_replica_id`, never a reused one); the leader's log or a snapshot catches it up;
//! 2. once every new learner has caught up (it holds everything committed when it was
//!    added), one explicit joint step promotes the learners (`IncomingVoter`) and demotes
//!    the removed voters (`DemotingVoter`): from here a quorum needs a majority of both
//!    the old and the new voters;
//! 3. leave the joint configuration with an explicit (empty) second proposal: incoming
//!    voters become voters, demoting voters become learners;
//! 4. remove the demoted learners, one per step. Their nodes destroy them (`life.rs`).
//!
//! Which step comes next is a pure function of the descriptor and the learners' progress
//! ([`next_step`]), so a leader that fails half-way leaves nothing to undo: the request
//! repeated at the next leader picks up where the descriptor says the change stands.
//!
//! A leader never demotes or removes itself. When its own node is to go, it first hands
//! leadership to a voter that stays (with the lease given up for its term, as a drain
//! does) and answers `NotLeader` naming it; the repeat continues there. So no replica
//! leads a configuration it is not a voter of, and no two replicas serve leases.
//!
//! raft-rs turns a conf change proposed while another is pending into an empty entry,
//! silently; here such a request is refused with `ConfChangeInProgress` (retryable)
//! before anything is proposed. Every replica applies a change at its log position after
//! checking the epoch it was proposed under, records the new descriptor in the same
//! write batch as the applied index, and checks that raft-rs's resulting configuration
//! is exactly the one the roles describe (a mismatch stops the store: replicas must
//! never disagree about who votes).

use protobuf::Message as _;
use raft::prelude::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, Entry};

use super::ApplyContext;
use crate::cmd::{Callback, Response};
use crate::error::{corrupt, Error, Result};
use crate::metapb::{
    Epoch, MembershipChange, MetaEntry, RaftCommand, RangeDescriptor, Replica, ReplicaRole,
};
use crate::peer::Peer;
use crate::quorum::Voters;
use crate::store::Store;

/// A `ChangeReplicas` request the leader is carrying out.
pub(crate) struct ChangeJob {
    pub add: Vec<u64>,
    pub remove: Vec<u64>,
    pub callback: Callback,
    /// The tick it started (for `change_timeout_ticks`).
    pub started: u64,
    /// The log index of the step proposed last; nothing more is proposed until it applied.
    pub waiting: Option<u64>,
    /// Per learner replica id: the commit index it must reach to count as caught up.
    pub catch_up: std::collections::BTreeMap<u64, u64>,
}

/// What the leader does next for a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The replica set is as asked.
    Done,
    /// Leave the joint configuration.
    LeaveJoint,
    /// Add a learner on this node, with this replica id.
    AddLearner { node_id: u64, replica_id: u64 },
    /// A new learner has not caught up yet.
    WaitForLearner { replica_id: u64 },
    /// Enter the joint configuration: promote these learners, demote these voters.
    EnterJoint { promote: Vec<u64>, demote: Vec<u64> },
    /// Remove this learner.
    RemoveLearner { replica_id: u64 },
    /// The leader's own replica must go: hand leadership to this replica first.
    TransferLeader { to: u64 },
    /// The leader must go but no voter that stays is fit to take over yet.
    WaitForTransferee,
}

/// The next step towards `add` holding voters and `remove` holding nothing, from the
/// descriptor `desc` as applied by the leader `leader` (a replica id), where
/// `caught_up(id)` tells whether a learner holds the log it needs and `fit(id)` whether
/// a voter could take over leadership now.
pub fn next_step(
    desc: &RangeDescriptor,
    add: &[u64],
    remove: &[u64],
    leader: u64,
    caught_up: impl Fn(u64) -> bool,
    fit: impl Fn(u64) -> bool,
) -> Step {
    let leaving = |r: &Replica| remove.contains(&r.node_id);
    let leader_goes = desc.replica_by_id(leader).is_some_and(|r| leaving(&r));
    let handover = || {
        let stays =
            |r: &&Replica| r.role() == ReplicaRole::Voter && !leaving(r) && r.replica_id != leader;
        match desc
            .replicas
            .iter()
            .filter(stays)
            .find(|r| fit(r.replica_id))
        {
            Some(r) => Step::TransferLeader { to: r.replica_id },
            None => Step::WaitForTransferee,
        }
    };
    if Voters::of(desc).is_joint() {
        return if leader_goes {
            handover()
        } else {
            Step::LeaveJoint
        };
    }
    if let Some(&node_id) = add.iter().find(|n| desc.replica_on(**n).is_none()) {
        return Step::AddLearner {
            node_id,
            replica_id: desc.next_replica_id(),
        };
    }
    let learner_on = |n: &u64| {
        desc.replica_on(*n)
            .filter(|r| r.role() == ReplicaRole::Learner)
    };
    let promote: Vec<u64> = add
        .iter()
        .filter_map(learner_on)
        .map(|r| r.replica_id)
        .collect();
    if let Some(&replica_id) = promote.iter().find(|id| !caught_up(**id)) {
        return Step::WaitForLearner { replica_id };
    }
    let demote: Vec<u64> = desc
        .replicas
        .iter()
        .filter(|r| leaving(r) && r.role() == ReplicaRole::Voter)
        .map(|r| r.replica_id)
        .collect();
    if !promote.is_empty() || !demote.is_empty() {
        if leader_goes && demote.contains(&leader) {
            return handover();
        }
        return Step::EnterJoint { promote, demote };
    }
    match desc.replicas.iter().find(|r| leaving(r)) {
        Some(r) => Step::RemoveLearner {
            replica_id: r.replica_id,
        },
        None => Step::Done,
    }
}

/// The replica set `step` leads to, or `None` for a step that changes none.
fn changed_replicas(desc: &RangeDescriptor, step: &Step) -> Option<(Vec<Replica>, u64)> {
    let mut replicas = desc.replicas.clone();
    let mut next = desc.next_replica_id();
    let set = |replicas: &mut Vec<Replica>, id: u64, role: ReplicaRole| {
        for r in replicas.iter_mut().filter(|r| r.replica_id == id) {
            *r = r.with_role(role);
        }
    };
    match step {
        Step::AddLearner {
            node_id,
            replica_id,
        } => {
            replicas.push(Replica::voter(*node_id, *replica_id).with_role(ReplicaRole::Learner));
            next = next.max(replica_id + 1);
        }
        Step::EnterJoint { promote, demote } => {
            promote
                .iter()
                .for_each(|id| set(&mut replicas, *id, ReplicaRole::IncomingVoter));
            demote
                .iter()
                .for_each(|id| set(&mut replicas, *id, ReplicaRole::DemotingVoter));
        }
        Step::LeaveJoint => {
            for r in replicas.iter_mut() {
                match r.role() {
                    ReplicaRole::IncomingVoter => *r = r.with_role(ReplicaRole::Voter),
                    ReplicaRole::DemotingVoter => *r = r.with_role(ReplicaRole::Learner),
                    _ => {}
                }
            }
        }
        Step::RemoveLearner { replica_id } => replicas.retain(|r| r.replica_id != *replica_id),
        _ => return None,
    }
    Some((replicas, next))
}

/// The raft-rs form of `step`.
fn conf_change(step: &Step) -> ConfChangeV2 {
    let single = |change_type, node_id| ConfChangeSingle {
        change_type,
        node_id,
        ..Default::default()
    };
    let mut cc = ConfChangeV2::default();
    match step {
        Step::AddLearner { replica_id, .. } => cc
            .changes
            .push(single(ConfChangeType::AddLearnerNode, *replica_id)),
        Step::RemoveLearner { replica_id } => cc
            .changes
            .push(single(ConfChangeType::RemoveNode, *replica_id)),
        Step::EnterJoint { promote, demote } => {
            cc.set_transition(ConfChangeTransition::Explicit);
            cc.changes.extend(
                promote
                    .iter()
                    .map(|id| single(ConfChangeType::AddNode, *id)),
            );
            cc.changes.extend(
                demote
                    .iter()
                    .map(|id| single(ConfChangeType::AddLearnerNode, *id)),
            );
        }
        _ => {} // LeaveJoint: the empty change.
    }
    cc
}

/// Checks a `ChangeReplicas` request against the current descriptor before anything is
/// proposed. `down(node)` tells whether a node is known to be down.
pub fn validate_change(
    desc: &RangeDescriptor,
    add: &[u64],
    remove: &[u64],
    down: impl Fn(u64) -> bool,
) -> Result<()> {
    let range_id = desc.range_id;
    let invalid = |reason: String| Err(Error::InvalidMembership { range_id, reason });
    if add.is_empty() && remove.is_empty() {
        return invalid("nothing to change: name at least one node to add or remove".into());
    }
    if let Some(n) = add.iter().find(|n| remove.contains(n)) {
        return invalid(format!("node {n} is both added and removed; name it once"));
    }
    if let Some(n) = add
        .iter()
        .chain(remove)
        .find(|n| **n == 0 || **n > crate::store::MAX_NODE_ID)
    {
        return invalid(format!(
            "node id {n} is out of range 1..={}",
            crate::store::MAX_NODE_ID
        ));
    }
    if let Some(n) = add
        .iter()
        .find(|n| desc.replica_on(**n).is_none() && down(**n))
    {
        return invalid(format!("node {n} is down (not heard from lately); add the replica on a live node, or wait for it"));
    }
    // A repeat of a change an earlier attempt left half-way continues it; a new change
    // must make sense against the descriptor as it is.
    let joint = Voters::of(desc).is_joint();
    let unfinished = |n: &u64| {
        desc.replica_on(*n)
            .is_some_and(|r| r.role() != ReplicaRole::Voter)
    };
    if !joint && !add.iter().chain(remove).any(unfinished) {
        if let Some(r) = add.iter().find_map(|n| desc.replica_on(*n)) {
            return invalid(format!(
                "node {} already holds replica {} ({}); nothing to add",
                r.node_id,
                r.replica_id,
                r.role().name()
            ));
        }
        if let Some(n) = remove.iter().find(|n| desc.replica_on(**n).is_none()) {
            return invalid(format!(
                "node {n} holds no replica of the range; nothing to remove"
            ));
        }
    }
    let voters: Vec<u64> = desc
        .replicas
        .iter()
        .filter(|r| r.role() == ReplicaRole::Voter)
        .map(|r| r.node_id)
        .collect();
    let kept = voters.iter().filter(|n| !remove.contains(n)).count();
    if kept + add.len() == 0 {
        return invalid(
            "the change would remove the last voter; add a replica first, or keep one".into(),
        );
    }
    if !joint && 2 * kept < voters.len() {
        let at_most = voters.len() / 2;
        return invalid(format!(
            "removing {} of {} voters at once keeps fewer than half of the current configuration \
             (the data would rest on replicas still catching up); remove at most {at_most} per change \
             (add the new replicas first if needed)",
            voters.len() - kept,
            voters.len()
        ));
    }
    Ok(())
}

impl Store {
    /// Starts a `ChangeReplicas` request on the leader `range_id` (routing already
    /// checked).
    pub(crate) fn start_change(
        &mut self,
        range_id: u64,
        add: Vec<u64>,
        remove: Vec<u64>,
        callback: Callback,
    ) {
        let dead = &self.dead_nodes;
        let peer = self.peers.get_mut(&range_id).expect("checked");
        if add.is_empty() && remove.is_empty() {
            // Asks where the range stands (a router does, after an ambiguous attempt).
            let _ = callback.send(Ok(Response::Replicas(peer.descriptor().clone())));
            return;
        }
        if let Err(e) = validate_change(peer.descriptor(), &add, &remove, |n| dead.contains(&n)) {
            let _ = callback.send(Err(e));
            return;
        }
        if let Some(job) = peer.change_job.as_mut() {
            if job.add == add && job.remove == remove {
                // A repeat of the running change (its caller timed out): it takes over the
                // answer.
                let old = std::mem::replace(&mut job.callback, callback);
                let _ = old.send(Err(Error::ConfChangeInProgress { range_id }));
            } else {
                let _ = callback.send(Err(Error::ConfChangeInProgress { range_id }));
            }
            return;
        }
        tracing::info!(range = range_id, ?add, ?remove, "membership change started");
        let job = ChangeJob {
            add,
            remove,
            callback,
            started: self.now,
            waiting: None,
            catch_up: Default::default(),
        };
        peer.change_job = Some(job);
        self.changing.insert(range_id);
        self.advance_change(range_id);
    }

    /// Moves every running change one step on, where its last step has applied. Runs
    /// every round: it looks only at the ranges with a change running.
    pub(crate) fn advance_changes(&mut self) {
        if self.changing.is_empty() {
            return;
        }
        let ids: Vec<u64> = self.changing.iter().copied().collect();
        for id in ids {
            self.advance_change(id);
        }
    }

    /// Proposes the next step of the change running on `range_id`, or answers it.
    fn advance_change(&mut self, range_id: u64) {
        let (now, timeout) = (self.now, self.cfg.change_timeout_ticks);
        let fresh = 2 * self.cfg.heartbeat_ticks as u64;
        let Some(mut job) = self
            .peers
            .get_mut(&range_id)
            .and_then(|p| p.change_job.take())
        else {
            self.changing.remove(&range_id);
            return;
        };
        let peer = self.peers.get_mut(&range_id).expect("just found");
        let outcome = peer.change_step(&mut job, now, fresh);
        if peer.raw.has_ready() {
            self.touched.insert(range_id);
        }
        let outcome = match outcome {
            None if now.saturating_sub(job.started) > timeout => Some(Err(Error::Timeout {
                range_id,
                ticks: timeout,
            })),
            other => other,
        };
        match outcome {
            None => peer.change_job = Some(job),
            Some(result) => {
                self.changing.remove(&range_id);
                match &result {
                    Ok(_) => tracing::info!(range = range_id, "membership change done"),
                    Err(e) => {
                        tracing::info!(range = range_id, error = %e, "membership change stopped")
                    }
                }
                let _ = job.callback.send(result);
            }
        }
    }
}

impl Peer {
    /// Takes the job one step; `Some` is its answer.
    fn change_step(
        &mut self,
        job: &mut ChangeJob,
        now: u64,
        fresh: u64,
    ) -> Option<Result<Response>> {
        if !self.is_leader() {
            return Some(Err(self.not_leader()));
        }
        if self.raw.raft.lead_transferee.is_some() {
            return None; // a transfer (a drain's) runs: it ends one way or the other
        }
        if job
            .waiting
            .is_some_and(|index| self.applied_index() < index)
            || self.raw.raft.has_pending_conf()
        {
            return None;
        }
        job.waiting = None;
        let committed = self.raw.raft.raft_log.committed;
        let step = {
            let prs = self.raw.raft.prs();
            let caught_up = |id: u64| {
                let target = job.catch_up.get(&id).copied().unwrap_or(committed);
                prs.get(id).is_some_and(|pr| {
                    pr.matched >= target && pr.state == raft::ProgressState::Replicate
                })
            };
            let last = self.raw.raft.raft_log.last_index();
            let fit = |id: u64| {
                self.last_heard
                    .get(&id)
                    .is_some_and(|t| now.saturating_sub(*t) <= fresh)
                    && prs.get(id).is_some_and(|pr| pr.matched >= last)
            };
            next_step(
                self.descriptor(),
                &job.add,
                &job.remove,
                self.replica_id,
                caught_up,
                fit,
            )
        };
        if !matches!(
            step,
            Step::Done | Step::WaitForLearner { .. } | Step::WaitForTransferee
        ) {
            // The writes accepted this round go first, under the epoch they were checked
            // against (a step changes it), and before leadership is handed away.
            self.propose_pending(now);
        }
        match step {
            Step::Done => Some(Ok(Response::Replicas(self.descriptor().clone()))),
            Step::WaitForLearner { replica_id } => {
                job.catch_up.entry(replica_id).or_insert(committed);
                None
            }
            Step::WaitForTransferee => None,
            Step::TransferLeader { to } => {
                tracing::info!(
                    range = self.range_id,
                    to,
                    "membership change: handing leadership away first"
                );
                self.no_lease_term = Some(self.term());
                self.raw.transfer_leader(to);
                let leader = self.descriptor().replica_by_id(to);
                Some(Err(Error::NotLeader {
                    range_id: self.range_id,
                    leader,
                }))
            }
            step => match self.propose_step(&step) {
                Ok(index) => {
                    if let Step::AddLearner { replica_id, .. } = step {
                        // Caught up once it holds what is committed by the time it joins.
                        job.catch_up.insert(replica_id, index);
                    }
                    job.waiting = Some(index);
                    None
                }
                Err(e) => Some(Err(e)),
            },
        }
    }

    /// Proposes one configuration change; returns its log index.
    fn propose_step(&mut self, step: &Step) -> Result<u64> {
        let desc = self.descriptor();
        let (replicas, next_replica_id) =
            changed_replicas(desc, step).expect("a step that changes replicas");
        let cmd = RaftCommand {
            range_id: self.range_id,
            epoch: Some(desc.epoch()),
            change: Some(MembershipChange {
                replicas,
                next_replica_id,
            }),
            ..Default::default()
        };
        let index = self.raw.raft.raft_log.last_index() + 1;
        use prost::Message as _;
        self.raw
            .propose_conf_change(cmd.encode_to_vec(), conf_change(step))
            .map_err(|e| Error::ProposalDropped {
                range_id: self.range_id,
                reason: e.to_string(),
            })?;
        if self.raw.raft.raft_log.last_index() < index || !self.raw.raft.has_pending_conf() {
            let reason = "raft-rs did not append the configuration change".into();
            return Err(Error::ProposalDropped {
                range_id: self.range_id,
                reason,
            });
        }
        tracing::info!(
            range = self.range_id,
            ?step,
            index,
            "proposed membership step"
        );
        Ok(index)
    }

    /// Applies a committed `EntryConfChangeV2`. The outer `Result` is a failure that must
    /// stop the store; the inner one is the change's outcome.
    pub(crate) fn apply_conf_change(
        &mut self,
        entry: &Entry,
        wb: &mut flotilla_engine::WriteBatch,
        ctx: &mut ApplyContext,
    ) -> Result<Result<Response>> {
        let cc = ConfChangeV2::parse_from_bytes(&entry.data)
            .map_err(|e| corrupt("conf change entry", e))?;
        // `propose_conf_change` puts the context in the entry, not in the change.
        let cmd = <RaftCommand as prost::Message>::decode(entry.context.as_ref())
            .map_err(|e| corrupt("conf change context", e))?;
        if !self.raw.store().is_initialized() {
            return Ok(Err(Error::InvalidRequest(
                "an uninitialized replica applies nothing".into(),
            )));
        }
        let desc = self.descriptor().clone();
        let requested = cmd.epoch.unwrap_or_default();
        if requested != desc.epoch() {
            // Not applied anywhere: raft-rs keeps the configuration it had.
            return Ok(Err(Error::epoch_not_match(&desc, requested)));
        }
        let change = cmd
            .change
            .ok_or_else(|| corrupt("conf change context", "no membership change"))?;
        let epoch = Epoch {
            version: desc.epoch().version,
            conf_ver: desc.epoch().conf_ver + 1,
        };
        let next_replica_id = change.next_replica_id.max(desc.next_replica_id());
        let new = RangeDescriptor {
            replicas: change.replicas,
            epoch: Some(epoch),
            next_replica_id,
            ..desc
        };
        let crash = || {
            Err(Error::StoreStopped {
                node_id: self.node_id,
            })
        };
        match cc.enter_joint() {
            Some(_) => fail::fail_point!("raftstore::apply_enter_joint", |_| crash()),
            None if cc.leave_joint() => {
                fail::fail_point!("raftstore::apply_leave_joint", |_| crash())
            }
            None => fail::fail_point!("raftstore::apply_simple_conf_change", |_| crash()),
        }
        let cs = match self.raw.apply_conf_change(&cc) {
            Ok(cs) => cs,
            // Refused the same way on every replica (raft-rs's configuration is unchanged).
            Err(e) => {
                return Ok(Err(Error::InvalidMembership {
                    range_id: self.range_id,
                    reason: format!("raft-rs refused the change: {e}"),
                }))
            }
        };
        if !crate::quorum::same_conf(&cs, &crate::quorum::conf_state(&new)) {
            return Err(corrupt(
                "membership change",
                format!("raft-rs configuration {cs:?} does not match {new:?}"),
            ));
        }
        self.raw.mut_store().set_descriptor(new.clone(), wb);
        tracing::info!(range = self.range_id, conf_ver = epoch.conf_ver, replicas = ?new.replicas, "membership change applied");
        if self.is_leader() && self.range_id != crate::keyspace::META_RANGE_ID {
            let leader = new.replica_on(self.node_id);
            ctx.meta.push(MetaEntry {
                descriptor: Some(new.clone()),
                leader,
                term: self.term(),
            });
        }
        ctx.conf_changed.push(self.range_id);
        Ok(Ok(Response::Replicas(new)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(replicas: &[(u64, ReplicaRole)]) -> RangeDescriptor {
        let replicas = replicas
            .iter()
            .map(|&(n, role)| Replica::voter(n, n).with_role(role))
            .collect();
        RangeDescriptor {
            range_id: 2,
            replicas,
            epoch: Some(Epoch {
                version: 1,
                conf_ver: 1,
            }),
            ..Default::default()
        }
    }

    /// Runs the planner to the end, applying each step as if committed.
    fn run(mut d: RangeDescriptor, add: &[u64], remove: &[u64], mut leader: u64) -> Vec<Step> {
        let mut steps = Vec::new();
        for _ in 0..20 {
            let step = next_step(&d, add, remove, leader, |_| true, |_| true);
            steps.push(step.clone());
            match &step {
                Step::Done => return steps,
                Step::TransferLeader { to } => leader = *to,
                s => d.replicas = changed_replicas(&d, s).unwrap().0,
            }
        }
        panic!("no end: {steps:?}");
    }

    #[test]
    fn replacing_a_voter_goes_learner_joint_leave_remove() {
        use ReplicaRole::*;
        let d = desc(&[(1, Voter), (2, Voter), (3, Voter)]);
        let steps = run(d, &[4], &[3], 1);
        assert_eq!(
            steps,
            vec![
                Step::AddLearner {
                    node_id: 4,
                    replica_id: 4
                },
                Step::EnterJoint {
                    promote: vec![4],
                    demote: vec![3]
                },
                Step::LeaveJoint,
                Step::RemoveLearner { replica_id: 3 },
                Step::Done,
            ]
        );
    }

    #[test]
    fn a_leader_that_must_go_hands_over_first_and_the_plan_continues_from_the_descriptor() {
        use ReplicaRole::*;
        let d = desc(&[(1, Voter), (2, Voter), (3, Voter)]);
        let steps = run(d, &[4], &[1], 1);
        assert_eq!(steps[1], Step::TransferLeader { to: 2 });
        assert!(steps.contains(&Step::EnterJoint {
            promote: vec![4],
            demote: vec![1]
        }));
        // Joint with the leader demoting: hand over before leaving.
        let joint = desc(&[
            (1, DemotingVoter),
            (2, Voter),
            (3, Voter),
            (4, IncomingVoter),
        ]);
        assert_eq!(
            next_step(&joint, &[4], &[1], 1, |_| true, |_| false),
            Step::WaitForTransferee
        );
        assert_eq!(
            next_step(&joint, &[4], &[1], 1, |_| true, |id| id == 3),
            Step::TransferLeader { to: 3 }
        );
        assert_eq!(
            next_step(&joint, &[4], &[1], 2, |_| true, |_| true),
            Step::LeaveJoint
        );
    }

    #[test]
    fn a_learner_is_promoted_only_once_caught_up() {
        use ReplicaRole::*;
        let d = desc(&[(1, Voter), (2, Voter), (3, Voter), (4, Learner)]);
        assert_eq!(
            next_step(&d, &[4], &[], 1, |_| false, |_| true),
            Step::WaitForLearner { replica_id: 4 }
        );
        assert_eq!(
            next_step(&d, &[4], &[], 1, |_| true, |_| true),
            Step::EnterJoint {
                promote: vec![4],
                demote: vec![]
            }
        );
    }

    #[test]
    fn fresh_replica_ids_are_never_reused() {
        use ReplicaRole::*;
        let mut d = desc(&[(1, Voter), (2, Voter), (3, Voter)]);
        d.next_replica_id = 9; // replicas up to 8 existed once
        assert_eq!(
            next_step(&d, &[3, 4], &[], 1, |_| true, |_| true),
            Step::AddLearner {
                node_id: 4,
                replica_id: 9
            }
        );
    }

    #[test]
    fn bad_changes_are_refused_with_what_to_do() {
        use ReplicaRole::*;
        let d = desc(&[(1, Voter), (2, Voter), (3, Voter)]);
        let err = |add: &[u64], remove: &[u64]| match validate_change(&d, add, remove, |n| n == 9) {
            Err(Error::InvalidMembership { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert!(err(&[2], &[]).contains("node 2 already holds replica 2 (voter)"));
        assert!(err(&[], &[5]).contains("node 5 holds no replica"));
        assert!(err(&[9], &[]).contains("node 9 is down"));
        assert!(err(&[4, 5], &[1, 2]).contains("fewer than half"));
        assert!(err(&[4], &[4]).contains("both added and removed"));
        let one = desc(&[(1, Voter)]);
        assert!(
            validate_change(&one, &[], &[1], |_| false).is_err(),
            "the last voter stays"
        );
        assert!(validate_change(&d, &[4], &[3], |_| false).is_ok());
        // A repeat of a half-done change continues it.
        let half = desc(&[(1, Voter), (2, Voter), (3, Learner), (4, Voter)]);
        assert!(validate_change(&half, &[4], &[3], |_| false).is_ok());
    }
}
