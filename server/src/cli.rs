//! The client commands of the `flotilla` binary: `init`, `kv put|get|delete|scan`,
//! `status`, `ranges` and `split`. Each talks to the nodes given with `--endpoints`.
//!
//! Output is for people and for scripts: `kv get` prints the value alone (exit code 1 if
//! the key is absent), `kv scan` prints `key<TAB>value` lines, and every failure prints
//! the server's status code and message and exits with 2.

use clap::{Args, Subcommand};
use flotilla_raftstore::keyspace::META_RANGE_ID;

use crate::client::Client;
use crate::config::DEFAULT_LISTEN;
use crate::display;

/// Where the cluster is.
#[derive(Args, Debug, Clone)]
pub struct Endpoints {
    /// Nodes to talk to, comma-separated HOST:PORT.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_LISTEN, global = true)]
    pub endpoints: Vec<String>,
}

/// `flotilla kv ...`
#[derive(Subcommand, Debug)]
pub enum KvCmd {
    /// Set KEY to VALUE.
    Put { key: String, value: String },
    /// Print KEY's value (exit code 1 if absent).
    Get { key: String },
    /// Remove KEY.
    Delete { key: String },
    /// Print the pairs in [START, END) in key order, one `key<TAB>value` per line.
    Scan {
        /// First key (default: the first).
        #[arg(default_value = "")]
        start: String,
        /// Key to stop before (default: the end of the key space).
        #[arg(default_value = "")]
        end: String,
        /// Most pairs to print (0: the server's maximum).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// The outcome of a command: the process exit code.
pub type Outcome = Result<i32, String>;

fn fail(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

fn client(e: &Endpoints) -> Result<Client, String> {
    Client::new(&e.endpoints)
}

/// `flotilla init`.
pub async fn init(e: &Endpoints, initial_ranges: u32) -> Outcome {
    let resp = client(e)?.init(initial_ranges).await.map_err(fail)?;
    let nodes: Vec<String> = resp.nodes.iter().map(|n| format!("{}@{}", n.node_id, n.address)).collect();
    println!("initialized cluster {} with nodes {}", resp.cluster_id, nodes.join(", "));
    Ok(0)
}

/// `flotilla kv ...`.
pub async fn kv(e: &Endpoints, cmd: KvCmd) -> Outcome {
    let c = client(e)?;
    match cmd {
        KvCmd::Put { key, value } => c.put(key.as_bytes(), value.as_bytes()).await.map_err(fail).map(|_| 0),
        KvCmd::Delete { key } => c.delete(key.as_bytes()).await.map_err(fail).map(|_| 0),
        KvCmd::Get { key } => match c.get(key.as_bytes()).await.map_err(fail)? {
            Some(v) => {
                println!("{}", String::from_utf8_lossy(&v));
                Ok(0)
            }
            None => {
                eprintln!("key {key:?} not found");
                Ok(1)
            }
        },
        KvCmd::Scan { start, end, limit } => {
            for (k, v) in c.scan(start.as_bytes(), end.as_bytes(), limit).await.map_err(fail)? {
                println!("{}\t{}", display::bytes(&k), String::from_utf8_lossy(&v));
            }
            Ok(0)
        }
    }
}

/// `flotilla status`.
pub async fn status(e: &Endpoints) -> Outcome {
    let s = client(e)?.status().await.map_err(fail)?;
    println!("cluster {} (as seen by node {})", s.cluster_id, s.answered_by);
    println!("{:>6}  {:<22} {:<5} {:>8} {:>8} {:>7}", "node", "address", "live", "replicas", "leaders", "leases");
    for n in &s.nodes {
        let live = if n.live { "yes" } else { "NO" };
        println!("{:>6}  {:<22} {:<5} {:>8} {:>8} {:>7}", n.node_id, n.address, live, n.replicas, n.leaders, n.leases);
        if !n.live {
            println!("        {}", n.error);
        }
    }
    Ok(if s.nodes.iter().all(|n| n.live) { 0 } else { 3 })
}

/// `flotilla ranges`.
pub async fn ranges(e: &Endpoints) -> Outcome {
    let r = client(e)?.ranges().await.map_err(fail)?;
    println!(
        "{:>16}  {:<20} {:<20} {:>6} {:>5} {:>10}  replicas",
        "range", "start", "end", "leader", "lease", "size"
    );
    for info in &r.ranges {
        let Some(d) = &info.descriptor else { continue };
        let leader = if info.leader_node == 0 { "-".to_string() } else { info.leader_node.to_string() };
        let lease = if info.lease { "yes" } else { "-" };
        let size = if info.leader_node == 0 { "?".to_string() } else { human_bytes(info.approximate_size) };
        let replicas: Vec<String> = d.replicas.iter().map(|r| r.node_id.to_string()).collect();
        let (start, end) = if d.range_id == META_RANGE_ID {
            ("(meta range)".to_string(), String::new())
        } else {
            (display::key(&d.start), display::end_key(&d.end))
        };
        println!(
            "{:>16}  {:<20} {:<20} {:>6} {:>5} {:>10}  {}",
            d.range_id,
            start,
            end,
            leader,
            lease,
            size,
            replicas.join(",")
        );
    }
    Ok(0)
}

/// `flotilla split KEY`.
pub async fn split(e: &Endpoints, key: &str) -> Outcome {
    let r = client(e)?.split(key.as_bytes()).await.map_err(fail)?;
    let show = |d: &Option<flotilla_raftstore::RangeDescriptor>| match d {
        Some(d) => format!("range {} [{}, {})", d.range_id, display::key(&d.start), display::end_key(&d.end)),
        None => "?".into(),
    };
    println!("split: {} and {}", show(&r.left), show(&r.right));
    Ok(0)
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}
