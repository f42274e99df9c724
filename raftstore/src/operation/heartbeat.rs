//! Coalesced heartbeats and node liveness.
//!
//! raft-rs sends every follower of every range a `MsgHeartbeat` each heartbeat interval,
//! so the traffic between two nodes would grow with the number of ranges. Here every
//! heartbeat and heartbeat response without a read context leaves the store as a
//! [`Beat`] — `(range, from, to, term, commit)` — in one [`HeartbeatBatch`] per
//! destination node per round, carried by one envelope of the node-level range id
//! [`NODE_RANGE_ID`]. On arrival the batch is expanded back into per-range messages.
//! Heartbeats that carry a ReadIndex context go out as they are, since their context
//! must come back for the read to complete.
//!
//! The batch doubles as the node's liveness beat: a store sends one to every node it
//! shares a range with at least every `liveness_interval_ticks`, even when it is empty,
//! and declares a node dead when nothing at all has come from it for
//! `liveness_timeout_ticks`. A death wakes every quiesced replica whose leader is on the
//! dead node, so that those ranges elect a new leader (`quiesce.rs`).

use prost::Message as _;
use raft::prelude::{Message, MessageType};

use crate::metapb::{Beat, HeartbeatBatch, Replica};
use crate::metrics::StoreMetrics;
use crate::store::Store;
use crate::transport::RaftEnvelope;

/// The range id of envelopes that carry a node's [`HeartbeatBatch`] (no range has it).
pub const NODE_RANGE_ID: u64 = 0;

/// A heartbeat raft-rs produced, as a [`Beat`], if it can travel coalesced.
pub(crate) fn as_beat(range_id: u64, m: &Message) -> Option<Beat> {
    let response = match m.get_msg_type() {
        MessageType::MsgHeartbeat => false,
        MessageType::MsgHeartbeatResponse => true,
        _ => return None,
    };
    if !m.context.is_empty() {
        return None;
    }
    Some(Beat {
        range_id,
        from: m.from,
        to: m.to,
        term: m.term,
        commit: m.commit,
        response,
        quiesce: false,
    })
}

/// The per-range message a [`Beat`] stands for.
fn to_message(b: &Beat) -> Message {
    let mut m = Message::default();
    m.set_msg_type(if b.response {
        MessageType::MsgHeartbeatResponse
    } else {
        MessageType::MsgHeartbeat
    });
    m.from = b.from;
    m.to = b.to;
    m.term = b.term;
    m.commit = b.commit;
    m
}

impl Store {
    /// Turns the round's beats into one envelope per destination node, alongside the
    /// node's other messages.
    pub(crate) fn flush_beats(&mut self) {
        let me = Replica::voter(self.node_id, 0);
        for node in self
            .removed_notices
            .keys()
            .chain(self.membership_checks.keys())
        {
            self.beats.entry(*node).or_default();
        }
        for (node, beats) in std::mem::take(&mut self.beats) {
            StoreMetrics::add(&self.metrics.heartbeats_coalesced, beats.len() as u64);
            let mut message = Message::default();
            message.set_msg_type(MessageType::MsgHeartbeat);
            let (echo_incarnation, echo) = self.stamp_from.get(&node).copied().unwrap_or((0, 0));
            let batch = HeartbeatBatch {
                beats,
                sent_at: self.clock.now().as_micros() as u64,
                echo,
                incarnation: self.incarnation,
                echo_incarnation,
                support_epoch: self.my_epoch.get(&node).copied().unwrap_or(0),
                draining: self.draining,
                membership_checks: self.membership_checks.remove(&node).unwrap_or_default(),
                removed: self.removed_notices.remove(&node).unwrap_or_default(),
            };
            message.context = batch.encode_to_vec().into();
            let to = Replica::voter(node, 0);
            let env = RaftEnvelope {
                range_id: NODE_RANGE_ID,
                from: me,
                to,
                message,
            };
            self.outbox.entry(node).or_default().push(env);
        }
    }

    /// Makes sure a batch goes to every neighbour this round (the liveness beat).
    pub(crate) fn send_liveness(&mut self) {
        for node in self.neighbours.iter() {
            self.beats.entry(*node).or_default();
        }
    }

    /// Expands a node-level envelope into the per-range heartbeats it carries and steps
    /// them.
    pub(crate) fn on_heartbeat_batch(&mut self, env: RaftEnvelope) {
        let batch = match HeartbeatBatch::decode(env.message.context.as_ref()) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(from = env.from.node_id, error = %e, "dropped undecodable heartbeat batch");
                StoreMetrics::add(&self.metrics.messages_dropped, 1);
                return;
            }
        };
        let (from_node, to_node) = (env.from.node_id, env.to.node_id);
        if batch.draining {
            self.draining_nodes.insert(from_node);
        } else {
            self.draining_nodes.remove(&from_node);
        }
        let epoch = self.record_support(from_node, &batch);
        self.on_membership_checks(from_node, batch.membership_checks);
        self.removed_received.extend(batch.removed);
        for beat in batch.beats {
            let env = RaftEnvelope {
                range_id: beat.range_id,
                from: Replica::voter(from_node, beat.from),
                to: Replica::voter(to_node, beat.to),
                message: to_message(&beat),
            };
            let (range, from, term) = (beat.range_id, beat.from, beat.term);
            if self.on_beat(env, beat.quiesce) && beat.response {
                if let Some(peer) = self.peers.get_mut(&range) {
                    peer.fortify(from, term, epoch);
                }
            }
        }
    }

    /// Records that `node` was heard from at tick `at`; a node thought dead is alive
    /// again. `at` is the tick the clock is at (`Store::clock_tick`), which may be ahead of
    /// the ticks run so far: messages are handled before a round's missed ticks.
    pub(crate) fn heard_from(&mut self, node: u64, at: u64) {
        self.node_heard.insert(node, at);
        if self.dead_nodes.remove(&node) {
            tracing::info!(node = self.node_id, peer_node = node, "node is live again");
            self.wake_ranges_shared_with(node);
        }
    }

    /// Declares dead the neighbours not heard from for `liveness_timeout_ticks`, wakes the
    /// quiesced replicas they led and has those ranges elect a successor (`campaign.rs`).
    pub(crate) fn check_liveness(&mut self) {
        self.expire_held_votes();
        let timeout = self.cfg.liveness_timeout_ticks;
        let now = self.now;
        let newly_dead: Vec<u64> = self
            .neighbours
            .iter()
            .copied()
            .filter(|n| !self.dead_nodes.contains(n))
            .filter(|n| now.saturating_sub(self.node_heard.get(n).copied().unwrap_or(0)) > timeout)
            .collect();
        for node in newly_dead {
            tracing::info!(node = self.node_id, peer_node = node, "node declared dead");
            self.dead_nodes.insert(node);
            self.wake_ranges_led_by(node);
            self.elect_successors_of(node);
        }
    }

    /// True when `node` is this node or a neighbour not declared dead.
    pub(crate) fn is_live(&self, node: u64) -> bool {
        node == self.node_id || !self.dead_nodes.contains(&node)
    }

    /// Remembers the nodes of `replicas` as neighbours (they get liveness beats).
    pub(crate) fn add_neighbours(&mut self, replicas: &[Replica]) {
        for r in replicas {
            if r.node_id != self.node_id && self.neighbours.insert(r.node_id) {
                self.node_heard.insert(r.node_id, self.now);
            }
        }
    }
}
