//! Quiescence: idle ranges stop ticking and send nothing.
//!
//! A leader whose log is committed, applied and known to every live follower, with no
//! proposal, read, transfer or configuration change in flight, sends each follower a
//! final heartbeat marked `quiesce` and stops ticking. A follower that receives it, has
//! the same term and leader, and holds the whole log up to the leader's commit, stops
//! ticking too (and does not answer that heartbeat). From then on the range costs
//! nothing: no ticks, no heartbeats; the node's one liveness beat per interval is what
//! remains between two nodes, however many ranges they share.
//!
//! Anything wakes a quiesced replica: a request, or any Raft message for it. (A follower
//! that went quiet does not answer the quiesce heartbeat, so the leader is not woken by
//! the answer.) A woken
//! follower tells its leader with a heartbeat response, so the leader wakes too. A woken
//! leader forgets the time it was quiet (`election_elapsed`) so check-quorum does not
//! depose it on its first tick. (A request to a quiesced follower is answered `NotLeader`
//! with the right hint and does not wake it.) When a node thought dead is heard from
//! again, every quiesced replica sharing a range with it wakes, so a leader that was cut
//! off learns of its successor and a follower that missed writes catches up. When node
//! liveness declares a node dead, every quiesced replica whose leader was there wakes;
//! its followers then campaign after their election timeout, as for any lost leader.

use raft::{ProgressState, StateRole, INVALID_INDEX};

use crate::metapb::Beat;
use crate::peer::Peer;
use crate::store::Store;
use crate::transport::RaftEnvelope;

impl Peer {
    /// On a leader: true when the range may go quiet. Followers on nodes `live` says are
    /// dead are not waited for.
    fn can_quiesce(&self, live: impl Fn(u64) -> bool) -> bool {
        let r = &self.raw.raft;
        let requests =
            self.proposals.is_empty() && self.pending.is_empty() && self.reads.is_empty();
        if r.state != StateRole::Leader || !requests {
            return false;
        }
        if r.lead_transferee.is_some()
            || r.has_pending_conf()
            || r.pending_read_count() > 0
            || r.ready_read_count() > 0
        {
            return false;
        }
        let log = &r.raft_log;
        let last = log.last_index();
        if log.committed != last
            || log.persisted != last
            || self.applied_index() != last
            || !r.commit_to_current_term()
        {
            return false;
        }
        let followers_done = r
            .prs()
            .iter()
            .filter(|(id, _)| **id != self.replica_id)
            .all(|(id, pr)| {
                let on_dead_node = self
                    .descriptor()
                    .replica_by_id(*id)
                    .is_some_and(|rep| !live(rep.node_id));
                on_dead_node
                    || (pr.matched == last
                        && pr.committed_index == last
                        && pr.state == ProgressState::Replicate
                        && !pr.is_paused()
                        && pr.pending_request_snapshot == INVALID_INDEX)
            });
        followers_done && !self.raw.has_ready()
    }

    /// On a follower that just stepped a quiesce heartbeat from `leader` (its term and
    /// commit): true when it may go quiet with it.
    fn may_follow_into_quiet(&self, leader: u64, term: u64, commit: u64) -> bool {
        let r = &self.raw.raft;
        // Requests left from when it led must still be answered (by ticks expiring them).
        let idle = self.proposals.is_empty() && self.reads.is_empty();
        idle && r.state == StateRole::Follower
            && r.leader_id == leader
            && r.term == term
            && r.raft_log.committed == commit
            && r.raft_log.last_index() == commit
    }
}

impl Store {
    /// Lets each of `idle_leaders` (awake leaders with nothing in flight) that may go
    /// quiet do so, telling its followers.
    pub(crate) fn maybe_quiesce(&mut self, ids: Vec<u64>) {
        for id in ids {
            let Some(peer) = self.peers.get(&id).filter(|p| self.may_quiesce(p)) else {
                continue;
            };
            let (term, commit, me) = (
                peer.term(),
                peer.raw.raft.raft_log.committed,
                peer.replica_id,
            );
            let followers: Vec<_> = peer
                .descriptor()
                .replicas
                .iter()
                .filter(|r| r.replica_id != me)
                .copied()
                .collect();
            let live: Vec<_> = followers
                .into_iter()
                .filter(|f| self.is_live(f.node_id))
                .collect();
            for f in live {
                let beat = Beat {
                    range_id: id,
                    from: me,
                    to: f.replica_id,
                    term,
                    commit,
                    response: false,
                    quiesce: true,
                };
                self.beats.entry(f.node_id).or_default().push(beat);
            }
            self.awake.remove(&id);
        }
    }

