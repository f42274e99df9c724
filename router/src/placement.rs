//! Placement: which replicas should move, as a pure function of the cluster's state.
//!
//! [`plan`] takes what the cluster looks like — every node with its liveness and
//! locality, every range's descriptor, the replication factor — and returns the
//! membership changes to make now, each one `change_replicas(range, add, remove)` call
//! (learner, catch-up, joint step: a replica is never removed before its replacement is
//! a caught-up voter). The loop that applies them (issue 12) runs on one node at a time;
//! keeping the decisions here, free of I/O and time, is what lets every rule be tested
//! on its own. The rules, in priority order (CockroachDB's allocator and replicate queue
//! are the anchor):
//!
//! 1. A range in a joint configuration is left alone: its change is under way, and one
//!    change per range runs at a time.
//! 2. A range without a quorum of live voters cannot change at all; it is counted
//!    *unavailable*.
//! 3. A learner outside a joint configuration is finished: promoted when the range lacks
//!    voters and the learner's node takes replicas, removed otherwise. A split copies a
//!    parent's learners into the right half, where no change job follows them; asking for
//!    the same change again (or its reverse) is what finishes them. (While a job is still
//!    catching the learner up, the store answers `ConfChangeInProgress` and the loop tries
//!    again later.)
//! 4. Repairs: a voter on a dead node is replaced; a voter on a decommissioning node is
//!    replaced; a range with fewer voters than the factor gains one; one with more loses
//!    one (on a dead, then decommissioning, then the most loaded node).
//! 5. Only when no range needs repair anywhere: rebalancing, one replica from the node
//!    holding the most replicas to the one holding the fewest, when they differ by more
//!    than `limits.balance_slack`.
//!
//! A new replica goes to a live node that is not decommissioning, does not hold the range,
//! and has a snapshot slot free (`limits.snapshots_per_node`); among those, first to a
//! zone the range's other replicas are not in (locality label `zone`), then to the node
//! with the fewest replicas, then the lowest id (so the plan is deterministic).
//!
//! Where each range's leader should be is decided beside it, by [`plan_leaders`]
//! (`placement/leaders.rs`).

mod leaders;

use std::collections::{BTreeMap, BTreeSet};

use flotilla_raftstore::metapb::{RangeDescriptor, ReplicaRole};
use flotilla_raftstore::quorum::Voters;

pub use leaders::{plan_leaders, LeaderMove, LeaderReason};

/// What the cluster knows of a node's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Heard from recently.
    Live,
    /// Not heard from for a while, not yet long enough to be replaced.
    Suspect,
    /// Silent for longer than `dead_node_timeout`: its replicas are replaced.
    Dead,
    /// Live, but being emptied by `flotilla node decommission`.
    Decommissioning,
    /// Emptied and out of the cluster.
    Decommissioned,
}

/// One node as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub node_id: u64,
    pub liveness: Liveness,
    /// The `zone` locality label, if the node has one.
    pub zone: Option<String>,
}

impl NodeState {
    /// Can take a new replica.
    fn accepts(&self) -> bool {
        self.liveness == Liveness::Live
    }

    /// Its replicas count toward a quorum that can act.
    fn up(&self) -> bool {
        matches!(
            self.liveness,
            Liveness::Live | Liveness::Decommissioning | Liveness::Suspect
        )
    }
}

/// The state [`plan`] decides from.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    pub nodes: Vec<NodeState>,
    pub ranges: Vec<RangeDescriptor>,
    pub replication_factor: usize,
    /// Snapshots being received per node now.
    pub snapshots_in_flight: BTreeMap<u64, usize>,
}

/// How much one plan may do.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Changes in one plan, over all ranges.
    pub max_changes: usize,
    /// Snapshots a node may be receiving at once.
    pub snapshots_per_node: usize,
    /// Replica counts may differ this much between the fullest and the emptiest node.
    pub balance_slack: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_changes: 4,
            snapshots_per_node: 2,
            balance_slack: 2,
        }
    }
}

/// One membership change to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub range_id: u64,
    pub add: Option<u64>,
    pub remove: Option<u64>,
    pub reason: Reason,
}

/// Why a change is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    DeadNode,
    Decommissioning,
    UnderReplicated,
    OverReplicated,
    Rebalance,
    /// A learner no change is finishing (left behind by a split, or an interrupted add).
    StrayLearner,
}

