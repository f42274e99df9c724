//! Membership changes and splits interleaved on the deterministic harness, each case
//! pinned to the step of the change job (learner → wait for catch-up → joint → leave →
//! remove) the split meets. Each one either works or is refused with a retryable error,
//! and the test says which:
//! - a split while the job waits for its learner's snapshot works: both halves list the
//!   learner (same replica id, same epoch), the right half serves writes while the
//!   parent's job still runs, the job finishes on the left only, and the right half's
//!   learner stays one until a change on that range promotes or removes it — two jobs,
//!   one per half, can run side by side;
//! - a stale snapshot of the parent reaching that learner after it installed the right
//!   half is refused (its span overlaps), and a fresh one of the left half follows;
//! - a split between leave-joint and the removal of the demoted learner (the leader
//!   lost in between) works: both halves list the removed node as a learner, the
//!   repeated change finishes on the left only, and that node keeps the right half's data
//!   until the same change is made on the right half;
//! - a split while the range is joint is refused at proposal with
//!   `ConfChangeInProgress` (retryable); one proposed just before the joint step applied
//!   fails at apply with `EpochNotMatch` (retryable: the joint step bumped conf_ver);
//!   either way the retry after the change works;
//! - a membership step proposed just before a split applies fails its epoch check at
//!   apply (nothing changes, no conf_ver is spent) and the job re-proposes it under the
//!   new epoch: the change lands on the left half only;
//! - a change on a range that has just split works and leaves the other half alone;
//! - a change routed with the epoch from before a split, or a split routed with the
//!   epoch from before a change, is refused with `EpochNotMatch` (retryable), and works
//!   with the fresh epoch;
//! - a replica cut off across a split and a change of one half, or a new voter cut off
//!   from the joint step on across the rest of the change and a split, catches up by
//!   snapshots of the new shape.
//!
//! After each: every acknowledged write reads back, and every range's members agree and
//! are the only nodes holding it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use flotilla_raftstore::keyspace::initial_ranges;
use flotilla_raftstore::metapb::ReplicaRole;
use flotilla_raftstore::{
    Command, Error, RaftEnvelope, RangeDescriptor, Response, ResponseReceiver, StoreMetrics,
};
use flotilla_tests::filter::{DropAll, Isolate, LeaveJointFrom, Select, SnapshotsTo};
use flotilla_tests::{harness_config, CallError, Cluster};
use raft::prelude::{ConfChangeType, ConfChangeV2, EntryType, MessageType};

/// The user range (range 1 is the meta range, which never splits).
const RANGE: u64 = 2;
/// Where the user range is split: keys `ua…` stay left, `ux…` go right.
const SPLIT: &[u8] = b"um";

type Acked = Vec<(Vec<u8>, Vec<u8>)>;

/// Three nodes holding the meta range and one user range, `RANGE`.
fn cluster(seed: u64) -> Cluster {
    let mut c = Cluster::with_config(3, initial_ranges(1, 3), seed, harness_config());
    c.wait_leader(RANGE, 100).expect("a leader");
    c
}

/// Writes `n` keys under `prefix` on each side of `SPLIT`, each acknowledged.
fn write(c: &mut Cluster, prefix: &str, n: u32) -> Acked {
    let mut acked = write_side(c, "a", prefix, n);
    acked.extend(write_side(c, "x", prefix, n));
    acked
}

/// Writes `n` keys `u{side}-{prefix}-i`, each acknowledged.
fn write_side(c: &mut Cluster, side: &str, prefix: &str, n: u32) -> Acked {
    (0..n)
        .map(|i| {
            let (k, v) = (
                format!("u{side}-{prefix}-{i:03}").into_bytes(),
                format!("v{i}").into_bytes(),
            );
            c.put(&k, &v)
                .unwrap_or_else(|e| panic!("put {k:?}: {e:?} (seed {})", c.seed));
            (k, v)
        })
        .collect()
}

fn nodes_of(d: &RangeDescriptor) -> Vec<(u64, ReplicaRole)> {
    let mut v: Vec<_> = d.replicas.iter().map(|r| (r.node_id, r.role())).collect();
    v.sort();
    v
}

fn voters(nodes: &[u64]) -> Vec<(u64, ReplicaRole)> {
    let mut v: Vec<_> = nodes.iter().map(|n| (*n, ReplicaRole::Voter)).collect();
    v.sort();
    v
}

fn is_joint(d: &RangeDescriptor) -> bool {
    d.replicas.iter().any(|r| {
        matches!(
            r.role(),
            ReplicaRole::IncomingVoter | ReplicaRole::DemotingVoter
        )
    })
}

/// Every acknowledged write reads back; every current range's replicas agree, and only
/// its members (voters and learners) hold it.
fn check(c: &mut Cluster, acked: &Acked) {
    for (k, v) in acked {
        assert_eq!(
            c.get(k).unwrap().as_deref(),
            Some(v.as_slice()),
            "key {k:?}"
        );
    }
    let ranges = c.current_ranges();
    for w in ranges.windows(2) {
        assert_eq!(
            w[0].end, w[1].start,
            "ranges tile the key space: {ranges:?}"
        );
    }
    for d in ranges {
        let digests = c.digests(d.range_id, 300);
        let mut holders: Vec<u64> = digests.keys().copied().collect();
        let mut members: Vec<u64> = d.replicas.iter().map(|r| r.node_id).collect();
        holders.sort();
        members.sort();
        assert_eq!(
            holders,
            members,
            "range {}: held by {digests:?}, members {:?}",
            d.range_id,
            nodes_of(&d)
        );
        let first = *digests.values().next().unwrap();
        assert!(
            digests.values().all(|x| *x == first),
            "range {}: replicas disagree {digests:?}",
            d.range_id
        );
    }
}

