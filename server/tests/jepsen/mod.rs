//! The Jepsen-style suite: a real 3-process cluster, concurrent clients, a nemesis, and
//! two checks at the end.
//!
//! 1. **Linearizability** per register key ([`checker`]), over every operation the
//!    register clients recorded ([`workload`], [`history`]).
//! 2. **Durability**: every write the durability writers saw acknowledged is read back,
//!    with its value, through every node after the faults heal.
//!
//! Plus the *findings* of the run: answers the protocol table does not allow. A run
//! passes when every key is linearizable, no acknowledged write is lost and there are no
//! findings. A failing run keeps its cluster directory (node data and logs) with
//! `history.txt` in it, and prints the command that replays its seed.

pub mod checker;
pub mod history;
pub mod nemesis;
pub mod workload;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{verify_acked, ClusterOpts, TestCluster};
use checker::Verdict;
use history::History;
use nemesis::{Nemesis, Timeline};
use workload::Shared;

/// One run's settings.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub name: String,
    pub seed: u64,
    pub duration: Duration,
    pub clients: u64,
    pub keys: usize,
    /// Run the cluster and its clients in secure mode (TLS, certificates).
    pub secure: bool,
}

impl Schedule {
    /// The schedule `name` with the suite's defaults (10 clients, 8 keys).
    pub fn new(name: &str, seed: u64, duration: Duration) -> Schedule {
        Schedule {
            name: name.to_string(),
            seed,
            duration,
            clients: 10,
            keys: 8,
            secure: false,
        }
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        format!(
            "scripts/jepsen.sh --schedule {} --seed {} --seconds {}",
            self.name,
            self.seed,
            self.duration.as_secs()
        )
    }
}

/// What a run found.
#[derive(Debug)]
pub struct Report {
    pub ops: (usize, usize, usize),
    pub faults: usize,
    /// Snapshots installed after the snapshot nemesis healed.
    pub snapshots: u64,
    pub verdicts: Vec<(usize, Verdict)>,
    pub acked_durable: usize,
    pub lost: Result<(), String>,
    pub findings: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.verdicts
            .iter()
            .all(|(_, v)| *v == Verdict::Linearizable)
            && self.lost.is_ok()
            && self.findings.is_empty()
    }

    /// One line for docs/testing.md.
    pub fn summary(&self, s: &Schedule) -> String {
        let (ok, failed, unknown) = self.ops;
        let bad: Vec<String> = self
            .verdicts
            .iter()
            .filter(|(_, v)| *v != Verdict::Linearizable)
            .map(|(k, v)| format!("k{k} {v:?}"))
            .collect();
        format!(
            "| {} | {} | {}s | {ok} | {failed} | {unknown} | {} | {} | {} | {} |",
            s.name,
            s.seed,
            s.duration.as_secs(),
            self.faults,
            if bad.is_empty() {
                "linearizable".to_string()
            } else {
                bad.join(", ")
            },
            match &self.lost {
                Ok(()) => format!("0 of {}", self.acked_durable),
                Err(e) => format!("LOST: {e}"),
            },
            self.findings.len()
        )
    }
}

/// The nodes' `--log-gc-threshold`: short logs, so that a node cut off for a few seconds
/// must catch up from a snapshot (the snapshot nemesis relies on it).
pub const LOG_GC_THRESHOLD: u64 = 64;
/// The nodes' `--log-gc-max-lag`.
pub const LOG_GC_MAX_LAG: u64 = 128;

/// Runs one schedule on a fresh cluster; panics with the evidence if it fails.
pub async fn run(s: &Schedule) -> Report {
    let kind = Nemesis::parse(&s.name).unwrap_or_else(|| panic!("unknown schedule {:?}", s.name));
    let opts = ClusterOpts {
        initial_ranges: 4,
        // Short logs: a node cut off for a few seconds must catch up from a snapshot.
        extra_args: vec![
            "--log-gc-threshold".into(),
            LOG_GC_THRESHOLD.to_string(),
            "--log-gc-max-lag".into(),
            LOG_GC_MAX_LAG.to_string(),
        ],
        secure: s.secure,
        ..Default::default()
    };
    let mut cluster = TestCluster::start(3, opts).await;
    let origin = Instant::now();
    let shared = Arc::new(Shared {
        history: History::new(origin),
        findings: Mutex::new(Vec::new()),
        newest_key: Mutex::new(None),
        stop: Default::default(),
    });
    let timeline = Timeline::new(origin);
    timeline.note(format!(
        "schedule {} seed {} for {:?}",
        s.name, s.seed, s.duration
    ));
    let endpoints = cluster.endpoints();
    let clients: Vec<_> = (0..s.clients)
        .map(|id| {
            tokio::spawn(workload::register_client(
                id,
                endpoints.clone(),
                cluster.dialer.clone(),
                s.keys,
                s.seed,
                shared.clone(),
            ))
        })
        .collect();
    let writers: Vec<_> = (0..2)
        .map(|id| {
            tokio::spawn(workload::durability_writer(
                id,
                endpoints.clone(),
                cluster.dialer.clone(),
                shared.clone(),
            ))
        })
        .collect();
    nemesis::run(
        &mut cluster,
        kind,
        s.seed,
        s.duration,
        shared.clone(),
        &timeline,
    )
    .await;
    shared.stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.expect("writer task"));
    }
    cluster.wait_ready().await;
    let mut lost = Ok(());
    for id in cluster.ids() {
        let client = Arc::new(cluster.client_of(id));
        if let Err(e) = verify_acked(client, &acked, Duration::from_secs(30)).await {
            lost = Err(format!("through node {id}: {e}"));
            break;
        }
    }
    let entries = shared.history.entries();
    let verdicts: Vec<_> = checker::check(&entries, Duration::from_secs(120))
        .into_iter()
        .collect();
    let report = Report {
        ops: history::counts(&entries),
        faults: *timeline.faults.lock().unwrap(),
        snapshots: *timeline.snapshots.lock().unwrap(),
        verdicts,
        acked_durable: acked.len(),
        lost,
        findings: shared.findings.lock().unwrap().clone(),
    };
    let path = cluster.root().join("history.txt");
    history::save(&entries, &path).expect("save history");
    eprintln!("jepsen: {}", report.summary(s));
    if !report.passed() {
        for f in &report.findings {
            eprintln!("finding: {f}");
        }
        panic!(
            "schedule {} failed: {report:?}\nhistory: {}\nreplay: {}",
            s.name,
            path.display(),
            s.replay_command()
        );
    }
    report
}
