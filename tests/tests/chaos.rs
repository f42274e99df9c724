//! A seeded random fault schedule over many ranges with concurrent clients, while ranges
//! split.
//!
//! Each client owns a few keys and writes increasing versions to them one at a time, and
//! reads them back. Faults: random drops, delays, duplicates, partitions, isolation and
//! restarts, and splits at random client keys proposed in the middle of it all. Checks,
//! after healing: every acknowledged write is present (a key holds a
//! version at least its last acknowledged one), nothing appears that was never written,
//! every read returned a version between the last acknowledged before it began and the
//! last attempted before it ended, and all replicas of each range hold identical data.
//! With membership changes on, a fourth node joins and replicas move between the four
//! nodes (a random range replaces a random replica) in the middle of everything, and the
//! run also checks that no range ever has two leaders in one term and that, once healed,
//! only a range's current members hold it.
//! Set `FLOTILLA_SEED` to replay one seed.

use flotilla_raftstore::{Command, Response, ResponseReceiver};
use flotilla_tests::filter::{DelayRandom, DropRandom, DuplicateRandom, Isolate, Partition};
use flotilla_tests::Cluster;
use rand::Rng;

const CLIENTS: usize = 12;
const KEYS_PER_CLIENT: usize = 3;

#[derive(Default, Clone)]
struct KeyState {
    acked: u64,
    attempted: u64,
}

enum Pending {
    Write {
        key: usize,
        version: u64,
        rx: ResponseReceiver,
    },
    Read {
        key: usize,
        floor: u64,
        rx: ResponseReceiver,
    },
}

#[derive(Debug, Default)]
struct Stats {
    acked: u64,
    failed: u64,
    reads: u64,
}

struct Client {
    pending: Option<Pending>,
}

fn key_name(k: usize) -> Vec<u8> {
    // Spread keys over the whole key space so every range sees traffic.
    let h = (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut key = h.to_be_bytes()[..2].to_vec();
    key.extend_from_slice(format!("key-{k}").as_bytes());
    key
}

fn version_of(value: &[u8]) -> u64 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.strip_prefix('v'))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a value nobody wrote: {value:?}"))
}

/// Leaders seen per (range, term): never two.
type LeaderLog = std::collections::BTreeMap<(u64, u64), u64>;

fn record_leaders(c: &Cluster, seen: &mut LeaderLog) {
    for n in c.node_ids().into_iter().filter(|n| c.is_running(*n)) {
        let store = c.store(n);
        for id in store.range_ids() {
            let Some(p) = store.peer(id).filter(|p| p.is_leader()) else {
                continue;
            };
            let first = *seen.entry((id, p.term())).or_insert(n);
            assert_eq!(
                first,
                n,
                "range {id} has two leaders in term {}: nodes {first} and {n}",
                p.term()
            );
        }
    }
}

/// Moves one replica of a random range: onto node 4 if it lacks one, else off it back
/// to the node that lacks one. The outcome is not awaited.
fn move_a_replica(c: &mut Cluster) {
    let ranges = c.current_ranges();
    let r = &ranges[c.rng.gen_range(0..ranges.len())];
    let holders: Vec<u64> = r.replicas.iter().map(|x| x.node_id).collect();
    let (add, remove) = if holders.contains(&4) {
        let missing = (1..=4).find(|n| !holders.contains(n));
        (missing.into_iter().collect(), vec![4])
    } else {
        (vec![4], vec![holders[c.rng.gen_range(0..holders.len())]])
    };
    if let Some(leader) = c.leader_of(r.range_id) {
        drop(c.request(leader, r.range_id, Command::ChangeReplicas { add, remove }));
    }
}