/// Ticks until `cond` holds on the cluster (at most `max` ticks).
fn tick_until(c: &mut Cluster, max: u64, what: &str, cond: impl Fn(&Cluster) -> bool) {
    for _ in 0..max {
        if cond(c) {
            return;
        }
        c.tick();
    }
    assert!(
        cond(c),
        "never happened within {max} ticks: {what} (seed {})",
        c.seed
    );
}

/// The request has not been answered yet (a job still running).
fn assert_pending(rx: &mut ResponseReceiver, what: &str) {
    use tokio::sync::oneshot::error::TryRecvError;
    match rx.try_recv() {
        Err(TryRecvError::Empty) => {}
        other => panic!("{what}: expected no answer yet, got {other:?}"),
    }
}

/// True when node `n` hosts an initialized replica of `range_id`.
fn hosts(c: &Cluster, n: u64, range_id: u64) -> bool {
    c.store(n)
        .status()
        .iter()
        .any(|s| s.descriptor.range_id == range_id)
}

/// The keys of `d`'s span on node `n`'s engine.
fn keys_on(c: &Cluster, n: u64, d: &RangeDescriptor) -> usize {
    let mut count = 0;
    c.store(n)
        .engine()
        .scan(
            flotilla_engine::Cf::Data,
            &d.start,
            &d.end_bound(),
            |_, _| {
                count += 1;
                true
            },
        )
        .unwrap();
    count
}

fn snapshots_applied(c: &Cluster, n: u64) -> u64 {
    StoreMetrics::get(&c.store(n).metrics().snapshots_applied)
}

/// Sends a split of `RANGE` at `SPLIT` to its leader once, without retrying: the answer
/// of the first attempt.
fn split_once(
    c: &mut Cluster,
    epoch: Option<flotilla_raftstore::Epoch>,
) -> Result<Response, CallError> {
    let leader = c.wait_leader(RANGE, 100).expect("a leader");
    let cmd = Command::Split {
        split_key: SPLIT.to_vec(),
    };
    let mut rx = match epoch {
        Some(e) => c.request_with_epoch(leader, RANGE, e, cmd),
        None => c.request(leader, RANGE, cmd),
    };
    c.wait_answer(&mut rx, 100)
}

/// The entries of a Raft message include an explicit enter-joint `ConfChangeV2`.
fn carries_enter_joint(env: &RaftEnvelope) -> bool {
    use protobuf::Message as _;
    env.message.entries.iter().any(|e| {
        e.get_entry_type() == EntryType::EntryConfChangeV2
            && ConfChangeV2::parse_from_bytes(&e.data).is_ok_and(|cc| cc.enter_joint().is_some())
    })
}

// ---------------------------------------------------------------------------------------
// Scenarios 1 and 6: a split while the job waits for its learner.
// ---------------------------------------------------------------------------------------

#[test]
fn a_split_while_the_learner_waits_for_its_snapshot_works_and_the_right_half_keeps_the_learner() {
    let mut c = cluster(71);
    let leader = c.leader_of(RANGE).unwrap();
    let mut acked = write(&mut c, "before", 100); // 200 entries: the log is truncated
    let n4 = c.add_node();
    let parent = c.descriptor(RANGE).unwrap();
    let learner_id = parent.next_replica_id();
    // Snapshots to node 4 are held back: its learner cannot catch up, so the job sits
    // at WaitForLearner.
    let hold = c.add_filter(SnapshotsTo(n4));
    let started = c.now();
    let mut change = c.request(
        leader,
        RANGE,
        Command::ChangeReplicas {
            add: vec![n4],
            remove: vec![],
        },
    );
    tick_until(&mut c, 100, "the learner is added", |c| {
        c.descriptor(RANGE).unwrap().replica_on(n4).is_some()
    });
    c.ticks(20);
    let at = c.descriptor(RANGE).unwrap();
    assert_eq!(
        at.replica_on(n4).map(|r| (r.replica_id, r.role())),
        Some((learner_id, ReplicaRole::Learner))
    );
    assert_eq!(
        at.epoch().conf_ver,
        parent.epoch().conf_ver + 1,
        "one step: the learner"
    );
    assert_pending(&mut change, "the change waits for its learner");
    assert!(!hosts(&c, n4, RANGE), "the learner has no data yet");

    // The split: a learner is no joint configuration, so the first attempt works.
    let (left, right) = match split_once(&mut c, None) {
        Ok(Response::Split { left, right }) => (left, right),
        other => panic!("a split at WaitForLearner: expected it to work, got {other:?}"),
    };
    for d in [&left, &right] {
        assert_eq!(
            nodes_of(d),
            vec![
                (1, ReplicaRole::Voter),
                (2, ReplicaRole::Voter),
                (3, ReplicaRole::Voter),
                (n4, ReplicaRole::Learner)
            ]
        );
        assert_eq!(
            d.replica_on(n4).unwrap().replica_id,
            learner_id,
            "the right half's learner is the same Raft peer id"
        );
        assert_eq!(d.epoch().version, at.epoch().version + 1, "{d:?}");
        assert_eq!(
            d.epoch().conf_ver,
            at.epoch().conf_ver,
            "a split spends no conf_ver: {d:?}"
        );
        assert_eq!(d.next_replica_id(), at.next_replica_id(), "{d:?}");
    }
    assert_eq!(
        (left.end.as_slice(), right.start.as_slice()),
        (SPLIT, SPLIT)
    );

    // Scenario 6: the right half elects and takes writes while the parent's job is still
    // waiting (the learner counts for no quorum of either half).
    c.wait_leader(right.range_id, 100)
        .expect("the right half elects");
    acked.extend(write(&mut c, "during", 10));
    assert_pending(
        &mut change,
        "the parent's change still waits for its learner",
    );
    let r = c.descriptor(right.range_id).unwrap();
    assert_eq!(
        (nodes_of(&r), r.epoch()),
        (nodes_of(&right), right.epoch()),
        "the right half is unchanged meanwhile"
    );
    assert!(
        !hosts(&c, n4, RANGE) && !hosts(&c, n4, right.range_id),
        "node 4 holds neither half yet"
    );
    assert!(
        c.now() - started < c.store(leader).config().change_timeout_ticks,
        "still inside the job's timeout"
    );

    // Release: the job finishes, on the left half only (the descriptor it answers with).
    c.remove_filter(hold);
    let done = match c.wait_answer(&mut change, 300) {
        Ok(Response::Replicas(d)) => d,
        other => panic!("the change did not finish: {other:?}"),
    };
    assert_eq!(done.range_id, RANGE);
    assert_eq!(
        done.end.as_slice(),
        SPLIT,
        "the answer is the left half's descriptor"
    );
    assert_eq!(nodes_of(&done), voters(&[1, 2, 3, n4]));
    assert_eq!(
        done.epoch().conf_ver,
        at.epoch().conf_ver + 2,
        "joint, leave"
    );
    assert_eq!(done.epoch().version, left.epoch().version);
    // No job runs for the right half: node 4 catches up there (by snapshot) and stays a
    // learner.
    tick_until(&mut c, 200, "node 4 holds the right half", |c| {
        hosts(c, n4, right.range_id)
    });
    let r = c.descriptor(right.range_id).unwrap();
    assert_eq!(
        r.replica_on(n4).map(|x| x.role()),
        Some(ReplicaRole::Learner),
        "{r:?}"
    );
    assert_eq!(
        r.epoch(),
        right.epoch(),
        "the right half's configuration did not move"
    );
    assert_eq!(c.store(n4).peer(right.range_id).unwrap().descriptor(), &r);
    assert!(snapshots_applied(&c, n4) >= 2, "one snapshot per half");
    check(&mut c, &acked);

    // A change on the right half removes its learner (one step: it is a learner already).
    let r2 = c
        .change_replicas(right.range_id, &[], &[n4])
        .expect("removing the right half's learner");
    assert_eq!(nodes_of(&r2), voters(&[1, 2, 3]));
    assert_eq!(
        r2.epoch().conf_ver,
        r.epoch().conf_ver + 1,
        "just the removal"
    );
    tick_until(&mut c, 100, "node 4 destroys its right replica", |c| {
        c.store(n4).peer(right.range_id).is_none()
    });
    assert_eq!(keys_on(&c, n4, &r2), 0, "its data went with it");
    assert!(hosts(&c, n4, RANGE), "node 4 keeps the left half");
    acked.extend(write(&mut c, "after", 10));
    check(&mut c, &acked);
}

