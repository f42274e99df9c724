//! The process harness of the cluster tests: real `flotilla` processes on loopback
//! ports, one TCP proxy per directed link between them (so a test can cut a node off),
//! and helpers to wait, write and check.
//!
//! - [`TestCluster`] starts `n` nodes with `--join`, runs `init`, and waits until every
//!   node is live and every range has a leader. Each node reaches every other node
//!   through a [`proxy::Proxy`] (`--peer J=ADDR`), which [`TestCluster::isolate`]
//!   blackholes. Nodes can be killed (`SIGKILL`), terminated (`SIGTERM`) and restarted on
//!   the same data directory.
//! - [`NodeProc`] is one node process; tests that need a lone node use it directly.
//! - [`Writers`] write unique keys continuously and record each acknowledged one;
//!   [`verify_acked`] reads them back.
//!
//! Every wait polls with a deadline ([`poll_until`]); nothing sleeps to synchronise.
//! Children are killed when their owner drops, and a panicking test prints the tail of
//! every node's log.

#![allow(dead_code)]

pub mod proxy;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_server::client::Client;
use flotilla_server::proto::PutRequest;
use flotilla_server::tls::dial::Dialer;
use tokio::task::{JoinHandle, JoinSet};
use tonic::{Code, Status};

use proxy::Proxy;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_flotilla");
/// Raft tick of the test nodes: elections take 10 ticks, so failover is quick.
pub const TICK_MS: u64 = 50;
/// How long a cluster may take to start, elect and answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one client call may take before the test gives up on it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs the tests of this binary one at a time: each starts several processes, and two
/// clusters sharing two cores would make their timing meaningless. Hold the guard for the
/// whole test.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every 100 ms until it returns `Ok`, and returns its value; panics with
/// the last error if `timeout` passes first.
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match tokio::time::timeout(CALL_TIMEOUT, check()).await {
            Ok(Ok(v)) => return v,
            Ok(Err(e)) => e,
            Err(_) => format!("no answer within {CALL_TIMEOUT:?}"),
        };
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A key spread over the key space (two hashed bytes first: initial ranges split on
/// them), then a readable `name/i`.
pub fn spread_key(name: &str, i: u64) -> Vec<u8> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain(i.to_be_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut key = h.to_be_bytes()[..2].to_vec();
    key.extend_from_slice(format!("{name}/{i:07}").as_bytes());
    key
}

/// `Client::new` for `endpoints`.
pub fn client_for(endpoints: &[String]) -> Client {
    Client::new(endpoints).expect("client")
}

/// A put through endpoint `i` of `client` alone, with a gRPC deadline (the server drops
/// the call when it passes); a client-side expiry becomes `DEADLINE_EXCEEDED`.
pub async fn put_with_deadline(
    client: &Client,
    i: usize,
    key: &[u8],
    value: &[u8],
    t: Duration,
) -> Result<(), Status> {
    let mut req = tonic::Request::new(PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
    });
    req.set_timeout(t);
    let mut kv = client.kv_at(i);
    match tokio::time::timeout(t + Duration::from_secs(2), kv.put(req)).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(Status::deadline_exceeded(
            "no answer before the client's deadline",
        )),
    }
}

/// True when the server said for certain that a write was not applied: the status comes
/// from the server (it carries `flotilla-error`) and is not the ambiguous one.
pub fn definitely_not_applied(s: &Status) -> bool {
    match s
        .metadata()
        .get("flotilla-error")
        .and_then(|v| v.to_str().ok())
    {
        Some(name) => name != "ambiguous" && s.code() != Code::Unknown,
        None => false,
    }
}

/// Reads `key`, retrying failures (a range electing, a node restarting) until `timeout`.
pub async fn get_eventually(
    client: &Client,
    key: &[u8],
    timeout: Duration,
) -> Result<Option<Vec<u8>>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match tokio::time::timeout(CALL_TIMEOUT, client.get(key)).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(s)) => format!("{:?}: {}", s.code(), s.message()),
            Err(_) => "no answer".to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "get {} failed until the deadline: {last}",
                show(key)
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `f` on every item with `tasks` concurrent workers; the first error wins.
pub async fn run_parallel<T, F, Fut>(items: Vec<T>, tasks: usize, f: F) -> Result<(), String>
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let f = Arc::new(f);
    let queue = Arc::new(Mutex::new(items.into_iter()));
    let mut set: JoinSet<Result<(), String>> = JoinSet::new();
    for _ in 0..tasks.max(1) {
        let (f, queue) = (f.clone(), queue.clone());
        set.spawn(async move {
            loop {
                let item = queue.lock().unwrap().next();
                match item {
                    Some(item) => f(item).await?,
                    None => return Ok(()),
                }
            }
        });
    }
    while let Some(joined) = set.join_next().await {
        joined.map_err(|e| format!("worker panicked: {e}"))??;
    }
    Ok(())
}

