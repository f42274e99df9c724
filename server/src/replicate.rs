//! The replicate queue: the loop that keeps every range at its replication factor, on the
//! right nodes, with no operator action (CockroachDB's replicate queue; TiKV's PD
//! schedulers).
//!
//! **Where it runs.** On the node whose replica of the meta range leads and holds the
//! lease, checked every round: exactly one node at a time in a healthy cluster, and
//! another one an election after that node dies (its state is all in the meta range —
//! range records, node records, settings — so nothing is lost with it). Two nodes may
//! both believe they run it for a moment around a leadership change; that is safe,
//! because every change is a `ChangeReplicas` checked by the range's leader against the
//! epoch it was planned from, and one change per range runs at a time.
//!
//! **A round.** Read the range records and the node records; judge each node's liveness
//! from this node's own observations (`cluster::State::liveness`); ask
//! [`flotilla_router::placement::plan`] what to change; start each change as a task of
//! its own (a snapshot may take minutes) after checking that the range's leader still
//! has the descriptor the plan saw. Ranges with a change under way are left out of later
//! plans until it ends, and count against the snapshot slots of the node they add to.
//! A decommissioning node that no range lists any more is marked decommissioned.
//! A round whose inputs are those of the last round that read the records (the meta
//! range's applied index, every node's liveness and zone, the factor, the changes under
//! way), when that round planned nothing, is skipped: an idle cluster of 100,001 ranges
//! costs the node running the loop next to nothing. At least every [`MAX_SKIPPED`]
//! rounds the records are read whatever the inputs say.
//!
//! **Leaders.** Each round also asks [`flotilla_router::placement::plan_leaders`] where
//! leaders should be, and records each changed choice with a `PreferLeader` command on
//! the range (at most [`MAX_LEADER_MOVES`] a round, awaited before the next round, so a
//! round never plans from choices it has not seen land). The range's leader then hands
//! leadership over itself, once the new preferred voter is caught up.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_raftstore::keyspace::{META_PREFIX, META_RANGE_ID};
use flotilla_raftstore::{Command, MetaEntry, RangeDescriptor, Response};
use flotilla_router::placement::{
    plan, plan_leaders, Change, ClusterState, LeaderMove, Limits, NodeState,
};
use parking_lot::Mutex;
use prost::Message as _;

use crate::cluster::swap_record;
use crate::proto::{NodeMembership, NodeRecord};
use crate::server::{Running, State};

/// How often the loop looks at the cluster.
pub const ROUND: Duration = Duration::from_secs(1);
/// Changes under way at once, over the whole cluster.
const MAX_IN_FLIGHT: usize = 4;
/// How long one change may take (a large range's snapshot at a throttled rate).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(1800);
/// Leader preferences changed in one round.
pub const MAX_LEADER_MOVES: usize = 16;
/// How long recording one preference may take.
const PREFER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the loop reports (for `/metrics`, `/status` and `flotilla nodes`).
#[derive(Default)]
pub struct PlacementMetrics {
    /// True while this node runs the loop.
    pub active: AtomicBool,
    pub under_replicated: AtomicU64,
    pub unavailable: AtomicU64,
    pub moves_in_flight: AtomicU64,
    pub moves_done: AtomicU64,
    pub moves_failed: AtomicU64,
    /// Leader preferences recorded (`PreferLeader` commands applied).
    pub leader_moves_done: AtomicU64,
    pub rounds: AtomicU64,
}

/// The changes under way: range id → the node it adds to (0: none).
#[derive(Default)]
pub struct InFlight(Mutex<BTreeMap<u64, u64>>);

/// Runs the loop until the process ends.
pub async fn run(state: Arc<State>) {
    if state.cfg.disable_placement {
        tracing::info!("placement disabled on this node (--disable-placement)");
        return;
    }
    let in_flight = Arc::new(InFlight::default());
    let mut last = None;
    loop {
        tokio::time::sleep(ROUND).await;
        let Some(running) = state.running() else {
            continue;
        };
        let leads = leads_meta(&running).await;
        state.placement.active.store(leads, Ordering::Relaxed);
        if !leads {
            last = None;
            continue;
        }
        if let Err(e) = round(&state, &running, &in_flight, &mut last).await {
            tracing::debug!(error = %e, "placement round failed; trying again");
        }
    }
}

