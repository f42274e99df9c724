//! Idle ranges go quiet: coalesced heartbeats, quiescence and node liveness under the
//! deterministic harness. Traffic between two idle nodes does not grow with the number of
//! ranges; a quiesced range wakes on a write or a read; when a node dies or is cut off,
//! the quiesced ranges it led elect new leaders within a bounded number of ticks, and the
//! node catches up when it returns.

use flotilla_raftstore::{Command, StoreMetrics};
use flotilla_tests::filter::{Isolate, OneWay};
use flotilla_tests::Cluster;

/// Ticks until every live store has all `ranges` replicas quiesced; panics after `max`.
fn wait_quiet(c: &mut Cluster, ranges: usize, max: u64) {
    for _ in 0..max {
        let all = c
            .node_ids()
            .into_iter()
            .filter(|n| c.is_running(*n))
            .all(|n| c.store(n).quiesced_count() == ranges);
        if all {
            return;
        }
        c.tick();
    }
    let counts: Vec<_> = c
        .node_ids()
        .into_iter()
        .filter(|n| c.is_running(*n))
        .map(|n| c.store(n).quiesced_count())
        .collect();
    panic!("ranges did not quiesce within {max} ticks: {counts:?} of {ranges}");
}

fn wait_all_leaders(c: &mut Cluster, ranges: u64) {
    for r in 1..=ranges {
        assert!(c.wait_leader(r, 200).is_some(), "range {r} elects");
    }
}

/// Messages delivered from node `a` to node `b` over `ticks` ticks.
fn traffic(c: &mut Cluster, a: u64, b: u64, ticks: u64) -> u64 {
    let before = c.delivered_between.get(&(a, b)).copied().unwrap_or(0);
    c.ticks(ticks);
    c.delivered_between.get(&(a, b)).copied().unwrap_or(0) - before
}

#[test]
fn idle_traffic_between_two_nodes_does_not_grow_with_ranges() {
    let mut per_interval = Vec::new();
    for ranges in [100u64, 1000] {
        let mut c = Cluster::new(3, ranges, 7);
        wait_all_leaders(&mut c, ranges);
        wait_quiet(&mut c, ranges as usize, 400);
        // 10 liveness intervals of 2 ticks.
        let sent = traffic(&mut c, 1, 2, 20);
        let interval = c.store(1).config().liveness_interval_ticks;
        per_interval.push(sent as f64 / (20 / interval) as f64);
        assert_eq!(
            c.store(1).quiesced_count(),
            ranges as usize,
            "nothing woke up while idle"
        );
        let m = c.store(1).metrics();
        assert!(StoreMetrics::get(&m.heartbeats_coalesced) > 0);
        assert_eq!(StoreMetrics::get(&m.quiesced_ranges), ranges);
        assert!(m
            .per_node()
            .get(&2)
            .is_some_and(|p| p.messages > 0 && p.bytes > 0));
    }
    // One liveness beat per interval and direction, whatever the number of ranges.
    assert_eq!(
        per_interval,
        vec![1.0, 1.0],
        "messages from node 1 to node 2 per liveness interval"
    );
}

#[test]
fn a_quiesced_range_wakes_on_a_write_and_on_a_read() {
    let mut c = Cluster::new(3, 4, 8);
    wait_all_leaders(&mut c, 4);
    wait_quiet(&mut c, 4, 300);
    let key = [0x10, 1];
    c.put(&key, b"v1").expect("a write wakes the range");
    assert!(
        c.node_ids()
            .iter()
            .any(|n| c.store(*n).quiesced_count() < 4),
        "the range woke up"
    );
    wait_quiet(&mut c, 4, 300);
    assert_eq!(
        c.get(&key).expect("a read wakes the range"),
        Some(b"v1".to_vec())
    );
    wait_quiet(&mut c, 4, 300);
    // Writes on one range leave the others asleep: only range of `key` wakes.
    let range = c.range_of(&key);
    let leader = c.leader_of(range).unwrap();
    let mut rx = c.request(
        leader,
        range,
        Command::Put {
            key: key.to_vec(),
            value: b"v2".to_vec(),
        },
    );
    c.settle();
    assert_eq!(c.store(leader).quiesced_count(), 3);
    assert!(c.wait_answer(&mut rx, 50).is_ok());
}