#[test]
fn after_a_split_mid_change_each_half_runs_its_own_job_and_both_promote_the_learner() {
    let mut c = cluster(72);
    let leader = c.leader_of(RANGE).unwrap();
    let mut acked = write(&mut c, "before", 100);
    let n4 = c.add_node();
    let hold = c.add_filter(SnapshotsTo(n4));
    let mut left_job = c.request(
        leader,
        RANGE,
        Command::ChangeReplicas {
            add: vec![n4],
            remove: vec![],
        },
    );
    tick_until(&mut c, 100, "the learner is added", |c| {
        c.descriptor(RANGE).unwrap().replica_on(n4).is_some()
    });
    let (left, right) = c.split(SPLIT).expect("split at WaitForLearner");
    assert_eq!(
        right.replica_on(n4).map(|r| r.role()),
        Some(ReplicaRole::Learner)
    );
    // The left half's job is still the parent's: another change there is refused...
    let l_leader = c.wait_leader(RANGE, 100).unwrap();
    let mut other = c.request(
        l_leader,
        RANGE,
        Command::ChangeReplicas {
            add: vec![],
            remove: vec![3],
        },
    );
    match c.wait_answer(&mut other, 5) {
        Err(CallError::Store(e @ Error::ConfChangeInProgress { .. })) => assert!(e.is_retryable()),
        other => {
            panic!("a second change on the left half: expected ConfChangeInProgress, got {other:?}")
        }
    }
    // ...but the right half has no job: a change naming its learner starts one there.
    let r_leader = c.wait_leader(right.range_id, 100).unwrap();
    let mut right_job = c.request(
        r_leader,
        right.range_id,
        Command::ChangeReplicas {
            add: vec![n4],
            remove: vec![],
        },
    );
    c.ticks(10);
    assert_pending(&mut left_job, "left job waits for the learner");
    assert_pending(&mut right_job, "right job waits for the learner");
    acked.extend(write(&mut c, "during", 5));
    c.remove_filter(hold);
    for (rx, d) in [(&mut left_job, &left), (&mut right_job, &right)] {
        match c.wait_answer(rx, 300) {
            Ok(Response::Replicas(done)) => {
                assert_eq!(
                    (done.range_id, &done.start, &done.end),
                    (d.range_id, &d.start, &d.end)
                );
                assert_eq!(
                    nodes_of(&done),
                    voters(&[1, 2, 3, n4]),
                    "range {}",
                    d.range_id
                );
                assert_eq!(
                    done.epoch().conf_ver,
                    d.epoch().conf_ver + 2,
                    "joint, leave: range {}",
                    d.range_id
                );
            }
            other => panic!("range {}: the change did not finish: {other:?}", d.range_id),
        }
    }
    acked.extend(write(&mut c, "after", 10));
    check(&mut c, &acked);
}

