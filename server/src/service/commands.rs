//! `Kv.Commands`: many gets, puts and deletes over one long-lived bidirectional stream
//! (TiKV's `batch_commands`). Issue 13's profile put about half of a node's CPU under load
//! in the per-call work of h2, hyper and tonic; a stream pays that once per frame instead
//! of once per command.
//!
//! Each stream runs as two tasks and one task per command:
//!
//! - the **reader** takes frames from the client and starts each command in its own task,
//!   after taking one of [`MAX_IN_FLIGHT`] slots. With every slot taken it stops reading,
//!   so a client that sends faster than the node answers is held back by HTTP/2 flow
//!   control (back-pressure) instead of growing memory; nothing is dropped.
//! - each **command** runs the unary call's code (`KvService::run_*`: same checks, errors,
//!   hints, tracing spans and request metrics) under its own `timeout_ms`, and hands its
//!   result, with its slot, to the writer.
//! - the **writer** waits for one result, then drains whatever else is ready (up to
//!   [`MAX_RESULTS_PER_FRAME`] results or [`MAX_FRAME_BYTES`]) into one frame, and frees
//!   the slots once the frame is handed to the transport.
//!
//! Every command is answered exactly once, in completion order, tagged with its id: a
//! failure is that command's own `CommandError`, never the stream's. When the client
//! closes its side, the reader ends; the writer ends the response stream once every
//! command that had started is answered. When the client goes away, the response stream
//! is dropped, and the commands still running are dropped with it (as tonic drops a unary
//! handler whose caller left): their results have nowhere to go.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prost::Message as _;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::Instrument;

use super::kv::KvService;
use crate::errors::{error_name, invalid};
use crate::proto::command::Op;
use crate::proto::command_result::Outcome;
use crate::proto::{
    Command, CommandError, CommandResult, CommandsRequest, CommandsResponse, RouteHint,
};
use crate::routes::Hint;

/// Commands of one stream started and not yet answered (in a frame handed to the
/// transport). Past it the stream is not read until some are answered.
pub const MAX_IN_FLIGHT: usize = 4096;
/// At most this many results per response frame.
pub const MAX_RESULTS_PER_FRAME: usize = 256;
/// A response frame stops growing once its results reach this many bytes (it always
/// holds at least one result), so that large values do not make huge frames.
pub const MAX_FRAME_BYTES: usize = 4 << 20;
/// Response frames queued for the transport: a little slack so the writer can build the
/// next frame while the last is sent, without hiding a client that stopped reading.
const QUEUED_FRAMES: usize = 4;

/// The response side of a `Commands` stream.
pub type ResultFrames = ReceiverStream<Result<CommandsResponse, Status>>;

/// What the reader and the command tasks hand the writer.
enum Done {
    /// One command's result, with the slot it held until it is sent.
    Answer(CommandResult, OwnedSemaphorePermit),
    /// The request stream failed (a frame that could not be decoded, a reset): the
    /// response stream ends with this status after the commands already started.
    Broken(Status),
}

/// Serves one `Commands` stream: starts its reader and writer, and returns the response
/// side for tonic to send.
pub fn serve(kv: KvService, inbound: Streaming<CommandsRequest>) -> ResultFrames {
    let (frames_tx, frames_rx) = mpsc::channel(QUEUED_FRAMES);
    // Unbounded, but holding at most MAX_IN_FLIGHT answers (each holds a slot) and one
    // `Broken`.
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let span = tracing::debug_span!("kv.commands");
    tokio::spawn(read(kv, inbound, done_tx).instrument(span.clone()));
    tokio::spawn(write(done_rx, frames_tx).instrument(span));
    ReceiverStream::new(frames_rx)
}

/// Reads frames and starts their commands, until the client closes its side, the stream
/// fails, or the client is gone (the writer stopped).
async fn read(
    kv: KvService,
    mut inbound: Streaming<CommandsRequest>,
    done: mpsc::UnboundedSender<Done>,
) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let in_flight: Arc<Mutex<HashSet<u64>>> = Arc::default();
    loop {
        let frame = tokio::select! {
            biased;
            _ = done.closed() => return,
            frame = inbound.message() => frame,
        };
        let commands = match frame {
            Ok(Some(frame)) => frame.commands,
            // The client closed its side: the started commands finish on their own.
            Ok(None) => return,
            Err(status) => {
                tracing::debug!(code = ?status.code(), message = status.message(), "commands stream failed");
                let _ = done.send(Done::Broken(status));
                return;
            }
        };
        for command in commands {
            let slot = tokio::select! {
                biased;
                _ = done.closed() => return,
                slot = slots.clone().acquire_owned() => slot,
            };
            // The semaphore is never closed; an error could only mean that it was.
            let Ok(slot) = slot else { return };
            start(&kv, command, slot, &in_flight, &done);
        }
    }
}

