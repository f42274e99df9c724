//! Server settings: command-line flags, a TOML file with the same names, and defaults.
//! A flag beats the file, and the file beats the default.
//!
//! ```toml
//! node-id = 2
//! listen = "127.0.0.1:6280"
//! advertise = "10.0.0.2:6280"
//! http-listen = "127.0.0.1:6281"
//! join = ["10.0.0.1:6180", "10.0.0.3:6380"]
//! data-dir = "/var/lib/flotilla"
//! split-size = 67108864
//! tick-ms = 100
//! snapshot-rate = 104857600
//! [peers]          # pinned addresses, winning over what nodes report
//! 3 = "10.0.1.3:6380"
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use flotilla_raftstore::{StoreConfig, MAX_NODE_ID};
use serde::Deserialize;

use crate::errors::ServerError;
use crate::tls::dial::Dialer;
use crate::tls::NodeTls;

/// The gRPC address of a node started without `--listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6180";
/// The HTTP (metrics, status) address of a node started without `--http-listen`.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:6181";
/// The data directory of a node started without `--data-dir`.
pub const DEFAULT_DATA_DIR: &str = "flotilla-data";

/// `flotilla start` flags.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct StartArgs {
    /// A TOML file with any of these settings (flags win).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This node's id (1..16777215), unique in the cluster. Default: the id its data
    /// directory records; for a new node with --join, one the running cluster allocates;
    /// else 1. The nodes named at `init` need one.
    #[arg(long)]
    pub node_id: Option<u64>,
    /// Address for gRPC (clients and other nodes). Default 127.0.0.1:6180.
    #[arg(long)]
    pub listen: Option<String>,
    /// Address other nodes reach this one at. Default: the listen address.
    #[arg(long)]
    pub advertise: Option<String>,
    /// Address for HTTP: /metrics (Prometheus) and /status. Default 127.0.0.1:6181.
    #[arg(long)]
    pub http_listen: Option<String>,
    /// Other nodes' addresses, comma-separated. Without it the node starts a single-node
    /// cluster by itself; with it, it waits for `flotilla init`.
    #[arg(long, value_delimiter = ',')]
    pub join: Vec<String>,
    /// Where the node keeps its data. Default ./flotilla-data.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Pin the address of another node, as ID=ADDR (repeatable); wins over what other
    /// nodes report.
    #[arg(long = "peer", value_name = "ID=ADDR")]
    pub peers: Vec<String>,
    /// Split a range once its keys and values exceed this many bytes. Default 64 MiB.
    #[arg(long)]
    pub split_size: Option<u64>,
    /// Split a range whose leader serves this many requests a second for 5 seconds in a
    /// row, at the key that halves its load. Default 2500; 0: never split by load.
    #[arg(long)]
    pub load_split_qps: Option<u64>,
    /// Length of a Raft tick in milliseconds (elections take 10 ticks). Default 100.
    #[arg(long)]
    pub tick_ms: Option<u64>,
    /// User ranges a single-node cluster starts with. Default 1.
    #[arg(long)]
    pub initial_ranges: Option<u32>,
    /// Truncate a range's Raft log once it holds more than this many applied entries.
    /// Default 1024.
    #[arg(long)]
    pub log_gc_threshold: Option<u64>,
    /// A follower lagging by more than this many entries is caught up by a snapshot
    /// instead of holding the leader's log. Default 8192.
    #[arg(long)]
    pub log_gc_max_lag: Option<u64>,
    /// The most bytes per second this node sends of snapshots (replicas being added or
    /// caught up); 0: no limit. Default 104857600 (100 MiB/s).
    #[arg(long)]
    pub snapshot_rate: Option<u64>,
    /// Bytes kept in reserve in DATA_DIR/ballast, to be deleted when the disk is full so
    /// the node can restart (0: none). Default: 1% of the filesystem, at most 1 GiB.
    #[arg(long)]
    pub ballast_size: Option<u64>,
    /// This node's locality, as KEY=VALUE pairs, comma-separated (`zone=a`): replicas of a
    /// range spread over distinct zones when there are enough.
    #[arg(long)]
    pub locality: Option<String>,
    /// Seconds a node must be unreachable before its replicas are replaced on other
    /// nodes. Default 300.
    #[arg(long)]
    pub dead_node_timeout: Option<f64>,
    /// Voters per range of a cluster this node bootstraps alone (no --join). Default 3;
    /// until that many nodes have joined, ranges show as under-replicated.
    #[arg(long)]
    pub replication_factor: Option<u32>,
    /// Never run the placement loop on this node (for operators pausing automatic
    /// moves, and tests that move replicas by hand). Set it on every node to pause
    /// placement cluster-wide.
    #[arg(long)]
    pub disable_placement: bool,
    /// Secure mode: serve and dial over TLS with the certificates of DIR (ca.crt,
    /// node.crt, node.key; see `flotilla cert`). Nodes admit only nodes of the same CA to
    /// their Internal service, and clients with a certificate or token.
    #[arg(long, value_name = "DIR")]
    pub certs_dir: Option<PathBuf>,
    /// Plaintext, no authentication: anyone who reaches the ports can read and write.
    /// A node needs either this or --certs-dir.
    #[arg(long)]
    pub insecure: bool,
    /// Fault injection for tests: run this node's clock at this many times real speed.
    /// Leases are safe only while clock rates agree within max_clock_offset_ticks.
    #[arg(long, hide = true)]
    pub clock_rate: Option<f64>,
    /// For upgrade tests: pose as a binary that reads log formats up to this version
    /// only (`raftstore/src/version.rs`), as a node of an older release would.
    #[arg(long, hide = true)]
    pub binary_version: Option<u32>,
}

