//! The threaded driver: one poller thread per store, fed by one mailbox.
//!
//! The poller blocks on the mailbox until a message arrives or the next tick is due, then
//! drains up to `max_batch_messages` more, so under load one round carries the work of
//! many requests and many ranges, and ends it with [`Store::end_round`]: one write batch,
//! one fsync, one transport flush per destination node. A storage failure (a write the
//! engine refused: disk full, I/O error) or a panic stops the poller; callers whose
//! requests were in flight see their channel close ([`Error::StoreStopped`]), and
//! [`Node::failure`] says why, so that the process can stop instead of lingering as a
//! node that answers but can no longer do its job.
//!
//! Size checks for auto-split scan whole ranges, so they run on a second thread per node
//! (`split-check-N`), which reads through an engine snapshot and posts the split key back
//! into the mailbox. Meta records the store produces (after splits and leader changes)
//! go to a [`MetaSink`], which publishes them to the meta range.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};

use crate::cmd::{callback, Callback, Request, ResponseReceiver};
use crate::error::Error;
use crate::metapb::{Epoch, MetaEntry};
use crate::metrics::StoreMetrics;
use crate::operation::{find_split_key, SplitCheckTask};
use crate::store::{RangeStatus, Store, StoreSummary};
use crate::transport::{RaftEnvelope, Transport};

/// What a store's mailbox carries.
pub enum StoreMsg {
    /// Raft messages from another node, for replicas here.
    Raft(Vec<RaftEnvelope>),
    /// A client request and where to answer it.
    Request(Request, Callback),
    /// Report every replica's state.
    Status(tokio::sync::oneshot::Sender<Vec<RangeStatus>>),
    /// Report the counts of replicas, leaders and leases (no row per replica).
    Summary(tokio::sync::oneshot::Sender<StoreSummary>),
    /// Answer at once: the poller is alive and handling its mailbox (a readiness probe;
    /// unlike `Status` it costs nothing per range).
    Ping(tokio::sync::oneshot::Sender<()>),
    /// Hand leadership to other nodes before stopping; answers how many replicas here
    /// still lead (see `Store::drain`).
    Drain(tokio::sync::oneshot::Sender<usize>),
    /// Stop draining (a decommission undone): the node may lead again.
    Undrain,
    /// Report one replica's state (`None`: no initialized replica of that range here).
    RangeStatus(u64, tokio::sync::oneshot::Sender<Option<RangeStatus>>),
    /// A size check found that `range_id` (at `epoch`) should split at `split_key`.
    SplitKey {
        range_id: u64,
        epoch: Epoch,
        split_key: Vec<u8>,
    },
    /// Stop the poller after this round.
    Stop,
}

/// A cloneable way into a running store's mailbox, for the threads and tasks that send it
/// requests. It does not keep the store running: once the poller has stopped, requests
/// are answered `StoreStopped`.
#[derive(Clone)]
pub struct StoreHandle {
    node_id: u64,
    mailbox: Sender<StoreMsg>,
}

impl StoreHandle {
    /// The store's node id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Sends a request; the answer arrives on the returned receiver. If the store has
    /// stopped before taking the request, the receiver yields [`Error::StoreStopped`] (not
    /// applied); if it stops after, the receiver closes without an answer (outcome unknown).
    pub fn request(&self, req: Request) -> ResponseReceiver {
        let (cb, rx) = callback();
        if let Err(channel::SendError(StoreMsg::Request(_, cb))) =
            self.mailbox.send(StoreMsg::Request(req, cb))
        {
            let _ = cb.send(Err(Error::StoreStopped {
                node_id: self.node_id,
            }));
        }
        rx
    }

