//! The network transport between nodes: the store's [`Transport`] over gRPC.
//!
//! Each destination node gets one long-lived client stream (`Internal.Raft`) fed by a
//! bounded queue; each flush of the store (all ranges' messages for that node, coalesced
//! heartbeats included) is one frame. The poller never blocks: when the queue is full or
//! the destination is unreachable, batches are dropped and counted, and Raft retransmits.
//! A broken stream is reopened after a short backoff.
//!
//! Once the cluster version has risen past the first format (`raftstore/src/version.rs`),
//! a stream is opened only after the destination answered a `Hello` saying its binary
//! reads the cluster's version. Each stream is stamped with the version it opened at (the
//! destination raises its own to it before taking a frame), and it is closed as soon as
//! the version rises past that, so the next one asks again. A node restarted with an
//! older binary is a new process behind a broken stream, so it too is asked again before
//! it gets a frame: no entry in a format it would misread reaches it.
//!
//! Snapshots can be far larger than a frame should be, so each goes on its own call
//! (`Internal.Snapshot`), on a connection of its own: the Raft message first, then its
//! files (`flotilla_raftstore::snap`) read from disk in 1 MiB chunks on a blocking thread,
//! at most `snapshot_rate` bytes per second summed over the node's transfers, one at a
//! time per range and destination. A 1 GiB snapshot holds a few chunks in memory, never
//! the range, and never delays another range's heartbeat.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_raftstore::version::{ClusterVersion, V1_SINGLE};
use flotilla_raftstore::{snap, RaftEnvelope, Transport};
use parking_lot::Mutex;
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
    /// Bytes of snapshot files sent.
    pub snapshot_bytes_sent: AtomicU64,
    /// Streams not opened because the destination's binary does not read the cluster's
    /// format version.
    pub streams_refused_version: AtomicU64,
}

/// Sends each node's batches over its own gRPC stream.
pub struct GrpcTransport {
    peers: Arc<Peers>,
    runtime: Handle,
    queues: Mutex<HashMap<u64, mpsc::Sender<Vec<RaftEnvelope>>>>,
    metrics: Arc<TransportMetrics>,
    version: ClusterVersion,
    snap_root: PathBuf,
    throttle: Arc<Throttle>,
    /// (destination node, range) of the snapshots being sent: one at a time per range.
    uploading: Arc<Mutex<std::collections::HashSet<(u64, u64)>>>,
}

impl GrpcTransport {
    /// A transport that resolves nodes through `peers`, runs its tasks on `runtime`,
    /// sends Raft streams only to nodes whose binaries read `version`, and sends snapshot
    /// files from `snap_root` at most `snapshot_rate` bytes per second (0: no limit).
    pub fn new(
        peers: Arc<Peers>,
        runtime: Handle,
        version: ClusterVersion,
        snap_root: PathBuf,
        snapshot_rate: u64,
    ) -> GrpcTransport {
        let (throttle, uploading) = (Arc::new(Throttle::new(snapshot_rate)), Arc::default());
        GrpcTransport {
            peers,
            runtime,
            queues: Mutex::default(),
            metrics: Arc::default(),
            version,
            snap_root,
            throttle,
            uploading,
        }
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
        let link = Link {
            peers: self.peers.clone(),
            metrics: self.metrics.clone(),
            version: self.version.clone(),
            to,
        };
        self.runtime.spawn(run_stream(link, rx));
        queues.insert(to, tx.clone());
        tx
    }

