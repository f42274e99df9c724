//! Quorum: a minority commits nothing; five nodes survive two failures, not three.

use flotilla_raftstore::Command;
use flotilla_tests::filter::Partition;
use flotilla_tests::{CallError, Cluster};

#[test]
fn a_minority_partition_commits_nothing_while_the_majority_serves() {
    let mut c = Cluster::new(5, 1, 11);
    let old = c.wait_leader(1, 60).unwrap();
    c.put(b"a", b"1").unwrap();
    let others: Vec<u64> = c.node_ids().into_iter().filter(|n| *n != old).collect();
    // The old leader keeps one follower: a minority of two out of five.
    let minority = [old, others[0]];
    let majority = &others[1..];
    c.add_filter(Partition::new(&[&minority, majority]));
    let commit_before = c.store(old).peer(1).unwrap().applied_index();

    let mut rx = c.request(
        old,
        1,
        Command::Put {
            key: b"m".to_vec(),
            value: b"minority".to_vec(),
        },
    );
    let outcome = c.wait_answer(&mut rx, 60);
    assert!(
        outcome
            .as_ref()
            .err()
            .is_some_and(CallError::is_failure_or_unknown),
        "minority write must fail or time out: {outcome:?}"
    );
    for n in minority {
        let applied = c.store(n).peer(1).unwrap().applied_index();
        assert!(
            applied <= commit_before,
            "node {n} applied {applied} > {commit_before} in minority"
        );
    }
    let new = c.wait_leader_except(1, Some(old), 60).unwrap();
    assert!(
        majority.contains(&new),
        "new leader {new} is in the majority"
    );
    c.put(b"b", b"2").unwrap();

    c.clear_filters();
    c.ticks(30);
    assert_eq!(c.get(b"m").unwrap(), None);
    assert_eq!(c.get(b"b").unwrap().as_deref(), Some(&b"2"[..]));
}

#[test]
fn five_nodes_tolerate_two_failures_but_not_three() {
    let mut c = Cluster::new(5, 1, 5);
    let leader = c.wait_leader(1, 60).unwrap();
    c.put(b"k0", b"v").unwrap();
    let mut down: Vec<u64> = vec![leader];
    down.push(c.node_ids().into_iter().find(|n| *n != leader).unwrap());
    for n in &down {
        c.stop(*n);
    }
    c.put(b"k1", b"v").expect("3 of 5 still commit");

    let third = c.node_ids().into_iter().find(|n| c.is_running(*n)).unwrap();
    c.stop(third);
    let outcome = c.put(b"k2", b"v");
    assert!(outcome.is_err(), "2 of 5 must not commit: {outcome:?}");

    c.start(third);
    c.put(b"k3", b"v")
        .expect("a majority again after one restart");
    assert_eq!(c.get(b"k1").unwrap().as_deref(), Some(&b"v"[..]));
}
