//! Leader placement: which node each range's leader (and so its lease) should be on, as a
//! pure function of the cluster's state, beside the replica rules of [`super::plan`].
//!
//! A range's preferred leader is written in its descriptor (`preferred_node`, set by the
//! replicated `PreferLeader` command); the range's own leader hands leadership there
//! once that voter is caught up (raftstore's `operation/balance.rs`). Without a choice,
//! the voter `range_id % voters` is preferred — even when every range is on the same
//! nodes, lopsided once replicas have moved. [`plan_leaders`] returns the preferences to
//! change, in two rules (TiKV's balance-leader scheduler and CockroachDB's lease
//! rebalancing are the anchors; both count leaders per node):
//!
//! 1. A range whose preferred voter is on a node that is dead, decommissioning or gone
//!    is given the live voter whose node is preferred by the fewest ranges. (A merely
//!    *suspect* node keeps its preferences: Raft has already elected someone else if it
//!    is down, and moving preferences on every hiccup would only churn.)
//! 2. Balance: a range preferred on node `p` moves to its live voter on node `c` when
//!    `p` is preferred by at least two more ranges than `c`. Each move is taken from the
//!    most preferred node that has one, to the least preferred voter it can reach;
//!    repeated until no move is left (or the limit is reached), this leaves no range whose
//!    preferred node could hand it to one of its other voters and narrow a gap of two —
//!    the documented rule. With replicas balanced it keeps every node within one or two
//!    leaders of the mean.
//!
//! Only ranges that are plain voter sets are looked at: a range in a membership change is
//! left to its change (which moves leadership itself when it must).

use std::collections::BTreeMap;

use flotilla_raftstore::metapb::RangeDescriptor;

use super::{changing, ClusterState, Liveness, NodeState};

/// One leader preference to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderMove {
    pub range_id: u64,
    /// The node preferred now (by choice or by the fallback rule).
    pub from: u64,
    pub to: u64,
    pub reason: LeaderReason,
}

/// Why a preference moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderReason {
    /// The preferred node is dead, decommissioning or not in the cluster.
    PreferredUnavailable,
    /// The preferred node is preferred by at least two more ranges than another voter's.
    Balance,
}

/// Decides the leader preferences to change now, at most `max_moves` of them.
pub fn plan_leaders(state: &ClusterState, max_moves: usize) -> Vec<LeaderMove> {
    let nodes: BTreeMap<u64, &NodeState> = state.nodes.iter().map(|n| (n.node_id, n)).collect();
    let ranges: Vec<&RangeDescriptor> = state.ranges.iter().filter(|d| !changing(d)).collect();
    let mut preferred: Vec<Option<u64>> = ranges
        .iter()
        .map(|d| d.preferred_voter().map(|r| r.node_id))
        .collect();
    let mut count: BTreeMap<u64, usize> = nodes
        .values()
        .filter(|n| n.accepts())
        .map(|n| (n.node_id, 0))
        .collect();
    for n in preferred.iter().flatten() {
        if let Some(c) = count.get_mut(n) {
            *c += 1;
        }
    }
    let mut moves = Vec::new();
    for (i, desc) in ranges.iter().enumerate() {
        let Some(from) = preferred[i] else { continue };
        if moves.len() >= max_moves || !unavailable(nodes.get(&from)) {
            continue;
        }
        if let Some(to) = emptiest_voter(desc, &count, from) {
            *count.get_mut(&to).expect("a live node") += 1;
            preferred[i] = Some(to);
            moves.push(LeaderMove {
                range_id: desc.range_id,
                from,
                to,
                reason: LeaderReason::PreferredUnavailable,
            });
        }
    }
    while moves.len() < max_moves {
        let Some((i, from, to)) = best_balance_move(&ranges, &preferred, &count) else {
            break;
        };
        *count.get_mut(&from).expect("counted") -= 1;
        *count.get_mut(&to).expect("counted") += 1;
        preferred[i] = Some(to);
        moves.push(LeaderMove {
            range_id: ranges[i].range_id,
            from,
            to,
            reason: LeaderReason::Balance,
        });
    }
    // A range moved twice in one plan needs only its last preference.
    let mut last: BTreeMap<u64, LeaderMove> = BTreeMap::new();
    for m in moves {
        last.entry(m.range_id)
            .and_modify(|e| e.to = m.to)
            .or_insert(m);
    }
    last.into_values().filter(|m| m.from != m.to).collect()
}

