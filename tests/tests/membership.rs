//! Membership change on the deterministic harness: adding, replacing and removing
//! replicas (learner → joint → leave → remove), with the leader removed, cut off
//! mid-change, a change racing another, a removed node coming back, old messages for a
//! destroyed replica, lost snapshots, and bad requests.

use flotilla_raftstore::metapb::ReplicaRole;
use flotilla_raftstore::{Command, Error, RangeDescriptor, Response, StoreMetrics};
use flotilla_tests::filter::{DropAll, Isolate, LeaveJointFrom, Select, SnapshotsTo};
use flotilla_tests::{CallError, Cluster};
use raft::prelude::MessageType;

const RANGE: u64 = 1;

fn nodes_of(d: &RangeDescriptor) -> Vec<(u64, ReplicaRole)> {
    let mut v: Vec<_> = d.replicas.iter().map(|r| (r.node_id, r.role())).collect();
    v.sort();
    v
}

fn voters(nodes: &[u64]) -> Vec<(u64, ReplicaRole)> {
    nodes.iter().map(|n| (*n, ReplicaRole::Voter)).collect()
}

/// Writes `n` keys `prefix-i`, each acknowledged.
fn write(c: &mut Cluster, prefix: &str, n: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let (k, v) = (
                format!("{prefix}-{i:03}").into_bytes(),
                format!("v{i}").into_bytes(),
            );
            c.put(&k, &v).unwrap();
            (k, v)
        })
        .collect()
}

/// Every acknowledged write reads back, and the replicas of `RANGE` agree.
fn check(c: &mut Cluster, acked: &[(Vec<u8>, Vec<u8>)]) {
    for (k, v) in acked {
        assert_eq!(
            c.get(k).unwrap().as_deref(),
            Some(v.as_slice()),
            "key {k:?}"
        );
    }
    let digests = c.digests(RANGE, 300);
    let first = *digests.values().next().unwrap();
    assert!(
        digests.values().all(|d| *d == first),
        "replicas disagree: {digests:?}"
    );
}

/// The keys of the range's span left on node `n`'s engine.
fn keys_left(c: &Cluster, n: u64, d: &RangeDescriptor) -> usize {
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

#[test]
fn a_learner_is_added_caught_up_by_snapshot_and_promoted_while_writes_go_on() {
    let mut c = Cluster::new(3, 1, 11);
    c.wait_leader(RANGE, 60).unwrap();
    let mut acked = write(&mut c, "before", 300); // enough for the log to be truncated
    let n4 = c.add_node();
    assert!(
        c.store(n4).peer(RANGE).is_none(),
        "a new node holds nothing"
    );
    let old = c.descriptor(RANGE).unwrap();
    // Snapshots to the new node are held back for a while: it stays a learner.
    let hold = c.add_filter(SnapshotsTo(n4));
    let leader = c.leader_of(RANGE).unwrap();
    let mut rx = c.request(
        leader,
        RANGE,
        Command::ChangeReplicas {
            add: vec![n4],
            remove: vec![],
        },
    );
    for i in 0..20 {
        // Writes go on: a learner counts for no quorum.
        let (k, v) = (format!("during-{i:03}").into_bytes(), b"x".to_vec());
        c.put(&k, &v).unwrap();
        acked.push((k, v));
        let d = c.descriptor(RANGE).unwrap();
        assert_eq!(
            d.replica_on(n4).map(|r| r.role()),
            Some(ReplicaRole::Learner),
            "not promoted before it caught up"
        );
    }
    c.remove_filter(hold);
    let desc = match c.wait_answer(&mut rx, 300) {
        Ok(Response::Replicas(d)) => d,
        other => panic!("{other:?}"),
    };
    assert_eq!(nodes_of(&desc), voters(&[1, 2, 3, 4]));
    assert_eq!(
        desc.replica_on(n4).unwrap().replica_id,
        old.next_replica_id(),
        "a fresh replica id, the descriptor's next"
    );
    assert_eq!(
        desc.epoch().conf_ver,
        old.epoch().conf_ver + 3,
        "learner, joint, leave: one conf_ver each"
    );
    assert!(StoreMetrics::get(&c.store(n4).metrics().snapshots_applied) >= 1);
    acked.extend(write(&mut c, "after", 20));
    check(&mut c, &acked);
}

#[test]
fn replacing_a_voter_destroys_the_old_replica_and_leaves_a_tombstone() {
    let mut c = Cluster::new(3, 1, 12);
    c.wait_leader(RANGE, 60).unwrap();
    let acked = write(&mut c, "k", 50);
    let n4 = c.add_node();
    let old = c.descriptor(RANGE).unwrap();
    let leader = c.leader_of(RANGE).unwrap();
    let gone = [1, 2, 3].into_iter().find(|n| *n != leader).unwrap();
    let desc = c.change_replicas(RANGE, &[n4], &[gone]).unwrap();
    let kept: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|n| *n != gone).collect();
    assert_eq!(nodes_of(&desc), voters(&kept));
    c.ticks(5);
    assert!(
        c.store(gone).peer(RANGE).is_none(),
        "the removed replica is destroyed"
    );
    assert_eq!(keys_left(&c, gone, &old), 0, "its data went with it");
    assert_eq!(
        StoreMetrics::get(&c.store(gone).metrics().replicas_destroyed),
        1
    );
    check(&mut c, &acked);
    // The tombstone survives a restart: the old replica is not re-created.
    c.restart(gone);
    c.ticks(30);
    assert!(c.store(gone).peer(RANGE).is_none());
}

