//! Leaseholder reads under the deterministic harness: a leader confirmed by a quorum
//! reads locally; cut off, it stops before anyone else can be elected and write; with
//! clocks drifting beyond the configured bound, a stale read becomes possible (the
//! documented failure mode).

use flotilla_raftstore::{Command, Response, StoreConfig, StoreMetrics};
use flotilla_tests::filter::Isolate;
use flotilla_tests::{harness_config, CallError, Cluster};

fn get_at(c: &mut Cluster, node: u64, key: &[u8]) -> flotilla_raftstore::ResponseReceiver {
    c.request(node, 1, Command::Get { key: key.to_vec() })
}

/// The answer to `rx` if it came without the cluster running at all (a local read).
fn answered_locally(rx: &mut flotilla_raftstore::ResponseReceiver) -> Option<Option<Vec<u8>>> {
    match rx.try_recv() {
        Ok(Ok(Response::Value(v))) => Some(v),
        _ => None,
    }
}

/// The harness configuration without leadership balance (a transfer ends a lease, and
/// these tests watch one leader).
fn config() -> StoreConfig {
    StoreConfig {
        balance_interval_ticks: 0,
        ..harness_config()
    }
}

fn leader_with_lease(seed: u64, cfg: StoreConfig) -> (Cluster, u64) {
    let mut c = Cluster::with_config(3, flotilla_raftstore::local::even_ranges(1, 3), seed, cfg);
    let leader = c.wait_leader(1, 100).unwrap();
    c.put(b"k", b"v1").unwrap();
    assert_eq!(
        c.get(b"k").unwrap(),
        Some(b"v1".to_vec()),
        "a ReadIndex read confirms leadership"
    );
    assert!(c.store(leader).has_lease(1));
    (c, leader)
}

#[test]
fn a_confirmed_leader_reads_locally_and_keeps_its_lease_while_read_from() {
    let (mut c, leader) = leader_with_lease(1, config());
    let before = StoreMetrics::get(&c.store(leader).metrics().lease_reads);
    for _ in 0..40 {
        let mut rx = get_at(&mut c, leader, b"k");
        assert_eq!(
            answered_locally(&mut rx),
            Some(Some(b"v1".to_vec())),
            "served at once, no Raft round"
        );
        c.tick();
    }
    assert_eq!(
        StoreMetrics::get(&c.store(leader).metrics().lease_reads),
        before + 40
    );
    // Writes are seen by the next local read.
    c.put(b"k", b"v2").unwrap();
    let mut rx = get_at(&mut c, leader, b"k");
    assert_eq!(answered_locally(&mut rx), Some(Some(b"v2".to_vec())));
}

#[test]
fn an_isolated_leaseholder_stops_reading_before_a_successor_is_elected() {
    let (mut c, old) = leader_with_lease(2, config());
    c.add_filter(Isolate(old));
    lease_ends_before_a_successor(&mut c, old, "quorum-round lease");
}

/// Ticks a cluster whose leader of range 1, `old`, was just cut off: reads it serves
/// under its lease are checked, the lease must end before another replica is elected,
/// and after the successor writes, the old leader answers no read.
fn lease_ends_before_a_successor(c: &mut Cluster, old: u64, what: &str) {
    let (mut last_lease, mut successor) = (None, None);
    for t in 0..100u64 {
        if c.store(old).has_lease(1) {
            last_lease = Some(t);
            let mut rx = get_at(c, old, b"k");
            assert_eq!(answered_locally(&mut rx), Some(Some(b"v1".to_vec())));
        }
        let rival = c
            .node_ids()
            .into_iter()
            .find(|n| *n != old && c.store(*n).peer(1).is_some_and(|p| p.is_leader()));
        if successor.is_none() {
            successor = rival.map(|n| (t, n));
        }
        c.tick();
    }
    let (elected, new) = successor.expect("the others elect a new leader");
    let last = last_lease.expect("the old leader held its lease when cut off");
    eprintln!("{what}: lease last held at tick {last}; successor elected at tick {elected}");
    assert!(
        last < elected,
        "the lease (last held at {last}) must end before a successor is elected ({elected})"
    );
    let mut rx = c.request(
        new,
        1,
        Command::Put {
            key: b"k".to_vec(),
            value: b"v2".to_vec(),
        },
    );
    assert!(c.wait_answer(&mut rx, 50).is_ok());
    let mut rx = get_at(c, old, b"k");
    let outcome = c.wait_answer(&mut rx, 60);
    assert!(
        matches!(outcome, Err(CallError::Store(_))),
        "no stale read from the deposed leader: {outcome:?}"
    );
}