/// True when this node's meta replica leads and holds the lease.
async fn leads_meta(running: &Running) -> bool {
    matches!(running.store.range_status(META_RANGE_ID).await, Ok(Some(s)) if s.is_leader && s.has_lease)
}

/// Every range record in the meta range.
pub async fn read_ranges(
    running: &Running,
) -> Result<Vec<RangeDescriptor>, flotilla_router::Error> {
    let pairs =
        crate::cluster::scan_meta(running, vec![META_PREFIX], vec![META_PREFIX + 1]).await?;
    Ok(pairs
        .into_iter()
        .filter_map(|(_, v)| MetaEntry::decode(v.as_slice()).ok()?.descriptor)
        .collect())
}

/// How many ranges' records list a replica on `node` (the meta range included).
pub async fn ranges_listing(running: &Running, node: u64) -> Result<usize, flotilla_router::Error> {
    let mut ranges = read_ranges(running).await?;
    ranges.push(running.db.router().meta());
    Ok(ranges
        .iter()
        .filter(|d| d.replica_on(node).is_some())
        .count())
}

/// The nodes as placement sees them: every record, and any node a descriptor lists
/// without a record (judged by what this node observes of it, like any other: a record
/// is membership, not evidence of life).
pub fn node_states(
    state: &State,
    records: &[NodeRecord],
    ranges: &[RangeDescriptor],
) -> Vec<NodeState> {
    node_states_of(state, records, listed_nodes(ranges))
}

/// The nodes `ranges` list replicas on.
fn listed_nodes(ranges: &[RangeDescriptor]) -> BTreeSet<u64> {
    ranges
        .iter()
        .flat_map(|d| d.replicas.iter().map(|r| r.node_id))
        .collect()
}

/// [`node_states`] from the records and the node ids the descriptors list.
fn node_states_of(
    state: &State,
    records: &[NodeRecord],
    listed: impl IntoIterator<Item = u64>,
) -> Vec<NodeState> {
    let mut records: BTreeMap<u64, NodeRecord> =
        records.iter().map(|r| (r.node_id, r.clone())).collect();
    for n in listed {
        records.entry(n).or_insert(NodeRecord {
            node_id: n,
            ..Default::default()
        });
    }
    records
        .into_values()
        .map(|r| {
            let zone = (!r.zone.is_empty()).then(|| r.zone.clone());
            NodeState {
                node_id: r.node_id,
                liveness: state.liveness(&r),
                zone,
            }
        })
        .collect()
}

/// What a plan is made from, short of the range records themselves: a round whose inputs
/// equal the last round's, when that round found nothing to do, would find nothing again
/// and is skipped. The range records are stood for by the meta range's applied index
/// (every change to a record, node record or setting is a write to it). At 100,001 ranges
/// reading and planning over every record took a fifth of a core on the node that runs
/// the loop, every second, in an idle cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Inputs {
    meta_applied: u64,
    nodes: Vec<NodeState>,
    replication_factor: u32,
    busy: Vec<u64>,
}

/// The last round that read the records: its inputs, the nodes its descriptors listed,
/// whether its plan was empty, and how many rounds were skipped since.
struct LastRound {
    inputs: Inputs,
    listed: BTreeSet<u64>,
    quiet: bool,
    skipped: u32,
}

/// Rounds skipped in a row at most: a full round at least this often, whatever the inputs
/// say (a guard against an input the fingerprint misses).
const MAX_SKIPPED: u32 = 30;

impl LastRound {
    /// True when the round with `inputs` can be skipped (and counts it).
    fn skip(last: &mut Option<LastRound>, inputs: &Inputs) -> bool {
        match last {
            Some(l) if l.quiet && l.skipped < MAX_SKIPPED && l.inputs == *inputs => {
                l.skipped += 1;
                true
            }
            _ => false,
        }
    }
}

