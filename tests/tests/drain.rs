//! Draining a node before it stops: its leaders hand leadership to caught-up followers,
//! leadership does not come back while it drains, and the ranges keep serving writes with
//! the drained node gone.

use flotilla_tests::Cluster;

fn leaders_on(c: &Cluster, node: u64, ranges: u64) -> Vec<u64> {
    (1..=ranges)
        .filter(|r| c.store(node).peer(*r).is_some_and(|p| p.is_leader()))
        .collect()
}

fn term(c: &Cluster, range: u64) -> u64 {
    c.node_ids()
        .into_iter()
        .filter_map(|n| c.store(n).peer(range).map(|p| p.term()))
        .max()
        .unwrap_or(0)
}

#[test]
fn a_draining_node_hands_every_leadership_away_and_keeps_none() {
    const RANGES: u64 = 6;
    let mut c = Cluster::new(3, RANGES, 11);
    for r in 1..=RANGES {
        c.wait_leader(r, 100).expect("every range elects");
    }
    // Let the balance rule spread leaders (range r prefers replica r % 3), and idle
    // ranges quiesce, so the drain has quiesced leaders to wake as well.
    c.ticks(60);
    let before = leaders_on(&c, 1, RANGES);
    assert!(
        !before.is_empty(),
        "node 1 leads some ranges before the drain"
    );

    let still = c.store_mut(1).drain();
    assert_eq!(
        still,
        before.len(),
        "drain reports the leaders it still has"
    );
    let mut ticks = 0;
    while !leaders_on(&c, 1, RANGES).is_empty() {
        assert!(
            ticks < 60,
            "node 1 still leads {:?} after 60 ticks of draining",
            leaders_on(&c, 1, RANGES)
        );
        c.tick();
        ticks += 1;
    }
    // Node 1 is preferred for some ranges: the other nodes' balance rule would hand them
    // back, but a draining node refuses, so no range changes leader (or term) again.
    let settled: Vec<(Option<u64>, u64)> = (1..=RANGES)
        .map(|r| (c.leader_of(r), term(&c, r)))
        .collect();
    c.ticks(50);
    assert_eq!(
        leaders_on(&c, 1, RANGES),
        Vec::<u64>::new(),
        "leadership came back to a draining node"
    );
    let later: Vec<(Option<u64>, u64)> = (1..=RANGES)
        .map(|r| (c.leader_of(r), term(&c, r)))
        .collect();
    assert_eq!(
        later, settled,
        "leadership moved again while node 1 drained"
    );
    assert_eq!(c.store_mut(1).drain(), 0);
    for r in 1..=RANGES {
        let leader = c.leader_of(r).expect("every range has a leader");
        assert_ne!(leader, 1);
    }

    // No leader tried to hand a range back (a refused transfer costs the new leader its
    // lease for the term): every range's leader holds its lease, with node 1 stopped too.
    c.stop(1);
    c.ticks(30);
    for r in 1..=RANGES {
        let leader = c.leader_of(r).expect("a leader");
        assert!(
            c.store(leader).has_lease(r),
            "range {r}'s leader on node {leader} lost its lease"
        );
    }
    // With node 1 stopped, every range still takes writes at once (no election needed).
    for i in 0..RANGES {
        let key = ((i * 65_536 / RANGES) as u16).to_be_bytes();
        c.put(&key, b"after-drain")
            .expect("a write with the drained node gone");
        assert_eq!(
            c.get(&key).expect("read").as_deref(),
            Some(&b"after-drain"[..])
        );
    }
}