/// The TOML file: the same settings, kebab-case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    node_id: Option<u64>,
    listen: Option<String>,
    advertise: Option<String>,
    http_listen: Option<String>,
    join: Option<Vec<String>>,
    data_dir: Option<PathBuf>,
    peers: Option<BTreeMap<String, String>>,
    split_size: Option<u64>,
    load_split_qps: Option<u64>,
    tick_ms: Option<u64>,
    initial_ranges: Option<u32>,
    log_gc_threshold: Option<u64>,
    log_gc_max_lag: Option<u64>,
    snapshot_rate: Option<u64>,
    ballast_size: Option<u64>,
    locality: Option<String>,
    dead_node_timeout: Option<f64>,
    replication_factor: Option<u32>,
    disable_placement: Option<bool>,
    certs_dir: Option<PathBuf>,
    insecure: Option<bool>,
}

/// Resolved settings of one server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// This node's id: the one configured, else the one its data directory records, else
    /// (with `--join`) one the cluster allocates, else 1 (`node_id::resolve`).
    pub node_id: u64,
    /// False when neither `--node-id` nor the file gave an id.
    pub node_id_configured: bool,
    pub listen: SocketAddr,
    pub advertise: String,
    pub http_listen: SocketAddr,
    pub join: Vec<String>,
    pub data_dir: PathBuf,
    pub pinned: HashMap<u64, String>,
    pub initial_ranges: u32,
    pub store: StoreConfig,
    /// The rate of a skewed clock (fault injection); `None`: the real monotonic clock.
    pub clock_rate: Option<f64>,
    /// The newest log format this node reads: the binary's, unless a test has it pose
    /// as an older one (`--binary-version`).
    pub binary_version: u32,
    /// The ballast's size; `None`: the default for the data directory's disk.
    pub ballast_size: Option<u64>,
    /// The `zone` locality label, if given.
    pub zone: Option<String>,
    /// How long a node is unreachable before placement replaces its replicas.
    pub dead_node_timeout: Duration,
    /// The replication factor of a cluster this node bootstraps alone.
    pub replication_factor: u32,
    /// The placement loop never runs here.
    pub disable_placement: bool,
    /// The node's certificates in secure mode; `None` with `--insecure`.
    pub tls: Option<std::sync::Arc<NodeTls>>,
    /// How the node dials other nodes (TLS in secure mode).
    pub dialer: Dialer,
}