#[test]
fn removing_the_leader_hands_leadership_over_first() {
    let mut c = Cluster::new(3, 1, 13);
    let leader = c.wait_leader(RANGE, 60).unwrap();
    let acked = write(&mut c, "k", 30);
    let n4 = c.add_node();
    let desc = c.change_replicas(RANGE, &[n4], &[leader]).unwrap();
    assert!(desc.replica_on(leader).is_none());
    let now = c.wait_leader(RANGE, 60).unwrap();
    assert_ne!(now, leader);
    c.ticks(5);
    assert!(c.store(leader).peer(RANGE).is_none());
    check(&mut c, &acked);
}

#[test]
fn removing_a_voter_without_replacement_and_adding_it_back_gives_a_new_replica_id() {
    let mut c = Cluster::new(3, 1, 14);
    let leader = c.wait_leader(RANGE, 60).unwrap();
    let mut acked = write(&mut c, "k", 30);
    let gone = [1, 2, 3].into_iter().find(|n| *n != leader).unwrap();
    let before = c
        .descriptor(RANGE)
        .unwrap()
        .replica_on(gone)
        .unwrap()
        .replica_id;
    let desc = c.change_replicas(RANGE, &[], &[gone]).unwrap();
    assert_eq!(desc.replicas.len(), 2);
    acked.extend(write(&mut c, "two", 10));
    let desc = c.change_replicas(RANGE, &[gone], &[]).unwrap();
    let again = desc.replica_on(gone).unwrap().replica_id;
    assert!(
        again > before,
        "re-added as a new Raft peer: {again} after {before}"
    );
    check(&mut c, &acked);
}

#[test]
fn a_leader_cut_off_mid_joint_is_replaced_and_the_repeat_finishes_the_change() {
    let mut c = Cluster::new(3, 1, 15);
    let leader = c.wait_leader(RANGE, 60).unwrap();
    let acked = write(&mut c, "k", 30);
    let n4 = c.add_node();
    let gone = [1, 2, 3].into_iter().find(|n| *n != leader).unwrap();
    let hold = c.add_filter(LeaveJointFrom(leader));
    let mut rx = c.request(
        leader,
        RANGE,
        Command::ChangeReplicas {
            add: vec![n4],
            remove: vec![gone],
        },
    );
    let mut cut = None;
    for _ in 0..400 {
        c.tick();
        let joint = c
            .descriptor(RANGE)
            .unwrap()
            .replicas
            .iter()
            .any(|r| r.role() == ReplicaRole::IncomingVoter);
        if joint {
            cut = Some(c.add_filter(Isolate(leader)));
            c.remove_filter(hold);
            break;
        }
    }
    let cut = cut.expect("the change reached its joint step");
    let answer = c.wait_answer(&mut rx, 100);
    assert!(
        matches!(&answer, Err(e) if e.is_failure_or_unknown()),
        "the cut-off leader cannot finish: {answer:?}"
    );
    // The others elect a leader in the joint configuration (a majority of both halves)
    // and the repeated request finishes the change there.
    c.wait_leader_except(RANGE, Some(leader), 200).unwrap();
    let desc = c.change_replicas(RANGE, &[n4], &[gone]).unwrap();
    let kept: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|n| *n != gone).collect();
    assert_eq!(nodes_of(&desc), voters(&kept));
    c.remove_filter(cut);
    check(&mut c, &acked);
}