fn run(seed: u64, membership: bool) {
    let mut c = Cluster::new(3, 16, seed);
    let nodes = if membership { c.add_node() } else { 3 };
    let mut leaders = LeaderLog::new();
    let mut keys = vec![KeyState::default(); CLIENTS * KEYS_PER_CLIENT];
    let mut clients: Vec<Client> = (0..CLIENTS).map(|_| Client { pending: None }).collect();
    let mut filters: Vec<u64> = Vec::new();
    let mut stopped: Option<u64> = None;
    let mut stats = Stats::default();
    for tick in 0..600u64 {
        if tick % 25 == 0 {
            for id in filters.drain(..) {
                c.remove_filter(id);
            }
            if let Some(n) = stopped.take() {
                c.start(n);
            }
            if tick < 480 {
                inject_faults(&mut c, nodes, &mut filters, &mut stopped);
                if membership && c.rng.gen_bool(0.8) {
                    move_a_replica(&mut c);
                }
            }
        }
        if membership && tick % 10 == 5 && tick < 480 {
            move_a_replica(&mut c);
        }
        for (i, client) in clients.iter_mut().enumerate() {
            step_client(&mut c, i, client, nodes, &mut keys, &mut stats);
        }
        c.tick();
        record_leaders(&c, &mut leaders);
    }
    // Heal, let everything settle, and let every client finish.
    c.clear_filters();
    if membership {
        // Replica GC of replicas removed while cut off runs every `replica_gc_check_ticks`.
        c.ticks(3 * flotilla_tests::harness_config().replica_gc_check_ticks);
    }
    c.ticks(60);
    for (i, client) in clients.iter_mut().enumerate() {
        finish_client(&mut c, i, client, &mut keys, &mut stats);
    }
    eprintln!(
        "seed {seed}: {stats:?}, messages delivered {} dropped {}",
        c.delivered, c.dropped
    );
    // The schedule must have bitten and the cluster must still have made progress.
    assert!(
        stats.acked > 500,
        "seed {seed}: too few writes acknowledged: {stats:?}"
    );
    // Every range starts at term SPLIT_INIT_TERM; its first election makes the next.
    let first = flotilla_raftstore::SPLIT_INIT_TERM + 1;
    let elections: u64 = c
        .ranges()
        .iter()
        .map(|r| max_term(&c, r.range_id).saturating_sub(first))
        .sum();
    eprintln!("seed {seed}: {elections} elections after the first, across ranges");
    assert!(
        elections >= 16,
        "seed {seed}: faults forced too few elections ({elections})"
    );
    assert!(stats.reads > 100, "seed {seed}: too few reads: {stats:?}");
    assert!(c.dropped > 0);
    for (k, state) in keys.iter().enumerate() {
        let found = c.get(&key_name(k)).expect("healed cluster serves reads");
        let v = found.as_deref().map(version_of).unwrap_or(0);
        assert!(
            v >= state.acked,
            "key {k}: acknowledged v{} lost, found v{v}",
            state.acked
        );
        assert!(v <= state.attempted, "key {k}: v{v} was never written");
    }
    let ranges = c.current_ranges();
    eprintln!("seed {seed}: {} ranges after splits", ranges.len());
    assert!(
        ranges.len() > c.ranges().len(),
        "seed {seed}: no split happened"
    );
    for w in ranges.windows(2) {
        assert_eq!(
            w[0].end, w[1].start,
            "seed {seed}: ranges do not tile the key space"
        );
    }
    let moved = ranges
        .iter()
        .filter(|r| r.replica_on(4).is_some() || r.epoch().conf_ver > 1)
        .count();
    eprintln!("seed {seed}: {moved} ranges had replicas moved");
    if membership {
        assert!(
            moved >= 4,
            "seed {seed}: too few membership changes happened ({moved} ranges)"
        );
    }
    for r in ranges {
        let d = c.digests(r.range_id, 200);
        let members: Vec<u64> = r.replicas.iter().map(|x| x.node_id).collect();
        let mut holders: Vec<u64> = d.keys().copied().collect();
        holders.sort();
        let mut expected = members.clone();
        expected.sort();
        assert_eq!(
            holders, expected,
            "seed {seed}: range {} is held by other nodes than its members",
            r.range_id
        );
        assert!(
            members.len() >= 3,
            "seed {seed}: range {} lost a replica: {members:?}",
            r.range_id
        );
        let first = d.values().next().copied();
        let state: Vec<_> = c
            .node_ids()
            .into_iter()
            .filter_map(|n| {
                c.store(n).peer(r.range_id).map(|p| {
                    let conf_ver = p.descriptor().epoch().conf_ver;
                    (
                        n,
                        p.applied_index(),
                        p.first_log_index(),
                        p.last_log_index(),
                        p.term(),
                        p.is_leader(),
                        conf_ver,
                    )
                })
            })
            .collect();
        assert!(
            d.values().all(|x| Some(*x) == first),
            "range {} replicas differ: {d:?}; (node, applied, first, last, term, leader, conf_ver): {state:?}; {:?}",
            r.range_id,
            r.replicas
        );
    }
}

fn max_term(c: &Cluster, range_id: u64) -> u64 {
    c.node_ids()
        .into_iter()
        .filter(|n| c.is_running(*n))
        .filter_map(|n| c.store(n).peer(range_id).map(|p| p.term()))
        .max()
        .unwrap_or(1)
}