#[test]
fn a_stale_pre_split_snapshot_reaching_the_learner_after_its_right_half_is_refused_and_a_fresh_one_follows(
) {
    use prost::Message as _;
    let mut c = cluster(82);
    let leader = c.leader_of(RANGE).unwrap();
    let mut acked = write(&mut c, "before", 100);
    let n4 = c.add_node();
    // Snapshots of the parent range to node 4 are caught (and kept); the right half's
    // snapshots pass.
    let caught: Arc<Mutex<Vec<RaftEnvelope>>> = Arc::default();
    let keep = caught.clone();
    let hold = c.add_filter(Select {
        select: move |e: &RaftEnvelope| {
            let hit = e.range_id == RANGE
                && e.to.node_id == n4
                && e.message.get_msg_type() == MessageType::MsgSnapshot;
            if hit {
                keep.lock().unwrap().push(e.clone());
            }
            hit
        },
        inner: Box::new(DropAll),
    });
    let mut change = c.request(
        leader,
        RANGE,
        Command::ChangeReplicas {
            add: vec![n4],
            remove: vec![],
        },
    );
    tick_until(
        &mut c,
        100,
        "a snapshot of the parent is sent to node 4",
        |_| !caught.lock().unwrap().is_empty(),
    );
    let stale = caught.lock().unwrap()[0].clone();
    // Its files reach node 4 now (as a slow transport would have them), the message later.
    let (from, to) = (
        c.store(leader).snapshots().root().to_path_buf(),
        c.store(n4).snapshots().root().to_path_buf(),
    );
    flotilla_raftstore::snap::copy(&from, &to, RANGE, stale.message.get_snapshot())
        .expect("copy the snapshot's files");
    let data =
        flotilla_raftstore::metapb::SnapshotData::decode(stale.message.get_snapshot().get_data())
            .unwrap();
    let shape = data.descriptor.unwrap();
    assert!(
        shape.end.is_empty() && shape.replica_on(n4).is_some(),
        "a snapshot of the whole parent, with the learner: {shape:?}"
    );

    let (_, right) = c.split(SPLIT).expect("split at WaitForLearner");
    tick_until(&mut c, 100, "node 4 installs the right half", |c| {
        hosts(c, n4, right.range_id)
    });
    let right_keys = keys_on(&c, n4, &right);
    assert!(right_keys > 0);
    assert!(!hosts(&c, n4, RANGE));
    // The stale snapshot arrives, its files here: its span overlaps the right half that
    // node 4 now holds, so it is refused, not installed over it.
    assert!(
        c.store(n4)
            .snapshots()
            .is_received(RANGE, stale.message.get_snapshot()),
        "refused for its span, not its files"
    );
    let dropped = StoreMetrics::get(&c.store(n4).metrics().messages_dropped);
    c.store_mut(n4).on_raft_messages(vec![stale]);
    c.settle();
    assert_eq!(
        StoreMetrics::get(&c.store(n4).metrics().messages_dropped),
        dropped + 1,
        "the stale snapshot was refused"
    );
    assert!(!hosts(&c, n4, RANGE), "not installed");
    assert_eq!(
        keys_on(&c, n4, &right),
        right_keys,
        "the right half on node 4 is untouched"
    );
    // Released, the leader sends a snapshot of the left half as it is now.
    c.remove_filter(hold);
    match c.wait_answer(&mut change, 300) {
        Ok(Response::Replicas(d)) => assert_eq!(
            (nodes_of(&d), d.end.as_slice()),
            (voters(&[1, 2, 3, n4]), SPLIT)
        ),
        other => panic!("the change did not finish: {other:?}"),
    }
    assert_eq!(
        c.store(n4).peer(RANGE).unwrap().descriptor().end.as_slice(),
        SPLIT,
        "node 4 got the left half's shape"
    );
    acked.extend(write(&mut c, "after", 10));
    check(&mut c, &acked);
}

