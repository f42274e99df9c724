//! Crashes in the middle of a round, through fault points: before the Raft log write,
//! right after it (before anyone is answered), and before the apply-state write. Whatever
//! was acknowledged survives, and replicas agree after restart.

use flotilla_raftstore::local::even_ranges;
use flotilla_raftstore::{Command, StoreConfig};
use flotilla_tests::{harness_config, Cluster};

const POINTS: [&str; 3] = [
    "raftstore::before_log_write",
    "raftstore::after_log_write",
    "raftstore::before_apply_write",
];

fn key(i: u32) -> Vec<u8> {
    let mut k = ((i * 40_503) as u16).to_be_bytes().to_vec();
    k.extend_from_slice(format!("-{i}").as_bytes());
    k
}

fn crash_at(point: &str, seed: u64) {
    let cfg = StoreConfig {
        sync_log: true,
        ..harness_config()
    };
    let mut c = Cluster::with_config(3, even_ranges(4, 3), seed, cfg);
    let mut acked = Vec::new();
    for i in 0..40 {
        c.put(&key(i), b"before").unwrap();
        acked.push((i, b"before".to_vec()));
    }
    let mut next = 40;
    let mut crashes = 0;
    // Three times: the next round to reach the point fails and that node crashes while
    // writes continue on the others; then it restarts.
    for _ in 0..3 {
        fail::cfg(point, "1*return").unwrap();
        for _ in 0..15 {
            if c.put(&key(next), b"during").is_ok() {
                acked.push((next, b"during".to_vec()));
            }
            next += 1;
        }
        fail::remove(point);
        for n in c
            .node_ids()
            .into_iter()
            .filter(|n| !c.is_running(*n))
            .collect::<Vec<_>>()
        {
            crashes += 1;
            c.start(n);
        }
    }
    assert!(
        crashes >= 3,
        "{point}: the fault point was reached ({crashes} crashes)"
    );
    let single = acked.len();
    // Then every node at once, with a write in flight.
    fail::cfg(point, "3*return").unwrap();
    let _ = c.put(&key(next), b"all");
    fail::remove(point);
    for n in c.node_ids() {
        c.restart(n);
    }
    for (i, value) in &acked {
        assert_eq!(
            c.get(&key(*i)).unwrap().as_deref(),
            Some(value.as_slice()),
            "{point}: key {i}"
        );
    }
    for r in c.ranges().to_vec() {
        let d = c.digests(r.range_id, 200);
        let first = d.values().next().copied();
        assert!(
            d.values().all(|x| Some(*x) == first),
            "{point}: range {} differs: {d:?}",
            r.range_id
        );
    }
    assert!(
        single > 60,
        "{point}: writes continued around single crashes ({single} acked)"
    );
    eprintln!(
        "{point}: {crashes} single crashes, {} writes acknowledged",
        acked.len()
    );
}

#[test]
fn a_crash_at_any_write_point_loses_no_acknowledged_write() {
    let scenario = fail::FailScenario::setup();
    for (i, point) in POINTS.iter().enumerate() {
        crash_at(point, 50 + i as u64);
    }
    scenario.teardown();
}

/// A leader sends its appends before its own log write (`ready.rs`), so a leader that
/// crashes right before that write has already handed the entry to its followers: they
/// persist it, elect one of themselves and commit it. The old leader, restarted without
/// the entry in its log, catches up from them instead of diverging. (Were the appends sent
/// after the write, the followers would never see the entry and the read would find
/// "before".)
#[test]
fn a_leader_crashing_before_its_log_write_has_already_replicated_the_entry() {
    let scenario = fail::FailScenario::setup();
    let cfg = StoreConfig {
        sync_log: true,
        ..harness_config()
    };
    let mut c = Cluster::with_config(3, even_ranges(1, 3), 61, cfg);
    c.put(b"k", b"before").unwrap();
    let range = c.range_of(b"k");
    let leader = c.wait_leader(range, 100).expect("a leader");
    let followers: Vec<u64> = c.node_ids().into_iter().filter(|n| *n != leader).collect();
    // Only the leader ends a round: the followers are frozen until it has crashed.
    for f in &followers {
        c.stall(*f);
    }
    fail::cfg("raftstore::before_log_write", "1*return").unwrap();
    let _lost = c.request(
        leader,
        range,
        Command::Put {
            key: b"k".to_vec(),
            value: b"after".to_vec(),
        },
    );
    c.settle();
    fail::remove("raftstore::before_log_write");
    assert!(!c.is_running(leader), "the leader crashed at its log write");
    for f in &followers {
        c.resume(*f);
    }
    let successor = c
        .wait_leader_except(range, Some(leader), 100)
        .expect("the followers elect a leader");
    assert!(followers.contains(&successor));
    assert_eq!(
        c.get(b"k").unwrap().as_deref(),
        Some(&b"after"[..]),
        "the entry reached the followers"
    );
    c.start(leader);
    let d = c.digests(range, 200);
    assert_eq!(d.len(), 3, "all three replicas answer: {d:?}");
    assert!(
        d.values().all(|x| Some(x) == d.values().next()),
        "replicas agree: {d:?}"
    );
    scenario.teardown();
}