/// Reads every pair of `acked` through `client` (32 at a time) and fails on the first
/// key that is missing or holds another value.
pub async fn verify_acked(
    client: Arc<Client>,
    acked: &[(Vec<u8>, Vec<u8>)],
    timeout: Duration,
) -> Result<(), String> {
    let items = acked.to_vec();
    run_parallel(items, 32, move |(key, value)| {
        let client = client.clone();
        async move {
            match get_eventually(&client, &key, timeout).await? {
                Some(v) if v == value => Ok(()),
                Some(v) => Err(format!(
                    "{} holds {:?}, expected {:?}",
                    show(&key),
                    show(&v),
                    show(&value)
                )),
                None => Err(format!("acknowledged key {} is missing", show(&key))),
            }
        }
    })
    .await
}

/// GET `path` from the HTTP endpoint at `addr`; the whole response as text.
pub async fn http_get(addr: &str, path: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    conn.read_to_end(&mut out)
        .await
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The value of the counter `name` (without labels) in node `http`'s /metrics, if it
/// answers.
pub async fn metric(http: &str, name: &str) -> Option<u64> {
    let text = http_get(http, "/metrics").await.ok()?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map(|v| v as u64)
}

/// `len` bytes no compressor shrinks: a xorshift stream seeded by `seed`.
pub fn incompressible_value(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Bytes for a failure message.
pub fn show(b: &[u8]) -> String {
    flotilla_server::display::bytes(b)
}

/// One `flotilla start` process and what it needs to be restarted.
pub struct NodeProc {
    pub id: u64,
    pub listen: String,
    pub http: String,
    pub dir: PathBuf,
    pub log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl NodeProc {
    /// A node `id` on fresh ports with its data in `dir`, logging to `log`, started with
    /// `extra` flags after the usual ones (not spawned yet).
    pub fn new(id: u64, dir: PathBuf, log: PathBuf, extra: &[String]) -> NodeProc {
        NodeProc::on_ports(id, (free_port(), free_port()), dir, log, extra)
    }

    /// Like [`NodeProc::new`], with the gRPC and HTTP ports given.
    pub fn on_ports(
        id: u64,
        (grpc, http): (u16, u16),
        dir: PathBuf,
        log: PathBuf,
        extra: &[String],
    ) -> NodeProc {
        let listen = format!("127.0.0.1:{grpc}");
        let http = format!("127.0.0.1:{http}");
        let mut args: Vec<String> = ["start", "--node-id", &id.to_string(), "--listen", &listen]
            .into_iter()
            .chain(["--advertise", &listen, "--http-listen", &http])
            .map(String::from)
            .collect();
        args.extend(["--data-dir".to_string(), dir.display().to_string()]);
        args.extend(["--tick-ms".to_string(), TICK_MS.to_string()]);
        // A small ballast: the default (1% of the disk, up to 1 GiB) per node per test would
        // dominate the suite's time and disk.
        if !extra.iter().any(|a| a == "--ballast-size") {
            args.extend(["--ballast-size".to_string(), (1 << 20).to_string()]);
        }
        // Plaintext unless the test gives certificates (tests/secure.rs).
        if !extra.iter().any(|a| a == "--certs-dir") {
            args.push("--insecure".to_string());
        }
        args.extend(extra.iter().cloned());
        NodeProc {
            id,
            listen,
            http,
            dir,
            log,
            args,
            child: None,
        }
    }

    /// The same node started without `--node-id` (a new one with `--join` is given an id
    /// by the cluster; a restart finds it in its data directory).
    pub fn without_node_id(mut self) -> NodeProc {
        if let Some(i) = self.args.iter().position(|a| a == "--node-id") {
            self.args.drain(i..i + 2);
        }
        self
    }

    /// The command line after the binary.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Starts the process (its output is appended to the log file).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let err = log.try_clone().expect("clone log handle");
        let child = Command::new(BIN)
            .args(&self.args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn flotilla");
        self.child = Some(child);
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process has been started and has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL, then reaps the process.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit and returns its status (panics if
    /// the process does not stop in time).
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let pid = self.pid().expect("node is running");
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        match self.wait_exit(timeout).await {
            Some(status) => status,
            None => panic!(
                "node {} did not stop within {timeout:?} of SIGTERM",
                self.id
            ),
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the running process; false if it is not
    /// running or `kill` failed.
    pub fn signal(&self, signal: &str) -> bool {
        let Some(pid) = self.pid() else { return false };
        Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Freezes the process (`SIGSTOP`), as a paused VM or a stalled scheduler would.
    pub fn pause(&self) -> bool {
        self.signal("STOP")
    }

    /// Lets a frozen process run again (`SIGCONT`).
    pub fn resume(&self) -> bool {
        self.signal("CONT")
    }

    /// The command line, to change before the next start (say, to add a flag that skews
    /// the node's clock, and to take it off again).
    pub fn args_mut(&mut self) -> &mut Vec<String> {
        &mut self.args
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything the node has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines of the log, leaving out raft-rs's own chatter (elections,
    /// votes), which the log file keeps.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("slog.target"))
            .collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Prints the tail of the log to stderr (the test's output) if the test is failing.
    fn dump_if_panicking(&self) {
        if std::thread::panicking() {
            eprintln!(
                "----- node {} log ({}), last lines -----\n{}",
                self.id,
                self.log.display(),
                self.log_tail(30)
            );
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill9();
        self.dump_if_panicking();
    }
}

/// How a test cluster is set up.
#[derive(Debug, Clone)]
pub struct ClusterOpts {
    /// User ranges `init` creates.
    pub initial_ranges: u32,
    /// Flags added to every node's command line.
    pub extra_args: Vec<String>,
    /// The nodes `init` is sent to, all at once (each retried until it succeeds or
    /// answers ALREADY_EXISTS).
    pub init_through: Vec<u64>,
    /// Voters per range `init` asks for.
    pub replication_factor: u32,
    /// Secure mode: a CA, a node certificate per node (`--certs-dir`), and clients that
    /// present the `root` client certificate.
    pub secure: bool,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            initial_ranges: 4,
            extra_args: Vec::new(),
            init_through: vec![1],
            replication_factor: 3,
            secure: false,
        }
    }
}

impl ClusterOpts {
    /// The defaults with `n` initial ranges.
    pub fn ranges(n: u32) -> Self {
        ClusterOpts {
            initial_ranges: n,
            ..Default::default()
        }
    }

    /// The same, in secure mode.
    pub fn secure(mut self) -> Self {
        self.secure = true;
        self
    }

    /// Every range on every one of `n` nodes, and no placement loop: for tests that
    /// move replicas by hand.
    pub fn manual_placement(mut self, n: u32) -> Self {
        self.replication_factor = n;
        self.extra_args.push("--disable-placement".into());
        self
    }
}

/// `n` node processes (ids `1..=n`) joined into one cluster, with a proxy on every
/// directed link between them.
pub struct TestCluster {
    // Field order matters for drop: the processes die (and dump their logs) before the
    // proxies go.
    nodes: Vec<NodeProc>,
    proxies: BTreeMap<(u64, u64), Proxy>,
    pub opts: ClusterOpts,
    /// How the test's clients dial (TLS with the `root` client certificate when secure).
    pub dialer: Dialer,
    root: Option<tempfile::TempDir>,
}

/// Test certificates under `root`: the CA in `root/ca` (with `client.root.crt`), and a
/// `--certs-dir` per node made by [`node_certs`].
pub mod certs {
    use std::path::{Path, PathBuf};

    use flotilla_server::tls::create::{self, Paths, Validity};

    /// The CA's directory (ca.crt, ca.key, client.root.*).
    pub fn ca_dir(root: &Path) -> PathBuf {
        root.join("ca")
    }

    /// Makes the CA and the `root` client's certificate.
    pub fn make_ca(root: &Path) {
        let paths = paths(&ca_dir(root));
        create::create_ca(&paths, Validity::days(30)).expect("create the CA");
        create::create_client(&paths, "root", Validity::days(30)).expect("client cert");
    }

    /// Makes node `id`'s certs dir (a copy of ca.crt, node.crt, node.key); returns it.
    pub fn node_certs(root: &Path, id: u64) -> PathBuf {
        let dir = root.join(format!("node{id}-certs"));
        std::fs::create_dir_all(&dir).expect("certs dir");
        std::fs::copy(ca_dir(root).join("ca.crt"), dir.join("ca.crt")).expect("copy ca.crt");
        let paths = Paths {
            certs_dir: dir.clone(),
            ca_key: ca_dir(root).join("ca.key"),
            overwrite: true,
        };
        let hosts = ["localhost".to_string(), "127.0.0.1".to_string()];
        create::create_node(&paths, id, &hosts, Validity::days(30)).expect("node cert");
        dir
    }

    fn paths(dir: &Path) -> Paths {
        Paths {
            certs_dir: dir.to_path_buf(),
            ca_key: dir.join("ca.key"),
            overwrite: false,
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill9();
        }
        if std::thread::panicking() {
            if let Some(root) = self.root.take() {
                eprintln!(
                    "kept the failed cluster's data and full logs in {}",
                    root.keep().display()
                );
            }
        }
    }
}

impl TestCluster {
    /// Starts the nodes and proxies, runs `init`, and waits until the cluster is ready.
    pub async fn start(n: usize, opts: ClusterOpts) -> TestCluster {
        let root = tempfile::Builder::new()
            .prefix("flotilla-cluster-")
            .tempdir()
            .expect("temp dir");
        let ids: Vec<u64> = (1..=n as u64).collect();
        // Hold every node's ports until the proxies have theirs, so none collide.
        let held: Vec<std::net::TcpListener> = (0..2 * n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("reserve a port"))
            .collect();
        let port = |i: usize| held[i].local_addr().unwrap().port();
        let dialer = match opts.secure {
            false => Dialer::insecure(),
            true => {
                certs::make_ca(root.path());
                Dialer::client(Some(&certs::ca_dir(root.path())), "root", None)
                    .expect("the test client's certificates")
            }
        };
        let mut nodes: Vec<NodeProc> = ids
            .iter()
            .map(|&id| {
                let (dir, log) = (
                    root.path().join(format!("node{id}")),
                    root.path().join(format!("node{id}.log")),
                );
                let i = 2 * (id as usize - 1);
                let certs = match opts.secure {
                    true => vec![
                        "--certs-dir".to_string(),
                        certs::node_certs(root.path(), id).display().to_string(),
                    ],
                    false => Vec::new(),
                };
                NodeProc::on_ports(id, (port(i), port(i + 1)), dir, log, &certs)
            })
            .collect();
        let join: Vec<String> = nodes.iter().map(|p| p.listen.clone()).collect();
        let mut proxies = BTreeMap::new();
        for &from in &ids {
            for &to in ids.iter().filter(|&&to| to != from) {
                let proxy = Proxy::start(nodes[to as usize - 1].listen.clone())
                    .await
                    .expect("start proxy");
                proxies.insert((from, to), proxy);
            }
        }
        drop(held);
        for node in &mut nodes {
            let mut extra = vec!["--join".to_string(), join.join(",")];
            for ((_, to), proxy) in proxies.iter().filter(|((from, _), _)| *from == node.id) {
                extra.extend(["--peer".to_string(), format!("{to}={}", proxy.addr())]);
            }
            extra.extend(opts.extra_args.iter().cloned());
            node.args.extend(extra);
            node.spawn();
        }
        let cluster = TestCluster {
            nodes,
            proxies,
            opts,
            dialer,
            root: Some(root),
        };
        cluster.init().await;
        cluster.wait_ready().await;
        cluster
    }

    /// The temporary directory holding every node's data and log.
    pub fn root(&self) -> &Path {
        self.root.as_ref().expect("the cluster's directory").path()
    }

    /// The node ids, `1..=n`.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|p| p.id).collect()
    }

    /// Node `id`'s process.
    pub fn node(&mut self, id: u64) -> &mut NodeProc {
        &mut self.nodes[id as usize - 1]
    }

    /// Node `id`'s gRPC address (clients connect here directly, not through a proxy).
    pub fn endpoint(&self, id: u64) -> String {
        self.nodes[id as usize - 1].listen.clone()
    }

    /// Every node's gRPC address, in id order.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|p| p.listen.clone()).collect()
    }

    /// A client of every node.
    pub fn client(&self) -> Client {
        self.client_to(&self.endpoints())
    }

    /// A client of node `id` alone.
    pub fn client_of(&self, id: u64) -> Client {
        self.client_to(&[self.endpoint(id)])
    }

    /// A client of `endpoints`, secure if the cluster is.
    pub fn client_to(&self, endpoints: &[String]) -> Client {
        Client::with_dialer(endpoints, &self.dialer).expect("client")
    }

    /// A client of every node but those in `except`.
    pub fn client_without(&self, except: &[u64]) -> Client {
        let eps: Vec<String> = self
            .ids()
            .into_iter()
            .filter(|id| !except.contains(id))
            .map(|id| self.endpoint(id))
            .collect();
        self.client_to(&eps)
    }

    /// Runs `init` through node 1 until it succeeds (the nodes take a moment to listen).
    async fn init(&self) {
        let (ranges, factor) = (self.opts.initial_ranges, self.opts.replication_factor);
        let mut inits = JoinSet::new();
        for &id in &self.opts.init_through {
            let client = self.client_of(id);
            inits.spawn(async move {
                poll_until("init to succeed", READY_TIMEOUT, || async {
                    match client.init(ranges, factor).await {
                        Ok(_) => Ok(()),
                        Err(s) if s.code() == Code::AlreadyExists => Ok(()),
                        Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
                    }
                })
                .await
            });
        }
        while let Some(done) = inits.join_next().await {
            done.expect("init task");
        }
    }

    /// Waits until every node answers `status` as live and every range has a leader.
    pub async fn wait_ready(&self) {
        let client = self.client();
        let n = self.nodes.len();
        poll_until(
            "every node live and every range led",
            READY_TIMEOUT,
            || async {
                let status = client.status().await.map_err(|s| format!("status: {s}"))?;
                let live = status.nodes.iter().filter(|n| n.live).count();
                if live != n {
                    return Err(format!("{live} of {n} nodes live: {:?}", status.nodes));
                }
                let ranges = client.ranges().await.map_err(|s| format!("ranges: {s}"))?;
                let leaderless = ranges.ranges.iter().filter(|r| r.leader_node == 0).count();
                if ranges.ranges.is_empty() || leaderless > 0 {
                    return Err(format!(
                        "{leaderless} of {} ranges without a leader",
                        ranges.ranges.len()
                    ));
                }
                Ok(())
            },
        )
        .await;
    }

    /// The number of ranges (the meta range included).
    pub async fn range_count(&self) -> usize {
        let client = self.client();
        poll_until("the range table", READY_TIMEOUT, || async {
            client
                .ranges()
                .await
                .map(|r| r.ranges.len())
                .map_err(|s| s.to_string())
        })
        .await
    }

    /// Ranges led by each node, from `status`.
    pub async fn leader_counts(&self) -> BTreeMap<u64, u32> {
        let client = self.client();
        let status = poll_until("status", READY_TIMEOUT, || async {
            client.status().await.map_err(|s| s.to_string())
        })
        .await;
        status
            .nodes
            .iter()
            .filter(|n| n.live)
            .map(|n| (n.node_id, n.leaders))
            .collect()
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn kill9(&mut self, id: u64) {
        self.node(id).kill9();
    }

    /// SIGTERMs node `id` and returns its exit status.
    pub async fn terminate(&mut self, id: u64) -> ExitStatus {
        self.node(id).terminate(Duration::from_secs(30)).await
    }

    /// Starts a new node (the next id) that joins the running cluster through node
    /// `via`, with the cluster's extra flags; returns its id. It has no proxies: the
    /// others reach it, and it them, directly.
    pub fn add_node(&mut self, via: u64) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        let mut extra = Vec::new();
        if self.opts.secure {
            let certs = certs::node_certs(self.root(), id);
            extra.extend(["--certs-dir".to_string(), certs.display().to_string()]);
        }
        extra.extend(self.opts.extra_args.iter().cloned());
        self.spawn_joiner(id, via, extra)
    }

    /// Like [`TestCluster::add_node`], with `extra` instead of the cluster's extra flags.
    pub fn add_node_with(&mut self, via: u64, extra: &[&str]) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        self.spawn_joiner(id, via, extra.iter().map(|a| a.to_string()).collect())
    }

    /// Starts node `id` with `--join` node `via` and `extra`.
    fn spawn_joiner(&mut self, id: u64, via: u64, extra: Vec<String>) -> u64 {
        let root = self.root().to_path_buf();
        let mut args = vec!["--join".to_string(), self.node(via).listen.clone()];
        args.extend(extra);
        let mut node = NodeProc::new(
            id,
            root.join(format!("node{id}")),
            root.join(format!("node{id}.log")),
            &args,
        );
        node.spawn();
        self.nodes.push(node);
        id
    }

    /// Where node `id` writes its log.
    pub fn log_of(&mut self, id: u64) -> PathBuf {
        self.node(id).log.clone()
    }

    /// Where node `id` writes its log.
    pub fn log(&self, id: u64) -> PathBuf {
        self.nodes[id as usize - 1].log.clone()
    }

    /// Node `id`'s HTTP address.
    pub fn nodes_http(&self, id: u64) -> String {
        self.nodes[id as usize - 1].http.clone()
    }

    /// Sends `signal` to node `id` (see [`NodeProc::signal`]).
    pub fn node_signal(&self, id: u64, signal: &str) -> bool {
        self.nodes[id as usize - 1].signal(signal)
    }

    pub fn restart(&mut self, id: u64) {
        self.node(id).spawn();
    }

    /// Blackholes every link to and from node `id`.
    pub fn isolate(&self, id: u64) {
        for ((from, to), proxy) in &self.proxies {
            if *from == id || *to == id {
                proxy.set_blackhole(true);
            }
        }
    }

    /// Blackholes the links between nodes `a` and `b`, both ways.
    pub fn cut(&self, a: u64, b: u64) {
        self.proxies[&(a, b)].set_blackhole(true);
        self.proxies[&(b, a)].set_blackhole(true);
    }

    /// Lifts every blackhole.
    pub fn heal(&self) {
        for proxy in self.proxies.values() {
            proxy.set_blackhole(false);
        }
    }

    /// The proxy node `from` uses to reach node `to`.
    pub fn proxy(&self, from: u64, to: u64) -> &Proxy {
        &self.proxies[&(from, to)]
    }
}

/// A key and its value.
type Pair = (Vec<u8>, Vec<u8>);

/// Writer tasks that put unique keys (`{prefix}{writer}/{seq}` spread over the key space,
/// each with a unique value) until stopped, recording every acknowledged pair.
pub struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Pair>>>,
    count: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Writers {
    /// Starts `n` writers on `client`.
    pub fn start(client: Arc<Client>, n: usize, prefix: &str) -> Writers {
        let w = Writers {
            stop: Arc::default(),
            acked: Arc::default(),
            count: Arc::default(),
            failures: Arc::default(),
            tasks: Vec::new(),
        };
        let tasks = (0..n)
            .map(|i| {
                let name = format!("{prefix}{i}");
                let (client, stop) = (client.clone(), w.stop.clone());
                let (acked, count, failures) =
                    (w.acked.clone(), w.count.clone(), w.failures.clone());
                tokio::spawn(async move {
                    let mut seq = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        let key = spread_key(&name, seq);
                        let value =
                            format!("{name}-{seq}-{:016x}", rand::random::<u64>()).into_bytes();
                        seq += 1;
                        match tokio::time::timeout(CALL_TIMEOUT, client.put(&key, &value)).await {
                            Ok(Ok(())) => {
                                acked.lock().unwrap().push((key, value));
                                count.fetch_add(1, Ordering::SeqCst);
                            }
                            r => {
                                if std::env::var_os("FLOTILLA_TEST_VERBOSE").is_some() {
                                    let why = match r {
                                        Ok(Err(s)) => format!("{:?}: {}", s.code(), s.message()),
                                        _ => "no answer".into(),
                                    };
                                    eprintln!("writer {name}: put {seq} failed: {why}");
                                }
                                failures.fetch_add(1, Ordering::SeqCst);
                                // Back off a little so a dead cluster is not hammered.
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Writers { tasks, ..w }
    }

    /// Writes acknowledged so far.
    pub fn acked_count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Writes that failed so far (of unknown outcome: never checked).
    pub fn failed_count(&self) -> u64 {
        self.failures.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` writes have been acknowledged in total.
    pub async fn wait_acked(&self, n: u64, timeout: Duration) {
        let count = self.count.clone();
        poll_until(&format!("{n} acknowledged writes"), timeout, || {
            let seen = count.load(Ordering::SeqCst);
            async move {
                if seen >= n {
                    Ok(())
                } else {
                    Err(format!("{seen} so far"))
                }
            }
        })
        .await;
    }

    /// Stops the writers (a call in flight is abandoned) and returns the acknowledged pairs.
    pub async fn stop(self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.stop.store(true, Ordering::SeqCst);
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

/// Runs the `flotilla` binary with `args` to completion (a client command).
pub fn run_cli(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run flotilla")
}

/// A fresh log file path under `dir`.
pub fn log_path(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.log"));
    let _ = File::create(&path);
    path
}
