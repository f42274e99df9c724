//! The command line of `flotilla-load`.

use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Which key each operation touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Distribution {
    /// Every key of the key space equally often.
    Uniform,
    /// YCSB's scrambled zipfian: a few hot keys, spread over the key space.
    Zipfian,
    /// Writes append at the end of the key space (a global counter); reads pick among the
    /// last --keys keys written.
    Sequential,
}

/// Which system the load is sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Flotilla's `Kv` gRPC service.
    Flotilla,
    /// etcd's v3 KV API (puts, and linearizable ranges for gets): the baseline the same
    /// load is compared with (`scripts/bench-vs-etcd.sh`).
    Etcd,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flotilla => "flotilla",
            Backend::Etcd => "etcd",
        }
    }
}

/// How a Flotilla client sends its gets and puts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Rpc {
    /// Over `Kv.Commands` streams: one per node address, shared by every client, with
    /// many commands per frame (see `load/mux.rs`).
    Stream,
    /// One `Kv.Get` / `Kv.Put` call per operation.
    Unary,
}

impl Rpc {
    pub fn name(self) -> &'static str {
        match self {
            Rpc::Stream => "stream",
            Rpc::Unary => "unary",
        }
    }
}

impl Distribution {
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Uniform => "uniform",
            Distribution::Zipfian => "zipfian",
            Distribution::Sequential => "sequential",
        }
    }
}

/// Closed-loop load against a running Flotilla cluster (or, for comparison, etcd): N
/// clients, each sending one get or put at a time, with latency percentiles and
/// throughput at the end.
#[derive(Parser, Debug, Clone)]
#[command(name = "flotilla-load", version)]
pub struct Args {
    /// Nodes to send requests to, comma-separated HOST:PORT. Clients are spread over them
    /// round-robin; every node routes to the range leader.
    #[arg(long, value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    /// The system the endpoints belong to.
    #[arg(long, value_enum, default_value_t = Backend::Flotilla)]
    pub backend: Backend,
    /// How Flotilla requests travel: many per frame over one `Kv.Commands` stream per
    /// node (shared by the clients), or one unary call each. (etcd: always unary.)
    #[arg(long, value_enum, default_value_t = Rpc::Stream)]
    pub rpc: Rpc,
    /// Concurrent clients, each with one request in flight at a time.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// How long to measure (after the warm-up). Default 10 without --ops.
    #[arg(long)]
    pub duration_secs: Option<u64>,
    /// How many operations to measure (all clients together, failed ones included). With
    /// --duration-secs, the run ends at whichever comes first.
    #[arg(long)]
    pub ops: Option<u64>,
    /// Bytes per key.
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    /// Bytes per value written.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Fraction of operations that are reads (0.0 to 1.0); the rest are puts.
    #[arg(long, default_value_t = 0.5)]
    pub read_ratio: f64,
    /// Size of the key space (for sequential: the preload size and the read window).
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Which keys the operations touch.
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    pub distribution: Distribution,
    /// Spell every key as its index in zero-padded decimal (ASCII, in index order), also
    /// for uniform and zipfian: the keys then crowd into a small part of the key space, as
    /// a user's keys do, instead of being spread by a hash prefix.
    #[arg(long)]
    pub ascii_keys: bool,
    /// Skew of the zipfian distribution, in (0, 1).
    #[arg(long, default_value_t = 0.99)]
    pub zipf_theta: f64,
    /// Write every key once before measuring (with the same clients), so reads find data.
    #[arg(long)]
    pub preload: bool,
    /// Seed of the clients' random generators.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run the load this long before measuring.
    #[arg(long, default_value_t = 0)]
    pub warmup_secs: u64,
    /// Print the result as one JSON line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Send every request to the client's endpoint and let that node forward it to the
    /// range's leader (default: follow the routing hints nodes attach, so that most
    /// requests go straight to the leader; Flotilla only).
    #[arg(long)]
    pub no_route: bool,
    /// A secure cluster: TLS trusting DIR/ca.crt, presenting DIR/client.USER.crt
    /// (Flotilla only).
    #[arg(long, value_name = "DIR")]
    pub certs_dir: Option<std::path::PathBuf>,
    /// Whose client certificate to present (DIR/client.USER.crt).
    #[arg(long, default_value = "root")]
    pub user: String,
    /// Give every client its own connection (default: one connection per endpoint,
    /// shared by the clients on it).
    #[arg(long)]
    pub channel_per_client: bool,
    /// Time limit of one operation; a slower one counts as an error.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// A client pauses this long after a failed operation (not counted in any latency),
    /// so that a node that is down does not make it spin; 0: no pause.
    #[arg(long, default_value_t = 10)]
    pub error_pause_ms: u64,
    /// Worker threads of the load generator's runtime (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the throughput so far to stderr this often (0: never).
    #[arg(long, default_value_t = 0)]
    pub progress_secs: u64,
}

impl Args {
    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.endpoints.iter().any(|e| e.trim().is_empty()) {
            return Err("--endpoints has an empty entry".into());
        }
        if self.clients == 0 || self.keys == 0 {
            return Err("--clients and --keys must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return Err(format!(
                "--read-ratio {} is not within 0.0..=1.0",
                self.read_ratio
            ));
        }
        if self.distribution == Distribution::Zipfian
            && !(self.zipf_theta > 0.0 && self.zipf_theta < 1.0)
        {
            return Err(format!(
                "--zipf-theta {} is not within (0, 1)",
                self.zipf_theta
            ));
        }
        if self.duration_secs == Some(0) || self.ops == Some(0) || self.timeout_ms == 0 {
            return Err("--duration-secs, --ops and --timeout-ms must be positive".into());
        }
        Ok(())
    }

    /// How long to measure, if limited by time.
    pub fn duration(&self) -> Option<Duration> {
        match (self.duration_secs, self.ops) {
            (None, None) => Some(Duration::from_secs(10)),
            (d, _) => d.map(Duration::from_secs),
        }
    }

    pub fn error_pause(&self) -> Duration {
        Duration::from_millis(self.error_pause_ms)
    }

    /// The way requests travel in this run (etcd's are unary whatever --rpc says).
    pub fn rpc_used(&self) -> Rpc {
        match self.backend {
            Backend::Flotilla => self.rpc,
            Backend::Etcd => Rpc::Unary,
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}