fn inject_faults(c: &mut Cluster, nodes: u64, filters: &mut Vec<u64>, stopped: &mut Option<u64>) {
    let roll: u32 = c.rng.gen_range(0..6);
    // Half of the time, hit the node leading a random range.
    let range = c.rng.gen_range(1..=c.ranges().len() as u64);
    let random_node = c.rng.gen_range(1..=nodes);
    let node = match c.leader_of(range) {
        Some(l) if c.rng.gen_bool(0.5) => l,
        _ => random_node,
    };
    match roll {
        0 => filters.push(c.add_filter(Isolate(node))),
        1 => {
            let others: Vec<u64> = (1..=nodes).filter(|n| *n != node).collect();
            filters.push(c.add_filter(Partition::new(&[&[node], &others])));
        }
        2 => {
            c.stop(node);
            *stopped = Some(node);
        }
        3 => filters.push(c.add_filter(DropRandom(0.2))),
        4 => filters.push(c.add_filter(DelayRandom {
            p: 0.3,
            max_ticks: 3,
        })),
        _ => filters.push(c.add_filter(DuplicateRandom(0.2))),
    }
    if c.rng.gen_bool(0.3) {
        filters.push(c.add_filter(DropRandom(0.05)));
    }
    if c.rng.gen_bool(0.6) {
        // Split the range of a random client key at that key; the outcome is not awaited.
        let at = key_name(c.rng.gen_range(0..CLIENTS * KEYS_PER_CLIENT));
        let range = c.range_of(&at);
        if let Some(leader) = c.leader_of(range) {
            drop(c.request(leader, range, Command::Split { split_key: at }));
        }
    }
}

fn step_client(
    c: &mut Cluster,
    i: usize,
    client: &mut Client,
    nodes: u64,
    keys: &mut [KeyState],
    stats: &mut Stats,
) {
    if let Some(p) = client.pending.take() {
        if let Some(p) = poll(p, keys, stats) {
            client.pending = Some(p);
            return;
        }
    }
    let key = i * KEYS_PER_CLIENT + c.rng.gen_range(0..KEYS_PER_CLIENT);
    let range = c.range_of(&key_name(key));
    let Some(mut leader) = c.leader_of(range) else {
        return;
    };
    if c.rng.gen_bool(0.1) {
        // A client with a stale route: any node.
        leader = c.rng.gen_range(1..=nodes);
    }
    if c.rng.gen_bool(0.7) {
        keys[key].attempted += 1;
        let version = keys[key].attempted;
        let cmd = Command::Put {
            key: key_name(key),
            value: format!("v{version}").into_bytes(),
        };
        client.pending = Some(Pending::Write {
            key,
            version,
            rx: c.request(leader, range, cmd),
        });
    } else {
        let floor = keys[key].acked;
        let rx = c.request(leader, range, Command::Get { key: key_name(key) });
        client.pending = Some(Pending::Read { key, floor, rx });
    }
}

/// Checks an answered request; gives the request back if it has no answer yet.
fn poll(p: Pending, keys: &mut [KeyState], stats: &mut Stats) -> Option<Pending> {
    use tokio::sync::oneshot::error::TryRecvError;
    match p {
        Pending::Write {
            key,
            version,
            mut rx,
        } => match rx.try_recv() {
            Err(TryRecvError::Empty) => Some(Pending::Write { key, version, rx }),
            Ok(Ok(_)) => {
                keys[key].acked = keys[key].acked.max(version);
                stats.acked += 1;
                None
            }
            Ok(Err(_)) | Err(TryRecvError::Closed) => {
                stats.failed += 1;
                None
            }
        },
        Pending::Read { key, floor, mut rx } => match rx.try_recv() {
            Err(TryRecvError::Empty) => Some(Pending::Read { key, floor, rx }),
            Ok(Ok(Response::Value(v))) => {
                let got = v.as_deref().map(version_of).unwrap_or(0);
                assert!(
                    got >= floor,
                    "key {key}: stale read v{got}, v{floor} was acknowledged before"
                );
                assert!(
                    got <= keys[key].attempted,
                    "key {key}: read v{got} never written"
                );
                stats.reads += 1;
                None
            }
            Ok(_) | Err(TryRecvError::Closed) => {
                stats.failed += 1;
                None
            }
        },
    }
}

fn finish_client(
    c: &mut Cluster,
    _i: usize,
    client: &mut Client,
    keys: &mut [KeyState],
    stats: &mut Stats,
) {
    for _ in 0..100 {
        match client.pending.take() {
            None => return,
            Some(p) => client.pending = poll(p, keys, stats),
        }
        c.tick();
    }
    panic!("a request was never answered, not even with a timeout");
}

fn seeds() -> Vec<u64> {
    match std::env::var("FLOTILLA_SEED") {
        Ok(s) => vec![s.parse().expect("FLOTILLA_SEED is a number")],
        Err(_) => vec![1, 2, 3],
    }
}

#[test]
fn random_faults_lose_no_acknowledged_write_and_replicas_agree() {
    for seed in seeds() {
        let result = std::panic::catch_unwind(|| run(seed, false));
        if let Err(e) = result {
            eprintln!("chaos run failed; replay with FLOTILLA_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}

#[test]
fn random_faults_and_membership_changes_lose_nothing_and_never_elect_two_leaders() {
    for seed in seeds() {
        let result = std::panic::catch_unwind(|| run(seed, true));
        if let Err(e) = result {
            eprintln!("chaos run with membership changes failed; replay with FLOTILLA_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}
