//! The network transport between nodes: the store's [`Transport`] over gRPC.
//!
//! Each destination node gets one long-lived client stream (`Internal.Raft`) fed by a
//! bounded queue; each flush of the store (all ranges' messages for that node, coalesced
//! heartbeats included) is one frame. The poller never blocks: when the queue is full or
//! the destination is unreachable, batches are dropped and counted, and Raft retransmits.
//! A broken stream is reopened after a short backoff.
//!
//! Snapshots can be far larger than a frame should be, so each goes on its own call
//! (`Internal.Snapshot`) in 1 MiB chunks, off the stream that carries heartbeats: a
//! 64 MiB snapshot never delays another range's heartbeat.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_raftstore::{RaftEnvelope, Transport};
use parking_lot::Mutex;
use prost::Message as _;
use raft::prelude::MessageType;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::convert::envelope_to_proto;
use crate::peers::Peers;
use crate::proto::internal_client::InternalClient;
use crate::proto::{RaftBatch, SnapshotChunk};

/// Batches queued per destination before new ones are dropped.
const QUEUE_BATCHES: usize = 1024;
/// The size of one snapshot chunk.
const CHUNK_BYTES: usize = 1 << 20;
/// The largest frame a node accepts on its node-to-node calls.
pub const MAX_FRAME_BYTES: usize = 256 << 20;

/// Counters of the network transport.
#[derive(Debug, Default)]
pub struct TransportMetrics {
    /// Batches dropped because the destination's queue was full or it was unreachable.
    pub batches_dropped: AtomicU64,
    /// Streams (re)opened.
    pub streams_opened: AtomicU64,
    /// Snapshots sent, and failed.
    pub snapshots_sent: AtomicU64,
    pub snapshots_failed: AtomicU64,
}

/// Sends each node's batches over its own gRPC stream.
pub struct GrpcTransport {
    peers: Arc<Peers>,
    runtime: Handle,
    queues: Mutex<HashMap<u64, mpsc::Sender<Vec<RaftEnvelope>>>>,
    metrics: Arc<TransportMetrics>,
}

impl GrpcTransport {
    /// A transport that resolves nodes through `peers` and runs its tasks on `runtime`.
    pub fn new(peers: Arc<Peers>, runtime: Handle) -> GrpcTransport {
        GrpcTransport { peers, runtime, queues: Mutex::default(), metrics: Arc::default() }
    }

    /// The transport's counters.
    pub fn metrics(&self) -> Arc<TransportMetrics> {
        self.metrics.clone()
    }

    fn queue(&self, to: u64) -> mpsc::Sender<Vec<RaftEnvelope>> {
        let mut queues = self.queues.lock();
        if let Some(q) = queues.get(&to).filter(|q| !q.is_closed()) {
            return q.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        let (peers, metrics) = (self.peers.clone(), self.metrics.clone());
        self.runtime.spawn(run_stream(peers, metrics, to, rx));
        queues.insert(to, tx.clone());
        tx
    }

    fn send_snapshot(&self, to: u64, env: RaftEnvelope) {
        let (peers, metrics) = (self.peers.clone(), self.metrics.clone());
        self.runtime.spawn(async move {
            let range = env.range_id;
            match upload_snapshot(&peers, to, &env).await {
                Ok(()) => metrics.snapshots_sent.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    tracing::warn!(to, range, error = %e, "snapshot not delivered; Raft will retry");
                    metrics.snapshots_failed.fetch_add(1, Ordering::Relaxed)
                }
            };
        });
    }
}

impl Transport for GrpcTransport {
    fn send(&self, to: u64, batch: Vec<RaftEnvelope>) {
        let (snapshots, batch): (Vec<_>, Vec<_>) =
            batch.into_iter().partition(|e| e.message.get_msg_type() == MessageType::MsgSnapshot);
        for env in snapshots {
            self.send_snapshot(to, env);
        }
        if !batch.is_empty() && self.queue(to).try_send(batch).is_err() {
            self.metrics.batches_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Keeps a stream to node `to` open while there is something to send, forwarding every
/// queued batch as a frame. Batches that arrive while the stream is down are dropped.
async fn run_stream(
    peers: Arc<Peers>,
    metrics: Arc<TransportMetrics>,
    to: u64,
    mut queue: mpsc::Receiver<Vec<RaftEnvelope>>,
) {
    let mut backoff = Duration::from_millis(50);
    while let Some(first) = queue.recv().await {
        let Some(channel) = peers.channel(to) else {
            metrics.batches_dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        metrics.streams_opened.fetch_add(1, Ordering::Relaxed);
        let (frames, rx) = mpsc::channel::<RaftBatch>(64);
        let _ = frames.send(frame(&first)).await;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        peers.stamp(&mut request);
        let mut call = tokio::spawn(async move { InternalClient::new(channel).raft(request).await });
        let opened = tokio::time::Instant::now();
        let ended = loop {
            tokio::select! {
                next = queue.recv() => match next {
                    Some(batch) => if frames.send(frame(&batch)).await.is_err() { break None },
                    None => return,
                },
                result = &mut call => break Some(result),
            }
        };
        // A stream that worked for a while starts the backoff over.
        if opened.elapsed() > Duration::from_secs(1) {
            backoff = Duration::from_millis(50);
        }
        drop(frames);
        match ended {
            Some(Ok(Err(status))) => tracing::debug!(to, %status, "raft stream ended"),
            Some(Err(e)) => tracing::warn!(to, error = %e, "raft stream task failed"),
            _ => {}
        }
        // Drop what queued up while the stream was failing, then wait before retrying.
        while queue.try_recv().is_ok() {
            metrics.batches_dropped.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

fn frame(batch: &[RaftEnvelope]) -> RaftBatch {
    RaftBatch { envelopes: batch.iter().map(envelope_to_proto).collect() }
}

/// Sends one snapshot message to node `to` in chunks.
async fn upload_snapshot(peers: &Peers, to: u64, env: &RaftEnvelope) -> Result<(), String> {
    let channel = peers.channel(to).ok_or_else(|| format!("no address known for node {to}"))?;
    let bytes = envelope_to_proto(env).encode_to_vec();
    let chunks: Vec<SnapshotChunk> =
        bytes.chunks(CHUNK_BYTES).map(|c| SnapshotChunk { data: c.to_vec() }).collect();
    let mut request = tonic::Request::new(tokio_stream::iter(chunks));
    peers.stamp(&mut request);
    let mut client = InternalClient::new(channel).max_encoding_message_size(MAX_FRAME_BYTES);
    client.snapshot(request).await.map(|_| ()).map_err(|s| s.to_string())
}
