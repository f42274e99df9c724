//! `Kv.Commands` (issue 13): many commands over one stream. Against a real cluster: every
//! command of a frame is answered exactly once with its own outcome (a bad one gets its
//! own INVALID_ARGUMENT, with the unary call's message, and fails nothing else); a node
//! that forwarded a command names the leader in its result; closing the request side ends
//! the response stream once everything is answered; more commands than a stream may hold
//! in flight are all answered (the node stops reading, and resumes).

// gRPC statuses are carried by value, as the fake service returns them.
#![allow(clippy::result_large_err)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flotilla_server::peers::channel_to;
use flotilla_server::proto::command::Op;
use flotilla_server::proto::command_result::Outcome;
use flotilla_server::proto::kv_client::KvClient;
use flotilla_server::proto::{
    Command, CommandResult, CommandsRequest, CommandsResponse, DeleteRequest, GetRequest,
    PutRequest,
};
use flotilla_server::routes::{Routes, LEADER_HEADER};
use flotilla_server::service::commands::MAX_IN_FLIGHT;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

use common::*;

/// The store's default `max_value_size` (8 MiB).
const MAX_VALUE: usize = 8 << 20;

fn kv(endpoint: &str) -> KvClient<tonic::transport::Channel> {
    KvClient::new(channel_to(endpoint).expect("a channel")).max_decoding_message_size(64 << 20)
}

/// An open `Commands` stream: frames go in through `send`, answers come out of `results`.
struct Stream {
    send: Option<mpsc::Sender<CommandsRequest>>,
    results: Streaming<CommandsResponse>,
    /// Response frames received so far.
    frames: usize,
}

impl Stream {
    async fn open(endpoint: &str) -> Stream {
        let (send, rx) = mpsc::channel(16);
        let results = kv(endpoint)
            .commands(ReceiverStream::new(rx))
            .await
            .expect("open a commands stream")
            .into_inner();
        Stream {
            send: Some(send),
            results,
            frames: 0,
        }
    }

    async fn send(&self, commands: Vec<Command>) {
        let send = self.send.as_ref().expect("the request side is open");
        send.send(CommandsRequest { commands })
            .await
            .expect("send a frame");
    }

    /// Closes the request side.
    fn close(&mut self) {
        self.send = None;
    }

    /// Results until `n` have come, within `CALL_TIMEOUT`.
    async fn receive(&mut self, n: usize) -> Vec<CommandResult> {
        self.receive_within(n, CALL_TIMEOUT).await
    }

    async fn receive_within(&mut self, n: usize, limit: Duration) -> Vec<CommandResult> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.results.message()).await;
            let frame = frame
                .unwrap_or_else(|_| panic!("only {} of {n} results within {limit:?}", got.len()));
            let frame = frame
                .expect("the stream broke")
                .expect("the stream ended before every answer");
            assert!(!frame.results.is_empty(), "an empty response frame");
            self.frames += 1;
            got.extend(frame.results);
        }
        assert_eq!(got.len(), n, "more results than commands: {got:?}");
        got
    }

    /// Waits for the end of the response stream, which must carry no more results.
    async fn expect_end(&mut self) {
        let end = tokio::time::timeout(CALL_TIMEOUT, self.results.message()).await;
        match end.expect("the response stream did not end after the request side closed") {
            Ok(None) => {}
            Ok(Some(frame)) => panic!("results after every command was answered: {frame:?}"),
            Err(status) => panic!("the stream ended with an error: {status:?}"),
        }
    }
}

fn command(id: u64, op: Option<Op>) -> Command {
    Command {
        id,
        timeout_ms: 0,
        op,
    }
}

fn put(id: u64, key: &[u8], value: &[u8]) -> Command {
    command(
        id,
        Some(Op::Put(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
        })),
    )
}

fn get(id: u64, key: &[u8]) -> Command {
    command(id, Some(Op::Get(GetRequest { key: key.to_vec() })))
}

fn delete(id: u64, key: &[u8]) -> Command {
    command(id, Some(Op::Delete(DeleteRequest { key: key.to_vec() })))
}

/// The results by id, each id answered exactly once.
fn by_id(results: Vec<CommandResult>) -> BTreeMap<u64, CommandResult> {
    let mut out = BTreeMap::new();
    for r in results {
        let id = r.id;
        if let Some(first) = out.insert(id, r) {
            panic!("command {id} was answered twice (first {first:?})");
        }
    }
    out
}

