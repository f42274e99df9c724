//! The threaded driver: one poller thread per store, fed by one mailbox.
//!
//! The poller blocks on the mailbox until a message arrives or the next tick is due, then
//! drains up to `max_batch_messages` more, so under load one round carries the work of
//! many requests and many ranges, and ends it with [`Store::end_round`]: one write batch,
//! one fsync, one transport flush per destination node. A storage failure stops the
//! poller; callers whose requests were in flight see their channel close
//! ([`Error::StoreStopped`]).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};

use crate::cmd::{callback, Callback, Request, ResponseReceiver};
use crate::error::Error;
use crate::metrics::StoreMetrics;
use crate::store::{RangeStatus, Store};
use crate::transport::{RaftEnvelope, Transport};

/// What a store's mailbox carries.
pub enum StoreMsg {
    /// Raft messages from another node, for replicas here.
    Raft(Vec<RaftEnvelope>),
    /// A client request and where to answer it.
    Request(Request, Callback),
    /// Report every replica's state.
    Status(tokio::sync::oneshot::Sender<Vec<RangeStatus>>),
    /// Stop the poller after this round.
    Stop,
}

/// A running store: its mailbox and its poller thread.
pub struct Node {
    node_id: u64,
    mailbox: Sender<StoreMsg>,
    metrics: Arc<StoreMetrics>,
    thread: Option<JoinHandle<()>>,
}

impl Node {
    /// Starts the poller thread for `store`, sending its messages through `transport`.
    pub fn start(store: Store, transport: Arc<dyn Transport>) -> Node {
        let (tx, rx) = channel::unbounded();
        let node_id = store.node_id();
        let metrics = store.metrics();
        let thread = std::thread::Builder::new()
            .name(format!("poller-{node_id}"))
            .spawn(move || poll_loop(store, rx, transport))
            .expect("spawn poller thread");
        Node { node_id, mailbox: tx, metrics, thread: Some(thread) }
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The store's counters.
    pub fn metrics(&self) -> &Arc<StoreMetrics> {
        &self.metrics
    }

    /// A handle that puts messages into this store's mailbox.
    pub fn mailbox(&self) -> Sender<StoreMsg> {
        self.mailbox.clone()
    }

    /// Sends a request; the answer arrives on the returned receiver. If the store has
    /// stopped before taking the request, the receiver yields [`Error::StoreStopped`] (not
    /// applied); if it stops after, the receiver closes without an answer (outcome unknown).
    pub fn request(&self, req: Request) -> ResponseReceiver {
        let (cb, rx) = callback();
        if let Err(channel::SendError(StoreMsg::Request(_, cb))) =
            self.mailbox.send(StoreMsg::Request(req, cb))
        {
            let _ = cb.send(Err(Error::StoreStopped { node_id: self.node_id }));
        }
        rx
    }

    /// Every replica's state, as the poller sees it between rounds; `None` if the store
    /// has stopped.
    pub fn status(&self) -> tokio::sync::oneshot::Receiver<Vec<RangeStatus>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.mailbox.send(StoreMsg::Status(tx));
        rx
    }

    /// Stops the poller and waits for it to finish.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.mailbox.send(StoreMsg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn poll_loop(mut store: Store, rx: Receiver<StoreMsg>, transport: Arc<dyn Transport>) {
    let tick = store.config().tick_interval;
    let max_batch = store.config().max_batch_messages;
    let mut next_tick = Instant::now() + tick;
    let mut running = true;
    while running {
        let now = Instant::now();
        let wait = if store.has_pending_work() {
            Duration::ZERO
        } else {
            next_tick.saturating_duration_since(now)
        };
        match rx.recv_timeout(wait) {
            Ok(msg) => running &= handle(&mut store, msg),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => running = false,
        }
        for _ in 0..max_batch {
            match rx.try_recv() {
                Ok(msg) => running &= handle(&mut store, msg),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    running = false;
                    break;
                }
            }
        }
        if Instant::now() >= next_tick {
            store.tick();
            next_tick = (next_tick + tick).max(Instant::now());
        }
        match store.end_round() {
            Ok(out) => out.into_iter().for_each(|(to, batch)| transport.send(to, batch)),
            Err(e) => {
                tracing::error!(node = store.node_id(), error = %e, "storage failure; stopping store");
                return;
            }
        }
    }
}

fn handle(store: &mut Store, msg: StoreMsg) -> bool {
    match msg {
        StoreMsg::Raft(batch) => store.on_raft_messages(batch),
        StoreMsg::Request(req, cb) => store.on_request(req, cb),
        StoreMsg::Status(tx) => {
            let _ = tx.send(store.status());
        }
        StoreMsg::Stop => return false,
    }
    true
}
