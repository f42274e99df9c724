//! Splits and membership changes interleaved, on the deterministic harness. Each case
//! either works or is refused with a retryable error, and says which:
//! - a split while a learner is catching up works: both halves keep the learner, the
//!   running change finishes on the left, and a change on the right finishes it there;
//! - a split while the range is joint is refused (`ConfChangeInProgress`, retryable) and
//!   works once the change is done;
//! - a change on a range that has just split works and leaves the other half alone;
//! - a change routed with the epoch from before the split is refused (`EpochNotMatch`,
//!   retryable) and works with the new one;
//! - a replica cut off across a split, or across a membership change, catches up by
//!   snapshots of the new shape.
//! After each: every acknowledged write reads back and every range's replicas agree.

use flotilla_raftstore::metapb::ReplicaRole;
use flotilla_raftstore::{Command, Error, RangeDescriptor, Response, StoreMetrics};
use flotilla_tests::filter::{Isolate, LeaveJointFrom, SnapshotsTo};
use flotilla_raftstore::keyspace::initial_ranges;
use flotilla_tests::{harness_config, CallError, Cluster};

/// The user range (range 1 is the meta range, which never splits).
const RANGE: u64 = 2;
const SPLIT: &[u8] = b"um";

type Acked = Vec<(Vec<u8>, Vec<u8>)>;

/// Writes `n` keys under `prefix` on each side of `SPLIT`, each acknowledged.
fn write(c: &mut Cluster, prefix: &str, n: u32) -> Acked {
    let mut acked = Vec::new();
    for i in 0..n {
        for side in ["a", "x"] {
            // "ua…" left of SPLIT, "ux…" right of it.
            let (k, v) = (format!("u{side}-{prefix}-{i:03}").into_bytes(), format!("v{i}").into_bytes());
            c.put(&k, &v).unwrap();
            acked.push((k, v));
        }
    }
    acked
}

fn roles(d: &RangeDescriptor) -> Vec<(u64, ReplicaRole)> {
    let mut v: Vec<_> = d.replicas.iter().map(|r| (r.node_id, r.role())).collect();
    v.sort();
    v
}

fn voters(nodes: &[u64]) -> Vec<(u64, ReplicaRole)> {
    nodes.iter().map(|n| (*n, ReplicaRole::Voter)).collect()
}

/// Every acknowledged write reads back; every range's members agree and only they hold it.
fn check(c: &mut Cluster, acked: &Acked) {
    for (k, v) in acked {
        assert_eq!(c.get(k).unwrap().as_deref(), Some(v.as_slice()), "key {k:?}");
    }
    for d in c.current_ranges() {
        let digests = c.digests(d.range_id, 300);
        let members: Vec<u64> = d.replicas.iter().map(|r| r.node_id).collect();
        assert!(digests.keys().all(|n| members.contains(n)), "range {}: held off its members {digests:?}", d.range_id);
        let first = *digests.values().next().unwrap();
        assert!(digests.values().all(|x| *x == first), "range {}: replicas disagree {digests:?}", d.range_id);
    }
}

/// Three nodes holding the meta range and one user range, `RANGE`.
fn cluster(seed: u64) -> Cluster {
    let mut c = Cluster::with_config(3, initial_ranges(1, 3), seed, harness_config());
    c.wait_leader(RANGE, 100).expect("a leader");
    c
}

/// Ticks until `cond` holds on the newest descriptor of `range_id`.
fn tick_until(c: &mut Cluster, range_id: u64, max: u64, cond: impl Fn(&RangeDescriptor) -> bool) -> RangeDescriptor {
    for _ in 0..max {
        if let Some(d) = c.descriptor(range_id).filter(|d| cond(d)) {
            return d;
        }
        c.tick();
    }
    panic!("range {range_id} never reached the state: {:?}", c.descriptor(range_id));
}