#[test]
fn a_clock_drifting_beyond_the_bound_allows_a_stale_read() {
    // The documented failure mode: the old leader's clock stands still while the others'
    // run, far beyond `max_clock_offset_ticks`. Its lease never runs out in its own time,
    // the others elect a new leader and write, and the old leader answers from its lease
    // with the old value.
    let cfg = StoreConfig {
        max_clock_offset_ticks: 0,
        ..config()
    };
    let (mut c, old) = leader_with_lease(3, cfg);
    c.add_filter(Isolate(old));
    let others: Vec<u64> = c.node_ids().into_iter().filter(|n| *n != old).collect();
    let mut new = None;
    for _ in 0..100 {
        c.tick_only(&others);
        new = others
            .iter()
            .copied()
            .find(|n| c.store(*n).peer(1).is_some_and(|p| p.is_leader()));
        if new.is_some() {
            break;
        }
    }
    let new = new.expect("a successor is elected while the old leader's clock stands still");
    let mut rx = c.request(
        new,
        1,
        Command::Put {
            key: b"k".to_vec(),
            value: b"v2".to_vec(),
        },
    );
    for _ in 0..50 {
        if rx.try_recv().is_ok() {
            break;
        }
        c.tick_only(&others);
    }
    assert!(
        c.store(old).has_lease(1),
        "in its own (stopped) time the old lease still holds"
    );
    let mut rx = get_at(&mut c, old, b"k");
    assert_eq!(
        answered_locally(&mut rx),
        Some(Some(b"v1".to_vec())),
        "a stale read: v2 was already acknowledged"
    );
}

/// Ticks until every store has its one range quiesced.
fn wait_quiet(c: &mut Cluster) {
    for _ in 0..300 {
        if c.node_ids()
            .into_iter()
            .filter(|n| c.is_running(*n))
            .all(|n| c.store(n).quiesced_count() == 1)
        {
            return;
        }
        c.tick();
    }
    panic!("the range did not quiesce");
}

#[test]
fn a_quiesced_range_keeps_its_lease_and_reads_locally_without_waking() {
    let mut c = Cluster::with_config(
        3,
        flotilla_raftstore::local::even_ranges(1, 3),
        4,
        harness_config(),
    );
    c.wait_leader(1, 100).unwrap();
    c.put(b"k", b"v1").unwrap();
    wait_quiet(&mut c);
    let leader = c.leader_of(1).unwrap();
    c.ticks(50);
    assert!(
        c.store(leader).has_lease(1),
        "store-liveness support keeps the lease while quiet"
    );
    let delivered = c.delivered;
    let mut rx = get_at(&mut c, leader, b"k");
    assert_eq!(answered_locally(&mut rx), Some(Some(b"v1".to_vec())));
    c.settle();
    assert_eq!(c.delivered, delivered, "the read sent nothing");
    assert_eq!(c.store(leader).quiesced_count(), 1, "and woke nothing");
}

/// Isolates the leaseholder of a quiesced range (restarting one follower at the same
/// moment, so its support is void and the other follower's must carry the proof) and
/// checks the lease ends before any other replica is elected.
fn isolated_quiesced_leaseholder(seed: u64, restart_follower: bool) {
    let mut c = Cluster::with_config(
        3,
        flotilla_raftstore::local::even_ranges(1, 3),
        seed,
        config(),
    );
    c.wait_leader(1, 100).unwrap();
    c.put(b"k", b"v1").unwrap();
    wait_quiet(&mut c);
    let old = c.leader_of(1).unwrap();
    assert!(c.store(old).has_lease(1));
    if restart_follower {
        let f = c.node_ids().into_iter().find(|n| *n != old).unwrap();
        c.restart(f);
    }
    c.add_filter(Isolate(old));
    lease_ends_before_a_successor(&mut c, old, &format!("seed {seed}, quiesced"));
}

#[test]
fn an_isolated_quiesced_leaseholder_stops_reading_before_a_successor_is_elected() {
    for seed in 5..10 {
        isolated_quiesced_leaseholder(seed, false);
    }
}

#[test]
fn a_follower_restarting_as_the_leaseholder_is_cut_off_keeps_no_rival_from_being_early() {
    for seed in 10..15 {
        isolated_quiesced_leaseholder(seed, true);
    }
}

/// Records every vote request it sees, delivering them.
struct RecordVotes(std::sync::Arc<std::sync::Mutex<Vec<flotilla_raftstore::RaftEnvelope>>>);

impl flotilla_tests::Filter for RecordVotes {
    fn check(
        &mut self,
        env: &flotilla_raftstore::RaftEnvelope,
        _: &mut rand::rngs::StdRng,
    ) -> flotilla_tests::Verdict {
        if env.message.get_msg_type() == raft::prelude::MessageType::MsgRequestVote {
            self.0.lock().unwrap().push(env.clone());
        }
        flotilla_tests::Verdict::Deliver
    }
}

