//! The client commands of the `flotilla` binary: `init`, `kv put|get|delete|scan|cas|batch`,
//! `status`, `ranges` and `split`. Each talks to the nodes given with `--endpoints`; the
//! command line, its formats and exit codes are documented in docs/cli.md.
//!
//! Made to be scripted:
//! - Keys and values on the command line are read in the escaped form [`crate::display::bytes`]
//!   prints (or in hex with `--hex`), so every key `kv scan` prints can be passed back.
//!   Values can also come raw from stdin (`-`) or a file (`--value-file`).
//! - `-o json` prints one JSON document per command (`kv scan`: one per pair).
//! - Exit codes: [`EXIT_OK`], [`EXIT_NO`] (absent key, compare-and-swap not applied),
//!   [`EXIT_ERROR`] (the server's status code and message on stderr), [`EXIT_NOT_LIVE`].
//! - Output goes through one buffered, locked stdout ([`Out`]); a closed pipe
//!   (`flotilla kv scan | head -1`) ends the command quietly with exit code 0.
//! - `kv scan` prints page by page, following the server's resume keys, so any span can
//!   be read to the end in bounded memory.

use std::io::{self, BufWriter, StdoutLock, Write};
use std::path::PathBuf;

use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use serde_json::{json, Value};
use tonic::Status;

pub mod cert;
mod kv;
mod nodes;
mod ranges;

use kv::kv;
pub use kv::{parse_batch_args, parse_batch_file, parse_batch_line, scan_line};
pub use ranges::range_json;
use ranges::{change_replicas, ranges, split, status};

use crate::client::{self, Client};
use crate::config::DEFAULT_LISTEN;
use crate::display::Encoding;
use crate::proto::InitResponse;
use crate::tls::dial::Dialer;

/// The command did what was asked.
pub const EXIT_OK: i32 = 0;
/// The answer is "no": `kv get` found no such key, or `kv cas` did not apply.
pub const EXIT_NO: i32 = 1;
/// The command failed (bad arguments, an unreachable cluster, an error from the server).
pub const EXIT_ERROR: i32 = 2;
/// `status` found a node that is not live.
pub const EXIT_NOT_LIVE: i32 = 3;

/// Where the cluster is and how to print: every client command takes these.
#[derive(Args, Debug, Clone)]
pub struct ClientOpts {
    /// Nodes to talk to, comma-separated HOST:PORT.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = DEFAULT_LISTEN,
        value_parser = parse_endpoint,
        global = true
    )]
    pub endpoints: Vec<String>,
    /// Output format: text for people, json for scripts (one JSON document; `kv scan`:
    /// one JSON object per line).
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,
    /// A secure cluster: talk TLS, trusting DIR/ca.crt, and present DIR/client.USER.crt
    /// if it exists.
    #[arg(long, value_name = "DIR", env = "FLOTILLA_CERTS_DIR", global = true)]
    pub certs_dir: Option<PathBuf>,
    /// Whose client certificate to present (DIR/client.USER.crt).
    #[arg(long, default_value = "root", env = "FLOTILLA_USER", global = true)]
    pub user: String,
    /// A bearer token to send with every call (for a cluster behind a proxy that
    /// terminates TLS; see `flotilla cert create-token`).
    #[arg(long, env = "FLOTILLA_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

/// The output format.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

