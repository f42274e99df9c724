//! One multiplexed `Kv.Commands` stream per node address (`--rpc stream`), shared by all
//! the clients whose commands go to that address.
//!
//! Why: a unary call costs a node its own HTTP/2 stream, headers and tonic dispatch;
//! issue 13's profile put about half of a node's CPU there. Over one stream, commands
//! travel many per frame and their answers come back many per frame, which is what TiKV's
//! client does with `batch_commands`.
//!
//! What a [`Mux`] owns: the stream to one address, opened on first use and reopened on
//! the first use after it broke; the ids of the commands sent on it and not yet answered,
//! with a oneshot to each caller. Three parts make it up:
//!
//! - callers queue `(Command, oneshot)` on an mpsc ([`Mux::call`]);
//! - the **writer** task waits for one queued command, then for the transport to take a
//!   frame, and puts everything queued by then (up to [`MAX_COMMANDS_PER_FRAME`] commands
//!   or about [`MAX_FRAME_BYTES`]) into that frame: the busier the clients, the fuller the
//!   frames;
//! - the **reader** task hands each result to the caller with that id, and learns its
//!   routing hint into the shared [`Routes`].
//!
//! A stream that breaks (the node is down, the connection reset) fails every command
//! sent on it and not answered, and every command still queued, with UNAVAILABLE: the
//! load generator counts them as errors, exactly as failed unary calls. The address is
//! then forgotten as a leader in the routes (as the unary path forgets one that cannot be
//! reached), and the next call opens a new stream.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use flotilla_server::proto::command::Op;
use flotilla_server::proto::kv_client::KvClient;
use flotilla_server::proto::{Command, CommandResult, CommandsRequest, CommandsResponse};
use flotilla_server::routes::Routes;
use tokio::sync::{mpsc, oneshot};
use tonic::codegen::tokio_stream::Stream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

/// At most this many commands per request frame.
pub const MAX_COMMANDS_PER_FRAME: usize = 256;
/// A request frame stops growing once its keys and values reach this many bytes (a
/// node refuses a frame above `2 × max_value_size + max_key_size + 64 KiB`, 16 MiB by
/// default; it always holds at least one command).
pub const MAX_FRAME_BYTES: usize = 4 << 20;
/// Commands queued for the writer before callers wait (the clients are closed loops, so
/// this is never reached with fewer clients).
const QUEUE: usize = 8192;
/// The largest response frame accepted (256 results of large values).
const MAX_DECODE: usize = 64 << 20;

/// What a caller waits on: the command's result, or the status that ended its stream.
type Reply = oneshot::Sender<Result<CommandResult, Status>>;

/// One command queued for the writer.
struct Queued {
    command: Command,
    reply: Reply,
}

/// The multiplexed stream to one node.
pub struct Mux {
    address: String,
    channel: Channel,
    routes: Option<Arc<Routes>>,
    /// The live stream; a broken one is replaced on the next call.
    live: Mutex<Option<Live>>,
    next_id: AtomicU64,
}

impl Mux {
    /// A mux for the node at `address`, over `channel` (connected lazily); results' hints
    /// are learned into `routes` (`None`: `--no-route`).
    pub fn new(address: String, channel: Channel, routes: Option<Arc<Routes>>) -> Mux {
        Mux {
            address,
            channel,
            routes,
            live: Mutex::new(None),
            next_id: AtomicU64::new(1),
        }
    }

