//! Placement on the deterministic harness: five stores at factor 3, with the placement
//! rules (`flotilla_router::placement::plan`) driving real membership changes round by
//! round, as the server's placement loop does — a dead node's replicas replaced, a new
//! node given its share, a decommissioned node emptied, a range without a quorum left
//! alone — and the data checked on every replica afterwards. The leader rules
//! (`plan_leaders`) record preferred leaders with `PreferLeader`, and the ranges' leaders
//! follow them.

use std::collections::BTreeMap;

use flotilla_raftstore::keyspace::{initial_ranges_placed, user_key};
use flotilla_raftstore::metapb::ReplicaRole;
use flotilla_raftstore::{Command, Error, Response};
use flotilla_router::placement::{
    plan, plan_leaders, Change, ClusterState, Limits, Liveness, NodeState,
};
use flotilla_tests::CallError;
use flotilla_tests::{harness_config, Cluster};

const FACTOR: usize = 3;

/// Five stores with `user_ranges` user ranges (plus the meta range), each on three of
/// them, as `init` places them.
fn cluster(user_ranges: u64, seed: u64) -> Cluster {
    let ranges = initial_ranges_placed(user_ranges, &[1, 2, 3, 4, 5], FACTOR);
    let mut c = Cluster::with_config(5, ranges, seed, harness_config());
    for d in c.ranges().to_vec() {
        c.wait_leader(d.range_id, 300).expect("a leader");
    }
    c
}

/// The cluster as the placement loop would see it: nodes in `dead` dead, in `leaving`
/// decommissioning, the others live.
fn state(c: &Cluster, dead: &[u64], leaving: &[u64]) -> ClusterState {
    let nodes = c
        .node_ids()
        .into_iter()
        .map(|n| {
            let liveness = match (dead.contains(&n), leaving.contains(&n)) {
                (true, _) => Liveness::Dead,
                (_, true) => Liveness::Decommissioning,
                _ => Liveness::Live,
            };
            NodeState {
                node_id: n,
                liveness,
                zone: None,
            }
        })
        .collect();
    ClusterState {
        nodes,
        ranges: c.current_ranges(),
        replication_factor: FACTOR,
        ..Default::default()
    }
}

/// Runs placement rounds until a plan has nothing to do; returns the changes made.
fn place(c: &mut Cluster, dead: &[u64], leaving: &[u64]) -> Vec<Change> {
    let mut made = Vec::new();
    for _ in 0..100 {
        let decided = plan(&state(c, dead, leaving), Limits::default());
        if decided.changes.is_empty() {
            return made;
        }
        for change in decided.changes {
            let add: Vec<u64> = change.add.into_iter().collect();
            let remove: Vec<u64> = change.remove.into_iter().collect();
            c.change_replicas(change.range_id, &add, &remove)
                .unwrap_or_else(|e| panic!("{change:?}: {e:?}"));
            made.push(change);
        }
    }
    panic!("placement did not settle in 100 rounds: {made:?}");
}

/// Every range has `FACTOR` voters on distinct nodes, none outside `allowed`.
fn assert_placed(c: &Cluster, allowed: &[u64]) {
    for d in c.current_ranges() {
        let nodes: Vec<u64> = d.replicas.iter().map(|r| r.node_id).collect();
        let mut distinct = nodes.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            FACTOR,
            "range {}: {:?}",
            d.range_id,
            d.replicas
        );
        assert!(
            d.replicas.iter().all(|r| r.role() == ReplicaRole::Voter),
            "range {}: {:?}",
            d.range_id,
            d.replicas
        );
        assert!(
            nodes.iter().all(|n| allowed.contains(n)),
            "range {} on {nodes:?}, allowed {allowed:?}",
            d.range_id
        );
    }
}

fn write(c: &mut Cluster, n: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let k = user_key(&[(i * 7919 % 256) as u8, i as u8, b'k']);
            let v = format!("v{i}").into_bytes();
            c.put(&k, &v).unwrap();
            (k, v)
        })
        .collect()
}

/// Every acknowledged pair reads back, and every range's replicas hold the same data.
fn check(c: &mut Cluster, pairs: &[(Vec<u8>, Vec<u8>)]) {
    for (k, v) in pairs {
        assert_eq!(c.get(k).unwrap().as_ref(), Some(v), "key {k:?}");
    }
    for d in c.current_ranges() {
        let digests = c.digests(d.range_id, 600);
        let values: Vec<u64> = digests.values().copied().collect();
        assert!(
            values.windows(2).all(|w| w[0] == w[1]),
            "range {} replicas differ: {digests:?}",
            d.range_id
        );
    }
}

