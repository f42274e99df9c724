//! Faults, on a seeded schedule: which fault, where, when and for how long all come from
//! one generator, so a seed replays the same schedule (the cluster's own timing varies).
//! Every fault and every heal is printed on a timeline as it happens.
//!
//! Partitions go through the proxies every node reaches every other node by (no
//! iptables needed); pauses are `SIGSTOP`/`SIGCONT`; kills are `SIGKILL` and a restart on
//! the same data directory; clock faults restart a node with `--clock-rate`, which skews
//! its monotonic clock. The leaseholder of the newest written register key is looked up
//! through the `ranges` view when a fault targets it (in Flotilla the leaseholder is the
//! Raft leader, so "isolate the leaseholder but not the leader" is the same fault).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::workload::{register_key, Shared};
use crate::common::{metric, TestCluster};

/// A kind of fault schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Nemesis {
    /// No faults (the baseline).
    None,
    /// kill -9 and restart of a random node.
    Kill,
    /// kill -9 and restart of the leaseholder of the newest written key.
    KillLeaseholder,
    /// kill -9 of two nodes at once (no majority until they return).
    KillTwo,
    /// SIGSTOP longer than the lease and the election timeout, then SIGCONT, of a
    /// random node.
    Pause,
    /// The same, of the leaseholder.
    PauseLeaseholder,
    /// Cut one random node off from the others.
    Isolate,
    /// Cut the leaseholder off.
    IsolateLeaseholder,
    /// Overlapping majorities: `a-b` and `b-c` talk, `a-c` do not.
    Ring,
    /// Restart one node with its clock at this rate.
    Clock(f64),
    /// Split the range of the newest written key at that key, every couple of seconds.
    Split,
    /// Isolate a node until its log is truncated, so it must catch up from a snapshot.
    Snapshot,
    /// Leader transfers: SIGTERM of the leaseholder, whose drain hands every leadership
    /// it holds to a caught-up follower; on its restart, leadership balance transfers
    /// its share back.
    Transfer,
    /// All of the above but clock faults, at random.
    Mixed,
}

impl Nemesis {
    /// Parses a schedule name (`scripts/jepsen.sh` takes these).
    pub fn parse(name: &str) -> Option<Nemesis> {
        Some(match name {
            "none" => Nemesis::None,
            "kill" => Nemesis::Kill,
            "kill-leaseholder" => Nemesis::KillLeaseholder,
            "kill-two" => Nemesis::KillTwo,
            "pause" => Nemesis::Pause,
            "pause-leaseholder" => Nemesis::PauseLeaseholder,
            "partition" => Nemesis::Isolate,
            "partition-leaseholder" => Nemesis::IsolateLeaseholder,
            "ring" => Nemesis::Ring,
            "clock-within" => Nemesis::Clock(1.05),
            "clock-beyond" => Nemesis::Clock(0.5),
            "split" => Nemesis::Split,
            "snapshot" => Nemesis::Snapshot,
            "transfer" => Nemesis::Transfer,
            "mixed" => Nemesis::Mixed,
            _ => return None,
        })
    }

    fn pick_mixed(rng: &mut StdRng) -> Nemesis {
        const ALL: [Nemesis; 12] = [
            Nemesis::Kill,
            Nemesis::KillLeaseholder,
            Nemesis::KillTwo,
            Nemesis::Pause,
            Nemesis::PauseLeaseholder,
            Nemesis::Isolate,
            Nemesis::IsolateLeaseholder,
            Nemesis::Ring,
            Nemesis::Split,
            Nemesis::Snapshot,
            Nemesis::Transfer,
            Nemesis::Clock(1.05),
        ];
        ALL[rng.gen_range(0..ALL.len())]
    }
}

/// The printed record of faults.
#[derive(Default)]
pub struct Timeline {
    origin: Option<Instant>,
    pub events: Mutex<Vec<String>>,
    pub faults: Mutex<usize>,
    /// Snapshots installed by nodes the snapshot nemesis cut off.
    pub snapshots: Mutex<u64>,
}

impl Timeline {
    pub fn new(origin: Instant) -> Timeline {
        Timeline {
            origin: Some(origin),
            ..Default::default()
        }
    }

    pub fn note(&self, what: String) {
        let t = self.origin.map(|o| o.elapsed()).unwrap_or_default();
        let line = format!("[{:>7.2}s] {what}", t.as_secs_f64());
        eprintln!("nemesis {line}");
        self.events.lock().unwrap().push(line);
    }