    /// The node's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends `op` with a server-side limit of `timeout` and waits for its result (the
    /// caller bounds the wait). UNAVAILABLE when the stream broke before the answer.
    pub async fn call(&self, op: Op, timeout: Duration) -> Result<CommandResult, Status> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let timeout_ms = u32::try_from(timeout.as_millis())
            .unwrap_or(u32::MAX)
            .max(1);
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            command: Command {
                id,
                timeout_ms,
                op: Some(op),
            },
            reply,
        };
        if self.queue().send(queued).await.is_err() {
            return Err(self.broken("the stream closed before the command was sent"));
        }
        // A dropped reply: the stream broke while the command was queued.
        answer
            .await
            .unwrap_or_else(|_| Err(self.broken("the stream closed before the command was sent")))
    }

    fn broken(&self, why: &str) -> Status {
        Status::unavailable(format!("commands stream to {}: {why}", self.address))
    }

    /// The queue of the live stream, opening one if there is none (or it broke).
    fn queue(&self) -> mpsc::Sender<Queued> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = live
            .as_ref()
            .filter(|l| !l.queue.is_closed() && lock(&l.pending).closed.is_none())
        {
            return l.queue.clone();
        }
        let (queue, rx) = mpsc::channel(QUEUE);
        let pending = SharedPending::default();
        let kv = KvClient::new(self.channel.clone()).max_decoding_message_size(MAX_DECODE);
        tokio::spawn(drive(
            kv,
            self.address.clone(),
            self.routes.clone(),
            rx,
            pending.clone(),
        ));
        *live = Some(Live {
            queue: queue.clone(),
            pending,
        });
        queue
    }
}

/// One stream's ends that a `Mux` keeps: its queue, and what it waits on (whose `closed`
/// says the stream broke, even before the writer has closed the queue).
struct Live {
    queue: mpsc::Sender<Queued>,
    pending: SharedPending,
}

/// The muxes of every address the clients send to, created on first use.
#[derive(Default)]
pub struct Muxes {
    by_address: Mutex<HashMap<String, Arc<Mux>>>,
    dialer: flotilla_server::tls::dial::Dialer,
}

impl Muxes {
    /// Muxes whose streams `dialer` opens (the default dials plaintext).
    pub fn with_dialer(dialer: flotilla_server::tls::dial::Dialer) -> Muxes {
        Muxes {
            by_address: Mutex::default(),
            dialer,
        }
    }

    /// The mux for `address`, sharing `routes`; an error when `address` cannot be a URI.
    pub fn get(&self, address: &str, routes: Option<Arc<Routes>>) -> Result<Arc<Mux>, String> {
        let mut by_address = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = by_address.get(address) {
            return Ok(m.clone());
        }
        let channel = self
            .dialer
            .channel(address)
            .map_err(|e| format!("address {address}: {e}"))?;
        let mux = Arc::new(Mux::new(address.to_string(), channel, routes));
        by_address.insert(address.to_string(), mux.clone());
        Ok(mux)
    }
}

/// Commands sent and not answered, by id. `closed` once the stream broke: a command
/// registered after that fails at once instead of waiting for an answer that cannot come.
#[derive(Default)]
struct Pending {
    replies: HashMap<u64, Reply>,
    closed: Option<String>,
}

type SharedPending = Arc<Mutex<Pending>>;

fn lock(p: &SharedPending) -> std::sync::MutexGuard<'_, Pending> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs one stream: the reader in a task of its own, the writer here.
async fn drive(
    kv: KvClient<Channel>,
    address: String,
    routes: Option<Arc<Routes>>,
    queue: mpsc::Receiver<Queued>,
    pending: SharedPending,
) {
    // One frame waits for the transport at most: the rest stays queued and coalesces.
    let (frames_tx, frames_rx) = mpsc::channel(1);
    let (dead_tx, dead_rx) = oneshot::channel();
    tokio::spawn(read(
        kv,
        Frames(frames_rx),
        pending.clone(),
        address.clone(),
        routes,
        dead_tx,
    ));
    write(queue, frames_tx, pending, dead_rx, &address).await;
}

/// The request side of the stream, as tonic wants it.
struct Frames(mpsc::Receiver<CommandsRequest>);

impl Stream for Frames {
    type Item = CommandsRequest;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<CommandsRequest>> {
        self.0.poll_recv(cx)
    }
}

