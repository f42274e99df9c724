//! The commands of one range: get, put, delete, scan with a limit, batch, compare-and-swap.

use flotilla_raftstore::{Command, Response, WriteOp};
use flotilla_tests::Cluster;

fn call(c: &mut Cluster, cmd: Command) -> Response {
    c.call(1, cmd, 100).expect("command succeeds")
}

fn put(key: &str, value: &str) -> Command {
    Command::Put {
        key: key.into(),
        value: value.into(),
    }
}

#[test]
fn get_put_delete_scan_batch_and_cas_behave_as_documented() {
    let mut c = Cluster::new(3, 1, 17);
    c.wait_leader(1, 60).unwrap();
    assert_eq!(
        call(&mut c, Command::Get { key: b"a".to_vec() }),
        Response::Value(None)
    );
    assert_eq!(call(&mut c, put("a", "1")), Response::Done);
    assert_eq!(
        call(&mut c, Command::Get { key: b"a".to_vec() }),
        Response::Value(Some(b"1".to_vec()))
    );
    assert_eq!(
        call(&mut c, Command::Delete { key: b"a".to_vec() }),
        Response::Done
    );
    assert_eq!(
        call(&mut c, Command::Get { key: b"a".to_vec() }),
        Response::Value(None)
    );

    let ops = (0..10)
        .map(|i| WriteOp::put(format!("k{i}"), format!("v{i}")))
        .chain([WriteOp::delete("k3")]);
    assert_eq!(
        call(&mut c, Command::Batch { ops: ops.collect() }),
        Response::Done
    );
    let scan = Command::Scan {
        start: b"k".to_vec(),
        end: b"k6".to_vec(),
        limit: 100,
        max_bytes: 0,
    };
    let Response::Pairs { pairs, .. } = call(&mut c, scan) else {
        panic!("scan answers pairs")
    };
    let keys: Vec<_> = pairs
        .iter()
        .map(|(k, _)| String::from_utf8(k.clone()).unwrap())
        .collect();
    assert_eq!(
        keys,
        ["k0", "k1", "k2", "k4", "k5"],
        "bounded, ordered, without the deleted key"
    );
    let limited = Command::Scan {
        start: b"k".to_vec(),
        end: Vec::new(),
        limit: 3,
        max_bytes: 0,
    };
    let Response::Pairs { pairs, more } = call(&mut c, limited) else {
        panic!()
    };
    assert_eq!(pairs.len(), 3);
    assert_eq!(pairs[2], (b"k2".to_vec(), b"v2".to_vec()));
    assert!(more, "a scan cut by its limit says there may be more");
    // A byte budget stops the answer after the pair that reaches it: "k0v0" + "k1v1" is 8
    // bytes, so a budget of 6 ends after k1.
    let budget = Command::Scan {
        start: b"k".to_vec(),
        end: Vec::new(),
        limit: 100,
        max_bytes: 6,
    };
    let Response::Pairs { pairs, more } = call(&mut c, budget) else {
        panic!()
    };
    assert_eq!((pairs.len(), more), (2, true), "{pairs:?}");
    // A budget smaller than one pair still returns that pair: a scan always progresses.
    let tiny = Command::Scan {
        start: b"k9".to_vec(),
        end: Vec::new(),
        limit: 100,
        max_bytes: 1,
    };
    let Response::Pairs { pairs, more } = call(&mut c, tiny) else {
        panic!()
    };
    assert_eq!((pairs.len(), more), (1, true));
    let to_end = Command::Scan {
        start: b"k5".to_vec(),
        end: Vec::new(),
        limit: 100,
        max_bytes: 0,
    };
    let Response::Pairs { pairs, more } = call(&mut c, to_end) else {
        panic!()
    };
    assert_eq!(
        (pairs.len(), more),
        (5, false),
        "k5..k9, then the end of the range"
    );

    let cas = |expected: Option<&str>, new: Option<&str>| Command::CompareAndSwap {
        key: b"c".to_vec(),
        expected: expected.map(Into::into),
        new: new.map(Into::into),
    };
    assert_eq!(
        call(&mut c, cas(None, Some("x"))),
        Response::Swapped {
            succeeded: true,
            previous: None
        }
    );
    assert_eq!(
        call(&mut c, cas(None, Some("y"))),
        Response::Swapped {
            succeeded: false,
            previous: Some(b"x".to_vec())
        }
    );
    assert_eq!(
        call(&mut c, cas(Some("x"), Some("z"))),
        Response::Swapped {
            succeeded: true,
            previous: Some(b"x".to_vec())
        }
    );
    assert_eq!(
        call(&mut c, cas(Some("z"), None)),
        Response::Swapped {
            succeeded: true,
            previous: Some(b"z".to_vec())
        }
    );
    assert_eq!(
        call(&mut c, Command::Get { key: b"c".to_vec() }),
        Response::Value(None)
    );
}

#[test]
fn compare_and_swaps_in_one_round_see_each_other() {
    let mut c = Cluster::new(3, 1, 19);
    let leader = c.wait_leader(1, 60).unwrap();
    // Ten CAS increments proposed back to back, all applied in the same round(s): each must
    // see the previous one's write, so exactly one succeeds per expected value.
    let mut rxs = Vec::new();
    for i in 0..10u32 {
        let expected = if i == 0 {
            None
        } else {
            Some(i.to_string().into_bytes())
        };
        let cmd = Command::CompareAndSwap {
            key: b"n".to_vec(),
            expected,
            new: Some((i + 1).to_string().into_bytes()),
        };
        rxs.push(c.request(leader, 1, cmd));
    }
    for (i, rx) in rxs.iter_mut().enumerate() {
        match c.wait_answer(rx, 50).unwrap() {
            Response::Swapped { succeeded, .. } => {
                assert!(succeeded, "cas {i} saw the previous write")
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(c.get(b"n").unwrap().as_deref(), Some(&b"10"[..]));
}

#[test]
fn a_scan_may_resume_right_after_a_key_of_maximum_length() {
    let mut c = Cluster::new(3, 1, 47);
    c.wait_leader(1, 60).unwrap();
    let max = flotilla_tests::harness_config().max_key_size;
    let longest = vec![7u8; max];
    call(
        &mut c,
        Command::Put {
            key: longest.clone(),
            value: b"v".to_vec(),
        },
    );
    call(
        &mut c,
        Command::Put {
            key: vec![8u8],
            value: b"w".to_vec(),
        },
    );
    let mut after = longest.clone();
    after.push(0);
    let Response::Pairs { pairs, .. } = call(
        &mut c,
        Command::Scan {
            start: after,
            end: Vec::new(),
            limit: 10,
            max_bytes: 0,
        },
    ) else {
        panic!("scan answers pairs")
    };
    assert_eq!(pairs, vec![(vec![8u8], b"w".to_vec())]);
}