/// The default `dead_node_timeout` (CockroachDB's `server.time_until_store_dead`).
pub const DEFAULT_DEAD_NODE_TIMEOUT: Duration = Duration::from_secs(300);
/// The default replication factor.
pub const DEFAULT_REPLICATION_FACTOR: u32 = 3;

impl StartArgs {
    /// Merges the flags over the config file (if any) over the defaults.
    pub fn resolve(self) -> Result<ServerConfig, ServerError> {
        let file = match &self.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ServerError::ConfigFile {
                        path: path.clone(),
                        source,
                    })?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))?
            }
            None => FileConfig::default(),
        };
        let listen_s = self
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = parse_addr("listen", &listen_s)?;
        let http_s = self
            .http_listen
            .or(file.http_listen)
            .unwrap_or_else(|| DEFAULT_HTTP_LISTEN.into());
        let http_listen = parse_addr("http-listen", &http_s)?;
        let advertise = self.advertise.or(file.advertise).unwrap_or(listen_s);
        let join = if self.join.is_empty() {
            file.join.unwrap_or_default()
        } else {
            self.join
        };
        let mut pinned = HashMap::new();
        for (id, addr) in file.peers.unwrap_or_default() {
            pinned.insert(parse_node_id(&id)?, addr);
        }
        for pin in &self.peers {
            let (id, addr) = pin
                .split_once('=')
                .ok_or_else(|| ServerError::Config(format!("--peer {pin}: expected ID=ADDR")))?;
            pinned.insert(parse_node_id(id)?, addr.to_string());
        }
        let mut store = StoreConfig::default();
        if let Some(s) = self.split_size.or(file.split_size) {
            store.split_size = s;
        }
        if let Some(q) = self.load_split_qps.or(file.load_split_qps) {
            store.load_split_qps = q;
        }
        if let Some(ms) = self.tick_ms.or(file.tick_ms) {
            if ms == 0 {
                return Err(ServerError::Config("tick-ms must be at least 1".into()));
            }
            store.tick_interval = Duration::from_millis(ms);
        }
        if let Some(n) = self.log_gc_threshold.or(file.log_gc_threshold) {
            store.log_gc_threshold = n.max(1);
        }
        if let Some(n) = self.log_gc_max_lag.or(file.log_gc_max_lag) {
            store.log_gc_max_lag = n;
        }
        if let Some(n) = self.snapshot_rate.or(file.snapshot_rate) {
            store.snapshot_rate = n;
        }
        let binary_version = self
            .binary_version
            .unwrap_or(flotilla_raftstore::BINARY_VERSION);
        if !(1..=flotilla_raftstore::BINARY_VERSION).contains(&binary_version) {
            return Err(ServerError::Config(format!(
                "--binary-version {binary_version}: this binary reads versions 1 to {}",
                flotilla_raftstore::BINARY_VERSION
            )));
        }
        if let Some(rate) = self.clock_rate.filter(|r| !(r.is_finite() && *r > 0.0)) {
            return Err(ServerError::Config(format!(
                "--clock-rate {rate}: expected a positive number"
            )));
        }
        let insecure = self.insecure || file.insecure.unwrap_or(false);
        let (tls, dialer) = resolve_security(self.certs_dir.or(file.certs_dir), insecure)?;
        let mut configured_id = self.node_id.or(file.node_id);
        if let Some(bound) = tls.as_ref().and_then(|t| t.info().node_id) {
            match configured_id {
                Some(id) if id != bound => {
                    return Err(ServerError::Config(format!(
                        "--node-id {id}, but the certificate {} is node {bound}'s: start with                          --node-id {bound}, or give this node its own certificate                          (`flotilla cert create-node --node-id {id}`)",
                        tls.as_ref().map(|t| t.dir().join(crate::tls::files::NODE_CERT).display().to_string()).unwrap_or_default()
                    )))
                }
                _ => configured_id = Some(bound),
            }
        }
        let node_id = configured_id.unwrap_or(1);
        if node_id == 0 || node_id > MAX_NODE_ID {
            return Err(ServerError::Config(format!(
                "--node-id {node_id} is out of range: node ids are 1..={MAX_NODE_ID}"
            )));
        }
        if let Some(blank) = join.iter().find(|a| a.trim().is_empty()) {
            return Err(ServerError::Config(format!(
                "--join {blank:?}: an empty address (an unset variable?); give the HOST:PORT of \
                 at least one other node, or leave --join out to start a single-node cluster"
            )));
        }
        let zone = parse_locality(self.locality.or(file.locality).as_deref())?;
        let dead_node_timeout = match self.dead_node_timeout.or(file.dead_node_timeout) {
            None => DEFAULT_DEAD_NODE_TIMEOUT,
            Some(s) if s.is_finite() && s > 0.0 => Duration::from_secs_f64(s),
            Some(s) => {
                return Err(ServerError::Config(format!(
                    "--dead-node-timeout {s}: expected a positive number of seconds"
                )))
            }
        };
        let replication_factor = self
            .replication_factor
            .or(file.replication_factor)
            .unwrap_or(DEFAULT_REPLICATION_FACTOR);
        check_replication_factor(replication_factor).map_err(ServerError::Config)?;
        let initial_ranges = self
            .initial_ranges
            .or(file.initial_ranges)
            .unwrap_or(1)
            .max(1);
        flotilla_raftstore::keyspace::check_initial_ranges(u64::from(initial_ranges))
            .map_err(ServerError::Config)?;
        Ok(ServerConfig {
            zone,
            dead_node_timeout,
            replication_factor,
            disable_placement: self.disable_placement || file.disable_placement.unwrap_or(false),
            node_id,
            node_id_configured: configured_id.is_some(),
            listen,
            advertise,
            http_listen,
            join,
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            pinned,
            initial_ranges,
            store,
            clock_rate: self.clock_rate,
            binary_version,
            ballast_size: self.ballast_size.or(file.ballast_size),
            tls,
            dialer,
        })
    }
}