/// The outcome of one look at the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Ranges with fewer live voters than the factor (or a voter on a node leaving).
    pub under_replicated: usize,
    /// Ranges without a quorum of voters on nodes that are up.
    pub unavailable: usize,
}

/// Decides the membership changes to make now (see the module docs for the rules).
pub fn plan(state: &ClusterState, limits: Limits) -> Plan {
    let nodes: BTreeMap<u64, &NodeState> = state.nodes.iter().map(|n| (n.node_id, n)).collect();
    let mut load = replica_counts(state);
    let mut slots = state.snapshots_in_flight.clone();
    let mut out = Plan::default();
    for desc in &state.ranges {
        let voters = Voters::of(desc);
        let node_of = |replica_id: u64| desc.replica_by_id(replica_id).map(|r| r.node_id);
        let up = |replica_id: u64| {
            node_of(replica_id)
                .and_then(|n| nodes.get(&n))
                .is_some_and(|n| n.up())
        };
        if !voters.is_quorum(up) {
            out.unavailable += 1;
            continue;
        }
        if voters.is_joint() {
            continue;
        }
        if let Some(change) = finish_learner(desc, &nodes, state.replication_factor) {
            out.under_replicated += usize::from(change.add.is_some());
            if out.changes.len() < limits.max_changes {
                note_change(&mut load, &mut slots, None, change.remove);
                out.changes.push(change);
            }
            continue;
        }
        let Some((reason, remove, wants_add)) = repair(desc, &nodes, state.replication_factor)
        else {
            continue;
        };
        out.under_replicated += usize::from(reason != Reason::OverReplicated);
        if out.changes.len() >= limits.max_changes {
            continue;
        }
        let add = if wants_add {
            match target(desc, &nodes, &load, &slots, limits) {
                Some(n) => Some(n),
                None => continue, // nowhere to put it yet
            }
        } else {
            None
        };
        note_change(&mut load, &mut slots, add, remove);
        out.changes.push(Change {
            range_id: desc.range_id,
            add,
            remove,
            reason,
        });
    }
    if out.under_replicated == 0 && out.unavailable == 0 {
        out.changes
            .extend(rebalance(state, &nodes, &load, &slots, limits));
    }
    out
}

/// True while a range's configuration is not a plain set of voters.
fn changing(desc: &RangeDescriptor) -> bool {
    desc.replicas.iter().any(|r| r.role() != ReplicaRole::Voter)
}

/// Promotes or removes a learner of a range that is not joint (see rule 3).
fn finish_learner(
    desc: &RangeDescriptor,
    nodes: &BTreeMap<u64, &NodeState>,
    factor: usize,
) -> Option<Change> {
    let learner = desc
        .replicas
        .iter()
        .find(|r| r.role() == ReplicaRole::Learner)?;
    let voters = desc
        .replicas
        .iter()
        .filter(|r| r.role() == ReplicaRole::Voter)
        .count();
    let takes = nodes.get(&learner.node_id).is_some_and(|n| n.accepts());
    let range_id = desc.range_id;
    Some(match voters < factor && takes {
        true => Change {
            range_id,
            add: Some(learner.node_id),
            remove: None,
            reason: Reason::StrayLearner,
        },
        false => Change {
            range_id,
            add: None,
            remove: Some(learner.node_id),
            reason: Reason::StrayLearner,
        },
    })
}

/// What a range needs, if anything: the reason, the node to remove, and whether a
/// replica must be added.
fn repair(
    desc: &RangeDescriptor,
    nodes: &BTreeMap<u64, &NodeState>,
    factor: usize,
) -> Option<(Reason, Option<u64>, bool)> {
    let liveness = |n: u64| nodes.get(&n).map_or(Liveness::Dead, |s| s.liveness);
    let on: Vec<u64> = desc.replicas.iter().map(|r| r.node_id).collect();
    let find = |l: Liveness| on.iter().copied().find(|n| liveness(*n) == l);
    let gone = find(Liveness::Dead).or_else(|| find(Liveness::Decommissioned));
    if on.len() > factor {
        let remove = gone.or_else(|| find(Liveness::Decommissioning));
        return Some((
            Reason::OverReplicated,
            remove.or_else(|| on.last().copied()),
            false,
        ));
    }
    if let Some(dead) = gone {
        return Some((Reason::DeadNode, Some(dead), true));
    }
    if let Some(leaving) = find(Liveness::Decommissioning) {
        return Some((Reason::Decommissioning, Some(leaving), true));
    }
    (on.len() < factor).then_some((Reason::UnderReplicated, None, true))
}