/// The balance move (rule 2) from the most preferred node that has one: its range whose
/// other live voter is on the least preferred node. `(range index, from, to)`.
fn best_balance_move(
    ranges: &[&RangeDescriptor],
    preferred: &[Option<u64>],
    count: &BTreeMap<u64, usize>,
) -> Option<(usize, u64, u64)> {
    let mut by_load: Vec<(usize, u64)> = count.iter().map(|(n, c)| (*c, *n)).collect();
    by_load.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (have, from) in by_load {
        let mine = (0..ranges.len()).filter(|i| preferred[*i] == Some(from));
        let best = mine
            .filter_map(|i| emptiest_voter(ranges[i], count, from).map(|to| (count[&to], to, i)))
            .min();
        if let Some((theirs, to, i)) = best {
            if have >= theirs + 2 {
                return Some((i, from, to));
            }
        }
    }
    None
}

/// True when a preference on this node should move at once (rule 1).
fn unavailable(node: Option<&&NodeState>) -> bool {
    node.is_none_or(|n| {
        matches!(
            n.liveness,
            Liveness::Dead | Liveness::Decommissioning | Liveness::Decommissioned
        )
    })
}

/// The live voter of `desc`, other than on `except`, whose node is preferred by the fewest
/// ranges (then the lowest id).
fn emptiest_voter(
    desc: &RangeDescriptor,
    count: &BTreeMap<u64, usize>,
    except: u64,
) -> Option<u64> {
    desc.replicas
        .iter()
        .filter(|r| r.node_id != except && desc.voter_on(r.node_id).is_some())
        .filter_map(|r| count.get(&r.node_id).map(|c| (*c, r.node_id)))
        .min()
        .map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_raftstore::metapb::{Epoch, Replica, ReplicaRole};

    fn range(id: u64, on: &[u64]) -> RangeDescriptor {
        RangeDescriptor {
            range_id: id,
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

    fn preferring(mut d: RangeDescriptor, node: u64) -> RangeDescriptor {
        d.preferred_node = node;
        d
    }

    fn state(nodes: &[(u64, Liveness)], ranges: Vec<RangeDescriptor>) -> ClusterState {
        let nodes = nodes
            .iter()
            .map(|&(node_id, liveness)| NodeState {
                node_id,
                liveness,
                zone: None,
            })
            .collect();
        ClusterState {
            nodes,
            ranges,
            replication_factor: 3,
            ..Default::default()
        }
    }

    fn live(ids: &[u64]) -> Vec<(u64, Liveness)> {
        ids.iter().map(|i| (*i, Liveness::Live)).collect()
    }

    /// Applies `moves` to `s` as the stores would, and returns preferred ranges per node.
    fn apply(s: &mut ClusterState, moves: &[LeaderMove]) -> BTreeMap<u64, usize> {
        for m in moves {
            let d = s
                .ranges
                .iter_mut()
                .find(|d| d.range_id == m.range_id)
                .unwrap();
            d.preferred_node = m.to;
        }
        let mut count = BTreeMap::new();
        for d in &s.ranges {
            *count
                .entry(d.preferred_voter().unwrap().node_id)
                .or_insert(0) += 1;
        }
        count
    }

    #[test]
    fn ranges_on_the_same_nodes_are_balanced_by_the_fallback_rule_alone() {
        let ranges = (1..=9).map(|i| range(i, &[1, 2, 3])).collect();
        assert_eq!(plan_leaders(&state(&live(&[1, 2, 3]), ranges), 100), vec![]);
    }

    #[test]
    fn a_preference_on_a_dead_or_leaving_node_moves_to_the_least_preferred_live_voter() {
        let mut nodes = live(&[1, 2, 3, 4]);
        nodes[0].1 = Liveness::Dead;
        nodes[1].1 = Liveness::Decommissioning;
        let ranges = vec![
            preferring(range(1, &[1, 3, 4]), 1),
            preferring(range(2, &[2, 3, 4]), 2),
            preferring(range(3, &[3, 4, 1]), 3),
        ];
        let moves = plan_leaders(&state(&nodes, ranges), 100);
        let to: Vec<(u64, u64, LeaderReason)> =
            moves.iter().map(|m| (m.range_id, m.to, m.reason)).collect();
        // Node 3 is preferred by range 3 already, so range 1 goes to 4, then range 2 to 3.
        assert_eq!(
            to,
            vec![
                (1, 4, LeaderReason::PreferredUnavailable),
                (2, 3, LeaderReason::PreferredUnavailable)
            ]
        );
    }

    #[test]
    fn a_suspect_node_keeps_its_preferences() {
        let mut nodes = live(&[1, 2, 3]);
        nodes[0].1 = Liveness::Suspect;
        let ranges = vec![
            preferring(range(1, &[1, 2, 3]), 1),
            preferring(range(2, &[1, 2, 3]), 2),
            preferring(range(3, &[1, 2, 3]), 3),
        ];
        assert_eq!(plan_leaders(&state(&nodes, ranges), 100), vec![]);
    }

    #[test]
    fn a_new_node_is_given_its_share_of_leaders() {
        // Twelve ranges all preferring node 1; four of them have a voter on the new node 4.
        let mut ranges: Vec<_> = (1..=8)
            .map(|i| preferring(range(i, &[1, 2, 3]), 1))
            .collect();
        ranges.extend((9..=12).map(|i| preferring(range(i, &[1, 2, 4]), 1)));
        let mut s = state(&live(&[1, 2, 3, 4]), ranges);
        let moves = plan_leaders(&s, 100);
        assert!(
            moves
                .iter()
                .all(|m| m.reason == LeaderReason::Balance && m.from == 1),
            "{moves:?}"
        );
        let count = apply(&mut s, &moves);
        assert_eq!(count.values().sum::<usize>(), 12);
        assert_eq!(count.values().copied().max(), Some(3), "{count:?}");
        assert_eq!(
            count.get(&4),
            Some(&3),
            "the new node leads its share: {count:?}"
        );
        assert_eq!(plan_leaders(&s, 100), vec![], "a balanced plan is stable");
    }

    #[test]
    fn the_rule_leaves_no_move_that_narrows_a_gap_of_two() {
        // Ranges on overlapping node sets, every preference on node 1.
        let sets: [&[u64]; 4] = [&[1, 2, 3], &[1, 3, 4], &[1, 4, 5], &[1, 5, 2]];
        let ranges = (0..20)
            .map(|i| preferring(range(i + 1, sets[i as usize % 4]), 1))
            .collect();
        let mut s = state(&live(&[1, 2, 3, 4, 5]), ranges);
        let moves = plan_leaders(&s, 1000);
        let count = apply(&mut s, &moves);
        for d in &s.ranges {
            let p = d.preferred_voter().unwrap().node_id;
            for r in &d.replicas {
                assert!(
                    count[&p] < count[&r.node_id] + 2,
                    "range {} could move from {p} to {}: {count:?}",
                    d.range_id,
                    r.node_id
                );
            }
        }
        assert!(count.values().all(|c| (3..=5).contains(c)), "{count:?}");
    }

    #[test]
    fn at_most_max_moves_and_learners_and_joint_ranges_are_left_alone() {
        let ranges: Vec<_> = (1..=9)
            .map(|i| preferring(range(i, &[1, 2, 3]), 1))
            .collect();
        let s = state(&live(&[1, 2, 3]), ranges);
        assert_eq!(plan_leaders(&s, 2).len(), 2);
        let mut learner = preferring(range(20, &[1, 2]), 1);
        learner
            .replicas
            .push(Replica::voter(3, 2003).with_role(ReplicaRole::Learner));
        let mut nodes = live(&[2, 3]);
        nodes.push((1, Liveness::Dead));
        assert_eq!(
            plan_leaders(&state(&nodes, vec![learner]), 10),
            vec![],
            "a range with a learner is changing"
        );
        // A preference naming a node without a voter falls back to the rule (here node 2).
        let lone = preferring(range(21, &[1, 2]), 9);
        assert_eq!(lone.preferred_voter().map(|r| r.node_id), Some(2));
        assert_eq!(plan_leaders(&state(&live(&[1, 2]), vec![lone]), 10), vec![]);
    }
}