/// One look at the cluster (see the module docs).
async fn round(
    state: &Arc<State>,
    running: &Arc<Running>,
    in_flight: &Arc<InFlight>,
    last: &mut Option<LastRound>,
) -> Result<(), String> {
    let view = state.cluster_view();
    if !view.loaded {
        return Ok(());
    }
    let (meta, meta_applied) = match running.store.range_status(META_RANGE_ID).await {
        Ok(Some(s)) => (s.descriptor, s.applied_index),
        _ => return Ok(()),
    };
    let busy = in_flight.0.lock().clone();
    let listed = last.as_ref().map(|l| l.listed.clone()).unwrap_or_default();
    let inputs = Inputs {
        meta_applied,
        nodes: node_states_of(state, &view.nodes, listed),
        replication_factor: view.replication_factor,
        busy: busy.keys().copied().collect(),
    };
    if LastRound::skip(last, &inputs) {
        return Ok(());
    }
    let mut ranges = read_ranges(running).await.map_err(|e| e.to_string())?;
    ranges.retain(|d| d.range_id != META_RANGE_ID);
    ranges.push(meta);
    finish_decommissions(running, &view.nodes, &ranges).await;
    let listed = listed_nodes(&ranges);
    let nodes = node_states_of(state, &view.nodes, listed.iter().copied());
    let mut snapshots_in_flight = BTreeMap::new();
    for to in busy.values().filter(|n| **n != 0) {
        *snapshots_in_flight.entry(*to).or_insert(0) += 1;
    }
    let cluster = ClusterState {
        nodes: nodes.clone(),
        ranges: ranges
            .iter()
            .filter(|d| !busy.contains_key(&d.range_id))
            .cloned()
            .collect(),
        replication_factor: view.replication_factor as usize,
        snapshots_in_flight,
    };
    let limits = Limits {
        max_changes: MAX_IN_FLIGHT.saturating_sub(busy.len()),
        ..Limits::default()
    };
    let decided = plan(&cluster, limits);
    let leader_moves = plan_leaders(&cluster, MAX_LEADER_MOVES);
    *last = Some(LastRound {
        inputs: Inputs { nodes, ..inputs },
        listed,
        quiet: decided.changes.is_empty() && leader_moves.is_empty(),
        skipped: 0,
    });
    let m = &state.placement;
    m.under_replicated
        .store(decided.under_replicated as u64, Ordering::Relaxed);
    m.unavailable
        .store(decided.unavailable as u64, Ordering::Relaxed);
    m.rounds.fetch_add(1, Ordering::Relaxed);
    for change in decided.changes {
        let Some(desc) = ranges
            .iter()
            .find(|d| d.range_id == change.range_id)
            .cloned()
        else {
            continue;
        };
        in_flight
            .0
            .lock()
            .insert(change.range_id, change.add.unwrap_or(0));
        m.moves_in_flight
            .store(in_flight.0.lock().len() as u64, Ordering::Relaxed);
        let (state, running, in_flight) = (state.clone(), running.clone(), in_flight.clone());
        tokio::spawn(async move {
            let outcome =
                tokio::time::timeout(CHANGE_TIMEOUT, apply(&running, &desc, &change)).await;
            let m = &state.placement;
            match outcome {
                Ok(Ok(true)) => {
                    m.moves_done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    m.moves_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(range = change.range_id, ?change, error = %e, "placement change failed; replanned next round");
                }
                Err(_) => {
                    m.moves_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        range = change.range_id,
                        ?change,
                        "placement change timed out"
                    );
                }
            }
            in_flight.0.lock().remove(&change.range_id);
            m.moves_in_flight
                .store(in_flight.0.lock().len() as u64, Ordering::Relaxed);
        });
    }
    prefer_leaders(state, running, &ranges, leader_moves).await;
    Ok(())
}

