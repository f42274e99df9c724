//! A frozen leaseholder (`SIGSTOP`, a paused VM, a starved CPU) under the deterministic
//! harness: its clock runs on with everyone else's while it executes nothing; the others
//! elect a new leader and overwrite a key; it wakes with a read of that key queued from
//! before. The read must not be answered with the value from before the freeze, under
//! either proof of the lease (a recent quorum round, or store-liveness support of a
//! quiesced range). Reproduces the stale read of issue 10: with leases judged in ticks,
//! the frozen store's lease had not run out in its own time when it woke.

use flotilla_raftstore::{Command, Response, StoreConfig, StoreMetrics};
use flotilla_tests::{harness_config, CallError, Cluster};

fn config() -> StoreConfig {
    // No leadership balance: a transfer would end the lease this test watches.
    StoreConfig {
        balance_interval_ticks: 0,
        ..harness_config()
    }
}

fn get_at(c: &mut Cluster, node: u64, key: &[u8]) -> flotilla_raftstore::ResponseReceiver {
    c.request(node, 1, Command::Get { key: key.to_vec() })
}

/// A 3-node cluster of one range whose leader holds the lease, with `k = v1`.
fn leaseholder(seed: u64, quiet: bool) -> (Cluster, u64) {
    let mut c = Cluster::with_config(
        3,
        flotilla_raftstore::local::even_ranges(1, 3),
        seed,
        config(),
    );
    let leader = c.wait_leader(1, 100).expect("a leader");
    c.put(b"k", b"v1").unwrap();
    assert_eq!(c.get(b"k").unwrap(), Some(b"v1".to_vec()));
    if quiet {
        for _ in 0..300 {
            if c.node_ids()
                .into_iter()
                .all(|n| c.store(n).quiesced_count() == 1)
            {
                break;
            }
            c.tick();
        }
        assert!(
            c.node_ids()
                .into_iter()
                .all(|n| c.store(n).quiesced_count() == 1),
            "the range quiesced"
        );
    }
    let leader = c.leader_of(1).unwrap_or(leader);
    assert!(
        c.store(leader).has_lease(1),
        "the leader holds the lease before the freeze"
    );
    (c, leader)
}

/// Freezes `old`, lets the others elect and write `k = v2`, queues a read of `k` at
/// `old`, wakes it and returns the read's answer.
fn read_after_freeze(c: &mut Cluster, old: u64) -> Result<Response, CallError> {
    c.stall(old);
    let new = c
        .wait_leader_except(1, Some(old), 300)
        .expect("the others elect a leader while it is frozen");
    let mut put = c.request(
        new,
        1,
        Command::Put {
            key: b"k".to_vec(),
            value: b"v2".to_vec(),
        },
    );
    assert!(
        matches!(c.wait_answer(&mut put, 100), Ok(Response::Done)),
        "the new leader acknowledges v2"
    );
    let mut read = get_at(c, old, b"k");
    let caught_up = StoreMetrics::get(&c.store(old).metrics().ticks_caught_up);
    c.resume(old);
    assert!(
        StoreMetrics::get(&c.store(old).metrics().ticks_caught_up) > caught_up,
        "the woken store catches up the ticks it missed"
    );
    c.wait_answer(&mut read, 100)
}

fn assert_not_stale(answer: Result<Response, CallError>) {
    match answer {
        Ok(Response::Value(Some(v))) => {
            assert_eq!(v, b"v2", "stale read: v2 was acknowledged before the read")
        }
        Ok(other) => panic!("unexpected answer {other:?}"),
        Err(e) => assert!(
            e.is_failure_or_unknown(),
            "a read that cannot be served fails retryably: {e:?}"
        ),
    }
}

#[test]
fn a_frozen_leaseholder_wakes_without_serving_a_stale_read_under_a_quorum_round_lease() {
    for seed in 1..6 {
        let (mut c, old) = leaseholder(seed, false);
        assert_not_stale(read_after_freeze(&mut c, old));
    }
}

#[test]
fn a_frozen_leaseholder_of_a_quiesced_range_wakes_without_serving_a_stale_read() {
    for seed in 6..11 {
        let (mut c, old) = leaseholder(seed, true);
        assert_not_stale(read_after_freeze(&mut c, old));
    }
}

#[test]
fn after_waking_the_old_leaseholder_holds_no_lease_and_the_cluster_reads_the_new_value() {
    let (mut c, old) = leaseholder(11, true);
    assert_not_stale(read_after_freeze(&mut c, old));
    assert!(
        !c.store(old).has_lease(1) || c.leader_of(1) == Some(old),
        "no lease without leadership"
    );
    c.ticks(30);
    for node in c.node_ids() {
        let holders: Vec<u64> = c
            .node_ids()
            .into_iter()
            .filter(|n| c.store(*n).has_lease(1))
            .collect();
        assert!(holders.len() <= 1, "two leaseholders at once: {holders:?}");
        let mut rx = get_at(&mut c, node, b"k");
        if let Ok(Response::Value(v)) = c.wait_answer(&mut rx, 50) {
            assert_eq!(
                v,
                Some(b"v2".to_vec()),
                "node {node} reads the newest value"
            );
        }
    }
}

#[test]
fn a_frozen_follower_wakes_and_keeps_the_lease_safe() {
    // A follower frozen mid-support: when it wakes, messages queued from before the
    // freeze must not let it vote against the lease it promised (or promise support it
    // no longer gives). The leader keeps serving only values that are current.
    let (mut c, leader) = leaseholder(12, true);
    let follower = c.node_ids().into_iter().find(|n| *n != leader).unwrap();
    c.stall(follower);
    c.ticks(40);
    c.put(b"k", b"v2").unwrap();
    c.resume(follower);
    c.ticks(20);
    let leader = c.leader_of(1).unwrap();
    let mut rx = get_at(&mut c, leader, b"k");
    assert_eq!(
        c.wait_answer(&mut rx, 50),
        Ok(Response::Value(Some(b"v2".to_vec())))
    );
    let holders: Vec<u64> = c
        .node_ids()
        .into_iter()
        .filter(|n| c.store(*n).has_lease(1))
        .collect();
    assert!(holders.len() <= 1, "two leaseholders at once: {holders:?}");
}