fn replica_counts(c: &Cluster) -> BTreeMap<u64, usize> {
    let mut counts: BTreeMap<u64, usize> = c.node_ids().into_iter().map(|n| (n, 0)).collect();
    for d in c.current_ranges() {
        for r in &d.replicas {
            *counts.entry(r.node_id).or_default() += 1;
        }
    }
    counts
}

#[test]
fn a_dead_node_is_replaced_from_snapshots_and_its_replicas_collected_when_it_returns() {
    let mut c = cluster(8, 1);
    assert!(
        place(&mut c, &[], &[]).is_empty(),
        "a freshly placed cluster needs nothing"
    );
    let pairs = write(&mut c, 60);
    let on_two: Vec<u64> = c
        .current_ranges()
        .iter()
        .filter(|d| d.replica_on(2).is_some())
        .map(|d| d.range_id)
        .collect();
    assert!(!on_two.is_empty());
    c.stop(2);
    let made = place(&mut c, &[2], &[]);
    assert_eq!(
        made.len(),
        on_two.len(),
        "one replacement per range node 2 held: {made:?}"
    );
    assert_placed(&c, &[1, 3, 4, 5]);
    check(&mut c, &pairs);
    // Node 2 returns after it was replaced: its old replicas learn they were removed and
    // go (life.rs), and placement has nothing to undo.
    c.start(2);
    for _ in 0..3000 {
        if c.store(2).status().is_empty() {
            break;
        }
        c.tick();
    }
    assert!(
        c.store(2).status().is_empty(),
        "node 2 kept replicas: {:?}",
        c.store(2).status().len()
    );
    assert!(place(&mut c, &[], &[])
        .iter()
        .all(|ch| ch.reason == flotilla_router::placement::Reason::Rebalance));
}

#[test]
fn a_new_node_gets_its_share_and_a_decommissioning_node_is_emptied() {
    let mut c = cluster(11, 2);
    let pairs = write(&mut c, 40);
    let sixth = c.add_node();
    let made = place(&mut c, &[], &[]);
    assert!(!made.is_empty(), "nothing moved to the new node");
    let counts = replica_counts(&c);
    let (min, max) = (
        counts.values().min().copied().unwrap(),
        counts.values().max().copied().unwrap(),
    );
    assert!(
        max - min <= Limits::default().balance_slack,
        "unbalanced: {counts:?}"
    );
    assert!(
        counts[&sixth] >= 4,
        "the new node got {} replicas: {counts:?}",
        counts[&sixth]
    );
    assert_placed(&c, &[1, 2, 3, 4, 5, 6]);

    place(&mut c, &[], &[1]);
    assert_placed(&c, &[2, 3, 4, 5, 6]);
    assert_eq!(replica_counts(&c)[&1], 0);
    check(&mut c, &pairs);
}

#[test]
fn a_range_without_a_quorum_is_left_alone_until_one_returns() {
    let mut c = cluster(4, 3);
    let pairs = write(&mut c, 20);
    // Two of the three nodes of one range are lost.
    let victim = c
        .current_ranges()
        .into_iter()
        .find(|d| d.range_id != 1)
        .unwrap();
    let gone: Vec<u64> = victim.replicas.iter().map(|r| r.node_id).take(2).collect();
    for n in &gone {
        c.stop(*n);
    }
    let decided = plan(&state(&c, &gone, &[]), Limits::default());
    assert!(decided.unavailable >= 1, "{decided:?}");
    assert!(
        decided
            .changes
            .iter()
            .all(|ch| ch.range_id != victim.range_id),
        "a change for a range without quorum: {decided:?}"
    );
    // One returns: the range has a quorum again and its dead replica is replaced.
    c.start(gone[0]);
    c.wait_leader(victim.range_id, 600)
        .expect("the range elects again");
    place(&mut c, &gone[1..], &[]);
    let allowed: Vec<u64> = c.node_ids().into_iter().filter(|n| *n != gone[1]).collect();
    assert_placed(&c, &allowed);
    check(&mut c, &pairs);
}

