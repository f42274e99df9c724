//! The embeddable API over a threaded 3-node in-process cluster with 8 ranges.

use std::sync::Arc;
use std::time::Duration;

use flotilla_raftstore::keyspace::initial_ranges;
use flotilla_raftstore::local::LocalCluster;
use flotilla_raftstore::{Epoch, StoreConfig, WriteOp};
use flotilla_router::local::{local_router, open_local};
use flotilla_router::{Db, Error, RetryPolicy};

fn cluster(dir: &tempfile::TempDir) -> Arc<LocalCluster> {
    let cfg = StoreConfig {
        tick_interval: Duration::from_millis(20),
        ..StoreConfig::default()
    };
    Arc::new(LocalCluster::start(dir.path(), 3, initial_ranges(8, 3), cfg).unwrap())
}

fn db(c: &Arc<LocalCluster>) -> Arc<Db<Arc<LocalCluster>>> {
    open_local(c)
}

fn key(i: u32) -> Vec<u8> {
    // Two leading bytes spread keys over all 8 ranges; the rest keeps them unique.
    let mut k = ((i.wrapping_mul(2_654_435_761) >> 16) as u16)
        .to_be_bytes()
        .to_vec();
    k.extend_from_slice(&i.to_be_bytes());
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_key_operations_batches_and_cas() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir);
    let db = db(&c);
    db.put(b"apple", b"1").await.unwrap();
    assert_eq!(db.get(b"apple").await.unwrap().as_deref(), Some(&b"1"[..]));
    db.delete(b"apple").await.unwrap();
    assert_eq!(db.get(b"apple").await.unwrap(), None);
    assert_eq!(
        db.compare_and_swap(b"n", None, Some(b"1")).await.unwrap(),
        (true, None)
    );
    assert_eq!(
        db.compare_and_swap(b"n", None, Some(b"2")).await.unwrap(),
        (false, Some(b"1".to_vec()))
    );
    db.batch(vec![WriteOp::put("b1", "x"), WriteOp::put("b2", "y")])
        .await
        .unwrap();
    assert_eq!(db.get(b"b2").await.unwrap().as_deref(), Some(&b"y"[..]));

    // Keys in different ranges cannot be written atomically: refused, nothing written.
    let err = db
        .batch(vec![
            WriteOp::put(vec![0x01, 1], "x"),
            WriteOp::put(vec![0xf0, 1], "y"),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err}");
    assert_eq!(db.get(&[0x01, 1]).await.unwrap(), None);
    // Bad input is final at once, not retried into `Unavailable`, and says what is wrong
    // once ("invalid request: invalid request: …" was said twice before).
    let empty = db.put(b"", b"v").await.unwrap_err();
    assert!(matches!(empty, Error::InvalidRequest(_)));
    assert_eq!(empty.to_string(), "empty keys are not allowed");
    // Sizes in errors are those of the user's key, not of its stored form.
    let limit = StoreConfig::default().max_key_size;
    match db.put(&vec![b'k'; limit], b"v").await.unwrap_err() {
        Error::InvalidRequest(flotilla_raftstore::Error::KeyTooLarge { size, limit: l }) => {
            assert_eq!((size, l), (limit, limit - 1));
        }
        other => panic!("expected KeyTooLarge, got {other}"),
    }
    let longest = vec![b'k'; limit - 1];
    db.put(&longest, b"v").await.unwrap();
    // A client with an empty cache finds the longest keys through the meta range, and a
    // scan resumes after them.
    let fresh = self::db(&c);
    assert_eq!(
        fresh.get(&longest).await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    let next = [vec![b'k'; limit - 2], b"z".to_vec()].concat();
    db.put(&next, b"w").await.unwrap();
    // Where a scan resumes after the longest key: one byte longer than any key.
    let after = [longest.clone(), vec![0]].concat();
    let fresh = self::db(&c);
    let found = fresh.scan(&after, b"l", 10).await.unwrap();
    assert!(
        found.len() == 1 && found[0].0 == next,
        "{} pairs",
        found.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_cross_ranges_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir);
    let db = db(&c);
    let mut keys: Vec<Vec<u8>> = (0..600u32).map(key).collect();
    for k in &keys {
        db.put(k, k).await.unwrap();
    }
    keys.sort();
    let all = db.scan(b"", b"", 10_000).await.unwrap();
    let got: Vec<_> = all.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(got, keys, "every key once, in order, across all 8 ranges");
    assert!(all.iter().all(|(k, v)| k == v));

    // Bounded: [keys[100], keys[450]) with a limit that stops inside.
    let (lo, hi) = (&keys[100], &keys[450]);
    let bounded = db.scan(lo, hi, 10_000).await.unwrap();
    assert_eq!(bounded.len(), 350);
    assert_eq!(&bounded[0].0, lo);
    let limited = db.scan(lo, hi, 123).await.unwrap();
    assert_eq!(limited.len(), 123);
    assert_eq!(limited[122].0, keys[222]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_page_by_bytes_and_resume_where_they_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir);
    let db = db(&c);
    let value = vec![b'v'; 10 << 10];
    let mut keys: Vec<Vec<u8>> = (0..60u32).map(key).collect();
    for k in &keys {
        db.put(k, &value).await.unwrap();
    }
    keys.sort();
    // Pages of about 64 KiB: each stops after the pair that reaches the budget, so no page
    // holds more than 7 of these 10 KiB pairs; the resume keys walk all 8 ranges in order.
    let (mut got, mut from, mut pages) = (Vec::new(), Vec::new(), 0);
    loop {
        let page = db.scan_page(&from, b"", 0, 64 << 10).await.unwrap();
        let bytes: usize = page.pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(
            !page.pairs.is_empty() && bytes < (64 << 10) + value.len() + 16,
            "page of {bytes} bytes"
        );
        got.extend(page.pairs.into_iter().map(|(k, _)| k));
        pages += 1;
        match page.resume_key {
            Some(k) => from = k,
            None => break,
        }
    }
    assert_eq!(got, keys, "every key once, in order");
    assert!(pages >= 60 / 7, "{pages} pages");
    // A page whose budget is smaller than one pair still makes progress.
    let page = db.scan_page(b"", b"", 0, 1).await.unwrap();
    assert_eq!(page.pairs.len(), 1);
    assert_eq!(
        page.resume_key.as_deref(),
        Some([keys[0].as_slice(), &[0]].concat().as_slice())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_with_stale_descriptors_converges_from_the_errors_hints() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir);
    let router = local_router(&c, c.clone(), RetryPolicy::default());
    // A cache filled before some change of shape: every user range at epoch 0.
    for r in &c.ranges()[1..] {
        let mut stale = r.clone();
        stale.epoch = Some(Epoch {
            version: 0,
            conf_ver: 0,
        });
        router.learn_range(stale);
    }
    let db = Db::new(router);
    for i in 0..50u32 {
        db.put(&key(i), b"v").await.unwrap();
    }
    for i in 0..50u32 {
        assert_eq!(db.get(&key(i)).await.unwrap().as_deref(), Some(&b"v"[..]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_then_a_full_restart_keep_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<Vec<u8>> = (0..200u32).map(key).collect();
    {
        let c = cluster(&dir);
        let db = db(&c);
        let tasks: Vec<_> = keys
            .chunks(50)
            .map(|chunk| {
                let (db, chunk) = (db.clone(), chunk.to_vec());
                tokio::spawn(async move {
                    for k in chunk {
                        db.put(&k, &k).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        drop(db);
        Arc::try_unwrap(c).ok().expect("no other handle").shutdown();
    }
    let c = cluster(&dir);
    let db = db(&c);
    for k in &keys {
        assert_eq!(db.get(k).await.unwrap().as_deref(), Some(k.as_slice()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_whose_chunk_ends_exactly_at_the_scan_end_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir);
    let db = db(&c);
    // 1,001 keys in one range, so the first chunk (1,000) ends one key before `end`:
    // the next cursor is exactly `end` and the scan must stop there, not fail.
    let keys: Vec<Vec<u8>> = (0..1_001u32)
        .map(|i| [&[0x00, 0x01][..], &i.to_be_bytes()].concat())
        .collect();
    for k in &keys {
        db.put(k, b"v").await.unwrap();
    }
    let mut end = keys[999].clone();
    end.push(0);
    let got = db.scan(&keys[0], &end, 5_000).await.unwrap();
    assert_eq!(got.len(), 1_000);
    assert_eq!(got.last().unwrap().0, keys[999]);
}