/// Secure mode (`--certs-dir`, its certificates read and checked now) or `--insecure`:
/// exactly one of them.
fn resolve_security(
    certs_dir: Option<PathBuf>,
    insecure: bool,
) -> Result<(Option<std::sync::Arc<NodeTls>>, Dialer), ServerError> {
    match (certs_dir, insecure) {
        (Some(dir), true) => Err(ServerError::Config(format!(
            "--certs-dir {} and --insecure: choose one (TLS with those certificates, or \
             plaintext with no authentication)",
            dir.display()
        ))),
        (None, false) => Err(ServerError::Config(
            "choose how this node talks: --certs-dir DIR for TLS and authentication (make \
             the certificates with `flotilla cert`), or --insecure for plaintext that \
             anyone who reaches the ports can read and write"
                .into(),
        )),
        (None, true) => Ok((None, Dialer::insecure())),
        (Some(dir), false) => {
            let tls = NodeTls::load(&dir)?;
            let dialer = Dialer::secure(tls.dial_config()?, &dir);
            Ok((Some(tls), dialer))
        }
    }
}

/// The `zone` of a `--locality` list (`zone=a,rack=3`); other keys are accepted and
/// ignored for now.
fn parse_locality(s: Option<&str>) -> Result<Option<String>, ServerError> {
    let Some(s) = s.filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    let mut zone = None;
    for pair in s.split(',') {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            ServerError::Config(format!(
                "--locality {s}: {pair:?} is not KEY=VALUE (for example zone=a)"
            ))
        })?;
        if k.trim().is_empty() || v.trim().is_empty() {
            return Err(ServerError::Config(format!(
                "--locality {s}: empty key or value in {pair:?}"
            )));
        }
        if k.trim() == "zone" {
            zone = Some(v.trim().to_string());
        }
    }
    Ok(zone)
}

/// Refuses a replication factor no cluster can have.
pub fn check_replication_factor(factor: u32) -> Result<(), String> {
    if (1..=MAX_REPLICATION_FACTOR).contains(&factor) {
        return Ok(());
    }
    Err(format!(
        "replication factor {factor} is out of range: give 1..={MAX_REPLICATION_FACTOR} (3 survives one node's loss, 5 two)"
    ))
}