/// The code and message of a result that must be an error.
fn error_of(r: &CommandResult) -> (Code, String) {
    match &r.outcome {
        Some(Outcome::Error(e)) => (Code::from_i32(e.code), e.message.clone()),
        other => panic!("command {} should have failed, got {other:?}", r.id),
    }
}

/// The value a get result found (`None`: absent); panics on anything else.
fn got(r: &CommandResult) -> Option<Vec<u8>> {
    match &r.outcome {
        Some(Outcome::Get(g)) => g.found.then(|| g.value.clone()),
        other => panic!("command {} should be a get's answer, got {other:?}", r.id),
    }
}

fn succeeded(r: &CommandResult) {
    match &r.outcome {
        Some(Outcome::Put(_) | Outcome::Delete(_) | Outcome::Get(_)) => {}
        other => panic!("command {} failed: {other:?}", r.id),
    }
}

/// The node leading the one user range.
async fn user_range_leader(cluster: &TestCluster) -> u64 {
    let client = cluster.client();
    poll_until("a first put", READY_TIMEOUT, || async {
        client.put(b"warm", b"up").await.map_err(|s| s.to_string())
    })
    .await;
    poll_until("the user range's leader", READY_TIMEOUT, || async {
        let ranges = client.ranges().await.map_err(|s| s.to_string())?;
        let user = ranges
            .ranges
            .iter()
            .find(|r| r.descriptor.as_ref().is_some_and(|d| d.range_id != 1));
        match user.map(|r| r.leader_node) {
            Some(l) if l != 0 => Ok(l),
            other => Err(format!("leader {other:?}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_of_a_frame_gets_its_own_answer_and_a_forwarding_node_names_the_leader() {
    let _serial = serial().await;
    let cluster = TestCluster::start(3, ClusterOpts::ranges(1)).await;
    let leader = user_range_leader(&cluster).await;
    let other = (1..=3).find(|n| *n != leader).unwrap();
    let via = cluster.endpoint(other);

    // What the unary calls say through the same node, to compare with.
    let mut unary = kv(&via);
    unary
        .put(PutRequest {
            key: b"old".to_vec(),
            value: b"old value".to_vec(),
        })
        .await
        .expect("put old");
    unary
        .put(PutRequest {
            key: b"doomed".to_vec(),
            value: b"x".to_vec(),
        })
        .await
        .expect("put doomed");
    let hinted = unary
        .put(PutRequest {
            key: b"old".to_vec(),
            value: b"old value".to_vec(),
        })
        .await
        .expect("put old");
    let unary_leader = hinted
        .metadata()
        .get(LEADER_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let unary_leader = unary_leader.expect("a forwarding node names the leader in unary metadata");
    let empty_key = unary
        .put(PutRequest {
            key: vec![],
            value: b"v".to_vec(),
        })
        .await
        .expect_err("an empty key");
    let big = vec![7u8; MAX_VALUE + 1];
    let too_big = unary
        .put(PutRequest {
            key: b"big".to_vec(),
            value: big.clone(),
        })
        .await
        .expect_err("a value over the limit");

    let mut stream = Stream::open(&via).await;
    stream
        .send(vec![
            put(1, b"a", b"value a"),
            put(2, b"b", b"value b"),
            put(3, b"c", b"value c"),
            get(4, b"old"),
            get(5, b"absent"),
            put(6, b"", b"an empty key"),
            put(7, b"big", &big),
            command(8, None),
            delete(9, b"doomed"),
            // The same id twice, the first still running: the second is refused alone.
            put(10, b"d", b"value d"),
            get(10, b"d"),
        ])
        .await;
    let results = stream.receive(11).await;
    let duplicate: Vec<&CommandResult> = results.iter().filter(|r| r.id == 10).collect();
    assert_eq!(
        duplicate.len(),
        2,
        "id 10 was sent twice: two answers, {duplicate:?}"
    );
    let refused: Vec<_> = duplicate
        .iter()
        .filter(|r| matches!(r.outcome, Some(Outcome::Error(_))))
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "exactly one of the two id-10 commands is refused: {duplicate:?}"
    );
    let (code, message) = error_of(refused[0]);
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        message.contains("id 10") && message.contains("already in flight"),
        "{message}"
    );
    let results = by_id(results.into_iter().filter(|r| r.id != 10).collect());
    assert_eq!(
        results.keys().copied().collect::<Vec<_>>(),
        (1..=9).collect::<Vec<_>>(),
        "one answer per id"
    );

    for id in [1, 2, 3, 9] {
        succeeded(&results[&id]);
    }
    assert_eq!(
        got(&results[&4]),
        Some(b"old value".to_vec()),
        "a get of a key written before"
    );
    assert_eq!(got(&results[&5]), None, "a get of an absent key");
    let (code, message) = error_of(&results[&6]);
    assert_eq!(
        (code, message.as_str()),
        (Code::InvalidArgument, empty_key.message()),
        "the empty key: as the unary put"
    );
    assert!(message.contains("empty key"), "{message}");
    let (code, message) = error_of(&results[&7]);
    assert_eq!(
        (code, message.as_str()),
        (Code::InvalidArgument, too_big.message()),
        "the big value: as the unary put"
    );
    assert!(
        message.contains("max_value_size") && message.contains(&(MAX_VALUE + 1).to_string()),
        "{message}"
    );
    let (code, message) = error_of(&results[&8]);
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        message.contains("command 8") && message.contains("no operation"),
        "{message}"
    );

    // The node forwarded every command to the leader: each success names it, as the
    // unary metadata does; a refused command names no one.
    for id in [1, 2, 3, 4, 5, 9] {
        let hint = results[&id]
            .hint
            .as_ref()
            .unwrap_or_else(|| panic!("no hint on forwarded command {id}"));
        assert_eq!(hint.leader, unary_leader, "command {id}'s hint");
        assert_eq!(
            (hint.start.as_slice(), hint.end.as_deref()),
            (&b""[..], None),
            "the one user range spans everything"
        );
    }
    for id in [6, 7, 8] {
        assert!(
            results[&id].hint.is_none(),
            "refused command {id} names a leader: {:?}",
            results[&id].hint
        );
    }
    let routes = Routes::default();
    let hint = results[&1].hint.clone().unwrap();
    routes.learn_span(&hint.leader, hint.start, hint.end);
    assert_eq!(
        routes.leader(b"any key").as_deref(),
        Some(unary_leader.as_str())
    );

    // What the first frame wrote is read back; then closing the request side ends the
    // response stream once the last answers are out.
    stream
        .send(vec![
            get(11, b"a"),
            get(12, b"b"),
            get(13, b"c"),
            get(14, b"doomed"),
            get(15, b"d"),
        ])
        .await;
    stream.close();
    let results = by_id(stream.receive(5).await);
    assert_eq!(got(&results[&11]), Some(b"value a".to_vec()));
    assert_eq!(got(&results[&12]), Some(b"value b".to_vec()));
    assert_eq!(got(&results[&13]), Some(b"value c".to_vec()));
    assert_eq!(got(&results[&14]), None, "deleted in the first frame");
    assert_eq!(
        got(&results[&15]),
        Some(b"value d".to_vec()),
        "the first id-10 command was the put"
    );
    stream.expect_end().await;

    // Through the leader itself: no hint, as for unary calls.
    let mut direct = Stream::open(&cluster.endpoint(leader)).await;
    direct
        .send(vec![put(1, b"e", b"value e"), get(2, b"a")])
        .await;
    direct.close();
    for r in direct.receive(2).await {
        succeeded(&r);
        assert!(r.hint.is_none(), "the leader named someone: {r:?}");
    }
    direct.expect_end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_commands_than_a_stream_holds_in_flight_are_all_answered() {
    let _serial = serial().await;
    let cluster = TestCluster::start(3, ClusterOpts::ranges(1)).await;
    let leader = user_range_leader(&cluster).await;
    let mut stream = Stream::open(&cluster.endpoint(leader)).await;
    let total = MAX_IN_FLIGHT as u64 + 1_000;
    // Three frames, all sent before reading anything: past MAX_IN_FLIGHT the node stops
    // reading until answers go out, and must resume.
    let keys: Vec<Vec<u8>> = (0..total).map(|i| spread_key("many", i % 50)).collect();
    for chunk in (0..total).collect::<Vec<_>>().chunks(2_000) {
        stream
            .send(chunk.iter().map(|&i| get(i, &keys[i as usize])).collect())
            .await;
    }
    stream.close();
    let results = by_id(stream.receive_within(total as usize, READY_TIMEOUT).await);
    assert_eq!(results.len() as u64, total);
    for r in results.values() {
        assert_eq!(got(r), None, "nothing was written under these keys");
    }
    stream.expect_end().await;
    assert!(
        stream.frames < total as usize,
        "answers ready together share frames: {} frames for {total} results",
        stream.frames
    );
}