/// Starts one command in a task of its own, or answers it at once when it is malformed.
fn start(
    kv: &KvService,
    command: Command,
    slot: OwnedSemaphorePermit,
    in_flight: &Arc<Mutex<HashSet<u64>>>,
    done: &mpsc::UnboundedSender<Done>,
) {
    let Command { id, timeout_ms, op } = command;
    let Some(op) = op else {
        let status = invalid(format!(
            "command {id} has no operation: set one of get, put or delete"
        ));
        let _ = done.send(Done::Answer(result(id, Err(status), None), slot));
        return;
    };
    if !in_flight.lock().insert(id) {
        let status = invalid(format!(
            "command id {id} is already in flight on this stream: an id may be reused only once its command is answered"
        ));
        let _ = done.send(Done::Answer(result(id, Err(status), None), slot));
        return;
    }
    let (kv, in_flight, done) = (kv.clone(), in_flight.clone(), done.clone());
    let span = tracing::debug_span!("kv.command", id);
    tokio::spawn(
        async move {
            let timeout = (timeout_ms > 0).then(|| Duration::from_millis(u64::from(timeout_ms)));
            // The client gone (the writer stopped), the command's result has nowhere to
            // go: drop it, as tonic drops a unary handler whose caller left.
            let answer = tokio::select! {
                biased;
                _ = done.closed() => None,
                answer = run(&kv, id, op, timeout) => Some(answer),
            };
            // Free the id before the answer can reach the client, which may reuse it.
            in_flight.lock().remove(&id);
            if let Some(answer) = answer {
                let _ = done.send(Done::Answer(answer, slot));
            }
        }
        .instrument(span),
    );
}

/// Runs one command as the unary call would, within `timeout`, and counts it.
async fn run(kv: &KvService, id: u64, op: Op, timeout: Option<Duration>) -> CommandResult {
    let started = Instant::now();
    let (method, answer) = match op {
        Op::Get(r) => (
            "get",
            within(id, timeout, kv.run_get(r))
                .await
                .map(|(b, h)| (Outcome::Get(b), h)),
        ),
        Op::Put(r) => (
            "put",
            within(id, timeout, kv.run_put(r))
                .await
                .map(|(b, h)| (Outcome::Put(b), h)),
        ),
        Op::Delete(r) => (
            "delete",
            within(id, timeout, kv.run_delete(r))
                .await
                .map(|(b, h)| (Outcome::Delete(b), h)),
        ),
    };
    match kv.record(method, started, answer) {
        Ok((outcome, hint)) => result(id, Ok(outcome), hint),
        Err(status) => result(id, Err(status), None),
    }
}

/// `op`'s answer, or CANCELLED once `timeout` passes (what tonic answers a unary call
/// whose deadline passed).
async fn within<T>(
    id: u64,
    timeout: Option<Duration>,
    op: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let Some(limit) = timeout else {
        return op.await;
    };
    match tokio::time::timeout(limit, op).await {
        Ok(answer) => answer,
        Err(_) => Err(Status::cancelled(format!(
            "Timeout expired: command {id} ran past its timeout_ms of {}",
            limit.as_millis()
        ))),
    }
}

/// The wire form of command `id`'s outcome.
fn result(id: u64, answer: Result<Outcome, Status>, hint: Option<Hint>) -> CommandResult {
    let outcome = answer.unwrap_or_else(|s| {
        Outcome::Error(CommandError {
            code: s.code() as i32,
            message: s.message().to_string(),
            name: error_name(&s).unwrap_or_default().to_string(),
        })
    });
    let hint = hint.map(|h| RouteHint {
        leader: h.leader,
        start: h.start,
        end: h.end,
    });
    CommandResult {
        id,
        outcome: Some(outcome),
        hint,
    }
}

/// Sends results as they come, coalesced into frames, until every command is answered
/// (every sender is gone) or the client is gone.
async fn write(
    mut done: mpsc::UnboundedReceiver<Done>,
    frames: mpsc::Sender<Result<CommandsResponse, Status>>,
) {
    let mut broken = None;
    loop {
        let first = tokio::select! {
            biased;
            _ = frames.closed() => return,
            first = done.recv() => first,
        };
        let Some(first) = first else { break };
        // Wait for room before draining, so that whatever arrives meanwhile joins this
        // frame instead of waiting for the next.
        let Ok(room) = frames.reserve().await else {
            return;
        };
        let mut frame = Frame::default();
        frame.take(first, &mut broken);
        while frame.results.len() < MAX_RESULTS_PER_FRAME && frame.bytes < MAX_FRAME_BYTES {
            match done.try_recv() {
                Ok(next) => frame.take(next, &mut broken),
                Err(_) => break,
            }
        }
        if !frame.results.is_empty() {
            room.send(Ok(CommandsResponse {
                results: frame.results,
            }));
        }
        // The answers are the transport's now: their slots may start other commands.
        drop(frame.slots);
    }
    if let Some(status) = broken {
        let _ = frames.send(Err(status)).await;
    }
}

/// A response frame being built.
#[derive(Default)]
struct Frame {
    results: Vec<CommandResult>,
    slots: Vec<OwnedSemaphorePermit>,
    bytes: usize,
}

impl Frame {
    fn take(&mut self, done: Done, broken: &mut Option<Status>) {
        match done {
            Done::Answer(result, slot) => {
                self.bytes += result.encoded_len();
                self.results.push(result);
                self.slots.push(slot);
            }
            Done::Broken(status) => *broken = Some(status),
        }
    }
}