/// The largest replication factor accepted.
pub const MAX_REPLICATION_FACTOR: u32 = 7;

fn parse_addr(what: &str, s: &str) -> Result<SocketAddr, ServerError> {
    s.parse()
        .map_err(|e| ServerError::Config(format!("--{what} {s}: {e} (expected IP:PORT)")))
}

fn parse_node_id(s: &str) -> Result<u64, ServerError> {
    s.trim()
        .parse()
        .map_err(|_| ServerError::Config(format!("node id {s:?} is not a number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "node-id = 2\nlisten = \"127.0.0.1:7000\"\njoin = [\"a:1\", \"b:2\"]\nsplit-size = 1024\nlog-gc-max-lag = 500\n[peers]\n3 = \"c:3\"\n",
        )
        .unwrap();
        let args = StartArgs {
            config: Some(path),
            node_id: Some(5),
            log_gc_threshold: Some(64),
            insecure: true,
            ..Default::default()
        };
        let cfg = args.resolve().unwrap();
        assert_eq!((cfg.node_id, cfg.node_id_configured), (5, true));
        let unnamed = StartArgs {
            join: vec!["a:1".into()],
            insecure: true,
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            (unnamed.node_id, unnamed.node_id_configured),
            (1, false),
            "no id given: resolved at start"
        );
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(cfg.advertise, "127.0.0.1:7000");
        assert_eq!(cfg.join, vec!["a:1".to_string(), "b:2".to_string()]);
        assert_eq!(cfg.pinned.get(&3).map(String::as_str), Some("c:3"));
        assert_eq!(cfg.store.split_size, 1024);
        assert_eq!(
            (cfg.store.log_gc_threshold, cfg.store.log_gc_max_lag),
            (64, 500)
        );
        assert_eq!(cfg.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn a_node_needs_a_mode_and_only_one() {
        let e = StartArgs::default().resolve().unwrap_err().to_string();
        assert!(
            e.contains("--certs-dir DIR") && e.contains("--insecure"),
            "{e}"
        );
        let both = StartArgs {
            certs_dir: Some("/nonexistent".into()),
            insecure: true,
            ..Default::default()
        };
        let e = both.resolve().unwrap_err().to_string();
        assert!(e.contains("choose one"), "{e}");
    }

    #[test]
    fn unknown_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "nodeid = 2\n").unwrap();
        let err = StartArgs {
            config: Some(path),
            insecure: true,
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("nodeid"), "{err}");
    }

    #[test]
    fn locality_factor_and_dead_timeout_are_checked() {
        assert_eq!(
            parse_locality(Some("zone=a,rack=3")).unwrap(),
            Some("a".to_string())
        );
        assert_eq!(parse_locality(Some("rack=3")).unwrap(), None);
        assert_eq!(parse_locality(None).unwrap(), None);
        let e = parse_locality(Some("zone")).unwrap_err().to_string();
        assert!(e.contains("\"zone\" is not KEY=VALUE"), "{e}");
        assert!(parse_locality(Some("zone="))
            .unwrap_err()
            .to_string()
            .contains("empty key or value"));
        assert!(check_replication_factor(0)
            .unwrap_err()
            .contains("replication factor 0 is out of range"));
        assert!(check_replication_factor(3).is_ok() && check_replication_factor(8).is_err());
        let args = StartArgs {
            dead_node_timeout: Some(-1.0),
            insecure: true,
            ..Default::default()
        };
        assert!(args
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("--dead-node-timeout -1"));
        let args = StartArgs {
            replication_factor: Some(9),
            insecure: true,
            ..Default::default()
        };
        assert!(args
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("replication factor 9"));
        let cfg = StartArgs {
            locality: Some("zone=b".into()),
            insecure: true,
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            (
                cfg.zone.as_deref(),
                cfg.dead_node_timeout,
                cfg.replication_factor
            ),
            (Some("b"), DEFAULT_DEAD_NODE_TIMEOUT, 3)
        );
    }
}
