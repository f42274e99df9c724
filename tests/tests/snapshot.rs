//! Log truncation and catching up through a snapshot.

use flotilla_raftstore::StoreMetrics;
use flotilla_tests::filter::Isolate;
use flotilla_tests::Cluster;

#[test]
fn an_isolated_replica_catches_up_through_a_snapshot_after_truncation() {
    let mut c = Cluster::new(3, 1, 9);
    let leader = c.wait_leader(1, 60).unwrap();
    let lagger = c.node_ids().into_iter().find(|n| *n != leader).unwrap();
    c.put(b"early", b"1").unwrap();
    let iso = c.add_filter(Isolate(lagger));
    // More than log_gc_max_lag (256) entries: the leader stops waiting for the lagger.
    for i in 0..400u32 {
        c.put(format!("key-{i:04}").as_bytes(), format!("v{i}").as_bytes())
            .unwrap();
    }
    c.ticks(5);
    let leader = c.leader_of(1).unwrap();
    let leader_first = c.store(leader).peer(1).unwrap().first_log_index();
    let lagger_last = c.store(lagger).peer(1).unwrap().last_log_index();
    assert!(
        leader_first > lagger_last + 1,
        "leader truncated past the lagger: first {leader_first}, lagger last {lagger_last}"
    );
    c.put(b"early", b"deleted-soon").unwrap();

    c.remove_filter(iso);
    let digests = c.digests(1, 200);
    let snaps = StoreMetrics::get(&c.store(lagger).metrics().snapshots_applied);
    assert!(snaps >= 1, "the lagger installed a snapshot");
    let reference = digests[&leader];
    assert!(digests.values().all(|d| *d == reference), "{digests:?}");
    // The caught-up replica serves what the snapshot carried, and later writes too.
    c.put(b"late", b"2").unwrap();
    let digests = c.digests(1, 100);
    assert!(digests.values().all(|d| *d == digests[&leader]));
}

#[test]
fn a_lost_snapshot_is_sent_again() {
    use flotilla_tests::filter::{DropAll, Select};
    use raft::prelude::MessageType;

    let mut c = Cluster::new(3, 1, 37);
    let leader = c.wait_leader(1, 60).unwrap();
    let lagger = c.node_ids().into_iter().find(|n| *n != leader).unwrap();
    let iso = c.add_filter(Isolate(lagger));
    for i in 0..400u32 {
        c.put(format!("key-{i:04}").as_bytes(), b"v").unwrap();
    }
    c.remove_filter(iso);
    // The first snapshot sent is lost in transit.
    let mut lost = 0;
    c.add_filter(Select {
        select: move |e: &flotilla_raftstore::RaftEnvelope| {
            let first = e.message.get_msg_type() == MessageType::MsgSnapshot && lost == 0;
            lost += first as u32;
            first
        },
        inner: Box::new(DropAll),
    });
    let digests = c.digests(1, 200);
    let leader = c.leader_of(1).unwrap();
    assert!(
        digests.values().all(|d| *d == digests[&leader]),
        "{digests:?}"
    );
    assert!(StoreMetrics::get(&c.store(lagger).metrics().snapshots_applied) >= 1);
}
