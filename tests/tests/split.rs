//! Splits under the deterministic harness: the two halves keep every key, all replicas
//! agree, stale routes are refused with the new shape, a replica that missed the split
//! catches up through snapshots, restarts bring the same ranges back, and ranges split
//! by themselves past the size threshold.

use flotilla_raftstore::keyspace::initial_ranges;
use flotilla_raftstore::{Command, Error, StoreConfig};
use flotilla_tests::filter::{DropAll, Isolate, Select};
use flotilla_tests::{harness_config, CallError, Cluster};

fn key(i: u32) -> Vec<u8> {
    format!("u{i:05}").into_bytes()
}

/// Three nodes: the meta range (1) and one user range (2) covering all `u...` keys.
fn cluster(seed: u64, cfg: StoreConfig) -> Cluster {
    let mut c = Cluster::with_config(3, initial_ranges(1, 3), seed, cfg);
    assert!(c.wait_leader(2, 100).is_some());
    c
}

fn write_keys(c: &mut Cluster, keys: impl Iterator<Item = u32>) {
    for i in keys {
        c.put(&key(i), format!("v{i}").as_bytes()).expect("put");
    }
}

fn assert_all_readable(c: &mut Cluster, n: u32) {
    for i in 0..n {
        assert_eq!(
            c.get(&key(i)).expect("get"),
            Some(format!("v{i}").into_bytes()),
            "key {i}"
        );
    }
}

fn assert_replicas_agree(c: &mut Cluster) {
    for r in c.current_ranges() {
        let d = c.digests(r.range_id, 300);
        assert_eq!(
            d.len(),
            3,
            "range {} is not on every node: {d:?}",
            r.range_id
        );
        let first = d.values().next().copied();
        assert!(
            d.values().all(|x| Some(*x) == first),
            "range {} replicas differ: {d:?}",
            r.range_id
        );
    }
}

#[test]
fn split_divides_a_range_without_losing_keys() {
    let mut c = cluster(1, harness_config());
    write_keys(&mut c, 0..200);
    let before = c.current_ranges()[1].clone();
    let (left, right) = c.split(&key(100)).expect("split");
    assert_eq!(left.range_id, 2);
    assert_eq!(
        (left.start.as_slice(), left.end.as_slice()),
        (before.start.as_slice(), key(100).as_slice())
    );
    assert_eq!(
        (right.start.clone(), right.end.clone()),
        (key(100), before.end.clone())
    );
    assert_eq!(left.epoch().version, before.epoch().version + 1);
    assert_eq!(right.epoch(), left.epoch());
    assert_eq!(right.replicas, left.replicas);
    // The new range elects a leader and serves; the old one serves what it kept.
    assert!(c.wait_leader(right.range_id, 100).is_some());
    assert_all_readable(&mut c, 200);
    write_keys(&mut c, 200..260);
    assert_all_readable(&mut c, 260);
    assert_replicas_agree(&mut c);
    // Each half holds only its own keys.
    let leader = c.leader_of(2).unwrap();
    let mut rx = c.request(
        leader,
        2,
        Command::Scan {
            start: b"u".to_vec(),
            end: Vec::new(),
            limit: 1000,
            max_bytes: 0,
        },
    );
    match c.wait_answer(&mut rx, 50) {
        Ok(flotilla_raftstore::Response::Pairs { pairs: p, .. }) => assert_eq!(p.len(), 100),
        other => panic!("scan of the left half: {other:?}"),
    }
}

#[test]
fn a_stale_route_learns_both_halves() {
    let mut c = cluster(2, harness_config());
    write_keys(&mut c, 0..20);
    let old = c.current_ranges()[1].clone();
    let (left, right) = c.split(&key(10)).expect("split");
    let leader = c.leader_of(2).unwrap();
    let mut rx = c.request_with_epoch(leader, 2, old.epoch(), Command::Get { key: key(15) });
    match c.wait_answer(&mut rx, 20) {
        Err(CallError::Store(Error::EpochNotMatch { current, .. })) => {
            assert!(current.contains(&left), "{current:?}");
            assert!(
                current.contains(&right),
                "the range holding the key is named too: {current:?}"
            );
        }
        other => panic!("expected EpochNotMatch, got {other:?}"),
    }
    // A write routed to the left half for a key that moved right is refused.
    let mut rx = c.request(
        leader,
        2,
        Command::Put {
            key: key(15),
            value: b"x".to_vec(),
        },
    );
    assert!(matches!(
        c.wait_answer(&mut rx, 20),
        Err(CallError::Store(Error::KeyNotInRange { .. }))
    ));
    assert_eq!(c.get(&key(15)).unwrap(), Some(b"v15".to_vec()));
}