#[test]
fn a_split_while_a_learner_catches_up_works_and_both_halves_keep_the_learner() {
    let mut c = cluster(61);
    let leader = c.wait_leader(RANGE, 60).unwrap();
    let mut acked = write(&mut c, "before", 100);
    let n4 = c.add_node();
    let hold = c.add_filter(SnapshotsTo(n4));
    let mut rx = c.request(leader, RANGE, Command::ChangeReplicas { add: vec![n4], remove: vec![] });
    tick_until(&mut c, RANGE, 100, |d| d.replica_on(n4).is_some());
    let (left, right) = c.split(SPLIT).expect("a learner is no joint configuration: the split goes through");
    for d in [&left, &right] {
        assert_eq!(d.replica_on(n4).map(|r| r.role()), Some(ReplicaRole::Learner), "{d:?}");
    }
    // Both halves take writes while the learner waits: it counts for no quorum.
    acked.extend(write(&mut c, "during", 10));
    c.remove_filter(hold);
    match c.wait_answer(&mut rx, 400) {
        Ok(Response::Replicas(d)) => assert_eq!(roles(&d), voters(&[1, 2, 3, n4]), "the change finished on the left"),
        other => panic!("the change did not finish: {other:?}"),
    }
    // No job runs for the right half: its learner stays one until a change names it.
    let r = c.descriptor(right.range_id).unwrap();
    assert_eq!(r.replica_on(n4).map(|x| x.role()), Some(ReplicaRole::Learner));
    let r = c.change_replicas(right.range_id, &[n4], &[]).expect("naming the learner promotes it");
    assert_eq!(roles(&r), voters(&[1, 2, 3, n4]));
    check(&mut c, &acked);
}

#[test]
fn a_split_while_joint_is_refused_as_retryable_and_works_after_the_change() {
    let mut c = cluster(62);
    let leader = c.wait_leader(RANGE, 60).unwrap();
    let acked = write(&mut c, "k", 30);
    let n4 = c.add_node();
    let gone = [1, 2, 3].into_iter().find(|n| *n != leader).unwrap();
    let hold = c.add_filter(LeaveJointFrom(leader));
    let mut change = c.request(leader, RANGE, Command::ChangeReplicas { add: vec![n4], remove: vec![gone] });
    tick_until(&mut c, RANGE, 400, |d| d.replicas.iter().any(|r| r.role() == ReplicaRole::IncomingVoter));
    let mut split = c.request(leader, RANGE, Command::Split { split_key: SPLIT.to_vec() });
    match c.wait_answer(&mut split, 50) {
        Err(CallError::Store(e @ Error::ConfChangeInProgress { .. })) => assert!(e.is_retryable(), "{e}"),
        other => panic!("expected ConfChangeInProgress, got {other:?}"),
    }
    assert!(c.current_ranges().iter().all(|d| d.start != SPLIT), "nothing split");
    c.remove_filter(hold);
    assert!(matches!(c.wait_answer(&mut change, 300), Ok(Response::Replicas(_))));
    let (left, right) = c.split(SPLIT).expect("the retry works once the change is done");
    let kept: Vec<u64> = [1, 2, 3, n4].into_iter().filter(|n| *n != gone).collect();
    assert_eq!((roles(&left), roles(&right)), (voters(&kept), voters(&kept)));
    check(&mut c, &acked);
}

#[test]
fn a_change_on_a_range_that_just_split_works_and_leaves_the_other_half_alone() {
    let mut c = cluster(63);
    c.wait_leader(RANGE, 60).unwrap();
    let mut acked = write(&mut c, "k", 30);
    let n4 = c.add_node();
    let (left, right) = c.split(SPLIT).unwrap();
    let r = c.change_replicas(right.range_id, &[n4], &[1]).expect("change on the new right-hand range");
    assert_eq!(roles(&r), voters(&[2, 3, n4]));
    let l = c.descriptor(left.range_id).unwrap();
    assert_eq!((roles(&l), l.epoch().conf_ver), (voters(&[1, 2, 3]), left.epoch().conf_ver), "left untouched");
    assert!(c.store(n4).peer(left.range_id).is_none(), "node 4 holds only the right half");
    acked.extend(write(&mut c, "after", 10));
    check(&mut c, &acked);
}

