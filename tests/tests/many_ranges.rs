//! Many Raft groups on the same three stores elect and serve independently.

use flotilla_tests::filter::Isolate;
use flotilla_tests::Cluster;

fn key_in(c: &Cluster, range_id: u64, suffix: &str) -> Vec<u8> {
    let desc = c.ranges().iter().find(|r| r.range_id == range_id).unwrap();
    let mut key = if desc.start.is_empty() {
        vec![0u8]
    } else {
        desc.start.clone()
    };
    key.extend_from_slice(suffix.as_bytes());
    key
}

#[test]
fn a_hundred_and_twenty_ranges_elect_serve_and_survive_an_isolated_node() {
    let mut c = Cluster::new(3, 120, 3);
    let ids: Vec<u64> = c.ranges().iter().map(|r| r.range_id).collect();
    for id in &ids {
        assert!(
            c.wait_leader(*id, 60).is_some(),
            "range {id} elected a leader"
        );
    }
    let mut led_by_one = 0;
    for id in &ids {
        if c.leader_of(*id) == Some(1) {
            led_by_one += 1;
        }
        let key = key_in(&c, *id, "first");
        c.put(&key, b"1").unwrap();
    }
    assert!(
        led_by_one > 0,
        "seeded timeouts spread leadership; node 1 leads some ranges"
    );

    c.add_filter(Isolate(1));
    for id in &ids {
        let key = key_in(&c, *id, "second");
        c.put(&key, b"2")
            .unwrap_or_else(|e| panic!("range {id} stopped serving: {e:?}"));
        assert_ne!(c.leader_of(*id), None);
    }
    for id in &ids {
        assert_ne!(
            c.leader_of(*id),
            Some(1),
            "range {id} is led from the majority side"
        );
        assert_eq!(
            c.get(&key_in(&c, *id, "first")).unwrap().as_deref(),
            Some(&b"1"[..])
        );
    }
}

#[test]
fn a_thousand_ranges_on_three_stores_all_elect_and_accept_a_write() {
    let mut c = Cluster::new(3, 1000, 31);
    c.ticks(40);
    let ids: Vec<u64> = c.ranges().iter().map(|r| r.range_id).collect();
    let leaderless: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|id| c.leader_of(*id).is_none())
        .collect();
    assert!(
        leaderless.is_empty(),
        "ranges without a leader after 40 ticks: {leaderless:?}"
    );
    let mut per_node = std::collections::BTreeMap::new();
    for id in &ids {
        *per_node.entry(c.leader_of(*id).unwrap()).or_insert(0) += 1;
        let key = key_in(&c, *id, "k");
        c.put(&key, b"v").unwrap();
    }
    assert_eq!(per_node.len(), 3, "leaders on every node: {per_node:?}");
}

fn leaders_per_node(c: &Cluster) -> std::collections::BTreeMap<u64, usize> {
    let mut per_node = std::collections::BTreeMap::new();
    for r in c.ranges() {
        if let Some(l) = c.leader_of(r.range_id) {
            *per_node.entry(l).or_insert(0) += 1;
        }
    }
    per_node
}

#[test]
fn leadership_spreads_evenly_and_returns_after_a_restart() {
    let mut c = Cluster::new(3, 30, 43);
    c.ticks(80);
    let fair = 10;
    let per_node = leaders_per_node(&c);
    assert_eq!(
        per_node.values().sum::<usize>(),
        30,
        "every range has a leader: {per_node:?}"
    );
    assert!(
        per_node.values().all(|n| *n <= fair * 3 / 2),
        "no node leads more than 1.5x its share: {per_node:?}"
    );

    c.stop(1);
    c.ticks(60);
    let without_one = leaders_per_node(&c);
    assert_eq!(
        without_one.values().sum::<usize>(),
        30,
        "node 1's ranges moved: {without_one:?}"
    );
    assert_eq!(without_one.get(&1), None);

    c.start(1);
    c.ticks(120);
    let back = leaders_per_node(&c);
    assert!(
        back.get(&1).copied().unwrap_or(0) >= fair / 2,
        "node 1 leads again after catching up: {back:?}"
    );
    assert!(back.values().all(|n| *n <= fair * 3 / 2), "{back:?}");
}
