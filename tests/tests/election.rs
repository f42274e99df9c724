//! Leader election, re-election after isolation, and the old leader stepping down.

use flotilla_raftstore::{Command, Response};
use flotilla_tests::filter::Isolate;
use flotilla_tests::{CallError, Cluster};

fn leaders(c: &Cluster, range_id: u64) -> Vec<(u64, u64)> {
    c.node_ids()
        .into_iter()
        .filter(|n| c.is_running(*n))
        .filter_map(|n| {
            let p = c.store(n).peer(range_id)?;
            p.is_leader().then(|| (n, p.term()))
        })
        .collect()
}

#[test]
fn a_leader_is_elected_after_start() {
    let mut c = Cluster::new(3, 1, 1);
    let leader = c.wait_leader(1, 60).expect("a leader within 60 ticks");
    c.ticks(5);
    let all = leaders(&c, 1);
    assert_eq!(all.len(), 1, "exactly one leader: {all:?}");
    assert_eq!(all[0].0, leader);
    c.put(b"k", b"v").unwrap();
    assert_eq!(c.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

#[test]
fn a_new_cluster_elects_each_ranges_preferred_voter_in_its_first_ticks() {
    // Randomised timeouts would take 10 to 20 ticks and sometimes split the vote; the
    // preferred voter of a range that never had a leader campaigns at once instead.
    let mut c = Cluster::new(3, 30, 2);
    let mut ticks = 0;
    while !c.ranges().iter().all(|d| c.leader_of(d.range_id).is_some()) {
        assert!(ticks < 8, "ranges without a leader after {ticks} ticks");
        c.tick();
        ticks += 1;
    }
    for d in c.ranges().to_vec() {
        let preferred = d.preferred_voter().unwrap().node_id;
        assert_eq!(
            c.leader_of(d.range_id),
            Some(preferred),
            "range {} is led by its preferred voter",
            d.range_id
        );
        assert_eq!(
            leaders(&c, d.range_id).len(),
            1,
            "one leader for range {}",
            d.range_id
        );
        let term = flotilla_raftstore::SPLIT_INIT_TERM + 1;
        assert_eq!(
            leaders(&c, d.range_id)[0].1,
            term,
            "range {} elected in one campaign (pre-vote, then one term)",
            d.range_id
        );
    }
}

#[test]
fn campaigns_past_the_per_tick_budget_wait_and_every_range_still_elects_once() {
    // 60 ranges, 20 preferred on each node, at most 4 campaigns per store and tick.
    let cfg = flotilla_raftstore::StoreConfig {
        max_campaigns_per_tick: 4,
        ..flotilla_tests::harness_config()
    };
    let mut c = Cluster::with_config(3, flotilla_raftstore::local::even_ranges(60, 3), 3, cfg);
    let mut ticks = 0;
    while !c.ranges().iter().all(|d| c.leader_of(d.range_id).is_some()) {
        assert!(ticks < 40, "ranges without a leader after {ticks} ticks");
        c.tick();
        ticks += 1;
    }
    // 20 campaigns at 4 a tick need at least 5 ticks; without the budget all begin at once.
    assert!(
        ticks >= 5,
        "elected in {ticks} ticks: the budget was not applied"
    );
    let deferred: u64 = c
        .node_ids()
        .iter()
        .map(|n| flotilla_raftstore::StoreMetrics::get(&c.store(*n).metrics().campaigns_deferred))
        .sum();
    assert!(deferred > 0, "some campaigns waited for the budget");
    for d in c.ranges().to_vec() {
        assert_eq!(
            leaders(&c, d.range_id).len(),
            1,
            "one leader for range {}",
            d.range_id
        );
    }
}

#[test]
fn isolated_leader_is_replaced_and_its_uncommitted_entries_are_discarded() {
    let mut c = Cluster::new(3, 1, 7);
    let old = c.wait_leader(1, 60).unwrap();
    c.put(b"before", b"1").unwrap();
    let old_term = c.store(old).peer(1).unwrap().term();

    let isolation = c.add_filter(Isolate(old));
    // A write the old leader accepts but can never commit.
    let mut lost = c.request(
        old,
        1,
        Command::Put {
            key: b"lost".to_vec(),
            value: b"x".to_vec(),
        },
    );
    let new = c
        .wait_leader_except(1, Some(old), 60)
        .expect("the majority elects a new leader");
    assert_ne!(new, old);
    c.put(b"after", b"2").unwrap();

    c.remove_filter(isolation);
    c.ticks(30);
    // It stepped down; it may lead again later (it is the preferred replica), but only in
    // a newer term.
    let p = c.store(old).peer(1).unwrap();
    assert!(
        !p.is_leader() || p.term() > old_term,
        "old leader stepped down after heal (term {})",
        p.term()
    );
    let outcome = c.wait_answer(&mut lost, 40);
    assert!(
        outcome
            .as_ref()
            .err()
            .is_some_and(CallError::is_failure_or_unknown),
        "the isolated leader's write must not succeed: {outcome:?}"
    );
    assert_eq!(c.get(b"lost").unwrap(), None, "uncommitted entry discarded");
    assert_eq!(c.get(b"before").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(c.get(b"after").unwrap().as_deref(), Some(&b"2"[..]));
    let digests = c.digests(1, 50);
    let first = digests.values().next().copied();
    assert!(
        digests.values().all(|d| Some(*d) == first),
        "replicas agree: {digests:?}"
    );
    // The old leader's own log no longer holds the lost entry: its data matches.
    match c.call(
        1,
        Command::Scan {
            start: b"a".to_vec(),
            end: Vec::new(),
            limit: 10,
            max_bytes: 0,
        },
        100,
    ) {
        Ok(Response::Pairs { pairs: p, .. }) => assert_eq!(p.len(), 2, "{p:?}"),
        other => panic!("scan failed: {other:?}"),
    }
}

/// The most replicas awake on any store at once while a new cluster of 300 ranges (100
/// preferred on each node) elects, and the ticks it took, with a store starting a new
/// range's campaign only while fewer than `limit` of its replicas are awake (0: no limit).
fn elect_new_ranges_awake_at_most(limit: usize) -> (usize, u64) {
    let cfg = flotilla_raftstore::StoreConfig {
        awake_limit: limit,
        ..flotilla_tests::harness_config()
    };
    let mut c = Cluster::with_config(3, flotilla_raftstore::local::even_ranges(300, 3), 11, cfg);
    let (mut most, mut ticks) = (0, 0);
    while !c.ranges().iter().all(|d| c.leader_of(d.range_id).is_some()) {
        assert!(
            ticks < 600,
            "limit {limit}: ranges without a leader after {ticks} ticks"
        );
        c.tick();
        ticks += 1;
        for n in c.node_ids() {
            let s = c.store(n);
            most = most.max(s.range_ids().len() - s.quiesced_count());
        }
    }
    for d in c.ranges().to_vec() {
        let preferred = d.preferred_voter().unwrap().node_id;
        let led: Vec<u64> = leaders(&c, d.range_id)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            led,
            [preferred],
            "limit {limit}: range {} has one leader, its preferred voter",
            d.range_id
        );
    }
    (most, ticks)
}

#[test]
fn a_new_cluster_starts_campaigns_only_while_few_replicas_are_awake() {
    // Each store counts its own campaigns and the followers others' campaigns woke: with
    // a limit of 20, at most about 20 of its own plus what the two other stores started.
    let (capped, capped_ticks) = elect_new_ranges_awake_at_most(20);
    let (free, free_ticks) = elect_new_ranges_awake_at_most(0);
    eprintln!("awake at most {capped} in {capped_ticks} ticks with the limit, {free} in {free_ticks} without");
    assert!(
        capped <= 3 * 20 + 10,
        "with the limit, at most {capped} awake replicas on a store"
    );
    assert!(
        free >= 150,
        "without it, the budget alone let {free} wake at once: the test shows nothing"
    );
}