/// Coalesces queued commands into frames until the mux is dropped (then closes the
/// request side, which ends the stream once everything is answered) or the stream breaks
/// (then fails whatever is still queued).
async fn write(
    mut queue: mpsc::Receiver<Queued>,
    frames: mpsc::Sender<CommandsRequest>,
    pending: SharedPending,
    mut dead: oneshot::Receiver<()>,
    address: &str,
) {
    loop {
        let first = tokio::select! {
            biased;
            _ = &mut dead => break,
            first = queue.recv() => first,
        };
        let Some(first) = first else { return };
        let room = tokio::select! {
            biased;
            _ = &mut dead => Err(()),
            room = frames.reserve() => room.map_err(|_| ()),
        };
        let Ok(room) = room else {
            fail(first.reply, address, "the stream broke");
            break;
        };
        let mut commands = Vec::new();
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(q) = next.take() {
            bytes += size(&q.command);
            if let Some(command) = register(&pending, q, address) {
                commands.push(command);
            }
            if commands.len() < MAX_COMMANDS_PER_FRAME && bytes < MAX_FRAME_BYTES {
                next = queue.try_recv().ok();
            }
        }
        if !commands.is_empty() {
            room.send(CommandsRequest { commands });
        }
    }
    // Broken: no more sends; fail what is queued (callers holding the old queue get an
    // error from `send` and retry on a new stream next time).
    queue.close();
    while let Some(q) = queue.recv().await {
        fail(
            q.reply,
            address,
            "the stream broke before the command was sent",
        );
    }
}

/// Records `q`'s reply under its id and returns its command, or fails it at once if the
/// stream already broke.
fn register(pending: &SharedPending, q: Queued, address: &str) -> Option<Command> {
    let mut p = lock(pending);
    if let Some(why) = &p.closed {
        fail(q.reply, address, why);
        return None;
    }
    p.replies.insert(q.command.id, q.reply);
    Some(q.command)
}

/// About how many bytes `c` takes in a frame.
fn size(c: &Command) -> usize {
    const OVERHEAD: usize = 24;
    OVERHEAD
        + match &c.op {
            Some(Op::Get(g)) => g.key.len(),
            Some(Op::Put(p)) => p.key.len() + p.value.len(),
            Some(Op::Delete(d)) => d.key.len(),
            None => 0,
        }
}

fn fail(reply: Reply, address: &str, why: &str) {
    let _ = reply.send(Err(Status::unavailable(format!(
        "commands stream to {address}: {why}"
    ))));
}

/// Opens the stream and dispatches its results until it ends; then fails every command
/// still waiting, forgets `address` as a leader if the stream broke, and (by dropping
/// `dead`) tells the writer to stop.
async fn read(
    mut kv: KvClient<Channel>,
    frames: Frames,
    pending: SharedPending,
    address: String,
    routes: Option<Arc<Routes>>,
    dead: oneshot::Sender<()>,
) {
    let ended = match kv.commands(frames).await {
        Ok(resp) => dispatch(resp.into_inner(), &pending, routes.as_deref()).await,
        Err(status) => Err(format!(
            "could not open: {}: {}",
            code_name(&status),
            status.message()
        )),
    };
    let why = match &ended {
        Ok(()) => "the node ended the stream before answering".to_string(),
        Err(why) => why.clone(),
    };
    let orphans: Vec<Reply> = {
        let mut p = lock(&pending);
        p.closed = Some(why.clone());
        p.replies.drain().map(|(_, r)| r).collect()
    };
    // A clean end (the mux was dropped) with nothing unanswered says nothing against the
    // node; any other end makes it a leader not to send to until a hint names it again.
    let broke = ended.is_err() || !orphans.is_empty();
    if let Some(routes) = routes.filter(|_| broke) {
        routes.forget(&address);
    }
    for reply in orphans {
        fail(reply, &address, &why);
    }
    drop(dead);
}