    /// Every replica's state, as the poller sees it between rounds; the receiver fails if
    /// the store has stopped.
    pub fn status(&self) -> tokio::sync::oneshot::Receiver<Vec<RangeStatus>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.mailbox.send(StoreMsg::Status(tx));
        rx
    }

    /// The counts of [`StoreMsg::Summary`]; the receiver fails if the store has stopped.
    pub fn summary(&self) -> tokio::sync::oneshot::Receiver<StoreSummary> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.mailbox.send(StoreMsg::Summary(tx));
        rx
    }

    /// One replica's state (see [`StoreMsg::RangeStatus`]); the receiver fails if the
    /// store has stopped.
    pub fn range_status(
        &self,
        range_id: u64,
    ) -> tokio::sync::oneshot::Receiver<Option<RangeStatus>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.mailbox.send(StoreMsg::RangeStatus(range_id, tx));
        rx
    }

    /// Asks the store to drain ([`StoreMsg::Drain`]) or stop draining, without waiting.
    pub fn set_draining(&self, draining: bool) {
        if draining {
            let (tx, _rx) = tokio::sync::oneshot::channel();
            let _ = self.mailbox.send(StoreMsg::Drain(tx));
        } else {
            let _ = self.mailbox.send(StoreMsg::Undrain);
        }
    }

    /// Resolves once the poller has reached this message (see [`StoreMsg::Ping`]); an
    /// error once it has stopped.
    pub fn ping(&self) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.mailbox.send(StoreMsg::Ping(tx));
        rx
    }

    /// Puts any message into the mailbox; false once the store has stopped.
    pub fn send(&self, msg: StoreMsg) -> bool {
        self.mailbox.send(msg).is_ok()
    }
}

/// Where a node hands the meta records its store produces.
pub type MetaSink = Arc<dyn Fn(Vec<MetaEntry>) + Send + Sync>;

/// A running store: its mailbox and its poller thread.
pub struct Node {
    node_id: u64,
    mailbox: Sender<StoreMsg>,
    metrics: Arc<StoreMetrics>,
    /// The poller, then the split checker (which ends once the poller is gone).
    threads: Vec<JoinHandle<()>>,
    failure: Failure,
}

/// Why a store's poller stopped on its own (`None` while it runs or after a requested
/// stop): the storage error or panic it could not go on after.
pub type Failure = tokio::sync::watch::Receiver<Option<String>>;