    fn send_snapshot(&self, to: u64, env: RaftEnvelope) {
        let range = env.range_id;
        if !self.uploading.lock().insert((to, range)) {
            // One is on its way; raft-rs asks again if that one does not install.
            return;
        }
        let (peers, metrics) = (self.peers.clone(), self.metrics.clone());
        let (root, throttle, uploading) = (
            self.snap_root.clone(),
            self.throttle.clone(),
            self.uploading.clone(),
        );
        self.runtime.spawn(async move {
            let outcome = upload_snapshot(&peers, to, env, root, throttle, metrics.clone()).await;
            uploading.lock().remove(&(to, range));
            match outcome {
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
        let (snapshots, batch): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|e| e.message.get_msg_type() == MessageType::MsgSnapshot);
        for env in snapshots {
            self.send_snapshot(to, env);
        }
        if !batch.is_empty() && self.queue(to).try_send(batch).is_err() {
            self.metrics.batches_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What a stream to one node needs.
struct Link {
    peers: Arc<Peers>,
    metrics: Arc<TransportMetrics>,
    version: ClusterVersion,
    to: u64,
}

/// Keeps a stream to `link.to` open while there is something to send, forwarding every
/// queued batch as a frame. Batches that arrive while the stream is down are dropped.
async fn run_stream(link: Link, mut queue: mpsc::Receiver<Vec<RaftEnvelope>>) {
    let (to, metrics) = (link.to, &link.metrics);
    let mut backoff = Duration::from_millis(50);
    let mut refused = false;
    while let Some(first) = queue.recv().await {
        let Some(channel) = link.peers.channel(to) else {
            metrics.batches_dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        // The stream is stamped with the version it opens at (`Peers::stamp`); the
        // destination raises its own to it before it takes a frame.
        let opened_at = link.version.get();
        if !link.admit(channel.clone(), &mut refused).await {
            metrics.batches_dropped.fetch_add(1, Ordering::Relaxed);
            back_off(&mut queue, metrics, &mut backoff).await;
            continue;
        }
        metrics.streams_opened.fetch_add(1, Ordering::Relaxed);
        let (frames, rx) = mpsc::channel::<RaftBatch>(64);
        let _ = frames.send(frame(&first)).await;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        link.peers.stamp(&mut request);
        let mut call =
            tokio::spawn(async move { InternalClient::new(channel).raft(request).await });
        let opened = tokio::time::Instant::now();
        let ended = loop {
            tokio::select! {
                next = queue.recv() => match next {
                    // The cluster moved past the version the stream opened at: open a new
                    // one, asking the destination again.
                    Some(_) if link.version.get() > opened_at => break None,
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
        back_off(&mut queue, metrics, &mut backoff).await;
    }
}

/// Drops what queued up while a stream was failing, then waits before the next try.
async fn back_off(
    queue: &mut mpsc::Receiver<Vec<RaftEnvelope>>,
    metrics: &TransportMetrics,
    backoff: &mut Duration,
) {
    while queue.try_recv().is_ok() {
        metrics.batches_dropped.fetch_add(1, Ordering::Relaxed);
    }
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(Duration::from_secs(1));
}

impl Link {
    /// Whether a stream may be opened to the destination: at the first format every binary
    /// may have one, and no question is asked; past it, the destination must say in a
    /// `Hello` that its binary reads the cluster's version. `refused`
    /// keeps a refusal from being logged on every retry.
    async fn admit(&self, channel: tonic::transport::Channel, refused: &mut bool) -> bool {
        let needed = self.version.get();
        if needed <= V1_SINGLE {
            return true;
        }
        // A probe: it claims nothing.
        let theirs = match self.peers.hello(channel, 0).await {
            Ok(resp) => resp.version.max(V1_SINGLE),
            Err(status) => {
                tracing::debug!(to = self.to, %status, "no hello before a raft stream");
                return false;
            }
        };
        if theirs >= needed {
            *refused = false;
            return true;
        }
        self.metrics
            .streams_refused_version
            .fetch_add(1, Ordering::Relaxed);
        if !std::mem::replace(refused, true) {
            tracing::error!(
                to = self.to,
                theirs,
                cluster_version = needed,
                "node {} runs a binary that reads format versions up to {theirs}, and the cluster \
                 writes version {needed}: no Raft messages go to it until it runs a newer binary",
                self.to
            );
        }
        false
    }
}

fn frame(batch: &[RaftEnvelope]) -> RaftBatch {
    RaftBatch {
        envelopes: batch.iter().map(envelope_to_proto).collect(),
    }
}

/// Sends one snapshot to node `to`: its message, then its files in chunks.
async fn upload_snapshot(
    peers: &Peers,
    to: u64,
    env: RaftEnvelope,
    root: PathBuf,
    throttle: Arc<Throttle>,
    metrics: Arc<TransportMetrics>,
) -> Result<(), String> {
    // A connection of its own: HTTP/2 flow control is shared by a connection's streams,
    // and bulk bytes must never hold back the heartbeats on the Raft stream.
    let address = peers
        .address(to)
        .ok_or_else(|| format!("no address known for node {to}"))?;
    let channel = peers
        .dialer()
        .channel(&address)
        .map_err(|e| e.to_string())?;
    let first = SnapshotChunk {
        data: Vec::new(),
        envelope: Some(envelope_to_proto(&env)),
    };
    let snap = env.message.get_snapshot().clone();
    let mut outgoing =
        snap::Outgoing::open(&root, env.range_id, &snap).map_err(|e| e.to_string())?;
    let (chunks, rx) = mpsc::channel::<SnapshotChunk>(4);
    let _ = chunks.send(first).await;
    // Disk reads and pacing on a blocking thread; the stream holds at most 4 chunks.
    let reader = tokio::task::spawn_blocking(move || -> Result<(), String> {
        while let Some(data) = outgoing
            .next_chunk(snap::CHUNK_BYTES)
            .map_err(|e| e.to_string())?
        {
            throttle.take(data.len() as u64);
            metrics
                .snapshot_bytes_sent
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            if chunks
                .blocking_send(SnapshotChunk {
                    data,
                    envelope: None,
                })
                .is_err()
            {
                break; // the receiver ended the call (it had the snapshot already)
            }
        }
        Ok(())
    });
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    peers.stamp(&mut request);
    let mut client = InternalClient::new(channel).max_encoding_message_size(MAX_FRAME_BYTES);
    let sent = client
        .snapshot(request)
        .await
        .map(|_| ())
        .map_err(|s| s.to_string());
    let read = reader.await.map_err(|e| e.to_string())?;
    sent.and(read)
}

/// Paces the snapshot bytes a node sends: a token bucket of `rate` bytes per second,
/// shared by its transfers, holding at most one second's worth.
pub struct Throttle {
    rate: u64,
    state: Mutex<(std::time::Instant, f64)>,
}

impl Throttle {
    /// A bucket of `rate` bytes per second (0: no limit).
    pub fn new(rate: u64) -> Throttle {
        Throttle {
            rate,
            state: Mutex::new((std::time::Instant::now(), rate as f64)),
        }
    }

    /// Takes `n` bytes from the bucket, blocking the calling (blocking-pool) thread until
    /// they are there.
    pub fn take(&self, n: u64) {
        if self.rate == 0 {
            return;
        }
        let wait = {
            let mut s = self.state.lock();
            let now = std::time::Instant::now();
            let refill = now.duration_since(s.0).as_secs_f64() * self.rate as f64;
            s.1 = (s.1 + refill).min(self.rate as f64) - n as f64;
            s.0 = now;
            (s.1 < 0.0).then(|| Duration::from_secs_f64(-s.1 / self.rate as f64))
        };
        if let Some(wait) = wait {
            // Pacing, not synchronisation: the bytes are due once this much time passed.
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod version_tests;

#[cfg(test)]
mod tests {
    use super::Throttle;

    #[test]
    fn the_throttle_holds_a_transfer_to_its_rate() {
        let t = Throttle::new(8 << 20);
        let start = std::time::Instant::now();
        for _ in 0..16 {
            t.take(1 << 20); // 16 MiB at 8 MiB/s, 8 MiB of it in the bucket at first
        }
        // Never faster than the rate allows (slower is the machine's business).
        let took = start.elapsed().as_secs_f64();
        assert!(took >= 0.9, "took {took:.2}s");
    }
}
