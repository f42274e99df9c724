//! Crashes in the middle of a round, through fault points: before the Raft log write,
//! right after it (before anyone is answered), and before the apply-state write. Whatever
//! was acknowledged survives, and replicas agree after restart.

use flotilla_raftstore::local::even_ranges;
use flotilla_raftstore::StoreConfig;
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
    let cfg = StoreConfig { sync_log: true, ..harness_config() };
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
        for n in c.node_ids().into_iter().filter(|n| !c.is_running(*n)).collect::<Vec<_>>() {
            crashes += 1;
            c.start(n);
        }
    }
    assert!(crashes >= 3, "{point}: the fault point was reached ({crashes} crashes)");
    let single = acked.len();
    // Then every node at once, with a write in flight.
    fail::cfg(point, "3*return").unwrap();
    let _ = c.put(&key(next), b"all");
    fail::remove(point);
    for n in c.node_ids() {
        c.restart(n);
    }
    for (i, value) in &acked {
        assert_eq!(c.get(&key(*i)).unwrap().as_deref(), Some(value.as_slice()), "{point}: key {i}");
    }
    for r in c.ranges().to_vec() {
        let d = c.digests(r.range_id, 200);
        let first = d.values().next().copied();
        assert!(d.values().all(|x| Some(*x) == first), "{point}: range {} differs: {d:?}", r.range_id);
    }
    assert!(single > 60, "{point}: writes continued around single crashes ({single} acked)");
    eprintln!("{point}: {crashes} single crashes, {} writes acknowledged", acked.len());
}

#[test]
fn a_crash_at_any_write_point_loses_no_acknowledged_write() {
    let scenario = fail::FailScenario::setup();
    for (i, point) in POINTS.iter().enumerate() {
        crash_at(point, 50 + i as u64);
    }
    scenario.teardown();
}
