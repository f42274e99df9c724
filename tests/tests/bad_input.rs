//! Bad requests get typed errors and the store keeps serving.

use flotilla_raftstore::{Command, Epoch, Error};
use flotilla_tests::{CallError, Cluster};

fn expect_err(c: &mut Cluster, range: u64, cmd: Command) -> Error {
    match c.call(range, cmd, 100) {
        Err(CallError::Store(e)) => e,
        other => panic!("expected a store error, got {other:?}"),
    }
}

#[test]
fn bad_requests_get_typed_errors_and_the_store_keeps_serving() {
    let mut c = Cluster::new(3, 2, 13);
    let cfg = flotilla_tests::harness_config();
    c.wait_leader(1, 60).unwrap();
    c.wait_leader(2, 60).unwrap();

    let big_key = vec![1u8; cfg.max_key_size + 1];
    let err = expect_err(
        &mut c,
        1,
        Command::Put {
            key: big_key,
            value: b"v".to_vec(),
        },
    );
    assert!(matches!(err, Error::KeyTooLarge { .. }), "{err}");
    assert!(
        err.to_string().contains("max_key_size"),
        "message names the setting: {err}"
    );

    let big_value = vec![0u8; cfg.max_value_size + 1];
    let err = expect_err(
        &mut c,
        1,
        Command::Put {
            key: vec![1],
            value: big_value,
        },
    );
    assert!(matches!(err, Error::ValueTooLarge { .. }), "{err}");

    let err = expect_err(
        &mut c,
        1,
        Command::Put {
            key: Vec::new(),
            value: b"v".to_vec(),
        },
    );
    assert_eq!(err, Error::EmptyKey);
    let err = expect_err(&mut c, 1, Command::Get { key: Vec::new() });
    assert_eq!(err, Error::EmptyKey);

    // Range 1 covers [.., 0x8000): a key of range 2 is refused with the span.
    let err = expect_err(
        &mut c,
        1,
        Command::Put {
            key: vec![0xff, 1],
            value: b"v".to_vec(),
        },
    );
    assert!(
        matches!(err, Error::KeyNotInRange { range_id: 1, .. }),
        "{err}"
    );

    let err = expect_err(
        &mut c,
        1,
        Command::Scan {
            start: vec![1],
            end: Vec::new(),
            limit: 0,
            max_bytes: 0,
        },
    );
    assert!(matches!(err, Error::InvalidRequest(_)), "{err}");
    let err = expect_err(&mut c, 1, Command::Batch { ops: Vec::new() });
    assert!(matches!(err, Error::InvalidRequest(_)), "{err}");

    // A range no store hosts.
    let leader = c.leader_of(1).unwrap();
    let mut rx = c.request(leader, 999, Command::Get { key: b"k".to_vec() });
    let err = c.wait_answer(&mut rx, 5).unwrap_err();
    assert!(
        matches!(
            err,
            CallError::Store(Error::RangeNotFound { range_id: 999, .. })
        ),
        "{err:?}"
    );

    // A stale epoch is refused with the current descriptor attached.
    assert_ne!(c.ranges()[0].epoch(), Epoch::default());
    let mut rx = c.request_with_epoch(leader, 1, Epoch::default(), Command::Get { key: vec![1] });
    match c.wait_answer(&mut rx, 5).unwrap_err() {
        CallError::Store(Error::EpochNotMatch { current, .. }) => {
            assert_eq!(current[0].range_id, 1)
        }
        other => panic!("expected EpochNotMatch, got {other:?}"),
    }

    // Still serving.
    c.put(&[1, 2, 3], b"fine").unwrap();
    assert_eq!(c.get(&[1, 2, 3]).unwrap().as_deref(), Some(&b"fine"[..]));
}

#[test]
fn malformed_raft_messages_are_dropped_and_the_store_keeps_serving() {
    use flotilla_raftstore::{RaftEnvelope, StoreMetrics};
    use raft::prelude::{Message, MessageType};

    let mut c = Cluster::new(3, 1, 41);
    let leader = c.wait_leader(1, 60).unwrap();
    let desc = c.ranges()[0].clone();
    let follower = desc
        .replicas
        .iter()
        .copied()
        .find(|r| r.node_id != leader)
        .unwrap();
    let from = desc.replica_on(leader).unwrap();
    let envelope = |t: MessageType| {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.from = from.replica_id;
        m.to = follower.replica_id;
        m.term = 100;
        RaftEnvelope {
            range_id: 1,
            from,
            to: follower,
            message: m,
        }
    };
    let mut bad_snapshot = envelope(MessageType::MsgSnapshot);
    bad_snapshot
        .message
        .mut_snapshot()
        .set_data(b"not a snapshot".to_vec().into());
    bad_snapshot.message.mut_snapshot().mut_metadata().index = 1_000;
    // A heartbeat committing past the follower's log would make raft-rs panic (it takes
    // it for a lost log): dropped instead, with the current term so it is not ignored.
    let term = c.store(leader).peer(1).unwrap().term();
    let mut beyond = envelope(MessageType::MsgHeartbeat);
    beyond.message.term = term;
    beyond.message.commit = 1_000_000;
    let batch = vec![envelope(MessageType::MsgReadIndex), bad_snapshot, beyond];
    let store = c.store_mut(follower.node_id);
    let dropped_before = StoreMetrics::get(&store.metrics().messages_dropped);
    store.on_raft_messages(batch);
    assert_eq!(
        StoreMetrics::get(&store.metrics().messages_dropped),
        dropped_before + 3
    );
    c.put(b"still", b"serving").unwrap();
    assert_eq!(c.get(b"still").unwrap().as_deref(), Some(&b"serving"[..]));
}