#[test]
fn a_change_proposed_while_another_runs_is_refused_as_retryable() {
    let mut c = Cluster::new(3, 1, 16);
    let leader = c.wait_leader(RANGE, 60).unwrap();
    let (n4, n5) = (c.add_node(), c.add_node());
    let mut first = c.request(
        leader,
        RANGE,
        Command::ChangeReplicas {
            add: vec![n4],
            remove: vec![],
        },
    );
    let mut second = c.request(
        leader,
        RANGE,
        Command::ChangeReplicas {
            add: vec![n5],
            remove: vec![],
        },
    );
    match c.wait_answer(&mut second, 5) {
        Err(CallError::Store(e @ Error::ConfChangeInProgress { .. })) => {
            assert!(e.is_retryable());
            assert!(
                e.to_string()
                    .contains("another membership change is in flight"),
                "{e}"
            );
        }
        other => panic!("expected ConfChangeInProgress, got {other:?}"),
    }
    assert!(matches!(
        c.wait_answer(&mut first, 400),
        Ok(Response::Replicas(_))
    ));
    // Once it is done the second goes through.
    let desc = c.change_replicas(RANGE, &[n5], &[]).unwrap();
    assert_eq!(nodes_of(&desc), voters(&[1, 2, 3, 4, 5]));
}

#[test]
fn a_node_down_while_its_replica_was_removed_destroys_it_when_it_returns() {
    let mut c = Cluster::new(3, 1, 17);
    let leader = c.wait_leader(RANGE, 60).unwrap();
    let acked = write(&mut c, "k", 30);
    let n4 = c.add_node();
    let gone = [1, 2, 3].into_iter().find(|n| *n != leader).unwrap();
    let old = c.descriptor(RANGE).unwrap();
    c.stop(gone);
    let desc = c.change_replicas(RANGE, &[n4], &[gone]).unwrap();
    assert!(desc.replica_on(gone).is_none());
    c.start(gone);
    assert!(
        c.store(gone).peer(RANGE).is_some(),
        "it comes back with its stale replica"
    );
    let mut destroyed = false;
    for _ in 0..400 {
        c.tick();
        if c.store(gone).peer(RANGE).is_none() {
            destroyed = true;
            break;
        }
    }
    assert!(
        destroyed,
        "the returning node found out it was removed and destroyed its replica"
    );
    assert_eq!(keys_left(&c, gone, &old), 0);
    check(&mut c, &acked);
}

#[test]
fn a_removed_learner_that_was_cut_off_asks_and_is_destroyed() {
    // A learner never campaigns, so nothing it sends would tell it it is gone: it asks.
    let mut c = Cluster::new(3, 1, 18);
    c.wait_leader(RANGE, 60).unwrap();
    let n4 = c.add_node();
    c.change_replicas(RANGE, &[n4], &[]).unwrap();
    let cut = c.add_filter(Isolate(n4));
    c.change_replicas(RANGE, &[], &[n4]).unwrap();
    c.remove_filter(cut);
    let budget = c.store(n4).config().replica_gc_check_ticks * 3;
    let mut destroyed = false;
    for _ in 0..budget {
        c.tick();
        if c.store(n4).peer(RANGE).is_none() {
            destroyed = true;
            break;
        }
    }
    assert!(destroyed, "replica GC found the removal");
}

#[test]
fn old_messages_for_a_destroyed_replica_are_refused_not_re_creating_it() {
    let mut c = Cluster::new(3, 1, 19);
    let leader = c.wait_leader(RANGE, 60).unwrap();
    let gone = [1, 2, 3].into_iter().find(|n| *n != leader).unwrap();
    let old = c.descriptor(RANGE).unwrap();
    let old_id = old.replica_on(gone).unwrap().replica_id;
    c.change_replicas(RANGE, &[], &[gone]).unwrap();
    c.ticks(5);
    assert!(c.store(gone).peer(RANGE).is_none());
    // A late append from the old leader, addressed to the old replica.
    let mut m = raft::prelude::Message::default();
    m.set_msg_type(MessageType::MsgAppend);
    (m.from, m.to, m.term, m.index) = (old.replica_on(leader).unwrap().replica_id, old_id, 100, 7);
    let env = flotilla_raftstore::RaftEnvelope {
        range_id: RANGE,
        from: old.replica_on(leader).unwrap(),
        to: old.replica_on(gone).unwrap(),
        message: m,
    };
    let before = StoreMetrics::get(&c.store(gone).metrics().tombstoned_messages);
    c.store_mut(gone).on_raft_messages(vec![env]);
    c.settle();
    assert!(c.store(gone).peer(RANGE).is_none(), "not re-created");
    assert_eq!(
        StoreMetrics::get(&c.store(gone).metrics().tombstoned_messages),
        before + 1
    );
}