/// The client commands.
#[derive(Subcommand, Debug)]
pub enum ClientCmd {
    /// Bootstrap a cluster whose nodes were started with --join (once per cluster).
    Init {
        #[command(flatten)]
        opts: ClientOpts,
        /// User ranges the cluster starts with (they split as they grow).
        #[arg(long, default_value_t = 1)]
        initial_ranges: u32,
        /// Voters per range (1..=7). Above the number of nodes, ranges show as
        /// under-replicated until enough nodes join.
        #[arg(long, default_value_t = crate::config::DEFAULT_REPLICATION_FACTOR)]
        replication_factor: u32,
        /// Seconds to wait for the nodes to come up (they may still be starting), with
        /// progress on stderr; 0: try once.
        #[arg(long, default_value_t = 60)]
        wait: u64,
    },
    /// Read and write keys.
    Kv(KvArgs),
    /// The cluster's nodes: liveness, replicas, leaders and leases per node (exit code 3
    /// if a node is not live).
    Status {
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Every node of the cluster: address, liveness, membership, replicas, leaders,
    /// leases and bytes, and the ranges short of replicas (exit code 3 if one is).
    Nodes {
        /// Leave the bytes column out (measuring it reads every range).
        #[arg(long)]
        no_sizes: bool,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Decommission or recommission a node.
    Node {
        #[command(subcommand)]
        cmd: nodes::NodeCmd,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Set the number of voters every range keeps (1..=7).
    ReplicationFactor {
        factor: u32,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Every range: span, leader, lease, size and replicas.
    Ranges {
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Change a range's replicas: add voters on nodes, remove replicas from nodes
    /// (learner, catch-up, joint step, leave; safe to repeat).
    ChangeReplicas {
        /// The range id (`flotilla ranges` lists them).
        range: u64,
        /// Nodes that must end up holding a voter (comma-separated or repeated).
        #[arg(long, value_delimiter = ',')]
        add: Vec<u64>,
        /// Nodes that must end up holding no replica.
        #[arg(long, value_delimiter = ',')]
        remove: Vec<u64>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Split the range holding KEY at KEY.
    Split {
        /// The split key (escaped like `kv` keys, or hex with --hex).
        key: String,
        /// KEY is hex.
        #[arg(long)]
        hex: bool,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

impl ClientCmd {
    fn opts(&self) -> &ClientOpts {
        match self {
            ClientCmd::Init { opts, .. }
            | ClientCmd::Status { opts }
            | ClientCmd::Ranges { opts }
            | ClientCmd::Nodes { opts, .. }
            | ClientCmd::Node { opts, .. }
            | ClientCmd::ReplicationFactor { opts, .. }
            | ClientCmd::Split { opts, .. }
            | ClientCmd::ChangeReplicas { opts, .. } => opts,
            ClientCmd::Kv(args) => &args.opts,
        }
    }
}

/// `flotilla kv [--hex] ...`
#[derive(Args, Debug)]
pub struct KvArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    /// Keys and values on the command line, in batch files and in the output are hex
    /// (default: escaped: printable ASCII as is, other bytes as \xNN, `\` as \x5c).
    #[arg(long, global = true)]
    pub hex: bool,
    #[command(subcommand)]
    pub cmd: KvCmd,
}

/// `flotilla kv ...`
#[derive(Subcommand, Debug)]
pub enum KvCmd {
    /// Set KEY to VALUE.
    Put {
        key: String,
        /// The value; `-` reads its raw bytes from stdin.
        #[arg(required_unless_present = "value_file")]
        value: Option<String>,
        /// Read the value's raw bytes from this file.
        #[arg(long, value_name = "PATH", conflicts_with = "value")]
        value_file: Option<PathBuf>,
    },
    /// Print KEY's value: its raw bytes and a newline (with --hex: in hex). Exit code 1
    /// if the key is absent.
    Get {
        key: String,
        /// No newline after the value: exactly the stored bytes.
        #[arg(short = 'n', long)]
        no_newline: bool,
    },
    /// Remove KEY.
    Delete { key: String },
    /// Print the pairs in [START, END) in key order, one `key<TAB>value` line each, both
    /// escaped (or hex with --hex).
    Scan {
        /// First key (default: the first).
        #[arg(default_value = "")]
        start: String,
        /// Key to stop before (default: the end of the key space).
        #[arg(default_value = "")]
        end: String,
        /// Most pairs to print (0: no limit, read to END).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Ask for pages of about this many bytes (0: the server's maximum).
        #[arg(long, default_value_t = 0, hide = true)]
        page_bytes: u64,
    },
    /// Compare-and-swap: set KEY to NEW (or delete it) only if it holds OLD (--expected
    /// OLD) or is absent (--absent). Exit code 1 if the swap was not applied.
    #[command(
        override_usage = "flotilla kv cas [OPTIONS] <KEY> <NEW | --value-file PATH | --delete> \
                                <--expected OLD | --absent>"
    )]
    #[command(group(ArgGroup::new("condition").required(true).args(["expected", "absent"])))]
    #[command(group(ArgGroup::new("outcome").required(true).args(["new", "value_file", "delete"])))]
    Cas {
        key: String,
        /// The new value; `-` reads its raw bytes from stdin.
        new: Option<String>,
        /// Swap only if KEY holds OLD.
        #[arg(long, value_name = "OLD")]
        expected: Option<String>,
        /// Swap only if KEY is absent.
        #[arg(long)]
        absent: bool,
        /// Read the new value's raw bytes from this file.
        #[arg(long, value_name = "PATH")]
        value_file: Option<PathBuf>,
        /// Delete KEY instead of setting it.
        #[arg(long)]
        delete: bool,
    },
    /// Apply several writes atomically (their keys must lie in one range), e.g.
    /// `kv batch put a 1 put b 2 delete c`.
    Batch {
        /// The writes, in order: `put KEY VALUE` and `delete KEY`.
        #[arg(value_name = "OP")]
        ops: Vec<String>,
        /// Read the writes from FILE (`-`: stdin), one a line: put<TAB>KEY<TAB>VALUE or
        /// delete<TAB>KEY (escaped, or hex with --hex).
        #[arg(short = 'f', long, value_name = "FILE", conflicts_with = "ops")]
        file: Option<String>,
    },
}

/// Why a command stopped early.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// An error to report (exit code 2).
    Error(String),
    /// Whoever read stdout stopped reading (`| head`): not an error.
    Closed,
}

impl From<String> for Failure {
    fn from(e: String) -> Failure {
        Failure::Error(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        match e.kind() {
            io::ErrorKind::BrokenPipe => Failure::Closed,
            _ => Failure::Error(format!("cannot write the output: {e}")),
        }
    }
}

/// The outcome of a command: its exit code.
pub type Outcome = Result<i32, Failure>;

/// Runs a client command; returns the process exit code.
pub async fn run(cmd: ClientCmd) -> i32 {
    let mut out = Out::stdout(cmd.opts().output);
    let outcome = dispatch(cmd, &mut out).await;
    let flushed = out.flush();
    let outcome = match (outcome, flushed) {
        (Ok(_), Err(e)) => Err(e.into()),
        (outcome, _) => outcome,
    };
    match outcome {
        Ok(code) => code,
        Err(Failure::Closed) => EXIT_OK,
        Err(Failure::Error(message)) => {
            let _ = writeln!(io::stderr(), "error: {message}");
            EXIT_ERROR
        }
    }
}

async fn dispatch(cmd: ClientCmd, out: &mut Out) -> Outcome {
    match cmd {
        ClientCmd::Init {
            opts,
            initial_ranges,
            replication_factor,
            wait,
        } => {
            let wait = std::time::Duration::from_secs(wait);
            init(
                &Remote::new(&opts)?,
                out,
                initial_ranges,
                replication_factor,
                wait,
            )
            .await
        }
        ClientCmd::Nodes { opts, no_sizes } => {
            nodes::nodes(&Remote::new(&opts)?, out, !no_sizes).await
        }
        ClientCmd::Node { cmd, opts } => nodes::node(&Remote::new(&opts)?, out, cmd).await,
        ClientCmd::ReplicationFactor { factor, opts } => {
            nodes::replication_factor(&Remote::new(&opts)?, out, factor).await
        }
        ClientCmd::Kv(args) => {
            kv(
                &Remote::new(&args.opts)?,
                out,
                Encoding::hex_if(args.hex),
                args.cmd,
            )
            .await
        }
        ClientCmd::Status { opts } => status(&Remote::new(&opts)?, out).await,
        ClientCmd::Ranges { opts } => ranges(&Remote::new(&opts)?, out).await,
        ClientCmd::ChangeReplicas {
            range,
            add,
            remove,
            opts,
        } => change_replicas(&Remote::new(&opts)?, out, range, &add, &remove).await,
        ClientCmd::Split { key, hex, opts } => {
            let key = Encoding::hex_if(hex).parse("KEY", &key)?;
            split(&Remote::new(&opts)?, out, &key).await
        }
    }
}

/// Buffered, locked stdout and the output format. Write errors are returned (a closed
/// pipe becomes [`Failure::Closed`]), never panicked on.
pub struct Out {
    w: BufWriter<StdoutLock<'static>>,
    json: bool,
}

impl Out {
    fn stdout(output: Output) -> Out {
        Out {
            w: BufWriter::new(io::stdout().lock()),
            json: output == Output::Json,
        }
    }

    fn bytes(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)
    }

    fn json(&mut self, v: &Value) -> io::Result<()> {
        serde_json::to_writer(&mut self.w, v)?;
        self.w.write_all(b"\n")
    }

    /// Prints `text()` or `json()`, whichever the format asks for.
    fn show(
        &mut self,
        text: impl FnOnce() -> String,
        json: impl FnOnce() -> Value,
    ) -> io::Result<()> {
        if self.json {
            self.json(&json())
        } else {
            self.bytes(text().as_bytes())
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// Writes a note for people to stderr (ignoring a closed stderr).
fn note(message: &str) {
    let _ = writeln!(io::stderr(), "{message}");
}

/// The cluster, and how its errors read.
struct Remote {
    client: Client,
}

impl Remote {
    fn new(opts: &ClientOpts) -> Result<Remote, Failure> {
        let dialer = Dialer::client(opts.certs_dir.as_deref(), &opts.user, opts.token.clone())
            .map_err(|e| Failure::Error(e.to_string()))?;
        Ok(Remote {
            client: Client::with_dialer(&opts.endpoints, &dialer)?,
        })
    }

    /// `r` with a failed call turned into the message the user sees.
    fn check<T>(&self, r: Result<T, Status>) -> Result<T, Failure> {
        r.map_err(|s| {
            Failure::Error(if client::unreachable(&s) {
                cannot_reach(self.client.endpoints(), &s)
            } else if client::refused_unprocessed(&s) {
                format!(
                    "{}: the node refused the call before running it (it is shutting down); \
                     nothing was done — run it again, naming other nodes with --endpoints",
                    client::with_causes(&s)
                )
            } else if !self.client.is_secure() && client::connection_broke(&s) {
                format!(
                    "{:?}: {} — if the cluster runs in secure mode, pass --certs-dir DIR",
                    s.code(),
                    s.message()
                )
            } else {
                format!("{:?}: {}", s.code(), s.message())
            })
        })
    }
}

/// "cannot reach ADDR: connection refused — is a node running there? (--endpoints)".
fn cannot_reach(endpoints: &[String], s: &Status) -> String {
    let mut cause = s.message().to_string();
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        cause = e.to_string();
        source = e.source();
    }
    if let Some(i) = cause.find(" (os error") {
        cause.truncate(i);
    }
    let cause = match cause.chars().next() {
        Some(c) => c.to_lowercase().chain(cause.chars().skip(1)).collect(),
        None => cause,
    };
    match endpoints {
        [one] => format!("cannot reach {one}: {cause} — is a node running there? (--endpoints)"),
        all => format!(
            "cannot reach any of {}: {cause} — are nodes running there? (--endpoints)",
            all.join(", ")
        ),
    }
}

/// Checks one `--endpoints` entry: HOST:PORT, no scheme.
fn parse_endpoint(e: &str) -> Result<String, String> {
    let bad = |why: &str| {
        Err(format!(
            "{e:?} is not HOST:PORT ({why}), e.g. --endpoints 127.0.0.1:6180,10.0.0.2:6180"
        ))
    };
    if e.contains("://") {
        return bad("leave out the scheme");
    }
    let Some((host, port)) = e.rsplit_once(':') else {
        return bad("no port");
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return bad("no host name or address before the port");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(e.to_string()),
        _ => bad(&format!(
            "the port {port:?} is not a number from 1 to 65535"
        )),
    }
}

/// `flotilla init`.
/// `flotilla init`: retried while the nodes are not all up yet (a node that does not
/// listen yet, or a `--join` node that does not answer), until `wait` has passed. Init is
/// safe to repeat: only the member with the lowest id bootstraps.
async fn init(
    r: &Remote,
    out: &mut Out,
    initial_ranges: u32,
    factor: u32,
    wait: std::time::Duration,
) -> Outcome {
    let deadline = std::time::Instant::now() + wait;
    let started = std::time::Instant::now();
    let resp = loop {
        match r.client.init(initial_ranges, factor).await {
            Err(s) if not_up_yet(&s) && std::time::Instant::now() < deadline => {
                let why = match r.check::<()>(Err(s)) {
                    Err(Failure::Error(e)) => e,
                    _ => String::new(),
                };
                eprintln!(
                    "init: waiting for the nodes ({:.0?} so far): {why}",
                    started.elapsed()
                );
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            other => break r.check(other)?,
        }
    };
    out.show(|| init_text(&resp), || init_json(&resp))?;
    Ok(EXIT_OK)
}

/// True for an init that failed only because some node is not up yet.
fn not_up_yet(s: &Status) -> bool {
    client::unreachable(s) || s.code() == tonic::Code::Unavailable
}

fn init_text(r: &InitResponse) -> String {
    let nodes: Vec<String> = r
        .nodes
        .iter()
        .map(|n| format!("{}@{}", n.node_id, n.address))
        .collect();
    format!(
        "initialized cluster {} with nodes {}\n",
        r.cluster_id,
        nodes.join(", ")
    )
}

fn init_json(r: &InitResponse) -> Value {
    let nodes: Vec<Value> = r
        .nodes
        .iter()
        .map(|n| json!({"node_id": n.node_id, "address": n.address}))
        .collect();
    json!({"cluster_id": r.cluster_id, "nodes": nodes})
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use flotilla_raftstore::keyspace::META_RANGE_ID;
    use flotilla_raftstore::metapb::{RangeDescriptor, WriteOp};

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: ClientCmd,
    }

    fn parse(args: &str) -> Result<ClientCmd, String> {
        Cli::try_parse_from(std::iter::once("flotilla").chain(args.split(' ')))
            .map(|c| c.cmd)
            .map_err(|e| e.to_string())
    }

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
        let Ok(ClientCmd::Kv(kv)) = parse("kv get k -o json --hex --endpoints a:1,b:2") else {
            panic!("kv get")
        };
        assert!(
            kv.hex && kv.opts.output == Output::Json && kv.opts.endpoints == ["a:1", "b:2"],
            "{kv:?}"
        );
        assert!(
            parse("kv put k").unwrap_err().contains("VALUE"),
            "put needs a value"
        );
        assert!(parse("kv put k --value-file f").is_ok());
        assert!(
            parse("kv put k v --value-file f").is_err(),
            "a value and a file conflict"
        );
        assert!(
            parse("kv cas k new").unwrap_err().contains("--expected"),
            "cas needs a condition"
        );
        assert!(
            parse("kv cas k --absent").is_err(),
            "cas needs a new value or --delete"
        );
        assert!(
            parse("kv cas k new --absent --expected old").is_err(),
            "one condition"
        );
        assert!(
            parse("kv cas k new --delete --absent").is_err(),
            "a value or --delete"
        );
        assert!(parse("kv cas k --delete --expected old").is_ok());
        assert!(
            parse("kv batch put a 1 --file f").is_err(),
            "ops and a file conflict"
        );
        assert!(parse("status -o yaml").is_err());
    }

    #[test]
    fn endpoints_are_host_port() {
        assert_eq!(
            parse_endpoint("127.0.0.1:6180"),
            Ok("127.0.0.1:6180".to_string())
        );
        assert!(parse_endpoint("[::1]:6180").is_ok());
        assert!(parse_endpoint("node-2.internal:80").is_ok());
        for (bad, why) in [
            ("localhost", "no port"),
            ("http://a:1", "scheme"),
            (":6180", "no host"),
            ("a:", "port \"\""),
            ("a:99999", "port \"99999\""),
            ("a:0", "port \"0\""),
            ("", "no port"),
        ] {
            let err = parse_endpoint(bad).expect_err(bad);
            assert!(
                err.starts_with(&format!("{bad:?} is not HOST:PORT")) && err.contains(why),
                "{bad}: {err}"
            );
        }
        let err = parse("status --endpoints 127.0.0.1:1,localhost").unwrap_err();
        assert!(
            err.contains("\"localhost\" is not HOST:PORT"),
            "clap names the bad value: {err}"
        );
    }

    #[test]
    fn batch_arguments_parse_in_order() {
        let ops = parse_batch_args(
            Encoding::Escaped,
            &strings(&["put", "a", "1\\x0a", "delete", "b\\x00"]),
        )
        .unwrap();
        assert_eq!(
            ops,
            vec![
                WriteOp::put(b"a".to_vec(), b"1\n".to_vec()),
                WriteOp::delete(b"b\x00".to_vec())
            ]
        );
        let ops = parse_batch_args(Encoding::Hex, &strings(&["put", "61", "ff"])).unwrap();
        assert_eq!(ops, vec![WriteOp::put(b"a".to_vec(), vec![0xff])]);
        let err = parse_batch_args(Encoding::Escaped, &strings(&["put", "a"])).unwrap_err();
        assert_eq!(err, "kv batch: `put` (argument 1) needs KEY and VALUE");
        let err = parse_batch_args(
            Encoding::Escaped,
            &strings(&["put", "a", "1", "remove", "b"]),
        )
        .unwrap_err();
        assert!(err.contains("argument 4 is \"remove\""), "{err}");
        let err = parse_batch_args(Encoding::Escaped, &strings(&["delete", "a\\"])).unwrap_err();
        assert!(
            err.starts_with(r#"bad KEY (argument 2) "a\": "\" at byte 1"#),
            "{err}"
        );
        let err = parse_batch_args(Encoding::Hex, &strings(&["delete", "6"])).unwrap_err();
        assert!(err.contains("--hex KEY (argument 2)"), "{err}");
    }

    #[test]
    fn batch_files_parse_line_by_line() {
        let text = b"put\ta\t1\r\n\ndelete\tb\\x09\nput\tc\t\n";
        let ops = parse_batch_file(Encoding::Escaped, "f", text).unwrap();
        let want = vec![
            WriteOp::put(b"a".to_vec(), b"1".to_vec()),
            WriteOp::delete(b"b\t".to_vec()),
            WriteOp::put(b"c".to_vec(), Vec::new()),
        ];
        assert_eq!(ops, want, "CRLF, empty lines and empty values");
        let cases: [(&[u8], &str); 6] = [
            (
                b"put\ta\t1\nput a 1\n",
                "kv batch: f line 2: \"put a 1\" is not an op",
            ),
            (
                b"put\ta\n",
                "kv batch: f line 1: put takes put<TAB>KEY<TAB>VALUE, found 2",
            ),
            (b"put\ta\tb\tc\n", "found 4 tab-separated fields"),
            (
                b"delete\ta\tb\n",
                "kv batch: f line 1: delete takes delete<TAB>KEY, found 3",
            ),
            (b"\ndelete\ta\\q\n", r#"kv batch: f line 2: bad key "a\q""#),
            (b"put\t\xff\tv\n", "kv batch: f line 1: not UTF-8"),
        ];
        for (text, want) in cases {
            let err = parse_batch_file(Encoding::Escaped, "f", text).unwrap_err();
            assert!(
                err.starts_with(want) || err.contains(want),
                "{:?}: {err}",
                String::from_utf8_lossy(text)
            );
        }
        let err = parse_batch_file(Encoding::Hex, "-", b"put\t61\tzz\n").unwrap_err();
        assert!(
            err.starts_with("kv batch: stdin line 1: bad --hex value \"zz\""),
            "{err}"
        );
    }

    #[test]
    fn scan_lines_keep_one_pair_per_line() {
        assert_eq!(
            scan_line(Encoding::Escaped, b"k\t1", b"a\nb\\"),
            "k\\x091\ta\\x0ab\\x5c\n"
        );
        assert_eq!(scan_line(Encoding::Hex, b"k", b"\n"), "6b\t0a\n");
    }

    #[test]
    fn range_bounds_read_as_user_keys() {
        use flotilla_raftstore::keyspace::user_key;
        let meta = RangeDescriptor {
            range_id: META_RANGE_ID,
            start: vec![],
            end: vec![b'u'],
            ..Default::default()
        };
        let v = range_json(&meta);
        assert_eq!(
            (v["meta"].clone(), v["start"].clone(), v["end"].clone()),
            (json!(true), Value::Null, json!(""))
        );
        let user = RangeDescriptor {
            range_id: 7,
            start: user_key(b"a\\"),
            end: vec![],
            ..Default::default()
        };
        let v = range_json(&user);
        assert_eq!(
            (v["start"].clone(), v["end"].clone()),
            (json!("a\\x5c"), Value::Null)
        );
    }

    #[test]
    fn connect_errors_name_the_address() {
        let s = Status::unavailable("tcp connect error");
        let one = cannot_reach(&["127.0.0.1:1".to_string()], &s);
        assert_eq!(
            one,
            "cannot reach 127.0.0.1:1: tcp connect error — is a node running there? (--endpoints)"
        );
        let two = cannot_reach(&["a:1".to_string(), "b:2".to_string()], &s);
        assert!(two.starts_with("cannot reach any of a:1, b:2: "), "{two}");
        assert_eq!(
            Failure::from(io::Error::from(io::ErrorKind::BrokenPipe)),
            Failure::Closed
        );
    }
}