/// The best node for a new replica of `desc`, if any can take one.
fn target(
    desc: &RangeDescriptor,
    nodes: &BTreeMap<u64, &NodeState>,
    load: &BTreeMap<u64, usize>,
    slots: &BTreeMap<u64, usize>,
    limits: Limits,
) -> Option<u64> {
    let zones: BTreeSet<&str> = desc
        .replicas
        .iter()
        .filter_map(|r| nodes.get(&r.node_id).and_then(|n| n.zone.as_deref()))
        .collect();
    nodes
        .values()
        .filter(|n| n.accepts() && desc.replica_on(n.node_id).is_none())
        .filter(|n| slots.get(&n.node_id).copied().unwrap_or(0) < limits.snapshots_per_node)
        .min_by_key(|n| {
            let repeats_zone = n.zone.as_deref().is_some_and(|z| zones.contains(z));
            (
                repeats_zone,
                load.get(&n.node_id).copied().unwrap_or(0),
                n.node_id,
            )
        })
        .map(|n| n.node_id)
}

/// One replica from the fullest live node to the emptiest, if they differ by more than
/// the slack.
fn rebalance(
    state: &ClusterState,
    nodes: &BTreeMap<u64, &NodeState>,
    load: &BTreeMap<u64, usize>,
    slots: &BTreeMap<u64, usize>,
    limits: Limits,
) -> Option<Change> {
    let live: Vec<u64> = nodes
        .values()
        .filter(|n| n.accepts())
        .map(|n| n.node_id)
        .collect();
    let count = |n: &u64| load.get(n).copied().unwrap_or(0);
    let fullest = *live
        .iter()
        .max_by_key(|n| (count(n), std::cmp::Reverse(**n)))?;
    for desc in state
        .ranges
        .iter()
        .filter(|d| !changing(d) && d.replica_on(fullest).is_some())
    {
        let Some(to) = target(desc, nodes, load, slots, limits) else {
            continue;
        };
        // Moving must narrow the gap, not just swap which node is fullest.
        if count(&fullest) > count(&to) + limits.balance_slack {
            return Some(Change {
                range_id: desc.range_id,
                add: Some(to),
                remove: Some(fullest),
                reason: Reason::Rebalance,
            });
        }
    }
    None
}

fn replica_counts(state: &ClusterState) -> BTreeMap<u64, usize> {
    let mut load = BTreeMap::new();
    for r in state.ranges.iter().flat_map(|d| d.replicas.iter()) {
        *load.entry(r.node_id).or_insert(0) += 1;
    }
    load
}