#[test]
fn restart_brings_back_the_same_ranges() {
    let mut c = cluster(3, harness_config());
    write_keys(&mut c, 0..120);
    c.split(&key(40)).expect("split");
    c.split(&key(80)).expect("second split");
    let before = c.current_ranges();
    assert_eq!(before.len(), 4);
    for n in c.node_ids() {
        c.restart(n);
    }
    for r in &before {
        assert!(
            c.wait_leader(r.range_id, 200).is_some(),
            "range {} elects after restart",
            r.range_id
        );
    }
    assert_eq!(c.current_ranges(), before);
    for n in c.node_ids() {
        let mut on_node: Vec<_> = c
            .store(n)
            .status()
            .into_iter()
            .map(|s| s.descriptor)
            .collect();
        on_node.sort_by(|a, b| a.start.cmp(&b.start));
        assert_eq!(
            on_node, before,
            "node {n} has every range with the same descriptor"
        );
    }
    assert_all_readable(&mut c, 120);
}

#[test]
fn a_follower_that_missed_the_split_catches_up_by_snapshot() {
    let mut c = cluster(4, harness_config());
    write_keys(&mut c, 0..50);
    let iso = c.add_filter(Isolate(3));
    c.ticks(30);
    let (_, right) = c.split(&key(25)).expect("split without node 3");
    // Enough writes on both halves that the logs are truncated past what node 3 has.
    write_keys(&mut c, 50..400);
    assert!(
        c.store(3).peer(right.range_id).is_none(),
        "node 3 has not heard of the split"
    );
    c.remove_filter(iso);
    c.ticks(100);
    let on3 = c
        .store(3)
        .peer(right.range_id)
        .expect("node 3 has the new range");
    assert_eq!(on3.descriptor(), &c.current_ranges()[2]);
    assert_replicas_agree(&mut c);
    c.stop(1);
    c.stop(2);
    c.start(1);
    assert_all_readable(&mut c, 400);
}

#[test]
fn a_replica_hearing_from_the_new_range_first_waits_for_the_split() {
    let mut c = cluster(5, harness_config());
    write_keys(&mut c, 0..60);
    // Node 3 hears nothing of range 2 (so never applies the split) but everything else.
    let hold = c.add_filter(Select {
        select: |e: &flotilla_raftstore::RaftEnvelope| e.range_id == 2 && e.to.node_id == 3,
        inner: Box::new(DropAll),
    });
    c.ticks(10);
    let (_, right) = c.split(&key(30)).expect("split");
    write_keys(&mut c, 30..60);
    c.ticks(60);
    // Node 3 created the new range from its messages, but may not install a snapshot
    // over keys its own (stale) range 2 still holds.
    let uninit = c
        .store(3)
        .peer(right.range_id)
        .expect("created from a message");
    assert!(uninit.descriptor().start.is_empty() && uninit.descriptor().end.is_empty());
    assert!(c
        .store(3)
        .status()
        .iter()
        .all(|s| s.descriptor.range_id != right.range_id));
    c.remove_filter(hold);
    c.ticks(100);
    assert_eq!(
        c.store(3).peer(right.range_id).unwrap().descriptor(),
        &c.current_ranges()[2]
    );
    assert_replicas_agree(&mut c);
}

#[test]
fn ranges_split_by_themselves_past_the_threshold() {
    let cfg = StoreConfig {
        split_size: 4 << 10,
        split_check_ticks: 2,
        ..harness_config()
    };
    let mut c = cluster(6, cfg);
    for i in 0..600u32 {
        c.put(&key(i), &[b'x'; 100]).expect("put");
        if i % 50 == 0 {
            c.ticks(3);
        }
    }
    c.ticks(50);
    let ranges = c.current_ranges();
    // 600 * ~106 bytes over 4 KiB ranges: many splits, each range at most the threshold
    // plus what arrived between checks.
    assert!(ranges.len() >= 8, "only {} ranges", ranges.len());
    for w in ranges.windows(2) {
        assert_eq!(w[0].end, w[1].start, "ranges tile the key space");
    }
    for i in 0..600 {
        assert_eq!(
            c.get(&key(i)).unwrap().map(|v| v.len()),
            Some(100),
            "key {i}"
        );
    }
    assert_replicas_agree(&mut c);
}