/// Ranges whose leader is on `node`.
fn led_by(c: &Cluster, node: u64, ranges: u64) -> Vec<u64> {
    (1..=ranges)
        .filter(|r| c.leader_of(*r) == Some(node))
        .collect()
}

/// Waits up to `max_ticks` for every range in `ranges` to have a leader off node `gone`;
/// each must be the replica `successor_without(gone)` names (it campaigns at once, the
/// others wait out their timeouts).
fn assert_new_leaders_within(c: &mut Cluster, gone: u64, ranges: &[u64], max_ticks: u64) {
    for t in 0..=max_ticks {
        let missing: Vec<u64> = ranges
            .iter()
            .copied()
            .filter(|r| {
                c.node_ids()
                    .into_iter()
                    .filter(|n| *n != gone && c.is_running(*n))
                    .all(|n| !c.store(n).peer(*r).is_some_and(|p| p.is_leader()))
            })
            .collect();
        if missing.is_empty() {
            eprintln!("new leaders for {} ranges after {t} ticks", ranges.len());
            for r in ranges {
                let named = c
                    .descriptor(*r)
                    .and_then(|d| d.successor_without(gone))
                    .map(|s| s.node_id);
                assert_eq!(
                    c.leader_of(*r),
                    named,
                    "range {r} is led by the successor its descriptor names"
                );
            }
            return;
        }
        assert!(
            t < max_ticks,
            "ranges {missing:?} have no leader off node {gone} after {max_ticks} ticks"
        );
        c.tick();
    }
}

#[test]
fn killing_a_node_elects_new_leaders_for_its_quiesced_ranges_and_it_catches_up() {
    let ranges = 30;
    let mut c = Cluster::new(3, ranges, 9);
    wait_all_leaders(&mut c, ranges);
    wait_quiet(&mut c, ranges as usize, 400);
    let victims = led_by(&c, 1, ranges);
    assert!(!victims.is_empty());
    c.stop(1);
    // Liveness timeout (10) + a round trip or two: the named successors campaign as
    // soon as the node is declared dead (randomised timeouts would add 10 to 20).
    assert_new_leaders_within(&mut c, 1, &victims, 14);
    for i in 0..20u8 {
        c.put(&[i * 12, i], b"while node 1 was down")
            .expect("write without node 1");
    }
    c.start(1);
    c.ticks(60);
    for r in 1..=ranges {
        let d = c.digests(r, 300);
        let first = d.values().next().copied();
        assert!(
            d.len() == 3 && d.values().all(|x| Some(*x) == first),
            "range {r}: {d:?}"
        );
    }
    wait_quiet(&mut c, ranges as usize, 600);
}

#[test]
fn a_vote_asked_before_the_voter_saw_the_death_is_granted_when_it_does() {
    // Node 3 stops hearing from node 1 four ticks before node 1 dies, so node 3 declares
    // the death first, and the successors it names ask node 2 for votes while node 2 still
    // supports node 1 and its replicas still count node 1's leadership as recent. Node 2
    // refuses then, holds the requests, and steps them again when it declares the death
    // itself: every range elects its named successor within a few ticks of that, not a
    // candidate's election timeout (10 to 20 ticks) later. (This covers the refused entry
    // to the hold. Its other entry, a request raft-rs would ignore as within the lease
    // after the support check passed, needs a clock between two ticks, which the harness
    // does not make; the 10,001-range benchmark went through it.)
    let ranges = 30;
    let mut c = Cluster::new(3, ranges, 11);
    wait_all_leaders(&mut c, ranges);
    wait_quiet(&mut c, ranges as usize, 400);
    let victims = led_by(&c, 1, ranges);
    let from_node_3 = victims
        .iter()
        .filter(|r| {
            c.descriptor(**r)
                .and_then(|d| d.successor_without(1))
                .is_some_and(|s| s.node_id == 3)
        })
        .count();
    assert!(from_node_3 > 0, "no range names node 3: {victims:?}");
    let refused_before = StoreMetrics::get(&c.store(2).metrics().votes_refused);
    c.add_filter(OneWay(1, 3));
    c.ticks(4);
    c.stop(1);
    // Node 2 declares the death 11 ticks after it last heard from node 1 (at most 2 ticks
    // before the stop: beats go every 2); then one round trip.
    assert_new_leaders_within(&mut c, 1, &victims, 13);
    assert!(
        StoreMetrics::get(&c.store(2).metrics().votes_refused) > refused_before,
        "node 2 refused no vote: the test did not make the case it is about"
    );
}