#[test]
fn a_lost_snapshot_to_a_new_learner_is_sent_again_and_the_change_finishes() {
    let mut c = Cluster::new(3, 1, 20);
    c.wait_leader(RANGE, 60).unwrap();
    let acked = write(&mut c, "k", 300);
    let n4 = c.add_node();
    let mut lost = 0;
    c.add_filter(Select {
        select: move |e: &flotilla_raftstore::RaftEnvelope| {
            let drop = e.message.get_msg_type() == MessageType::MsgSnapshot
                && e.to.node_id == n4
                && lost < 2;
            lost += drop as u32;
            drop
        },
        inner: Box::new(DropAll),
    });
    let desc = c.change_replicas(RANGE, &[n4], &[]).unwrap();
    assert_eq!(nodes_of(&desc), voters(&[1, 2, 3, 4]));
    check(&mut c, &acked);
}

#[test]
fn bad_membership_changes_get_errors_that_say_what_to_do() {
    let mut c = Cluster::new(3, 1, 21);
    let leader = c.wait_leader(RANGE, 60).unwrap();
    let acked = write(&mut c, "k", 10);
    let refused = |c: &mut Cluster, add: &[u64], remove: &[u64]| -> String {
        let cmd = Command::ChangeReplicas {
            add: add.to_vec(),
            remove: remove.to_vec(),
        };
        match c.call(RANGE, cmd, 100) {
            Err(CallError::Store(e @ Error::InvalidMembership { .. })) => {
                assert!(!e.is_retryable());
                e.to_string()
            }
            other => panic!("{add:?} {remove:?}: expected InvalidMembership, got {other:?}"),
        }
    };
    let two = c
        .descriptor(RANGE)
        .unwrap()
        .replica_on(2)
        .unwrap()
        .replica_id;
    assert!(refused(&mut c, &[2], &[]).contains(&format!(
        "node 2 already holds replica {two} (voter); nothing to add"
    )));
    assert!(refused(&mut c, &[], &[7]).contains("node 7 holds no replica"));
    assert!(refused(&mut c, &[4, 5], &[1, 2]).contains("fewer than half"));
    assert!(refused(&mut c, &[0], &[]).contains("out of range"));
    // A node that is down: added, then stopped, then removed and asked back.
    let n4 = c.add_node();
    c.change_replicas(RANGE, &[n4], &[]).unwrap();
    c.change_replicas(RANGE, &[], &[n4]).unwrap();
    c.stop(n4);
    c.ticks(c.store(leader).config().liveness_timeout_ticks + 5);
    assert!(refused(&mut c, &[n4], &[]).contains(&format!("node {n4} is down")));
    // Against a stale epoch.
    let old = c.ranges()[0].epoch();
    let leader = c.wait_leader(RANGE, 60).unwrap();
    let mut rx = c.request_with_epoch(
        leader,
        RANGE,
        old,
        Command::ChangeReplicas {
            add: vec![5],
            remove: vec![],
        },
    );
    assert!(matches!(
        c.wait_answer(&mut rx, 5),
        Err(CallError::Store(Error::EpochNotMatch { .. }))
    ));
    // Down to one voter, then the last one stays.
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|n| *n != leader).collect();
    c.change_replicas(RANGE, &[], &others[..1]).unwrap();
    c.change_replicas(RANGE, &[], &others[1..]).unwrap();
    assert!(refused(&mut c, &[], &[leader]).contains("the last voter"));
    // Nothing was lost along the way.
    for (k, v) in &acked {
        assert_eq!(c.get(k).unwrap().as_deref(), Some(v.as_slice()));
    }
}