/// Counts a planned change, so that later choices in the same plan see it.
fn note_change(
    load: &mut BTreeMap<u64, usize>,
    slots: &mut BTreeMap<u64, usize>,
    add: Option<u64>,
    remove: Option<u64>,
) {
    if let Some(n) = add {
        *load.entry(n).or_insert(0) += 1;
        *slots.entry(n).or_insert(0) += 1;
    }
    if let Some(n) = remove {
        let c = load.entry(n).or_insert(0);
        *c = c.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_raftstore::metapb::{Epoch, Replica};

    fn node(id: u64, liveness: Liveness) -> NodeState {
        NodeState {
            node_id: id,
            liveness,
            zone: None,
        }
    }

    fn live(ids: &[u64]) -> Vec<NodeState> {
        ids.iter().map(|i| node(*i, Liveness::Live)).collect()
    }

    fn range(id: u64, on: &[u64]) -> RangeDescriptor {
        RangeDescriptor {
            range_id: id,
            start: vec![id as u8],
            end: vec![id as u8 + 1],
            epoch: Some(Epoch {
                version: 1,
                conf_ver: 1,
            }),
            replicas: on
                .iter()
                .map(|n| Replica::voter(*n, id * 100 + n))
                .collect(),
            ..Default::default()
        }
    }

    fn state(nodes: Vec<NodeState>, ranges: Vec<RangeDescriptor>) -> ClusterState {
        ClusterState {
            nodes,
            ranges,
            replication_factor: 3,
            snapshots_in_flight: BTreeMap::new(),
        }
    }

    fn change(range_id: u64, add: Option<u64>, remove: Option<u64>, reason: Reason) -> Change {
        Change {
            range_id,
            add,
            remove,
            reason,
        }
    }

    #[test]
    fn a_balanced_cluster_at_its_factor_needs_nothing() {
        let s = state(
            live(&[1, 2, 3, 4]),
            vec![
                range(1, &[1, 2, 3]),
                range(2, &[2, 3, 4]),
                range(3, &[1, 3, 4]),
            ],
        );
        assert_eq!(plan(&s, Limits::default()), Plan::default());
    }

    #[test]
    fn a_range_below_its_factor_gains_a_replica_on_the_emptiest_node() {
        let s = state(
            live(&[1, 2, 3, 4]),
            vec![range(1, &[1]), range(2, &[1, 2, 3])],
        );
        let p = plan(&s, Limits::default());
        assert_eq!(
            p.changes,
            vec![change(1, Some(4), None, Reason::UnderReplicated)]
        );
        assert_eq!(p.under_replicated, 1);
    }

    #[test]
    fn a_voter_on_a_dead_node_is_replaced_and_on_a_decommissioning_one_too() {
        let mut nodes = live(&[1, 2, 3, 4, 5]);
        nodes[2].liveness = Liveness::Dead; // node 3
        nodes[0].liveness = Liveness::Decommissioning; // node 1
        let s = state(nodes, vec![range(1, &[2, 3, 4]), range(2, &[1, 2, 4])]);
        let p = plan(&s, Limits::default());
        assert_eq!(
            p.changes,
            vec![
                change(1, Some(5), Some(3), Reason::DeadNode),
                change(2, Some(5), Some(1), Reason::Decommissioning)
            ]
        );
    }

    #[test]
    fn a_suspect_node_is_not_replaced_yet() {
        let mut nodes = live(&[1, 2, 3, 4]);
        nodes[2].liveness = Liveness::Suspect;
        let s = state(nodes, vec![range(1, &[1, 2, 3])]);
        assert!(plan(&s, Limits::default()).changes.is_empty());
    }

    #[test]
    fn a_range_without_a_live_quorum_is_unavailable_and_left_alone() {
        let mut nodes = live(&[1, 2, 3, 4, 5]);
        nodes[1].liveness = Liveness::Dead;
        nodes[2].liveness = Liveness::Dead;
        let s = state(nodes, vec![range(1, &[1, 2, 3])]);
        let p = plan(&s, Limits::default());
        assert_eq!((p.changes.len(), p.unavailable), (0, 1));
    }

    #[test]
    fn a_joint_range_is_left_to_its_change() {
        let mut d = range(1, &[1, 2]);
        d.replicas
            .push(Replica::voter(3, 103).with_role(ReplicaRole::IncomingVoter));
        d.replicas
            .push(Replica::voter(4, 104).with_role(ReplicaRole::DemotingVoter));
        let s = state(live(&[1, 2, 3, 4]), vec![d]);
        assert!(plan(&s, Limits::default()).changes.is_empty());
    }

    #[test]
    fn a_learner_left_behind_is_promoted_when_wanted_and_removed_otherwise() {
        let learner = |d: &mut RangeDescriptor, n: u64| {
            d.replicas
                .push(Replica::voter(n, 900 + n).with_role(ReplicaRole::Learner))
        };
        // Two voters and a learner on a live node: promote it.
        let mut short = range(1, &[1, 2]);
        learner(&mut short, 3);
        // Three voters already (a split copied a removed node's learner): remove it.
        let mut full = range(2, &[1, 2, 3]);
        learner(&mut full, 4);
        // Short of voters, but the learner's node is dead: remove it (a repair follows).
        let mut dead = range(3, &[1, 2]);
        learner(&mut dead, 5);
        let mut nodes = live(&[1, 2, 3, 4, 5]);
        nodes[4].liveness = Liveness::Dead;
        let p = plan(&state(nodes, vec![short, full, dead]), Limits::default());
        assert_eq!(
            p.changes,
            vec![
                change(1, Some(3), None, Reason::StrayLearner),
                change(2, None, Some(4), Reason::StrayLearner),
                change(3, None, Some(5), Reason::StrayLearner),
            ]
        );
    }

    #[test]
    fn an_over_replicated_range_loses_its_replica_on_a_leaving_node_first() {
        let mut nodes = live(&[1, 2, 3, 4]);
        nodes[1].liveness = Liveness::Decommissioning;
        let s = state(nodes, vec![range(1, &[1, 2, 3, 4])]);
        assert_eq!(
            plan(&s, Limits::default()).changes,
            vec![change(1, None, Some(2), Reason::OverReplicated)]
        );
    }

    #[test]
    fn new_replicas_go_to_zones_the_range_is_not_in() {
        let zones = [(1, "a"), (2, "a"), (3, "b"), (4, "a"), (5, "c")];
        let nodes = zones
            .iter()
            .map(|(i, z)| NodeState {
                node_id: *i,
                liveness: Liveness::Live,
                zone: Some(z.to_string()),
            })
            .collect();
        // Node 4 holds the fewest replicas, but zone c is new to the range.
        let s = state(
            nodes,
            vec![
                range(1, &[1, 3]),
                range(2, &[5, 1, 3]),
                range(3, &[5, 2, 3]),
            ],
        );
        assert_eq!(
            plan(&s, Limits::default()).changes,
            vec![change(1, Some(5), None, Reason::UnderReplicated)]
        );
    }

    #[test]
    fn a_node_without_a_free_snapshot_slot_gets_no_new_replica() {
        let mut s = state(
            live(&[1, 2, 3, 4]),
            vec![range(1, &[1, 2]), range(2, &[1, 2]), range(3, &[1, 2])],
        );
        s.snapshots_in_flight.insert(3, 1);
        let limits = Limits {
            snapshots_per_node: 2,
            ..Limits::default()
        };
        let adds: Vec<_> = plan(&s, limits)
            .changes
            .iter()
            .map(|c| c.add.unwrap())
            .collect();
        assert_eq!(adds, vec![3, 4, 4], "node 3 had one slot left, node 4 two");
    }

    #[test]
    fn one_plan_makes_at_most_max_changes() {
        let ranges = (1..=10).map(|i| range(i, &[1])).collect();
        let s = state(live(&[1, 2, 3]), ranges);
        let p = plan(
            &s,
            Limits {
                max_changes: 3,
                snapshots_per_node: 100,
                balance_slack: 2,
            },
        );
        assert_eq!((p.changes.len(), p.under_replicated), (3, 10));
    }

    #[test]
    fn rebalancing_waits_until_nothing_is_under_replicated() {
        let s = state(
            live(&[1, 2, 3, 4]),
            vec![
                range(1, &[1, 2, 3]),
                range(2, &[1, 2, 3]),
                range(3, &[1, 2, 3]),
                range(4, &[1, 2]),
            ],
        );
        let p = plan(&s, Limits::default());
        assert_eq!(
            p.changes,
            vec![change(4, Some(4), None, Reason::UnderReplicated)],
            "repair only"
        );
    }

    #[test]
    fn a_new_node_receives_replicas_from_the_fullest_until_within_the_slack() {
        let ranges: Vec<_> = (1..=6).map(|i| range(i, &[1, 2, 3])).collect();
        let mut s = state(live(&[1, 2, 3, 4]), ranges);
        let mut moves = 0;
        while let Some(c) = plan(&s, Limits::default()).changes.first().cloned() {
            assert_eq!(c.reason, Reason::Rebalance);
            let d = s
                .ranges
                .iter_mut()
                .find(|d| d.range_id == c.range_id)
                .unwrap();
            d.replicas.retain(|r| Some(r.node_id) != c.remove);
            d.replicas.push(Replica::voter(c.add.unwrap(), 900 + moves));
            moves += 1;
            assert!(moves < 10, "converges");
        }
        let load = replica_counts(&s);
        let (min, max) = (load.values().min().unwrap(), load.values().max().unwrap());
        assert!(max - min <= 2, "{load:?}");
        assert!(load[&4] >= 3, "the new node has its share: {load:?}");
        assert!(s.ranges.iter().all(|d| d.replicas.len() == 3));
    }
}