    /// True when the leader `peer` may go quiet: its log is settled everywhere
    /// (`can_quiesce`), its lease rests on node support (so reads stay local while it
    /// sleeps, `lease.rs`), nobody is reading from it through ReadIndex (it keeps renewing
    /// that lease instead), it is not due a size check, and, while leaders are balanced,
    /// it is its range's preferred leader (or that replica's node is dead).
    fn may_quiesce(&self, peer: &Peer) -> bool {
        let read_lately = peer.last_read > 0
            && self.now.saturating_sub(peer.last_read) <= self.cfg.election_ticks as u64;
        let step = self.cfg.split_size / 8;
        let due_size_check = step > 0 && peer.written_since_check >= step;
        let balancing = self.cfg.balance_interval_ticks > 0;
        let to_transfer = balancing
            && peer
                .preferred_leader()
                .is_some_and(|p| p.replica_id != peer.replica_id && self.is_live(p.node_id));
        peer.can_quiesce(|n| self.is_live(n))
            && self.liveness_lease(peer)
            && !read_lately
            && !due_size_check
            && !to_transfer
            && peer.change_job.is_none()
    }

    /// Steps one expanded heartbeat; a quiesce heartbeat may put the follower to sleep.
    /// Returns whether it was stepped.
    pub(crate) fn on_beat(&mut self, env: RaftEnvelope, quiesce: bool) -> bool {
        let (id, from, term, commit) = (
            env.range_id,
            env.message.from,
            env.message.term,
            env.message.commit,
        );
        if !self.step_envelope(env) {
            return false;
        }
        if quiesce
            && self
                .peers
                .get(&id)
                .is_some_and(|p| p.may_follow_into_quiet(from, term, commit))
        {
            self.awake.remove(&id);
        }
        true
    }

    /// Wakes a quiesced replica (a no-op for an awake one). A follower tells its leader,
    /// unless `notify` is false (woken by the leader itself).
    pub(crate) fn wake(&mut self, range_id: u64, notify: bool) {
        if self.awake.contains(&range_id) {
            return;
        }
        let Some(peer) = self.peers.get_mut(&range_id) else {
            return;
        };
        self.awake.insert(range_id);
        self.touched.insert(range_id);
        if peer.is_leader() {
            // The quiet time must not count against the followers under check-quorum.
            // Its first check-quorum comes an election timeout from now, by when the
            // ping's answers have marked the live followers active.
            peer.raw.raft.election_elapsed = 0;
            peer.raw.ping();
        } else if let Some(leader) = peer.leader().filter(|_| notify) {
            let raft = &peer.raw.raft;
            let beat = Beat {
                range_id,
                from: peer.replica_id,
                to: leader.replica_id,
                term: raft.term,
                commit: raft.raft_log.committed,
                response: true,
                quiesce: false,
            };
            self.beats.entry(leader.node_id).or_default().push(beat);
        }
    }

    /// Queues for waking every quiesced replica with a replica on `node` (it is live
    /// again); [`Store::wake_pending`] wakes them.
    pub(crate) fn wake_ranges_shared_with(&mut self, node: u64) {
        let asleep = self
            .peers
            .iter()
            // A replica that never had a leader has nothing to learn: a vote request wakes it.
            .filter(|(id, p)| {
                !self.awake.contains(id)
                    && !p.never_led()
                    && p.descriptor().replica_on(node).is_some()
            })
            .map(|(id, _)| *id);
        self.pending_wakes.extend(asleep);
    }

    /// Wakes queued replicas (`wake_ranges_shared_with`), at most `max_campaigns_per_tick`
    /// a tick and only while fewer than `awake_limit` replicas here are
    /// awake. A node back from a kill shares every range with the others: waking all of
    /// them at once (100,000 replicas per node) made rounds last seconds, and leaders were
    /// then deposed by check-quorum faster than they were elected. Waking here is only
    /// for catching up sooner; nothing safe waits on it.
    pub(crate) fn wake_pending(&mut self) {
        let budget = match self.cfg.max_campaigns_per_tick {
            0 => u64::MAX,
            k => k,
        };
        let mut woken = 0;
        while woken < budget && !self.too_awake() {
            let Some(id) = self.pending_wakes.pop_first() else {
                break;
            };
            if !self.awake.contains(&id) {
                self.wake(id, true);
                woken += 1;
            }
        }
    }

    /// Wakes every quiesced replica whose leader is on `node`.
    pub(crate) fn wake_ranges_led_by(&mut self, node: u64) {
        let asleep: Vec<u64> = self
            .peers
            .iter()
            .filter(|(id, p)| {
                !self.awake.contains(id) && p.leader().is_some_and(|l| l.node_id == node)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in asleep {
            self.wake(id, true);
        }
    }

    /// The number of replicas here that are quiesced.
    pub fn quiesced_count(&self) -> usize {
        self.peers.len() - self.awake.len()
    }
}