#[test]
fn isolating_a_node_elects_new_leaders_for_its_quiesced_ranges() {
    let ranges = 30;
    let mut c = Cluster::new(3, ranges, 10);
    wait_all_leaders(&mut c, ranges);
    wait_quiet(&mut c, ranges as usize, 400);
    let victims = led_by(&c, 2, ranges);
    assert!(!victims.is_empty());
    let iso = c.add_filter(Isolate(2));
    assert_new_leaders_within(&mut c, 2, &victims, 14);
    // The isolated node accepts no write: its old leaderships cannot commit.
    let r = victims[0];
    let mut rx = c.request(
        2,
        r,
        Command::Put {
            key: c.ranges()[r as usize - 1]
                .start
                .clone()
                .into_iter()
                .chain([7])
                .collect(),
            value: b"x".to_vec(),
        },
    );
    let answer = c.wait_answer(&mut rx, 60);
    assert!(
        answer.as_ref().is_err_and(|e| e.is_failure_or_unknown()),
        "{answer:?}"
    );
    c.remove_filter(iso);
    c.ticks(60);
    wait_quiet(&mut c, ranges as usize, 600);
}

#[test]
fn when_the_named_successor_is_down_too_another_voter_elects_as_the_fallback() {
    // Five replicas per range. Node 1 dies, and so does the node each of some of its ranges
    // names as successor. For those ranges nobody campaigns at once: the other replicas'
    // timers, set to the far end of their range at the death, are the fallback, and one of
    // them is elected.
    let ranges = 10;
    let mut c = Cluster::new(5, ranges, 12);
    wait_all_leaders(&mut c, ranges);
    wait_quiet(&mut c, ranges as usize, 600);
    let victims = led_by(&c, 1, ranges);
    assert!(!victims.is_empty());
    let successor = |c: &Cluster, r: u64| {
        c.descriptor(r)
            .and_then(|d| d.successor_without(1))
            .map(|s| s.node_id)
            .expect("a successor")
    };
    let second = successor(&c, victims[0]);
    let orphaned: Vec<u64> = victims
        .iter()
        .copied()
        .filter(|r| successor(&c, *r) == second)
        .collect();
    c.stop(1);
    c.stop(second);
    // Liveness (10 ticks), the far end of a randomised timeout (20), a pre-vote and a vote
    // round, with room for a split vote.
    for t in 0..=120 {
        let led: Vec<Option<u64>> = orphaned.iter().map(|r| c.leader_of(*r)).collect();
        if led.iter().all(|l| l.is_some_and(|n| n != 1 && n != second)) {
            eprintln!("the orphaned ranges elected after {t} ticks");
            for i in 0..5u8 {
                let key = c.ranges()[orphaned[0] as usize - 1]
                    .start
                    .iter()
                    .copied()
                    .chain([i])
                    .collect::<Vec<_>>();
                c.put(&key, b"after two deaths").expect("a write");
            }
            return;
        }
        c.tick();
    }
    panic!("ranges {orphaned:?} elected no leader among the three live nodes");
}
