//! Crashes at every step of a membership change, through fault points: applying a simple
//! change (adding the learner, removing the demoted one), entering the joint
//! configuration, leaving it, and installing the new learner's snapshot (before its state
//! is written, and between that write and the ingestion of its file). The first node
//! to reach the point crashes; it restarts; the change is asked for again and finishes.
//! Nothing acknowledged is lost, replicas agree, and the removed node holds nothing.
//! (Fault points are global to the process: this file is one test.)

use flotilla_raftstore::StoreConfig;
use flotilla_tests::{harness_config, Cluster};

const POINTS: [&str; 5] = [
    "raftstore::apply_simple_conf_change",
    "raftstore::apply_enter_joint",
    "raftstore::apply_leave_joint",
    "raftstore::before_snapshot_apply",
    // After the synced write that cleared the span and recorded the snapshot's state,
    // before its file is ingested: the restart finishes the ingestion (`snap::recover`).
    "raftstore::before_snapshot_ingest",
];

fn crash_during_change(point: &str, seed: u64) {
    let cfg = StoreConfig {
        sync_log: true,
        ..harness_config()
    };
    let mut c = Cluster::with_config(3, flotilla_raftstore::local::even_ranges(1, 3), seed, cfg);
    let leader = c.wait_leader(1, 60).unwrap();
    let mut acked = Vec::new();
    for i in 0..300u32 {
        let (k, v) = (
            format!("k-{i:04}").into_bytes(),
            format!("v{i}").into_bytes(),
        );
        c.put(&k, &v).unwrap();
        acked.push((k, v));
    }
    let n4 = c.add_node();
    let gone = [1, 2, 3].into_iter().find(|n| *n != leader).unwrap();
    fail::cfg(point, "1*return").unwrap();
    let first = c.change_replicas(1, &[n4], &[gone]);
    fail::remove(point);
    let crashed: Vec<u64> = c
        .node_ids()
        .into_iter()
        .filter(|n| !c.is_running(*n))
        .collect();
    assert!(
        !crashed.is_empty() || first.is_ok(),
        "{point}: nothing crashed and the change failed: {first:?}"
    );
    eprintln!(
        "{point}: first attempt {:?}, crashed {crashed:?}",
        first.as_ref().map(|d| d.epoch())
    );
    for n in crashed {
        c.start(n);
    }
    let desc = c
        .change_replicas(1, &[n4], &[gone])
        .unwrap_or_else(|e| panic!("{point}: the repeat failed: {e:?}"));
    assert!(
        desc.replica_on(gone).is_none() && desc.replica_on(n4).is_some(),
        "{point}: {desc:?}"
    );
    for _ in 0..300 {
        if c.store(gone).peer(1).is_none() {
            break;
        }
        c.tick();
    }
    assert!(
        c.store(gone).peer(1).is_none(),
        "{point}: the removed replica was destroyed"
    );
    for (k, v) in &acked {
        assert_eq!(
            c.get(k).unwrap().as_deref(),
            Some(v.as_slice()),
            "{point}: key {k:?}"
        );
    }
    let digests = c.digests(1, 300);
    assert_eq!(digests.len(), 3, "{point}: {digests:?}");
    let d0 = *digests.values().next().unwrap();
    assert!(
        digests.values().all(|d| *d == d0),
        "{point}: replicas disagree {digests:?}"
    );
}

#[test]
fn a_crash_at_any_step_of_a_change_loses_nothing_and_the_repeat_finishes_it() {
    for (i, point) in POINTS.iter().enumerate() {
        crash_during_change(point, 40 + i as u64);
    }
}
