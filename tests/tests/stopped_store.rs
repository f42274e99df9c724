//! A store that stops before proposing the writes waiting in its round (`batch.rs`)
//! answers each of them `StoreStopped`: certainly not applied, so a caller may retry it
//! anywhere, where silence would leave the outcome unknown. (Its own test binary: the
//! fault point is process-wide.)

use flotilla_raftstore::{Command, Error};
use flotilla_tests::{CallError, Cluster};

fn put(key: &str) -> Command {
    Command::Put {
        key: key.into(),
        value: "lost".into(),
    }
}

#[test]
fn writes_waiting_when_the_store_stops_are_answered_not_applied() {
    let mut c = Cluster::new(3, 1, 31);
    let leader = c.wait_leader(1, 60).expect("a leader");
    c.call(1, put("warm"), 100).expect("a first write");
    c.settle();
    fail::cfg(
        "raftstore::before_propose_pending",
        &format!("return({leader})"),
    )
    .unwrap();
    let mut answers: Vec<_> = ["x", "y", "z"]
        .into_iter()
        .map(|k| c.request(leader, 1, put(k)))
        .collect();
    let got: Vec<_> = answers.iter_mut().map(|rx| c.wait_answer(rx, 50)).collect();
    fail::remove("raftstore::before_propose_pending");
    assert!(!c.is_running(leader), "the fault point stopped the leader");
    for answer in got {
        assert!(
            matches!(answer, Err(CallError::Store(Error::StoreStopped { node_id })) if node_id == leader),
            "a write never proposed got {answer:?}"
        );
    }
    c.start(leader);
    c.wait_leader(1, 100).expect("a leader after the restart");
    for k in ["x", "y", "z"] {
        assert_eq!(c.get(k.as_bytes()).unwrap(), None, "{k} was applied");
    }
}
