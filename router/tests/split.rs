//! Splits seen through the embeddable API on a threaded 3-node cluster: many keys with a
//! tiny threshold make many ranges and every key survives; scans cross the new
//! boundaries; a client whose cache predates the splits converges; writers racing splits
//! lose nothing; the meta range lists the ranges as they are; a restart brings the same
//! ranges back; leadership stays spread.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_raftstore::keyspace::{initial_ranges, meta_key, meta_scan_end, META_RANGE_ID};
use flotilla_raftstore::local::LocalCluster;
use flotilla_raftstore::{MetaEntry, RangeDescriptor, RangeStatus, StoreConfig};
use flotilla_router::local::open_local;
use flotilla_router::Db;
use prost::Message as _;

type LocalDb = Arc<Db<Arc<LocalCluster>>>;

fn config(split_size: u64) -> StoreConfig {
    StoreConfig {
        tick_interval: Duration::from_millis(20),
        split_size,
        split_check_ticks: 5,
        ..StoreConfig::default()
    }
}

fn start(dir: &tempfile::TempDir, split_size: u64) -> Arc<LocalCluster> {
    Arc::new(LocalCluster::start(dir.path(), 3, initial_ranges(1, 3), config(split_size)).unwrap())
}

fn key(i: u32) -> Vec<u8> {
    format!("key/{i:07}").into_bytes()
}

/// Every node's status, by node.
async fn statuses(c: &LocalCluster) -> BTreeMap<u64, Vec<RangeStatus>> {
    let mut out = BTreeMap::new();
    for n in c.nodes() {
        out.insert(n.node_id(), n.status().await.unwrap());
    }
    out
}