#[test]
fn a_split_between_leave_joint_and_the_removal_leaves_the_removed_node_a_learner_of_the_right_half()
{
    let mut c = cluster(81);
    let leader = c.leader_of(RANGE).unwrap();
    let mut acked = write(&mut c, "k", 30);
    let n4 = c.add_node();
    let gone = [1, 2, 3].into_iter().find(|n| *n != leader).unwrap();
    // The leader's last step (remove `gone`'s demoted learner) never leaves it...
    let removes = |e: &RaftEnvelope| {
        use protobuf::Message as _;
        e.message.entries.iter().any(|e| {
            e.get_entry_type() == EntryType::EntryConfChangeV2
                && ConfChangeV2::parse_from_bytes(&e.data).is_ok_and(|cc| {
                    cc.changes
                        .iter()
                        .any(|s| s.get_change_type() == ConfChangeType::RemoveNode)
                })
        })
    };
    let hold = c.add_filter(Select {
        select: move |e: &RaftEnvelope| e.from.node_id == leader && removes(e),
        inner: Box::new(DropAll),
    });
    let mut change = c.request(
        leader,
        RANGE,
        Command::ChangeReplicas {
            add: vec![n4],
            remove: vec![gone],
        },
    );
    let demoted = |c: &Cluster, n: u64| {
        c.store(n).peer(RANGE).is_some_and(|p| {
            p.descriptor()
                .replica_on(gone)
                .is_some_and(|r| r.role() == ReplicaRole::Learner)
        })
    };
    tick_until(
        &mut c,
        300,
        "every replica has left the joint configuration",
        |c| [1, 2, 3, n4].iter().all(|n| demoted(c, *n)),
    );
    // ...and then it is cut off: the others elect a leader whose log never had it.
    let cut = c.add_filter(Isolate(leader));
    let answer = c.wait_answer(&mut change, 100);
    assert!(
        matches!(&answer, Err(e) if e.is_failure_or_unknown()),
        "the cut-off leader cannot finish: {answer:?}"
    );
    let new_leader = c
        .wait_leader_except(RANGE, Some(leader), 200)
        .expect("a new leader");
    let d = c.descriptor(RANGE).unwrap();
    assert!(
        !is_joint(&d) && d.replica_on(gone).unwrap().role() == ReplicaRole::Learner,
        "{d:?}"
    );
    // A split now: not joint, so it works; both halves list `gone` as a learner.
    let (left, right) = match split_once(&mut c, None) {
        Ok(Response::Split { left, right }) => (left, right),
        other => panic!("a split at new leader {new_leader} before the removal: {other:?}"),
    };
    for h in [&left, &right] {
        assert_eq!(
            h.replica_on(gone).map(|r| r.role()),
            Some(ReplicaRole::Learner),
            "{h:?}"
        );
    }
    c.remove_filter(hold);
    c.remove_filter(cut);
    // The router's repeat of the change finishes it — on the left half only.
    let l = c
        .change_replicas(RANGE, &[n4], &[gone])
        .expect("the repeat finishes the change");
    let kept: Vec<u64> = [1, 2, 3, n4].into_iter().filter(|n| *n != gone).collect();
    assert_eq!((nodes_of(&l), l.end.as_slice()), (voters(&kept), SPLIT));
    c.ticks(10);
    let r = c.descriptor(right.range_id).unwrap();
    assert_eq!(
        r.replica_on(gone).map(|x| x.role()),
        Some(ReplicaRole::Learner),
        "no job removes it from the right half"
    );
    assert!(
        hosts(&c, gone, right.range_id) && keys_on(&c, gone, &r) > 0,
        "node {gone} still holds the right half's data"
    );
    // The same change against the right half removes it there.
    let r = c
        .change_replicas(right.range_id, &[n4], &[gone])
        .expect("the change on the right half");
    assert_eq!(nodes_of(&r), voters(&kept));
    tick_until(&mut c, 100, "the removed node destroys both halves", |c| {
        c.store(gone).peer(RANGE).is_none() && c.store(gone).peer(right.range_id).is_none()
    });
    acked.extend(write(&mut c, "after", 10));
    check(&mut c, &acked);
}

// ---------------------------------------------------------------------------------------
// Scenario 2: a split while joint.
// ---------------------------------------------------------------------------------------

#[test]
fn a_split_while_joint_is_refused_as_conf_change_in_progress_and_the_retry_works() {
    let mut c = cluster(73);
    let leader = c.leader_of(RANGE).unwrap();
    let acked = write(&mut c, "k", 30);
    let n4 = c.add_node();
    let gone = [1, 2, 3].into_iter().find(|n| *n != leader).unwrap();
    // The leader's leave-joint proposal never reaches the others: the range stays joint.
    let hold = c.add_filter(LeaveJointFrom(leader));
    let mut change = c.request(
        leader,
        RANGE,
        Command::ChangeReplicas {
            add: vec![n4],
            remove: vec![gone],
        },
    );
    tick_until(&mut c, 300, "the range is joint", |c| {
        is_joint(&c.descriptor(RANGE).unwrap())
    });
    let joint = c.descriptor(RANGE).unwrap();
    assert_eq!(
        joint.replica_on(n4).unwrap().role(),
        ReplicaRole::IncomingVoter
    );
    assert_eq!(
        joint.replica_on(gone).unwrap().role(),
        ReplicaRole::DemotingVoter
    );
    match split_once(&mut c, None) {
        Err(CallError::Store(e @ Error::ConfChangeInProgress { .. })) => {
            assert!(e.is_retryable(), "{e}");
            assert!(
                e.to_string().contains("membership change is in flight"),
                "{e}"
            );
        }
        other => panic!("a split while joint: expected ConfChangeInProgress, got {other:?}"),
    }
    let d = c.descriptor(RANGE).unwrap();
    assert_eq!(d.epoch(), joint.epoch(), "nothing split, nothing changed");
    assert!(c.current_ranges().iter().all(|r| r.start != SPLIT));
    c.remove_filter(hold);
    match c.wait_answer(&mut change, 300) {
        Ok(Response::Replicas(d)) => {
            assert!(!is_joint(&d) && d.replica_on(gone).is_none(), "{d:?}")
        }
        other => panic!("the change did not finish: {other:?}"),
    }
    let (left, right) = c
        .split(SPLIT)
        .expect("the retry works once the change is done");
    let kept: Vec<u64> = [1, 2, 3, n4].into_iter().filter(|n| *n != gone).collect();
    assert_eq!(
        (nodes_of(&left), nodes_of(&right)),
        (voters(&kept), voters(&kept))
    );
    c.ticks(5);
    assert!(
        c.store(gone).peer(RANGE).is_none() && c.store(gone).peer(right.range_id).is_none(),
        "the removed node holds neither half"
    );
    check(&mut c, &acked);
}

