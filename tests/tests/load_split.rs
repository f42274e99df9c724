//! Splitting by load under the deterministic harness (issue 13): a range kept above the
//! request-rate threshold splits once, near the middle of its load, and its halves —
//! each under the threshold — stay whole; a range whose load is one hot key never
//! splits; below the threshold nothing splits.

use flotilla_raftstore::keyspace::initial_ranges;
use flotilla_raftstore::{Command, StoreConfig};
use flotilla_tests::{harness_config, Cluster};

/// Requests a second that make a range hot in these tests (ticks are 100 ms).
const QPS: u64 = 50;

fn key(i: u64) -> Vec<u8> {
    format!("u{i:05}").into_bytes()
}

/// Keys spread evenly over `u00000..u01000`.
fn spread(i: u64) -> Vec<u8> {
    key((i * 7919) % 1000)
}

/// Three nodes: the meta range (1) and one user range (2), splitting by load only.
fn cluster(seed: u64) -> Cluster {
    let cfg = StoreConfig {
        load_split_qps: QPS,
        load_split_hot_secs: 2,
        split_size: 0,
        ..harness_config()
    };
    let mut c = Cluster::with_config(3, initial_ranges(1, 3), seed, cfg);
    assert!(c.wait_leader(2, 100).is_some());
    c
}

/// Sends `per_tick` gets each tick for `ticks` ticks to the leaders of the ranges
/// holding `key_of(0), key_of(1), ...` (answers are not awaited: load, not checks).
fn load(c: &mut Cluster, ticks: u64, per_tick: u64, key_of: impl Fn(u64) -> Vec<u8>) {
    let mut n = 0;
    for _ in 0..ticks {
        for _ in 0..per_tick {
            let k = key_of(n);
            n += 1;
            let range = c.range_of(&k);
            if let Some(leader) = c.leader_of(range) {
                drop(c.request(leader, range, Command::Get { key: k }));
            }
        }
        c.tick();
    }
}

fn user_ranges(c: &Cluster) -> Vec<flotilla_raftstore::RangeDescriptor> {
    c.current_ranges()
        .into_iter()
        .filter(|d| d.range_id != 1)
        .collect()
}

#[test]
fn a_hot_range_splits_where_its_load_halves_and_the_halves_stay_whole() {
    let mut c = cluster(1);
    // 70 requests a second, spread: hot. After a split between u00300 and u00700 each
    // half has under 50: not.
    load(&mut c, 100, 7, spread);
    let ranges = user_ranges(&c);
    assert_eq!(ranges.len(), 2, "one load split: {ranges:?}");
    let at = String::from_utf8(ranges[1].start.clone()).unwrap();
    assert!(
        ("u00300".."u00700").contains(&at.as_str()),
        "split at {at}, far from the middle of the load"
    );
    load(&mut c, 150, 7, spread);
    assert_eq!(
        user_ranges(&c).len(),
        2,
        "a range under the threshold split again"
    );
    // Both halves serve reads and writes.
    for k in [key(1), key(999)] {
        c.put(&k, b"v").expect("put");
        assert_eq!(c.get(&k).expect("get"), Some(b"v".to_vec()));
    }
}

#[test]
fn one_hot_key_never_splits_its_range_and_a_cool_range_does_not_split() {
    let mut c = cluster(2);
    load(&mut c, 150, 20, |_| key(500));
    assert_eq!(user_ranges(&c).len(), 1, "a single hot key split its range");
    // Mostly that key, a little elsewhere: still no side carries a quarter.
    load(&mut c, 150, 20, |i| {
        if i % 10 == 0 {
            spread(i)
        } else {
            key(500)
        }
    });
    assert_eq!(user_ranges(&c).len(), 1, "a mostly-one-key range split");
    load(&mut c, 150, 3, spread);
    assert_eq!(
        user_ranges(&c).len(),
        1,
        "30 requests a second is under the threshold"
    );
}
