//! The `flotilla` binary: `start` runs a node, `init` bootstraps a cluster, `kv`,
//! `status`, `ranges` and `split` talk to a running cluster, and `demo` runs a 3-node
//! cluster inside this process through the embeddable `Db` API.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use flotilla_raftstore::keyspace::initial_ranges;
use flotilla_raftstore::local::LocalCluster;
use flotilla_raftstore::{StoreConfig, StoreMetrics};
use flotilla_router::local::open_local;
use flotilla_router::Db;
use flotilla_server::cli::{self, ClientCmd};
use flotilla_server::config::StartArgs;

/// mimalloc rather than glibc's malloc: a profile of 100-client puts had 12 % of each
/// node's CPU in malloc and free (`docs/benchmarks.md`, stop 25).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "flotilla",
    version,
    about = "Flotilla: a multi-Raft replicated key-value store"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node. With no flags: a single-node cluster on 127.0.0.1:6180 with data in
    /// ./flotilla-data. With --join: a member of a multi-node cluster (see `init`).
    Start(StartArgs),
    #[command(flatten)]
    Client(ClientCmd),
    /// Make the certificates of a secure cluster (CA, nodes, clients) and bearer tokens.
    #[command(subcommand)]
    Cert(cli::cert::CertCmd),
    /// Start a local 3-node cluster in this process, write, read, and print what happened.
    Demo {
        /// Data directory (default: a fresh temporary directory, removed on exit).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Number of ranges (Raft groups) to spread the key space over.
        #[arg(long, default_value_t = 8)]
        ranges: u64,
        /// Number of keys to write.
        #[arg(long, default_value_t = 1000)]
        keys: u32,
    },
}

fn main() {
    let cli = Cli::parse();
    // raft-rs logs every election at info through slog; a node's default log keeps
    // Flotilla's own info lines and raft-rs' warnings.
    let default_filter = if matches!(cli.command, Cmd::Start(_)) {
        "info,raft=warn"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let code = match cli.command {
        Cmd::Demo {
            data_dir,
            ranges,
            keys,
        } => match demo(data_dir, ranges, keys) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
        Cmd::Start(args) => start(args),
        Cmd::Client(cmd) => client_command(cmd),
        Cmd::Cert(cmd) => cli::cert::run(cmd),
    };
    std::process::exit(code);
}

fn start(args: StartArgs) -> i32 {
    let result = args.resolve().and_then(|cfg| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("flotilla-rt")
            .build()
            .map_err(|e| {
                flotilla_server::errors::ServerError::Config(format!(
                    "cannot start the runtime: {e}"
                ))
            })?;
        runtime.block_on(flotilla_server::start::serve(cfg))
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn client_command(cmd: ClientCmd) -> i32 {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(cli::run(cmd)),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            cli::EXIT_ERROR
        }
    }
}

fn demo(
    data_dir: Option<PathBuf>,
    ranges: u64,
    keys: u32,
) -> Result<(), Box<dyn std::error::Error>> {
    let temp = tempfile::tempdir()?;
    let root = data_dir.unwrap_or_else(|| temp.path().to_path_buf());
    let cfg = StoreConfig {
        tick_interval: Duration::from_millis(50),
        ..StoreConfig::default()
    };
    println!(
        "starting 3 nodes with {ranges} user ranges and the meta range in {}",
        root.display()
    );
    let cluster = Arc::new(LocalCluster::start(
        &root,
        3,
        initial_ranges(ranges, 3),
        cfg,
    )?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let db = {
        let _guard = runtime.enter();
        open_local(&cluster)
    };
    let found = runtime.block_on(demo_ops(&db, keys))?;
    print_ranges(&runtime, &cluster);
    for node in cluster.nodes() {
        let m = node.metrics();
        println!(
            "node {}: {} rounds, {} synced log writes, {} commands applied, {} messages in {} batches",
            node.node_id(),
            StoreMetrics::get(&m.rounds),
            StoreMetrics::get(&m.raft_log_syncs),
            StoreMetrics::get(&m.commands_applied),
            StoreMetrics::get(&m.messages_sent),
            StoreMetrics::get(&m.batches_sent),
        );
    }
    drop(db);
    if let Ok(cluster) = Arc::try_unwrap(cluster) {
        cluster.shutdown();
    }
    if found != keys as usize {
        return Err(format!("only {found} of {keys} keys read back").into());
    }
    println!("ok");
    Ok(())
}

type LocalDb = Db<Arc<LocalCluster>>;

/// A table of ranges: span, leader, term and applied index, from each node's status.
fn print_ranges(runtime: &tokio::runtime::Runtime, cluster: &LocalCluster) {
    let mut rows = std::collections::BTreeMap::new();
    for node in cluster.nodes() {
        let Ok(status) = runtime.block_on(node.status()) else {
            continue;
        };
        for r in status.into_iter().filter(|r| r.is_leader) {
            rows.insert(r.descriptor.range_id, (node.node_id(), r));
        }
    }
    println!(
        "{:>5}  {:<10} {:<10} {:>6} {:>5} {:>8}",
        "range", "start", "end", "leader", "term", "applied"
    );
    for (id, (node, r)) in rows {
        let hex = |k: &[u8]| {
            if k.is_empty() {
                "-".to_string()
            } else {
                k.iter().map(|b| format!("{b:02x}")).collect()
            }
        };
        let (start, end) = (hex(&r.descriptor.start), hex(&r.descriptor.end));
        println!(
            "{id:>5}  {start:<10} {end:<10} {node:>6} {:>5} {:>8}",
            r.term, r.applied_index
        );
    }
}

/// Writes `keys` keys one by one, reads them back, scans them, and does one CAS.
async fn demo_ops(db: &LocalDb, keys: u32) -> Result<usize, Box<dyn std::error::Error>> {
    let started = Instant::now();
    for i in 0..keys {
        db.put(&demo_key(i), format!("value-{i}").as_bytes())
            .await?;
    }
    let took = started.elapsed();
    let rate = keys as f64 / took.as_secs_f64();
    println!("wrote {keys} keys in {took:.2?} ({rate:.0} writes/s, one client, fsync on)");
    let mut found = 0;
    for i in 0..keys {
        if db.get(&demo_key(i)).await? == Some(format!("value-{i}").into_bytes()) {
            found += 1;
        }
    }
    println!("read back {found}/{keys} keys with linearizable (ReadIndex) reads");
    let scanned = db.scan(b"", b"", keys as usize + 10).await?;
    println!(
        "a scan across all ranges returned {} pairs in key order",
        scanned.len()
    );
    let (succeeded, previous) = db
        .compare_and_swap(&demo_key(0), Some(b"value-0"), Some(b"swapped"))
        .await?;
    let previous = previous.map(|p| String::from_utf8_lossy(&p).into_owned());
    println!("compare-and-swap value-0 -> swapped: succeeded: {succeeded}, previous: {previous:?}");
    Ok(found)
}

/// Keys spread over the whole key space (two hashed bytes, then a readable name).
fn demo_key(i: u32) -> Vec<u8> {
    let h = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes();
    let mut key = h[..2].to_vec();
    key.extend_from_slice(format!("user/{i:05}").as_bytes());
    key
}