#[test]
fn a_split_proposed_just_before_the_joint_step_applies_fails_its_epoch_check_at_apply() {
    let mut c = cluster(74);
    let leader = c.leader_of(RANGE).unwrap();
    let mut acked = write(&mut c, "k", 30);
    let n4 = c.add_node();
    // Every message from the leader carrying the enter-joint entry is lost: the entry
    // sits uncommitted in the leader's log (the applied descriptor is not joint yet).
    let held = Arc::new(AtomicU64::new(0));
    let seen = held.clone();
    let hold = c.add_filter(Select {
        select: move |e: &RaftEnvelope| {
            let hit = e.range_id == RANGE && e.from.node_id == leader && carries_enter_joint(e);
            if hit {
                seen.fetch_add(1, Ordering::Relaxed);
            }
            hit
        },
        inner: Box::new(DropAll),
    });
    let mut change = c.request(
        leader,
        RANGE,
        Command::ChangeReplicas {
            add: vec![n4],
            remove: vec![],
        },
    );
    tick_until(&mut c, 200, "the enter-joint step is proposed", |_| {
        held.load(Ordering::Relaxed) > 0
    });
    let before = c.descriptor(RANGE).unwrap();
    assert!(!is_joint(&before), "proposed, not applied: {before:?}");
    // The split passes the proposal check (the applied descriptor is not joint) and lands
    // in the log right after the joint step.
    let mut split = c.request(
        leader,
        RANGE,
        Command::Split {
            split_key: SPLIT.to_vec(),
        },
    );
    c.ticks(3);
    assert_pending(&mut split, "the split waits behind the joint step");
    c.remove_filter(hold);
    // The split carries the epoch it was proposed under, and the joint step ahead of it
    // bumped conf_ver: it fails the epoch check at apply (before `apply_split`'s own joint
    // check could see it), on every replica alike.
    match c.wait_answer(&mut split, 100) {
        Err(CallError::Store(e @ Error::EpochNotMatch { .. })) => {
            assert!(e.is_retryable(), "{e}");
            let Error::EpochNotMatch {
                requested, current, ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(
                requested.conf_ver,
                before.epoch().conf_ver,
                "proposed under the pre-joint epoch"
            );
            assert!(
                current.iter().any(|d| d.range_id == RANGE && is_joint(d)),
                "the hint is the joint descriptor: {current:?}"
            );
        }
        other => panic!(
            "a split applied in a joint configuration: expected EpochNotMatch, got {other:?}"
        ),
    }
    assert!(
        c.current_ranges().iter().all(|r| r.start != SPLIT),
        "nothing split"
    );
    match c.wait_answer(&mut change, 300) {
        Ok(Response::Replicas(d)) => {
            assert_eq!(nodes_of(&d), voters(&[1, 2, 3, n4]));
            assert_eq!(
                d.epoch().version,
                before.epoch().version,
                "the split did not apply"
            );
        }
        other => panic!("the change did not finish: {other:?}"),
    }
    let (left, right) = c.split(SPLIT).expect("the retry works");
    assert_eq!(
        (nodes_of(&left), nodes_of(&right)),
        (voters(&[1, 2, 3, n4]), voters(&[1, 2, 3, n4]))
    );
    acked.extend(write(&mut c, "after", 10));
    check(&mut c, &acked);
}

// ---------------------------------------------------------------------------------------
// Scenario 4 (inside the log): a step proposed under the epoch a split is replacing.
// ---------------------------------------------------------------------------------------

#[test]
fn a_membership_step_proposed_just_before_a_split_applies_is_skipped_and_re_proposed_under_the_new_epoch(
) {
    let mut c = cluster(75);
    let leader = c.leader_of(RANGE).unwrap();
    let mut acked = write(&mut c, "k", 30);
    let n4 = c.add_node();
    let parent = c.descriptor(RANGE).unwrap();
    // Nothing the leader appends reaches anyone for a moment: the split and the first
    // membership step (add learner, proposed under the pre-split epoch) queue up in its
    // log in that order.
    let hold = c.add_filter(Select {
        select: move |e: &RaftEnvelope| {
            e.range_id == RANGE
                && e.from.node_id == leader
                && e.message.get_msg_type() == MessageType::MsgAppend
        },
        inner: Box::new(DropAll),
    });
    let last = c.store(leader).peer(RANGE).unwrap().last_log_index();
    let mut split = c.request(
        leader,
        RANGE,
        Command::Split {
            split_key: SPLIT.to_vec(),
        },
    );
    let mut change = c.request(
        leader,
        RANGE,
        Command::ChangeReplicas {
            add: vec![n4],
            remove: vec![],
        },
    );
    c.ticks(3);
    let now_last = c.store(leader).peer(RANGE).unwrap().last_log_index();
    assert_eq!(
        now_last,
        last + 2,
        "the split, then the learner step, both in the log under the old epoch"
    );
    assert_pending(&mut split, "held split");
    assert_pending(&mut change, "held change");
    c.remove_filter(hold);
    let (left, right) = match c.wait_answer(&mut split, 100) {
        Ok(Response::Split { left, right }) => (left, right),
        other => panic!("the split: {other:?}"),
    };
    // The learner step came after the split in the log: it failed its epoch check on
    // every replica, so neither half lists node 4.
    assert_eq!(
        (nodes_of(&left), nodes_of(&right)),
        (voters(&[1, 2, 3]), voters(&[1, 2, 3]))
    );
    assert_eq!(left.epoch().conf_ver, parent.epoch().conf_ver);
    let done = match c.wait_answer(&mut change, 300) {
        Ok(Response::Replicas(d)) => d,
        other => panic!("the change did not carry on: {other:?}"),
    };
    assert_eq!(
        (done.range_id, done.end.as_slice()),
        (RANGE, SPLIT),
        "it finished on the left half"
    );
    assert_eq!(nodes_of(&done), voters(&[1, 2, 3, n4]));
    assert_eq!(
        done.epoch().conf_ver,
        parent.epoch().conf_ver + 3,
        "learner, joint, leave: the skipped step spent none"
    );
    let r = c.descriptor(right.range_id).unwrap();
    assert_eq!(
        (nodes_of(&r), r.epoch()),
        (voters(&[1, 2, 3]), right.epoch()),
        "the right half never got node 4"
    );
    assert!(c.store(n4).peer(right.range_id).is_none());
    acked.extend(write(&mut c, "after", 10));
    check(&mut c, &acked);
}

// ---------------------------------------------------------------------------------------
// Scenario 3: a change on a range that has just split.
// ---------------------------------------------------------------------------------------

#[test]
fn a_change_on_the_right_half_right_after_the_split_works_and_leaves_the_left_alone() {
    let mut c = cluster(76);
    let leader = c.leader_of(RANGE).unwrap();
    let mut acked = write(&mut c, "k", 30);
    let n4 = c.add_node();
    let (left, right) = c.split(SPLIT).unwrap();
    // At once, with no tick in between, to the node that led the parent (its new replica
    // campaigned when the split applied): it either works there, or is refused as
    // retryable (not the leader) and the router's repeat does it.
    let mut first = c.request(
        leader,
        right.range_id,
        Command::ChangeReplicas {
            add: vec![n4],
            remove: vec![1],
        },
    );
    let r = match c.wait_answer(&mut first, 400) {
        Ok(Response::Replicas(r)) => r,
        Err(CallError::Store(e)) if e.is_retryable() => c
            .change_replicas(right.range_id, &[n4], &[1])
            .expect("the repeat of the change on the right half"),
        other => panic!("a change on the just-split right half: {other:?}"),
    };
    assert_eq!(nodes_of(&r), voters(&[2, 3, n4]));
    assert_eq!(r.epoch().version, right.epoch().version);
    assert_eq!(
        r.epoch().conf_ver,
        right.epoch().conf_ver + 4,
        "learner, joint, leave, remove"
    );
    let l = c.descriptor(left.range_id).unwrap();
    assert_eq!(
        (nodes_of(&l), l.epoch()),
        (voters(&[1, 2, 3]), left.epoch()),
        "left untouched"
    );
    tick_until(&mut c, 100, "node 1 destroys its right replica", |c| {
        c.store(1).peer(right.range_id).is_none()
    });
    assert!(hosts(&c, 1, RANGE), "node 1 keeps the left half");
    assert_eq!(keys_on(&c, 1, &r), 0, "no right-half keys left on node 1");
    assert!(
        c.store(n4).peer(RANGE).is_none(),
        "node 4 holds only the right half"
    );
    acked.extend(write(&mut c, "after", 10));
    check(&mut c, &acked);
}

// ---------------------------------------------------------------------------------------
// Scenario 4: stale epochs across a split / a change.
// ---------------------------------------------------------------------------------------

#[test]
fn a_change_routed_with_the_pre_split_epoch_gets_epoch_not_match_and_the_fresh_epoch_works() {
    let mut c = cluster(77);
    let acked = write(&mut c, "k", 20);
    let n4 = c.add_node();
    let old = c.descriptor(RANGE).unwrap();
    let (left, right) = c.split(SPLIT).unwrap();
    let leader = c.wait_leader(RANGE, 60).unwrap();
    let cmd = Command::ChangeReplicas {
        add: vec![n4],
        remove: vec![],
    };
    let mut rx = c.request_with_epoch(leader, RANGE, old.epoch(), cmd);
    match c.wait_answer(&mut rx, 50) {
        Err(CallError::Store(e @ Error::EpochNotMatch { .. })) => {
            assert!(e.is_retryable());
            let Error::EpochNotMatch {
                current, requested, ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(*requested, old.epoch());
            assert!(
                current.contains(&left),
                "the hint is the new left half: {current:?}"
            );
        }
        other => panic!("expected EpochNotMatch, got {other:?}"),
    }
    assert_eq!(c.descriptor(RANGE).unwrap(), left, "nothing changed");
    c.ticks(5);
    assert!(c.store(n4).peer(RANGE).is_none());
    let d = c
        .change_replicas(RANGE, &[n4], &[])
        .expect("the retry with the current epoch works");
    assert_eq!(nodes_of(&d), voters(&[1, 2, 3, n4]));
    assert_eq!(
        c.descriptor(right.range_id).unwrap(),
        right,
        "the right half untouched"
    );
    check(&mut c, &acked);
}

#[test]
fn a_split_routed_with_the_pre_change_epoch_gets_epoch_not_match_and_the_fresh_epoch_works() {
    let mut c = cluster(78);
    let acked = write(&mut c, "k", 20);
    let n4 = c.add_node();
    let old = c.descriptor(RANGE).unwrap();
    let changed = c.change_replicas(RANGE, &[n4], &[]).unwrap();
    assert_eq!(changed.epoch().version, old.epoch().version);
    match split_once(&mut c, Some(old.epoch())) {
        Err(CallError::Store(e @ Error::EpochNotMatch { .. })) => {
            assert!(e.is_retryable());
            let Error::EpochNotMatch { current, .. } = &e else {
                unreachable!()
            };
            assert!(
                current.contains(&changed),
                "the hint carries the new configuration: {current:?}"
            );
        }
        other => {
            panic!("a split under the pre-change epoch: expected EpochNotMatch, got {other:?}")
        }
    }
    assert!(
        c.current_ranges().iter().all(|r| r.start != SPLIT),
        "nothing split"
    );
    let (left, right) = match split_once(&mut c, None) {
        Ok(Response::Split { left, right }) => (left, right),
        other => panic!("the split with the fresh epoch: {other:?}"),
    };
    assert_eq!(
        (nodes_of(&left), nodes_of(&right)),
        (voters(&[1, 2, 3, n4]), voters(&[1, 2, 3, n4]))
    );
    assert_eq!(right.epoch().conf_ver, changed.epoch().conf_ver);
    check(&mut c, &acked);
}

// ---------------------------------------------------------------------------------------
// Scenario 5: snapshots across a split and across a change.
// ---------------------------------------------------------------------------------------

#[test]
fn a_replica_cut_off_across_a_split_and_a_change_of_the_right_half_catches_up_by_snapshots() {
    let mut c = cluster(79);
    let leader = c.leader_of(RANGE).unwrap();
    let mut others = [1, 2, 3].into_iter().filter(|n| *n != leader);
    let (away, gone) = (others.next().unwrap(), others.next().unwrap());
    let mut acked = write(&mut c, "before", 20);
    let n4 = c.add_node();
    let cut = c.add_filter(Isolate(away));
    let snaps_before = snapshots_applied(&c, away);
    let (_, right) = c.split(SPLIT).unwrap();
    // The right half replaces `gone` by node 4 without `away`: both halves of the joint
    // step have a majority without it.
    let r = c.change_replicas(right.range_id, &[n4], &[gone]).unwrap();
    let mut kept = vec![leader, away, n4];
    kept.sort();
    assert_eq!(nodes_of(&r), voters(&kept));
    acked.extend(write(&mut c, "after", 300)); // 300 entries per half: past `log_gc_max_lag`
    assert!(
        c.store(away).peer(right.range_id).is_none(),
        "node {away} never heard of the split"
    );
    assert_eq!(
        c.store(away).peer(RANGE).unwrap().descriptor().end,
        Vec::<u8>::new(),
        "its range 2 is the parent"
    );
    let (first, behind) = (
        c.store(leader).peer(RANGE).unwrap().first_log_index(),
        c.store(away).peer(RANGE).unwrap().applied_index(),
    );
    assert!(
        first > behind + 1,
        "the left log was truncated past node {away}: first {first}, it applied {behind}"
    );
    c.remove_filter(cut);
    let (newest_left, newest_right) = (
        c.descriptor(RANGE).unwrap(),
        c.descriptor(right.range_id).unwrap(),
    );
    tick_until(
        &mut c,
        400,
        "the cut-off node has both halves at their newest",
        |c| {
            let at = |id: u64| {
                c.store(away)
                    .status()
                    .into_iter()
                    .find(|s| s.descriptor.range_id == id)
                    .map(|s| s.descriptor)
            };
            at(RANGE).as_ref() == Some(&newest_left)
                && at(right.range_id).as_ref() == Some(&newest_right)
        },
    );
    assert!(
        snapshots_applied(&c, away) >= snaps_before + 2,
        "by snapshots of both halves"
    );
    tick_until(
        &mut c,
        200,
        "the replaced node destroys its right replica",
        |c| c.store(gone).peer(right.range_id).is_none(),
    );
    assert!(hosts(&c, gone, RANGE), "it keeps the left half");
    acked.extend(write(&mut c, "healed", 5));
    check(&mut c, &acked);
}

#[test]
fn a_new_voter_cut_off_from_the_joint_step_on_catches_up_by_a_snapshot_of_the_finished_change_and_the_split(
) {
    let mut c = cluster(80);
    let leader = c.leader_of(RANGE).unwrap();
    let gone = [1, 2, 3].into_iter().find(|n| *n != leader).unwrap();
    let mut acked = write(&mut c, "before", 20);
    let n4 = c.add_node();
    // The leave-joint step is held back until node 4 is cut off: the rest of the change
    // — leave joint, remove `gone`'s learner — and a split then happen without it.
    let hold = c.add_filter(LeaveJointFrom(leader));
    let mut change = c.request(
        leader,
        RANGE,
        Command::ChangeReplicas {
            add: vec![n4],
            remove: vec![gone],
        },
    );
    tick_until(&mut c, 300, "the range is joint", |c| {
        is_joint(&c.descriptor(RANGE).unwrap())
    });
    let cut = c.add_filter(Isolate(n4));
    c.remove_filter(hold);
    let joint = c.descriptor(RANGE).unwrap();
    let done = match c.wait_answer(&mut change, 300) {
        Ok(Response::Replicas(d)) => d,
        other => {
            panic!("the change finishes without node 4 (a majority of both halves): {other:?}")
        }
    };
    let kept: Vec<u64> = [1, 2, 3, n4].into_iter().filter(|n| *n != gone).collect();
    assert_eq!(nodes_of(&done), voters(&kept));
    assert_eq!(
        done.epoch().conf_ver,
        joint.epoch().conf_ver + 2,
        "leave, remove"
    );
    let snaps_before = snapshots_applied(&c, n4);
    let on4 = c.store(n4).peer(RANGE).map(|p| p.descriptor().epoch());
    assert!(
        on4.is_some_and(|e| e.conf_ver < done.epoch().conf_ver),
        "node 4 is behind: {on4:?}"
    );
    let (_, right) = c.split(SPLIT).expect("split without node 4");
    acked.extend(write(&mut c, "after", 300)); // 300 entries per half: past `log_gc_max_lag`
    let l = c.leader_of(RANGE).unwrap();
    let (first, behind) = (
        c.store(l).peer(RANGE).unwrap().first_log_index(),
        c.store(n4).peer(RANGE).unwrap().applied_index(),
    );
    assert!(
        first > behind + 1,
        "the left log was truncated past node 4: first {first}, it applied {behind}"
    );
    tick_until(&mut c, 100, "the removed node destroys its replica", |c| {
        c.store(gone).peer(RANGE).is_none()
    });
    c.remove_filter(cut);
    let (newest_left, newest_right) = (
        c.descriptor(RANGE).unwrap(),
        c.descriptor(right.range_id).unwrap(),
    );
    tick_until(&mut c, 400, "node 4 has both halves at their newest", |c| {
        let at = |id: u64| {
            c.store(n4)
                .status()
                .into_iter()
                .find(|s| s.descriptor.range_id == id)
                .map(|s| s.descriptor)
        };
        at(RANGE).as_ref() == Some(&newest_left)
            && at(right.range_id).as_ref() == Some(&newest_right)
    });
    assert!(snapshots_applied(&c, n4) > snaps_before, "by snapshot");
    assert!(
        c.store(gone).peer(right.range_id).is_none(),
        "the removed node never got the right half"
    );
    acked.extend(write(&mut c, "healed", 5));
    check(&mut c, &acked);
}