/// A regression test for a review finding: the leader's own vote request, delivered late
/// (replayed), must not make a follower forget the leader and vote for a rival while the
/// leader still reads under a lease resting on that follower.
#[test]
fn a_replayed_vote_request_from_the_leader_frees_no_follower_to_elect_a_rival() {
    let votes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut c = Cluster::with_config(
        3,
        flotilla_raftstore::local::even_ranges(1, 3),
        20,
        config(),
    );
    let rec = c.add_filter(RecordVotes(votes.clone()));
    let leader = c.wait_leader(1, 100).unwrap();
    c.remove_filter(rec);
    let stale = votes
        .lock()
        .unwrap()
        .iter()
        .find(|e| e.from.node_id == leader)
        .cloned()
        .expect("recorded");
    let follower = stale.to.node_id;
    let third = c
        .node_ids()
        .into_iter()
        .find(|n| *n != leader && *n != follower)
        .unwrap();
    c.put(b"k", b"v1").unwrap();
    wait_quiet(&mut c);
    assert!(c.store(leader).has_lease(1));
    // Cut the leader off from the third node only, and replay the old vote request.
    c.add_filter(flotilla_tests::filter::Select {
        select: move |e: &flotilla_raftstore::RaftEnvelope| {
            (e.from.node_id, e.to.node_id) == (leader, third)
                || (e.from.node_id, e.to.node_id) == (third, leader)
        },
        inner: Box::new(flotilla_tests::filter::DropAll),
    });
    // The adversary also delays (here: drops) the follower's vote traffic to the leader,
    // which would otherwise wake it and tell it of a higher term.
    c.add_filter(flotilla_tests::filter::Select {
        select: move |e: &flotilla_raftstore::RaftEnvelope| {
            (e.from.node_id, e.to.node_id) == (follower, leader)
                && matches!(
                    e.message.get_msg_type(),
                    raft::prelude::MessageType::MsgRequestVote
                        | raft::prelude::MessageType::MsgRequestPreVote
                        | raft::prelude::MessageType::MsgRequestVoteResponse
                )
        },
        inner: Box::new(flotilla_tests::filter::DropAll),
    });
    c.store_mut(follower).on_raft_messages(vec![stale]);
    c.settle();
    let mut acked = b"v1".to_vec();
    let mut pending = None;
    for _ in 0..120 {
        if c.store(leader).has_lease(1) {
            let mut rx = get_at(&mut c, leader, b"k");
            assert_eq!(
                answered_locally(&mut rx),
                Some(Some(acked.clone())),
                "stale read under the lease"
            );
        }
        if pending.is_none() && c.store(third).peer(1).is_some_and(|p| p.is_leader()) {
            pending = Some(c.request(
                third,
                1,
                Command::Put {
                    key: b"k".to_vec(),
                    value: b"v2".to_vec(),
                },
            ));
        }
        if let Some(Ok(Ok(_))) = pending.as_mut().map(|rx| rx.try_recv()) {
            acked = b"v2".to_vec();
        }
        c.tick();
    }
    let leaders: Vec<_> = c
        .node_ids()
        .into_iter()
        .map(|n| (n, c.store(n).peer(1).map(|p| (p.is_leader(), p.term()))))
        .collect();
    eprintln!(
        "leader {leader} follower {follower} third {third}: acked {:?}, lease {}, {leaders:?}",
        String::from_utf8_lossy(&acked),
        c.store(leader).has_lease(1)
    );
}

/// A regression test for a review finding: a stale higher-term message that proves no
/// elected leader (here a pre-vote rejection from a rival's old campaign) must not move a
/// follower bound to its leader to the higher term, which would make it forget the leader
/// and free it to vote for a rival under the leader's lease.
#[test]
fn a_stale_higher_term_rejection_does_not_unbind_a_follower() {
    let mut c = Cluster::with_config(
        3,
        flotilla_raftstore::local::even_ranges(1, 3),
        21,
        config(),
    );
    let leader = c.wait_leader(1, 100).unwrap();
    c.put(b"k", b"v1").unwrap();
    wait_quiet(&mut c);
    let others: Vec<u64> = c.node_ids().into_iter().filter(|n| *n != leader).collect();
    let (follower, rival) = (others[0], others[1]);
    let desc = c.store(follower).peer(1).unwrap().descriptor().clone();
    let (f, r) = (
        desc.replica_on(follower).unwrap(),
        desc.replica_on(rival).unwrap(),
    );
    let term = c.store(follower).peer(1).unwrap().term();
    let mut m = raft::prelude::Message::default();
    m.set_msg_type(raft::prelude::MessageType::MsgRequestPreVoteResponse);
    m.from = r.replica_id;
    m.to = f.replica_id;
    m.term = term + 1;
    m.reject = true;
    c.store_mut(follower)
        .on_raft_messages(vec![flotilla_raftstore::RaftEnvelope {
            range_id: 1,
            from: r,
            to: f,
            message: m,
        }]);
    c.settle();
    let peer = c.store(follower).peer(1).unwrap();
    assert_eq!(peer.term(), term, "the follower stays in its leader's term");
    assert_eq!(
        peer.leader().map(|l| l.node_id),
        Some(leader),
        "and keeps its leader"
    );
    assert!(c.store(leader).has_lease(1));
}
