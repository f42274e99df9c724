//! Many writes per Raft entry (`raftstore/src/operation/batch.rs`): the writes a leader
//! accepts for one range in one round share an entry, and each still gets its own answer.

use flotilla_raftstore::local::even_ranges;
use flotilla_raftstore::version::{V1_SINGLE, V2_BATCHED};
use flotilla_raftstore::{Command, Response};
use flotilla_tests::filter::Partition;
use flotilla_tests::{harness_config, Cluster};

fn put(key: &str, value: &str) -> Command {
    Command::Put {
        key: key.into(),
        value: value.into(),
    }
}

fn cas(key: &str, expected: Option<&str>, new: &str) -> Command {
    Command::CompareAndSwap {
        key: key.into(),
        expected: expected.map(Into::into),
        new: Some(new.into()),
    }
}

fn last_index(c: &Cluster, node: u64) -> u64 {
    c.store(node).peer(1).expect("hosted").last_log_index()
}

/// A leader with its first entry of the term committed, and its log's last index.
fn ready_leader(c: &mut Cluster) -> (u64, u64) {
    let leader = c.wait_leader(1, 60).expect("a leader");
    c.call(1, put("warm", "up"), 100).expect("a first write");
    c.settle();
    (leader, last_index(c, leader))
}

#[test]
fn writes_of_one_round_share_one_entry_and_each_gets_its_own_answer() {
    let mut c = Cluster::new(3, 1, 21);
    let (leader, before) = ready_leader(&mut c);
    let commands = [
        put("a", "1"),
        // Sees the put above: it is earlier in the same entry.
        cas("a", Some("1"), "2"),
        // Fails alone: "b" is absent.
        cas("b", Some("x"), "y"),
        Command::Delete { key: "warm".into() },
        put("d", "4"),
    ];
    let mut answers: Vec<_> = commands
        .into_iter()
        .map(|cmd| c.request(leader, 1, cmd))
        .collect();
    let got: Vec<_> = answers
        .iter_mut()
        .map(|rx| c.wait_answer(rx, 100).expect("answered"))
        .collect();
    assert_eq!(
        got,
        vec![
            Response::Done,
            Response::Swapped {
                succeeded: true,
                previous: Some(b"1".to_vec())
            },
            Response::Swapped {
                succeeded: false,
                previous: None
            },
            Response::Done,
            Response::Done,
        ]
    );
    assert_eq!(
        last_index(&c, leader),
        before + 1,
        "five writes of one round were not one entry"
    );
    assert_eq!(c.get(b"a").unwrap(), Some(b"2".to_vec()));
    assert_eq!(c.get(b"b").unwrap(), None);
    assert_eq!(c.get(b"warm").unwrap(), None);
    assert_eq!(c.get(b"d").unwrap(), Some(b"4".to_vec()));
    let digests = c.digests(1, 100);
    assert_eq!(digests.len(), 3, "{digests:?}");
    assert!(
        digests.values().all(|d| *d == digests[&leader]),
        "replicas differ after a batched entry: {digests:?}"
    );
}

#[test]
fn a_full_batch_is_closed_and_the_rest_goes_in_the_next_entry() {
    let mut c = Cluster::new(3, 1, 22);
    let (leader, before) = ready_leader(&mut c);
    let mut answers: Vec<_> = (0..300)
        .map(|i| c.request(leader, 1, put(&format!("k{i:03}"), &format!("v{i}"))))
        .collect();
    for rx in &mut answers {
        assert_eq!(c.wait_answer(rx, 100).expect("answered"), Response::Done);
    }
    // 256 commands close a batch; the other 44 share the next entry.
    assert_eq!(last_index(&c, leader), before + 2);
    for i in [0, 255, 256, 299] {
        let value = c.get(format!("k{i:03}").as_bytes()).unwrap();
        assert_eq!(value, Some(format!("v{i}").into_bytes()), "k{i:03}");
    }
}

#[test]
fn a_batch_that_cannot_commit_fails_every_write_in_it_and_none_is_applied() {
    let mut c = Cluster::new(3, 1, 23);
    let (leader, _) = ready_leader(&mut c);
    let others: Vec<u64> = c.node_ids().into_iter().filter(|n| *n != leader).collect();
    c.add_filter(Partition::new(&[&[leader], &others]));
    let mut answers: Vec<_> = ["x", "y", "z"]
        .into_iter()
        .map(|k| c.request(leader, 1, put(k, "lost")))
        .collect();
    for rx in &mut answers {
        let err = c
            .wait_answer(rx, 200)
            .expect_err("a write cut off from its quorum");
        assert!(
            err.is_failure_or_unknown(),
            "a write in a batch that cannot commit got {err:?}"
        );
    }
    c.clear_filters();
    c.wait_leader(1, 100).expect("a leader after the heal");
    for k in ["x", "y", "z"] {
        assert_eq!(c.get(k.as_bytes()).unwrap(), None, "{k} was applied");
    }
}

#[test]
fn before_the_cluster_version_allows_batches_each_write_is_its_own_entry() {
    // A cluster whose nodes have not all moved to a binary that reads batched entries.
    let cfg = flotilla_raftstore::StoreConfig {
        initial_cluster_version: V1_SINGLE,
        ..harness_config()
    };
    let mut c = Cluster::with_config(3, even_ranges(1, 3), 24, cfg);
    let (leader, before) = ready_leader(&mut c);
    let round = |c: &mut Cluster, tag: &str| {
        let mut answers: Vec<_> = (0..4)
            .map(|i| c.request(leader, 1, put(&format!("{tag}{i}"), "v")))
            .collect();
        for rx in &mut answers {
            assert_eq!(c.wait_answer(rx, 100).expect("answered"), Response::Done);
        }
    };
    round(&mut c, "old");
    assert_eq!(
        last_index(&c, leader),
        before + 4,
        "a leader batched writes before the cluster version allowed it"
    );
    // Every member now reads batched entries: the version rises, and batching starts.
    for node in c.node_ids() {
        let version = c.store(node).cluster_version();
        assert!(version.raise(V2_BATCHED).expect("recorded"));
    }
    let before = last_index(&c, leader);
    round(&mut c, "new");
    assert_eq!(last_index(&c, leader), before + 1, "four writes, one entry");
    // It was recorded: a restarted node keeps it.
    c.restart(leader);
    assert!(c.store(leader).cluster_version().allows(V2_BATCHED));
}