/// Records each leader move as the range's preferred leader, all at once, and waits for
/// them (a failure is logged and planned again next round).
async fn prefer_leaders(
    state: &State,
    running: &Arc<Running>,
    ranges: &[RangeDescriptor],
    moves: Vec<LeaderMove>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for m in moves {
        let Some(start) = ranges
            .iter()
            .find(|d| d.range_id == m.range_id)
            .map(|d| d.start.clone())
        else {
            continue;
        };
        let running = running.clone();
        tasks.spawn(async move {
            let cmd = Command::PreferLeader { node_id: m.to };
            let outcome =
                tokio::time::timeout(PREFER_TIMEOUT, running.db.router().execute(&start, cmd))
                    .await;
            (m, outcome)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let Ok((m, outcome)) = joined else { continue };
        match outcome {
            Ok(Ok(_)) => {
                state
                    .placement
                    .leader_moves_done
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(range = m.range_id, from = m.from, to = m.to, reason = ?m.reason, "placement: preferred leader moved");
            }
            Ok(Err(e)) => {
                tracing::debug!(range = m.range_id, to = m.to, error = %e, "placement: could not move the preferred leader")
            }
            Err(_) => tracing::debug!(
                range = m.range_id,
                to = m.to,
                "placement: moving the preferred leader timed out"
            ),
        }
    }
}

/// Makes one change, if the range's leader still has the shape it was planned from;
/// returns whether it was made.
async fn apply(
    running: &Running,
    planned: &RangeDescriptor,
    change: &Change,
) -> Result<bool, flotilla_router::Error> {
    let router = running.db.router();
    let query = Command::ChangeReplicas {
        add: Vec::new(),
        remove: Vec::new(),
    };
    let (_, resp) = router.execute(&planned.start, query).await?;
    let Response::Replicas(current) = resp else {
        return Ok(false);
    };
    if current.range_id != planned.range_id || current.epoch() != planned.epoch() {
        tracing::debug!(
            range = planned.range_id,
            "the range changed since its record was read; replanned next round"
        );
        return Ok(false);
    }
    tracing::info!(range = change.range_id, add = ?change.add, remove = ?change.remove, reason = ?change.reason, "placement: changing replicas");
    let add: Vec<u64> = change.add.into_iter().collect();
    let remove: Vec<u64> = change.remove.into_iter().collect();
    running
        .db
        .change_range_replicas(&current, add, remove)
        .await?;
    Ok(true)
}

/// Marks decommissioned every decommissioning node no range lists any more.
async fn finish_decommissions(
    running: &Running,
    records: &[NodeRecord],
    ranges: &[RangeDescriptor],
) {
    for r in records
        .iter()
        .filter(|r| r.membership() == NodeMembership::Decommissioning)
    {
        if ranges.iter().any(|d| d.replica_on(r.node_id).is_some()) {
            continue;
        }
        let done = NodeRecord {
            membership: NodeMembership::Decommissioned as i32,
            ..r.clone()
        };
        match swap_record(running, Some(r), &done).await {
            Ok(true) => tracing::info!(
                node = r.node_id,
                "decommissioned: the node holds no replica and may be stopped"
            ),
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(node = r.node_id, error = %e, "could not mark a node decommissioned yet")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Inputs, LastRound, MAX_SKIPPED};
    use flotilla_router::placement::{Liveness, NodeState};

    fn inputs(meta_applied: u64, liveness: Liveness) -> Inputs {
        let node = |node_id| NodeState {
            node_id,
            liveness,
            zone: None,
        };
        Inputs {
            meta_applied,
            nodes: vec![node(1), node(2)],
            replication_factor: 3,
            busy: Vec::new(),
        }
    }

    fn last(quiet: bool) -> Option<LastRound> {
        let inputs = inputs(10, Liveness::Live);
        Some(LastRound {
            inputs,
            listed: Default::default(),
            quiet,
            skipped: 0,
        })
    }

    #[test]
    fn only_a_quiet_round_with_the_same_inputs_is_skipped() {
        assert!(
            !LastRound::skip(&mut None, &inputs(10, Liveness::Live)),
            "no round yet"
        );
        assert!(LastRound::skip(
            &mut last(true),
            &inputs(10, Liveness::Live)
        ));
        assert!(
            !LastRound::skip(&mut last(false), &inputs(10, Liveness::Live)),
            "the last plan had work"
        );
        assert!(
            !LastRound::skip(&mut last(true), &inputs(11, Liveness::Live)),
            "a record changed"
        );
        assert!(
            !LastRound::skip(&mut last(true), &inputs(10, Liveness::Dead)),
            "a node died"
        );
        let mut busy = inputs(10, Liveness::Live);
        busy.busy.push(7);
        assert!(
            !LastRound::skip(&mut last(true), &busy),
            "a change is under way"
        );
    }

    #[test]
    fn a_full_round_comes_at_least_every_max_skipped_rounds() {
        let mut last = last(true);
        let same = inputs(10, Liveness::Live);
        for _ in 0..MAX_SKIPPED {
            assert!(LastRound::skip(&mut last, &same));
        }
        assert!(!LastRound::skip(&mut last, &same));
    }
}