/// Hands results to their callers until the stream ends: `Ok` when it ended cleanly,
/// else why it broke.
async fn dispatch(
    mut results: Streaming<CommandsResponse>,
    pending: &SharedPending,
    routes: Option<&Routes>,
) -> Result<(), String> {
    loop {
        let frame = match results.message().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(()),
            Err(status) => {
                return Err(format!(
                    "broke: {}: {}",
                    code_name(&status),
                    status.message()
                ))
            }
        };
        for mut result in frame.results {
            if let (Some(routes), Some(hint)) = (routes, result.hint.take()) {
                routes.learn_span(&hint.leader, hint.start, hint.end);
            }
            let reply = lock(pending).replies.remove(&result.id);
            // No one waiting: a result for an id this mux never sent (ignored).
            if let Some(reply) = reply {
                let _ = reply.send(Ok(result));
            }
        }
    }
}

fn code_name(s: &Status) -> String {
    format!("{:?}", s.code())
}

#[cfg(test)]
mod tests {
    //! Against a tiny in-process `Kv` server that answers each get with its own key, puts
    //! with a hint, never answers a put of "hold", and breaks the stream on a put of
    //! "break".

    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    use flotilla_server::proto::command_result::Outcome;
    use flotilla_server::proto::kv_server::{Kv, KvServer};
    use flotilla_server::proto::*;
    use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
    use tonic::{Request, Response};

    use super::*;
    use flotilla_server::peers::channel_to;

    #[derive(Default)]
    struct FakeKv {
        held: Arc<AtomicUsize>,
    }

    fn unused<T>() -> Result<T, Status> {
        Err(Status::unimplemented("the fake only serves Commands"))
    }

    #[tonic::async_trait]
    impl Kv for FakeKv {
        type CommandsStream = ReceiverStream<Result<CommandsResponse, Status>>;

        async fn get(&self, _: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
            unused()
        }
        async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
            unused()
        }
        async fn delete(
            &self,
            _: Request<DeleteRequest>,
        ) -> Result<Response<DeleteResponse>, Status> {
            unused()
        }
        async fn scan(&self, _: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
            unused()
        }
        async fn batch(&self, _: Request<BatchRequest>) -> Result<Response<BatchResponse>, Status> {
            unused()
        }
        async fn compare_and_swap(
            &self,
            _: Request<CompareAndSwapRequest>,
        ) -> Result<Response<CompareAndSwapResponse>, Status> {
            unused()
        }