/// Polls until `cond` holds on the cluster's status, or panics after `secs`.
async fn wait_for(
    c: &LocalCluster,
    secs: u64,
    what: &str,
    cond: impl Fn(&BTreeMap<u64, Vec<RangeStatus>>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = statuses(c).await;
        if cond(&s) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes keys `from..to` with `writers` concurrent tasks; panics on any failure.
async fn write(db: &LocalDb, from: u32, to: u32, writers: u32, value: &'static [u8]) {
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let db = db.clone();
            tokio::spawn(async move {
                for i in (from + w..to).step_by(writers as usize) {
                    db.put(&key(i), value)
                        .await
                        .unwrap_or_else(|e| panic!("put {i}: {e}"));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

fn user_ranges(s: &BTreeMap<u64, Vec<RangeStatus>>) -> usize {
    s[&1].len() - 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_keys_with_a_tiny_threshold_make_many_ranges_and_all_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(&dir, 64 << 10);
    let db = open_local(&c);
    let n = 100_000u32;
    write(&db, 0, n, 64, b"0123456789abcdef").await;
    wait_for(&c, 30, "ranges to split", |s| user_ranges(s) >= 16).await;

    // Every key, in order, exactly once, through scans that cross every boundary.
    let all = db.scan(b"", b"", 200_000).await.unwrap();
    assert_eq!(all.len(), n as usize);
    assert!(all
        .iter()
        .enumerate()
        .all(|(i, (k, v))| *k == key(i as u32) && v == b"0123456789abcdef"));
    let bounded = db.scan(&key(12_345), &key(87_654), 200_000).await.unwrap();
    assert_eq!(bounded.len(), 87_654 - 12_345);
    assert_eq!(bounded.first().unwrap().0, key(12_345));
    assert_eq!(bounded.last().unwrap().0, key(87_653));
    let limited = db.scan(&key(50_000), b"", 7_777).await.unwrap();
    assert_eq!(limited.last().unwrap().0, key(50_000 + 7_776));
    // And every key by point reads.
    let readers: Vec<_> = (0..32u32)
        .map(|r| {
            let db = db.clone();
            tokio::spawn(async move {
                for i in (r..n).step_by(32) {
                    assert_eq!(
                        db.get(&key(i)).await.unwrap().as_deref(),
                        Some(&b"0123456789abcdef"[..]),
                        "key {i}"
                    );
                }
            })
        })
        .collect();
    for r in readers {
        r.await.unwrap();
    }
    // All replicas hold every range, with the same descriptor.
    let s = statuses(&c).await;
    let shapes: Vec<Vec<RangeDescriptor>> = s
        .values()
        .map(|v| v.iter().map(|r| r.descriptor.clone()).collect())
        .collect();
    assert!(
        shapes.windows(2).all(|w| w[0] == w[1]),
        "nodes disagree on the ranges"
    );
    eprintln!("{} user ranges after {n} keys", user_ranges(&s));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_cache_predates_many_splits_converges() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(&dir, 0);
    let old = open_local(&c);
    write(&old, 0, 2_000, 16, b"v1").await;
    // A second client splits the key space 40 times; the first one's cache knows none of it.
    let admin = open_local(&c);
    for i in 1..=40u32 {
        admin.split(&key(i * 50)).await.unwrap();
    }
    for i in 0..2_000u32 {
        assert_eq!(
            old.get(&key(i)).await.unwrap().as_deref(),
            Some(&b"v1"[..]),
            "key {i}"
        );
    }
    write(&old, 0, 2_000, 16, b"v2").await;
    let all = old.scan(b"", b"", 10_000).await.unwrap();
    assert_eq!(all.len(), 2_000);
    assert!(all.iter().all(|(_, v)| v == b"v2"));
    // Splitting where a range already starts is a no-op that succeeds.
    let (left, right) = admin.split(&key(50)).await.unwrap();
    assert_eq!(left.end, right.start);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_racing_splits_lose_nothing_and_meta_tracks_the_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(&dir, 0);
    let db = open_local(&c);
    let writers = {
        let db = db.clone();
        tokio::spawn(async move { write(&db, 0, 6_000, 32, b"v").await })
    };
    for i in 1..30u32 {
        db.split(&key(i * 200)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    writers.await.unwrap();
    let all = db.scan(b"", b"", 10_000).await.unwrap();
    assert_eq!(all.len(), 6_000, "every acknowledged write is there");

    // The meta range comes to list exactly the ranges the nodes have, each with a leader.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = statuses(&c).await;
        let mut live: Vec<RangeDescriptor> = s[&1]
            .iter()
            .map(|r| r.descriptor.clone())
            .filter(|d| d.range_id != META_RANGE_ID)
            .collect();
        live.sort_by(|a, b| {
            a.end
                .is_empty()
                .cmp(&b.end.is_empty())
                .then(a.end.cmp(&b.end))
        });
        let records = meta_records(&c).await;
        let listed: Vec<RangeDescriptor> = records
            .iter()
            .filter_map(|e| e.descriptor.clone())
            .collect();
        if listed == live && records.iter().all(|e| e.leader.is_some()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "meta lists {} records, nodes have {} ranges",
            listed.len(),
            live.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The meta range's records, in key order, read from whichever node leads it.
async fn meta_records(c: &LocalCluster) -> Vec<MetaEntry> {
    use flotilla_raftstore::{Command, Request, Response};
    let epoch = c.ranges()[0].epoch();
    for _ in 0..100 {
        for n in c.nodes() {
            let command = Command::Scan {
                start: meta_key(b"u"),
                end: meta_scan_end(),
                limit: 10_000,
                max_bytes: 0,
            };
            if let Ok(Ok(Response::Pairs { pairs: p, .. })) = n
                .request(Request {
                    range_id: META_RANGE_ID,
                    epoch,
                    command,
                })
                .await
            {
                return p
                    .into_iter()
                    .map(|(_, v)| MetaEntry::decode(v.as_slice()).unwrap())
                    .collect();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the meta range did not answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_splits_brings_back_the_same_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let before;
    {
        let c = start(&dir, 0);
        let db = open_local(&c);
        write(&db, 0, 1_000, 16, b"v").await;
        for i in 1..10u32 {
            db.split(&key(i * 100)).await.unwrap();
        }
        wait_for(&c, 10, "every node to apply every split", |s| {
            s.values().all(|r| r.len() == 11)
        })
        .await;
        before = statuses(&c).await[&1]
            .iter()
            .map(|r| r.descriptor.clone())
            .collect::<Vec<_>>();
        drop(db);
        Arc::try_unwrap(c).ok().expect("no other handle").shutdown();
    }
    let c = start(&dir, 0);
    let s = statuses(&c).await;
    for (node, ranges) in &s {
        let shapes: Vec<_> = ranges.iter().map(|r| r.descriptor.clone()).collect();
        assert_eq!(shapes, before, "node {node} came back with other ranges");
    }
    let db = open_local(&c);
    assert_eq!(db.scan(b"", b"", 10_000).await.unwrap().len(), 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_stays_spread_after_many_splits() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(&dir, 0);
    let db = open_local(&c);
    for i in 1..=44u32 {
        db.split(&key(i * 10)).await.unwrap();
    }
    // 46 ranges (meta included) on 3 nodes: a fair share is about 15; allow half again.
    wait_for(&c, 30, "leaders to spread", |s| {
        let leads: Vec<usize> = s
            .values()
            .map(|r| r.iter().filter(|r| r.is_leader).count())
            .collect();
        let total: usize = leads.iter().sum();
        total == 46 && leads.iter().all(|l| *l as f64 <= 1.5 * 46.0 / 3.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meta_record_missing_for_a_new_range_is_worked_around() {
    use flotilla_raftstore::keyspace::meta_key;
    use flotilla_raftstore::{Command, Replica};
    use flotilla_router::local::local_router;
    use flotilla_router::RetryPolicy;
    let dir = tempfile::tempdir().unwrap();
    let c = start(&dir, 0);
    // Clients without a meta publisher: meta records change only by hand here.
    let admin = Db::new(local_router(&c, c.clone(), RetryPolicy::default()));
    admin.put(b"apple", b"1").await.unwrap();
    let (left, right) = admin.split(b"m").await.unwrap();
    // Only the right half's record is published: a lookup of "apple" finds a range that
    // does not hold it.
    let publisher = local_router(&c, c.clone(), RetryPolicy::default());
    let entry = MetaEntry {
        descriptor: Some(right.clone()),
        leader: Some(Replica::voter(1, 0)),
        term: 100,
    };
    publisher
        .execute(
            &meta_key(&right.end),
            Command::UpdateMeta {
                entries: vec![entry],
            },
        )
        .await
        .unwrap();
    let fresh = Db::new(local_router(&c, c.clone(), RetryPolicy::default()));
    assert_eq!(
        fresh.get(b"apple").await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    fresh.put(b"avocado", b"2").await.unwrap();
    assert!(left.contains(&flotilla_raftstore::keyspace::user_key(b"avocado")));
}
