//! The transport's version check against a stand-in node: a Raft stream is opened to a
//! node whose binary reads the cluster's format version, and to no other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_raftstore::version::{ClusterVersion, V1_SINGLE, V2_BATCHED};
use flotilla_raftstore::{RaftEnvelope, Replica, Transport};
use raft::prelude::{Message, MessageType};
use tonic::{Request, Response, Status, Streaming};

use super::GrpcTransport;
use crate::peers::Peers;
use crate::proto::internal_server::{Internal, InternalServer};
use crate::proto::*;
use crate::tls::dial::Dialer;

/// A node that answers `Hello` with its binary's `version`, counts Raft frames, and
/// keeps the cluster version the last Raft stream was stamped with.
struct StandIn {
    version: u32,
    frames: Arc<AtomicU64>,
    stamped: Arc<AtomicU64>,
}

fn unused<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in this stand-in"))
}

#[tonic::async_trait]
impl Internal for StandIn {
    async fn hello(&self, _: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        Ok(Response::new(HelloResponse {
            node_id: 9,
            cluster_id: "c".into(),
            version: self.version,
            ..Default::default()
        }))
    }
    async fn bootstrap(
        &self,
        _: Request<BootstrapRequest>,
    ) -> Result<Response<BootstrapResponse>, Status> {
        unused()
    }
    async fn raft(&self, req: Request<Streaming<RaftBatch>>) -> Result<Response<Done>, Status> {
        let (_, cluster) = crate::peers::caller_versions(&req);
        self.stamped.store(cluster as u64, Ordering::SeqCst);
        let mut stream = req.into_inner();
        while stream.message().await?.is_some() {
            self.frames.fetch_add(1, Ordering::SeqCst);
        }
        Ok(Response::new(Done {}))
    }
    async fn snapshot(
        &self,
        _: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Done>, Status> {
        unused()
    }
    async fn join(&self, _: Request<JoinRequest>) -> Result<Response<BootstrapRequest>, Status> {
        unused()
    }
    async fn allocate_node_id(
        &self,
        _: Request<AllocateNodeIdRequest>,
    ) -> Result<Response<AllocateNodeIdResponse>, Status> {
        unused()
    }
    async fn execute(&self, _: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        unused()
    }
    async fn node_ranges(
        &self,
        _: Request<NodeRangesRequest>,
    ) -> Result<Response<NodeRangesResponse>, Status> {
        unused()
    }
}

/// Starts a stand-in reading formats up to `version`; its address, frame counter and
/// last stamped cluster version.
async fn stand_in_stamped(version: u32) -> (String, Arc<AtomicU64>, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (frames, stamped) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let service = InternalServer::new(StandIn {
        version,
        frames: frames.clone(),
        stamped: stamped.clone(),
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (address, frames, stamped)
}

/// Starts a stand-in reading formats up to `version`; its address and frame counter.
async fn stand_in(version: u32) -> (String, Arc<AtomicU64>) {
    let (address, frames, _) = stand_in_stamped(version).await;
    (address, frames)
}

/// A transport of node 1 in a cluster at `cluster_version`, reaching node 9 at `address`.
fn transport(
    address: &str,
    cluster_version: u32,
    dir: &tempfile::TempDir,
) -> (GrpcTransport, ClusterVersion) {
    let engine = flotilla_engine::Engine::open(dir.path().join("db"), &Default::default()).unwrap();
    let version = ClusterVersion::open(engine, cluster_version).unwrap();
    let peers = Arc::new(
        Peers::new(
            1,
            "127.0.0.1:1".into(),
            [(9, address.to_string())].into(),
            Duration::from_secs(60),
            Dialer::insecure(),
        )
        .with_versions(flotilla_raftstore::BINARY_VERSION, version.clone()),
    );
    peers.set_cluster("c", vec![1, 9]);
    let t = GrpcTransport::new(
        peers,
        tokio::runtime::Handle::current(),
        version.clone(),
        dir.path().join("snap"),
        0,
    );
    (t, version)
}

fn heartbeat() -> Vec<RaftEnvelope> {
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgHeartbeat);
    let replica = |node_id| Replica {
        node_id,
        replica_id: node_id,
        ..Default::default()
    };
    vec![RaftEnvelope {
        range_id: 1,
        from: replica(1),
        to: replica(9),
        message,
    }]
}

/// Sends heartbeats to node 9 every 50 ms until `done` holds (true) or 20 s pass.
async fn send_until(t: &GrpcTransport, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        t.send(9, heartbeat());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_raft_stream_goes_to_a_node_whose_binary_is_older_than_the_cluster_version() {
    let dir = tempfile::tempdir().unwrap();
    let (old, old_frames) = stand_in(V1_SINGLE).await;
    let (t, _) = transport(&old, V2_BATCHED, &dir);
    let m = t.metrics();
    let refused = || m.streams_refused_version.load(Ordering::SeqCst) >= 2;
    assert!(
        send_until(&t, refused).await,
        "the old node was never asked"
    );
    assert_eq!(old_frames.load(Ordering::SeqCst), 0, "a frame reached it");
    assert_eq!(m.streams_opened.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_reads_the_cluster_version_gets_its_stream() {
    for (theirs, cluster) in [(V2_BATCHED, V2_BATCHED), (V1_SINGLE, V1_SINGLE)] {
        let dir = tempfile::tempdir().unwrap();
        let (address, frames) = stand_in(theirs).await;
        let (t, _) = transport(&address, cluster, &dir);
        let arrived = || frames.load(Ordering::SeqCst) > 0;
        assert!(
            send_until(&t, arrived).await,
            "no frame reached a node reading version {theirs} in a cluster at {cluster}"
        );
        assert_eq!(
            t.metrics().streams_refused_version.load(Ordering::SeqCst),
            0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_open_before_the_version_rose_past_its_node_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (old, frames) = stand_in(V1_SINGLE).await;
    let (t, version) = transport(&old, V1_SINGLE, &dir);
    assert!(send_until(&t, || frames.load(Ordering::SeqCst) > 0).await);
    version.raise(V2_BATCHED).unwrap();
    let m = t.metrics();
    let refused = |n| {
        let m = m.clone();
        move || m.streams_refused_version.load(Ordering::SeqCst) >= n
    };
    assert!(send_until(&t, refused(1)).await, "the stream stayed open");
    let after = frames.load(Ordering::SeqCst);
    assert!(send_until(&t, refused(3)).await);
    assert_eq!(
        frames.load(Ordering::SeqCst),
        after,
        "frames still reached the old node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_says_the_cluster_version_it_opened_at_and_reopens_when_it_rises() {
    let dir = tempfile::tempdir().unwrap();
    let (address, frames, stamped) = stand_in_stamped(V2_BATCHED).await;
    let (t, version) = transport(&address, V1_SINGLE, &dir);
    assert!(send_until(&t, || frames.load(Ordering::SeqCst) > 0).await);
    assert_eq!(stamped.load(Ordering::SeqCst), V1_SINGLE as u64);
    version.raise(V2_BATCHED).unwrap();
    let restamped = || stamped.load(Ordering::SeqCst) == V2_BATCHED as u64;
    assert!(
        send_until(&t, restamped).await,
        "no stream stamped with the new version"
    );
}