        async fn commands(
            &self,
            req: Request<Streaming<CommandsRequest>>,
        ) -> Result<Response<Self::CommandsStream>, Status> {
            let mut inbound = req.into_inner();
            let (tx, rx) = mpsc::channel(16);
            let held = self.held.clone();
            tokio::spawn(async move {
                while let Ok(Some(frame)) = inbound.message().await {
                    let mut results = Vec::new();
                    for c in frame.commands {
                        match fake_answer(c, &held) {
                            Fake::Answer(r) => results.push(r),
                            Fake::Hold => {}
                            Fake::Break => {
                                let _ = tx.send(Err(Status::internal("broken on purpose"))).await;
                                return;
                            }
                        }
                    }
                    if !results.is_empty()
                        && tx.send(Ok(CommandsResponse { results })).await.is_err()
                    {
                        return;
                    }
                }
            });
            Ok(Response::new(ReceiverStream::new(rx)))
        }
    }

    enum Fake {
        Answer(CommandResult),
        Hold,
        Break,
    }

    /// What the fake does with `c`: a get finds its own key; a put of "hold" is never
    /// answered; a put of "break" breaks the stream; other puts succeed with a hint.
    fn fake_answer(c: Command, held: &AtomicUsize) -> Fake {
        let (outcome, hint) = match c.op {
            Some(Op::Get(g)) => (
                Outcome::Get(GetResponse {
                    found: true,
                    value: g.key,
                }),
                None,
            ),
            Some(Op::Put(p)) if p.key == b"hold" => {
                held.fetch_add(1, Ordering::SeqCst);
                return Fake::Hold;
            }
            Some(Op::Put(p)) if p.key == b"break" => return Fake::Break,
            Some(Op::Put(_)) => {
                let hint = RouteHint {
                    leader: "10.0.0.9:1".into(),
                    start: b"h".to_vec(),
                    end: Some(b"i".to_vec()),
                };
                (Outcome::Put(PutResponse {}), Some(hint))
            }
            _ => {
                let unexpected = CommandError {
                    code: 3,
                    message: "unexpected".into(),
                    name: String::new(),
                };
                (Outcome::Error(unexpected), None)
            }
        };
        Fake::Answer(CommandResult {
            id: c.id,
            outcome: Some(outcome),
            hint,
        })
    }

    /// A fake server on a free port; its address and its count of held commands.
    async fn serve() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let fake = FakeKv::default();
        let held = fake.held.clone();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let server = tonic::transport::Server::builder().add_service(KvServer::new(fake));
        tokio::spawn(server.serve_with_incoming(incoming));
        (address, held)
    }

    fn mux(address: &str, routes: &Arc<Routes>) -> Arc<Mux> {
        let channel = channel_to(address).expect("a channel");
        Arc::new(Mux::new(address.to_string(), channel, Some(routes.clone())))
    }

    const WAIT: Duration = Duration::from_secs(10);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_each_get_their_own_result_and_hints_are_learned() {
        let (address, _) = serve().await;
        let routes = Arc::new(Routes::default());
        let mux = mux(&address, &routes);
        let calls: Vec<_> = (0..500u32)
            .map(|i| {
                let mux = mux.clone();
                tokio::spawn(async move {
                    let key = format!("key {i}").into_bytes();
                    let r = mux
                        .call(Op::Get(GetRequest { key: key.clone() }), WAIT)
                        .await;
                    (key, r)
                })
            })
            .collect();
        for call in calls {
            let (key, r) = tokio::time::timeout(WAIT, call)
                .await
                .expect("an answer in time")
                .expect("the call ran");
            match r.expect("a result").outcome {
                Some(Outcome::Get(g)) => {
                    assert_eq!(g.value, key, "a result went to the wrong caller")
                }
                other => panic!("not a get's answer: {other:?}"),
            }
        }
        let put = Op::Put(PutRequest {
            key: b"hello".to_vec(),
            value: b"v".to_vec(),
        });
        let r = mux.call(put, WAIT).await.expect("a put's result");
        assert!(matches!(r.outcome, Some(Outcome::Put(_))), "{r:?}");
        assert_eq!(
            routes.leader(b"hx").as_deref(),
            Some("10.0.0.9:1"),
            "the result's hint was learned"
        );
        assert_eq!(routes.leader(b"j"), None, "outside the hinted span");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broken_stream_fails_what_waits_on_it_and_the_next_call_reopens() {
        let (address, held) = serve().await;
        let routes = Arc::new(Routes::default());
        routes.learn_span(&address, b"a".to_vec(), None);
        let mux = mux(&address, &routes);
        let hold = {
            let mux = mux.clone();
            let put = Op::Put(PutRequest {
                key: b"hold".to_vec(),
                value: vec![],
            });
            tokio::spawn(async move { mux.call(put, WAIT).await })
        };
        let deadline = Instant::now() + WAIT;
        while held.load(Ordering::SeqCst) == 0 {
            assert!(
                Instant::now() < deadline,
                "the held command never reached the server"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let broke = mux
            .call(
                Op::Put(PutRequest {
                    key: b"break".to_vec(),
                    value: vec![],
                }),
                WAIT,
            )
            .await;
        let held_answer = tokio::time::timeout(WAIT, hold)
            .await
            .expect("the held command was answered")
            .expect("ran");
        for r in [broke, held_answer] {
            let status = r.expect_err("the stream broke under it");
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            assert!(
                status.message().contains(&address),
                "names the node: {status:?}"
            );
        }
        assert_eq!(
            routes.leader(b"b"),
            None,
            "the node whose stream broke is no longer a leader"
        );
        let r = mux
            .call(
                Op::Get(GetRequest {
                    key: b"again".to_vec(),
                }),
                WAIT,
            )
            .await
            .expect("a new stream");
        assert!(matches!(r.outcome, Some(Outcome::Get(g)) if g.value == b"again"));
    }
}