/// Records leader preferences as the placement loop would until its plan is empty;
/// returns how many were recorded.
fn prefer(c: &mut Cluster) -> usize {
    let mut made = 0;
    for _ in 0..50 {
        let moves = plan_leaders(&state(c, &[], &[]), 16);
        if moves.is_empty() {
            return made;
        }
        for m in moves {
            match c.call(m.range_id, Command::PreferLeader { node_id: m.to }, 600) {
                Ok(Response::Replicas(d)) => assert_eq!(d.preferred_node, m.to),
                other => panic!("{m:?}: {other:?}"),
            }
            made += 1;
        }
    }
    panic!("leader placement did not settle");
}

/// Ticks until every range is led from its preferred voter; returns leaders per node.
fn wait_leaders_preferred(c: &mut Cluster) -> BTreeMap<u64, usize> {
    let off = |c: &Cluster| -> Vec<(u64, Option<u64>, u64)> {
        c.current_ranges()
            .iter()
            .map(|d| {
                (
                    d.range_id,
                    c.leader_of(d.range_id),
                    d.preferred_voter().unwrap().node_id,
                )
            })
            .filter(|(_, leader, preferred)| *leader != Some(*preferred))
            .collect()
    };
    for _ in 0..3000 {
        if off(c).is_empty() {
            break;
        }
        c.tick();
    }
    assert_eq!(
        off(c),
        vec![],
        "ranges not led from their preferred voter: (range, leader, preferred)"
    );
    let mut leaders: BTreeMap<u64, usize> = c.node_ids().into_iter().map(|n| (n, 0)).collect();
    for d in c.current_ranges() {
        *leaders.entry(c.leader_of(d.range_id).unwrap()).or_default() += 1;
    }
    leaders
}

#[test]
fn leaders_follow_the_preferences_placement_records() {
    let mut c = cluster(11, 4);
    let pairs = write(&mut c, 30);
    let sixth = c.add_node();
    place(&mut c, &[], &[]);
    assert!(
        prefer(&mut c) > 0,
        "the fallback rule alone left leaders unbalanced after replicas moved"
    );
    let leaders = wait_leaders_preferred(&mut c);
    assert!(
        leaders[&sixth] >= 1,
        "the new node leads nothing: {leaders:?}"
    );
    // The rule: no range's leader node leads two more ranges than another voter's node.
    for d in c.current_ranges() {
        let l = c.leader_of(d.range_id).unwrap();
        for r in &d.replicas {
            assert!(
                leaders[&l] < leaders[&r.node_id] + 2,
                "range {} could move from {l} to {}: {leaders:?}",
                d.range_id,
                r.node_id
            );
        }
    }

    // A split's left half keeps its preference; the right half, a new range, starts
    // from the fallback rule until placement chooses for it.
    let target = c
        .current_ranges()
        .into_iter()
        .find(|d| d.range_id != 1 && d.preferred_node != 0)
        .expect("a chosen range");
    let mut key = target.start.clone();
    key.extend([0, 1]);
    let (left, right) = c.split(&key).expect("split");
    assert_eq!(
        (left.preferred_node, right.preferred_node),
        (target.preferred_node, 0)
    );
    wait_leaders_preferred(&mut c);
    prefer(&mut c);
    wait_leaders_preferred(&mut c);

    // The preferred node restarts: another voter leads meanwhile, and it takes the range back.
    let chosen = target.preferred_node;
    c.stop(chosen);
    let other = c
        .wait_leader_except(left.range_id, Some(chosen), 600)
        .expect("a leader while the preferred node is down");
    assert_ne!(other, chosen);
    c.start(chosen);
    wait_leaders_preferred(&mut c);
    check(&mut c, &pairs);

    // A preference for a node without a voter is refused and changes nothing.
    let outsider = c
        .node_ids()
        .into_iter()
        .find(|n| left.replica_on(*n).is_none())
        .expect("a node without the range");
    match c.call(
        left.range_id,
        Command::PreferLeader { node_id: outsider },
        600,
    ) {
        Err(CallError::Store(e @ Error::InvalidMembership { .. })) => {
            assert!(
                e.to_string()
                    .contains(&format!("node {outsider} holds no voter")),
                "{e}"
            )
        }
        other => panic!("a preference for node {outsider} without a voter: {other:?}"),
    }
    assert_eq!(c.descriptor(left.range_id).unwrap().preferred_node, chosen);
}