    fn fault(&self, what: String) {
        *self.faults.lock().unwrap() += 1;
        self.note(what);
    }
}

/// The node holding the lease of the newest written register key's range, if known.
async fn leaseholder(cluster: &TestCluster, shared: &Shared) -> Option<u64> {
    let key = register_key(shared.newest_key.lock().unwrap().unwrap_or(0));
    let client = cluster.client();
    let ranges = tokio::time::timeout(Duration::from_secs(3), client.ranges())
        .await
        .ok()?
        .ok()?;
    ranges.ranges.iter().find_map(|r| {
        let d = r.descriptor.as_ref()?;
        let inside = d.start.as_slice() <= key.as_slice()
            && (d.end.is_empty() || key.as_slice() < d.end.as_slice());
        (inside && r.leader_node != 0).then_some(r.leader_node)
    })
}

/// Runs `kind` against `cluster` for `duration`, then heals everything.
pub async fn run(
    cluster: &mut TestCluster,
    kind: Nemesis,
    seed: u64,
    duration: Duration,
    shared: Arc<Shared>,
    timeline: &Timeline,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let end = Instant::now() + duration;
    loop {
        // The schedule's own pacing: a quiet spell, then a fault held for a while.
        let quiet = Duration::from_millis(rng.gen_range(500..1500));
        let hold = Duration::from_millis(rng.gen_range(1500..3000));
        if Instant::now() + quiet + hold > end {
            break;
        }
        tokio::time::sleep(quiet).await;
        let fault = if kind == Nemesis::Mixed {
            Nemesis::pick_mixed(&mut rng)
        } else {
            kind
        };
        one_fault(cluster, fault, &mut rng, hold, &shared, timeline).await;
    }
    tokio::time::sleep_until(end.into()).await;
    timeline.note("schedule over".into());
}

async fn one_fault(
    cluster: &mut TestCluster,
    fault: Nemesis,
    rng: &mut StdRng,
    hold: Duration,
    shared: &Shared,
    t: &Timeline,
) {
    let random = rng.gen_range(1..=3u64);
    let target = match fault {
        Nemesis::KillLeaseholder
        | Nemesis::PauseLeaseholder
        | Nemesis::IsolateLeaseholder
        | Nemesis::Transfer => leaseholder(cluster, shared).await.unwrap_or(random),
        _ => random,
    };
    match fault {
        Nemesis::None => tokio::time::sleep(hold).await,
        Nemesis::Kill | Nemesis::KillLeaseholder => {
            t.fault(format!("kill -9 node {target}"));
            cluster.kill9(target);
            tokio::time::sleep(hold).await;
            cluster.restart(target);
            t.note(format!("restart node {target}"));
        }
        Nemesis::KillTwo => {
            let other = target % 3 + 1;
            t.fault(format!("kill -9 nodes {target} and {other}"));
            cluster.kill9(target);
            cluster.kill9(other);
            tokio::time::sleep(hold).await;
            cluster.restart(target);
            cluster.restart(other);
            t.note(format!("restart nodes {target} and {other}"));
        }
        Nemesis::Pause | Nemesis::PauseLeaseholder => {
            t.fault(format!("SIGSTOP node {target} for {hold:?}"));
            cluster.node(target).pause();
            tokio::time::sleep(hold).await;
            cluster.node(target).resume();
            t.note(format!("SIGCONT node {target}"));
        }
        Nemesis::Isolate | Nemesis::IsolateLeaseholder => {
            t.fault(format!("isolate node {target}"));
            cluster.isolate(target);
            tokio::time::sleep(hold).await;
            cluster.heal();
            t.note("heal".into());
        }
        Nemesis::Ring => {
            let (a, c) = (target, target % 3 + 1);
            t.fault(format!("ring: cut {a}-{c}, the third node talks to both"));
            cluster.cut(a, c);
            tokio::time::sleep(hold).await;
            cluster.heal();
            t.note("heal".into());
        }
        Nemesis::Clock(rate) => clock_fault(cluster, target, rate, hold, t).await,
        Nemesis::Split => split_fault(cluster, shared, hold, t).await,
        Nemesis::Snapshot => snapshot_fault(cluster, target, hold, t).await,
        Nemesis::Transfer => {
            t.fault(format!(
                "SIGTERM node {target}: its leaderships are transferred away"
            ));
            let status = cluster.terminate(target).await;
            t.note(format!("node {target} drained and exited ({status})"));
            tokio::time::sleep(hold).await;
            cluster.restart(target);
            t.note(format!(
                "restart node {target}: balance transfers leaders back"
            ));
        }
        Nemesis::Mixed => unreachable!("mixed picks a fault"),
    }
}