impl Node {
    /// Starts the poller thread for `store`, sending its messages through `transport`
    /// and its meta records to `meta_sink` (dropped when `None`).
    pub fn start(store: Store, transport: Arc<dyn Transport>, meta_sink: Option<MetaSink>) -> Node {
        let (tx, rx) = channel::unbounded();
        let node_id = store.node_id();
        let metrics = store.metrics();
        // Snapshots are built on threads of their own, never on the poller.
        store.snapshots().set_background(true);
        let (checker, checker_thread) = start_split_checker(&store, tx.clone());
        let sinks = Sinks {
            transport,
            meta: meta_sink,
            checker,
        };
        let (failed, failure) = tokio::sync::watch::channel(None);
        let thread = std::thread::Builder::new()
            .name(format!("poller-{node_id}"))
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| poll_loop(store, rx, sinks));
                let cause = match std::panic::catch_unwind(run) {
                    Ok(outcome) => outcome.err(),
                    Err(panic) => Some(format!(
                        "the store's poller panicked: {}",
                        panic_text(&panic)
                    )),
                };
                if let Some(cause) = cause {
                    let _ = failed.send(Some(cause));
                }
            })
            .expect("spawn poller thread");
        Node {
            node_id,
            mailbox: tx,
            metrics,
            threads: vec![thread, checker_thread],
            failure,
        }
    }

    /// Resolves to `Some(cause)` once the store has stopped on its own (see [`Failure`]).
    pub fn failure(&self) -> Failure {
        self.failure.clone()
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

    /// A cloneable handle that sends requests to this store (see [`StoreHandle`]).
    pub fn handle(&self) -> StoreHandle {
        StoreHandle {
            node_id: self.node_id,
            mailbox: self.mailbox.clone(),
        }
    }

    /// Sends a request; see [`StoreHandle::request`].
    pub fn request(&self, req: Request) -> ResponseReceiver {
        self.handle().request(req)
    }

    /// Every replica's state; see [`StoreHandle::status`].
    pub fn status(&self) -> tokio::sync::oneshot::Receiver<Vec<RangeStatus>> {
        self.handle().status()
    }

    /// Stops the poller and waits for it to finish.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.mailbox.send(StoreMsg::Stop);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Where a poller's output goes.
struct Sinks {
    transport: Arc<dyn Transport>,
    meta: Option<MetaSink>,
    checker: Sender<SplitCheckTask>,
}

/// Starts the thread that runs size checks for `store` and posts split keys back into
/// `mailbox`. It ends when the poller (the only sender of tasks) is gone.
fn start_split_checker(
    store: &Store,
    mailbox: Sender<StoreMsg>,
) -> (Sender<SplitCheckTask>, JoinHandle<()>) {
    let (tx, rx) = channel::unbounded::<SplitCheckTask>();
    let engine = store.engine().clone();
    let split_size = store.config().split_size;
    let thread = std::thread::Builder::new()
        .name(format!("split-check-{}", store.node_id()))
        .spawn(move || {
            for task in rx {
                match find_split_key(&engine, &task, split_size) {
                    Ok(Some(split_key)) => {
                        let msg = StoreMsg::SplitKey {
                            range_id: task.range_id,
                            epoch: task.epoch,
                            split_key,
                        };
                        if mailbox.send(msg).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(range = task.range_id, error = %e, "size check failed")
                    }
                }
            }
        })
        .expect("spawn split check thread");
    (tx, thread)
}

/// Runs rounds until asked to stop (`Ok`) or a round cannot be written (`Err`: the cause).
fn poll_loop(mut store: Store, rx: Receiver<StoreMsg>, sinks: Sinks) -> Result<(), String> {
    let max_batch = store.config().max_batch_messages;
    let mut running = true;
    while running {
        // What arrived while the last round ran is handled before the ticks that passed
        // meanwhile: a leader's check-quorum must see the answers waiting in the mailbox,
        // and a follower its leader's heartbeats, before their timers move on (at 100,000
        // ranges, rounds of 0.4 s made leaders step down by the hundred thousand while
        // the answers sat unread). Nothing safe rests on the order: leases, support and
        // the no-vote window are judged against the clock when used (`lease.rs`), and a
        // message handled against timers not yet moved is only judged more cautiously.
        // The harness's `resume` hands a frozen store its requests and messages before
        // its missed ticks, the worst way round, to keep that true.
        let wait = if store.has_pending_work() {
            Duration::ZERO
        } else {
            store.until_next_tick()
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
        store.catch_up();
        match store.end_round(|to, batch| sinks.transport.send(to, batch)) {
            Ok(out) => out
                .into_iter()
                .for_each(|(to, batch)| sinks.transport.send(to, batch)),
            Err(e) => {
                tracing::error!(node = store.node_id(), error = %e, "storage failure; stopping store");
                return Err(format!("a write to the store's engine failed: {e}"));
            }
        }
        for task in store.take_split_checks() {
            let _ = sinks.checker.send(task);
        }
        let meta = store.take_meta_updates();
        if let (Some(sink), false) = (&sinks.meta, meta.is_empty()) {
            sink(meta);
        }
    }
    Ok(())
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_string(),
        (_, Some(s)) => s.clone(),
        _ => "(no message)".to_string(),
    }
}

/// Handles one mailbox message (the round's missed ticks are caught up after the mailbox
/// is drained, see `poll_loop`).
fn handle(store: &mut Store, msg: StoreMsg) -> bool {
    match msg {
        StoreMsg::Raft(batch) => store.on_raft_messages(batch),
        StoreMsg::Request(req, cb) => store.on_request(req, cb),
        StoreMsg::Status(tx) => {
            let _ = tx.send(store.status());
        }
        StoreMsg::Summary(tx) => {
            let _ = tx.send(store.summary());
        }
        StoreMsg::Ping(tx) => {
            let _ = tx.send(());
        }
        StoreMsg::SplitKey {
            range_id,
            epoch,
            split_key,
        } => store.on_split_key(range_id, epoch, split_key),
        StoreMsg::Drain(tx) => {
            let _ = tx.send(store.drain());
        }
        StoreMsg::Undrain => store.undrain(),
        StoreMsg::RangeStatus(range_id, tx) => {
            let _ = tx.send(store.range_status(range_id));
        }
        StoreMsg::Stop => return false,
    }
    true
}