#[test]
fn a_change_with_the_epoch_from_before_a_split_is_refused_as_retryable() {
    let mut c = cluster(64);
    c.wait_leader(RANGE, 60).unwrap();
    let acked = write(&mut c, "k", 20);
    let n4 = c.add_node();
    let old = c.descriptor(RANGE).unwrap();
    c.split(SPLIT).unwrap();
    let leader = c.wait_leader(RANGE, 60).unwrap();
    let cmd = Command::ChangeReplicas { add: vec![n4], remove: vec![] };
    let mut rx = c.request_with_epoch(leader, RANGE, old.epoch(), cmd);
    match c.wait_answer(&mut rx, 50) {
        Err(CallError::Store(e @ Error::EpochNotMatch { .. })) => {
            assert!(e.is_retryable());
            let Error::EpochNotMatch { current, .. } = &e else { unreachable!() };
            assert!(current.iter().any(|d| d.range_id == RANGE && d.end == SPLIT), "the hint is the new shape: {current:?}");
        }
        other => panic!("expected EpochNotMatch, got {other:?}"),
    }
    assert!(c.descriptor(RANGE).unwrap().replica_on(n4).is_none(), "nothing changed");
    let d = c.change_replicas(RANGE, &[n4], &[]).expect("the retry with the current epoch works");
    assert_eq!(roles(&d), voters(&[1, 2, 3, n4]));
    check(&mut c, &acked);
}

#[test]
fn a_replica_cut_off_across_a_split_catches_up_both_halves_by_snapshot() {
    let mut c = cluster(65);
    let leader = c.wait_leader(RANGE, 60).unwrap();
    let away = [1, 2, 3].into_iter().find(|n| *n != leader).unwrap();
    let mut acked = write(&mut c, "before", 20);
    let cut = c.add_filter(Isolate(away));
    let before = StoreMetrics::get(&c.store(away).metrics().snapshots_applied);
    let (_, right) = c.split(SPLIT).unwrap();
    acked.extend(write(&mut c, "after", 280)); // each half past the lag a log is kept for
    c.remove_filter(cut);
    acked.extend(write(&mut c, "healed", 5));
    check(&mut c, &acked);
    assert!(c.store(away).peer(right.range_id).is_some(), "the right half reached the cut-off node");
    assert!(StoreMetrics::get(&c.store(away).metrics().snapshots_applied) > before, "by snapshot");
}

#[test]
fn a_replica_cut_off_across_a_membership_change_catches_up_by_a_snapshot_of_the_new_configuration() {
    let mut c = cluster(66);
    let leader = c.wait_leader(RANGE, 60).unwrap();
    let mut others = [1, 2, 3].into_iter().filter(|n| *n != leader);
    let (away, gone) = (others.next().unwrap(), others.next().unwrap());
    let mut acked = write(&mut c, "before", 20);
    let n4 = c.add_node();
    let cut = c.add_filter(Isolate(away));
    let before = StoreMetrics::get(&c.store(away).metrics().snapshots_applied);
    // Both halves of the joint step have a majority without the cut-off node.
    let d = c.change_replicas(RANGE, &[n4], &[gone]).unwrap();
    assert_eq!(roles(&d), voters(&{
        let mut v = vec![leader, away, n4];
        v.sort();
        v
    }));
    acked.extend(write(&mut c, "after", 150)); // 300 entries: past the lag a log is kept for
    c.remove_filter(cut);
    let newest = c.descriptor(RANGE).unwrap();
    for _ in 0..300 {
        if c.store(away).peer(RANGE).is_some_and(|p| p.descriptor().epoch() == newest.epoch()) {
            break;
        }
        c.tick();
    }
    assert_eq!(c.store(away).peer(RANGE).map(|p| p.descriptor().epoch()), Some(newest.epoch()), "caught up to the new shape");
    assert!(StoreMetrics::get(&c.store(away).metrics().snapshots_applied) > before, "by snapshot");
    for _ in 0..300 {
        if c.store(gone).peer(RANGE).is_none() {
            break;
        }
        c.tick();
    }
    assert!(c.store(gone).peer(RANGE).is_none(), "the removed replica was destroyed");
    check(&mut c, &acked);
}