const SNAPSHOTS: &str = "flotilla_snapshots_applied_total";

/// How many snapshots the node at `http` installs (past `before`) within a few seconds.
async fn snapshots_after(http: &str, before: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = metric(http, SNAPSHOTS).await.unwrap_or(before);
        if now > before || Instant::now() >= deadline {
            return now.saturating_sub(before);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How far past a cut-off node's last index a range's applied index must move before its
/// leader has surely truncated the log past it: `--log-gc-max-lag` plus
/// `--log-gc-threshold`, plus room for entries in flight when the cut began.
const PAST_THE_CUT: u64 = super::LOG_GC_MAX_LAG + super::LOG_GC_THRESHOLD + 64;

/// How long the snapshot fault waits for the load to move a log far enough.
const SNAPSHOT_FAULT_DEADLINE: Duration = Duration::from_secs(40);

/// Cuts `node` off until some range's log has moved `PAST_THE_CUT` entries beyond where it
/// stood at the cut (so its leader truncated past the node), polled through another node,
/// then heals and counts the snapshots the node installs.
async fn snapshot_fault(cluster: &mut TestCluster, node: u64, hold: Duration, t: &Timeline) {
    let http = cluster.node(node).http.clone();
    let before = metric(&http, SNAPSHOTS).await.unwrap_or(0);
    let observer = cluster.client_of(node % 3 + 1);
    t.fault(format!(
        "isolate node {node} until a log moves {PAST_THE_CUT} entries past the cut"
    ));
    cluster.isolate(node);
    let at_cut = applied_indexes(&observer).await;
    let start = Instant::now();
    let moved = loop {
        let now = applied_indexes(&observer).await;
        let moved = now
            .iter()
            .filter_map(|(id, idx)| Some(idx.saturating_sub(*at_cut.get(id)?)))
            .max()
            .unwrap_or(0);
        let far = moved >= PAST_THE_CUT && start.elapsed() >= hold;
        if far || start.elapsed() >= SNAPSHOT_FAULT_DEADLINE {
            break moved;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    cluster.heal();
    let installed = snapshots_after(&http, before).await;
    *t.snapshots.lock().unwrap() += installed;
    t.note(format!(
        "heal after {:.1?} (a log moved {moved} entries): node {node} installed {installed} snapshots",
        start.elapsed()
    ));
}

/// Each range's applied index, as the node behind `client` reports it; empty when it
/// does not answer.
async fn applied_indexes(client: &flotilla_server::client::Client) -> HashMap<u64, u64> {
    let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(3), client.ranges()).await else {
        return HashMap::new();
    };
    resp.ranges
        .iter()
        .filter_map(|r| Some((r.descriptor.as_ref()?.range_id, r.applied_index)))
        .collect()
}

/// Restarts `node` with its clock at `rate`, holds, and restarts it with a true clock.
async fn clock_fault(
    cluster: &mut TestCluster,
    node: u64,
    rate: f64,
    hold: Duration,
    t: &Timeline,
) {
    t.fault(format!("restart node {node} with its clock at {rate}x"));
    cluster.kill9(node);
    cluster
        .node(node)
        .args_mut()
        .extend(["--clock-rate".to_string(), rate.to_string()]);
    cluster.restart(node);
    tokio::time::sleep(hold * 2).await;
    cluster.kill9(node);
    let args = cluster.node(node).args_mut();
    args.truncate(args.len() - 2);
    cluster.restart(node);
    t.note(format!("restart node {node} with a true clock"));
}

/// Splits the newest written key's range at that key a few times while `hold` lasts.
async fn split_fault(cluster: &TestCluster, shared: &Shared, hold: Duration, t: &Timeline) {
    let client = cluster.client();
    let end = Instant::now() + hold;
    while Instant::now() < end {
        let k = shared.newest_key.lock().unwrap().unwrap_or(0);
        let key = register_key(k);
        match tokio::time::timeout(Duration::from_secs(3), client.split(&key)).await {
            Ok(Ok(_)) => t.fault(format!("split at register key {k}")),
            Ok(Err(s)) => t.note(format!(
                "split at register key {k} refused: {:?} {}",
                s.code(),
                s.message()
            )),
            Err(_) => t.note(format!("split at register key {k}: no answer")),
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
}
