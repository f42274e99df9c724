//! ReadIndex reads: retried when raft-rs drops them, timed out when no quorum answers.

use flotilla_raftstore::{Command, Error, Response};
use flotilla_tests::filter::{DropTypes, Isolate, Select};
use flotilla_tests::{CallError, Cluster};
use raft::prelude::MessageType;
use tokio::sync::oneshot::error::TryRecvError;

#[test]
fn a_read_dropped_by_a_leader_without_a_commit_in_its_term_is_retried() {
    let mut c = Cluster::new(3, 1, 23);
    // Followers' append responses are lost: a leader gets elected but cannot commit the
    // empty entry of its term, so raft-rs silently drops ReadIndex requests.
    let filter = c.add_filter(DropTypes(vec![MessageType::MsgAppendResponse]));
    let leader = c.wait_leader(1, 60).expect("votes still flow");
    let mut rx = c.request(leader, 1, Command::Get { key: b"k".to_vec() });
    c.ticks(10);
    assert!(
        matches!(rx.try_recv(), Err(TryRecvError::Empty)),
        "no answer without a commit"
    );
    c.remove_filter(filter);
    match c.wait_answer(&mut rx, 20) {
        Ok(Response::Value(None)) => {}
        other => panic!("the retried read is served: {other:?}"),
    }
}

#[test]
fn a_read_on_a_leader_cut_off_from_its_quorum_fails_instead_of_hanging() {
    let mut c = Cluster::new(3, 1, 29);
    let leader = c.wait_leader(1, 60).unwrap();
    c.put(b"k", b"v").unwrap();
    // Only heartbeats and their responses are lost: the leader cannot confirm leadership.
    c.add_filter(Select {
        select: move |e: &flotilla_raftstore::RaftEnvelope| {
            e.from.node_id == leader || e.to.node_id == leader
        },
        inner: Box::new(Isolate(leader)),
    });
    // First its lease runs out: the filter also cuts the node batches through which the
    // other nodes acknowledge their support. Until then it may serve reads locally.
    for _ in 0..30 {
        if !c.store(leader).has_lease(1) {
            break;
        }
        c.tick();
    }
    assert!(
        !c.store(leader).has_lease(1),
        "the lease ends when support is no longer acknowledged"
    );
    let mut rx = c.request(leader, 1, Command::Get { key: b"k".to_vec() });
    let outcome = c.wait_answer(&mut rx, 60);
    assert!(
        matches!(
            outcome,
            Err(CallError::Store(
                Error::Timeout { .. } | Error::NotLeader { .. }
            ))
        ),
        "an unconfirmed leader must not serve the read: {outcome:?}"
    );
}
