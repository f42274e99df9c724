//! Routing hints (issue 13): a node that forwarded a `Kv` call names the range's leader
//! and span in the response; a client that follows the hint reaches the leader, which
//! names no one (it served the call itself); a stale hint still gets a correct answer.

mod common;

use flotilla_server::peers::channel_to;
use flotilla_server::proto::kv_client::KvClient;
use flotilla_server::proto::{GetRequest, PutRequest};
use flotilla_server::routes::{Routes, LEADER_HEADER};

use common::*;

fn kv(endpoint: &str) -> KvClient<tonic::transport::Channel> {
    KvClient::new(channel_to(endpoint).expect("a channel"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarding_node_names_the_leader_and_a_client_that_follows_goes_straight_there() {
    let _serial = serial().await;
    let cluster = TestCluster::start(3, ClusterOpts::ranges(1)).await;
    let client = cluster.client();
    poll_until("a first put", READY_TIMEOUT, || async {
        client.put(b"k", b"v0").await.map_err(|s| s.to_string())
    })
    .await;
    let leader = poll_until("the user range's leader", READY_TIMEOUT, || async {
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
    .await;
    let other = (1..=3).find(|n| *n != leader).unwrap();

    // Through a node that does not lead: the answer names the leader.
    let resp = kv(&cluster.endpoint(other))
        .put(PutRequest {
            key: b"k".to_vec(),
            value: b"v1".to_vec(),
        })
        .await
        .expect("put");
    // (The address is the one the node reaches the leader at: in these tests, a proxy in
    // front of it.)
    let named = resp
        .metadata()
        .get(LEADER_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    assert!(
        named.is_some(),
        "no hint from a node that forwarded: {:?}",
        resp.metadata()
    );
    let routes = Routes::default();
    routes.learn(resp.metadata());
    let (address, channel) = routes
        .route(b"any key of the one user range")
        .expect("a route for every key");
    assert_eq!(Some(address), named);

    // Following the hint reaches the leader, which attaches nothing.
    let resp = KvClient::new(channel)
        .put(PutRequest {
            key: b"k".to_vec(),
            value: b"v2".to_vec(),
        })
        .await
        .expect("put");
    assert!(
        resp.metadata().get(LEADER_HEADER).is_none(),
        "the leader named someone: {:?}",
        resp.metadata()
    );

    // A stale hint is only a hop: a get sent to the wrong node is still answered right.
    let got = kv(&cluster.endpoint(other))
        .get(GetRequest { key: b"k".to_vec() })
        .await
        .expect("get")
        .into_inner();
    assert_eq!((got.found, got.value), (true, b"v2".to_vec()));
}
