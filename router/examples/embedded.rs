//! Embedding Flotilla: three replicated stores in this process, used through `Db`.
//!
//! The cluster starts with one user range and a small split threshold (64 KiB), then
//! takes enough writes to split many times; everything is read back and scanned.
//!
//! Run: `cargo run --example embedded`. `cargo test --workspace` builds it too, as
//! `$CARGO_TARGET_DIR/debug/examples/embedded-<hash>`, sharing the test suite's RocksDB build.

use std::time::Duration;

use flotilla_raftstore::keyspace::initial_ranges;
use flotilla_raftstore::local::LocalCluster;
use flotilla_raftstore::StoreConfig;
use flotilla_router::local::open_local;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let cfg = StoreConfig {
        split_size: 64 << 10,
        tick_interval: Duration::from_millis(20),
        ..StoreConfig::default()
    };
    // Three nodes, each with its own data directory: the meta range and one user range.
    let cluster = std::sync::Arc::new(LocalCluster::start(
        dir.path(),
        3,
        initial_ranges(1, 3),
        cfg,
    )?);
    let db = open_local(&cluster);

    for (k, v) in [
        ("apple", "red"),
        ("banana", "yellow"),
        ("zucchini", "green"),
    ] {
        db.put(k.as_bytes(), v.as_bytes()).await?;
    }
    let swapped = db
        .compare_and_swap(b"apple", Some(b"red"), Some(b"green"))
        .await?;
    println!("apple: red -> green swapped: {}", swapped.0);

    // About 2 MiB of data: far past the 64 KiB threshold, so the range splits repeatedly.
    let n = 4_000u32;
    let writers: Vec<_> = (0..16u32)
        .map(|w| {
            let db = db.clone();
            tokio::spawn(async move {
                for i in (w..n).step_by(16) {
                    db.put(format!("item/{i:06}").as_bytes(), &[b'x'; 512])
                        .await?;
                }
                Ok::<_, flotilla_router::Error>(())
            })
        })
        .collect();
    for w in writers {
        w.await??;
    }
    // Size checks run in the background; wait until the ranges have split.
    let mut ranges = 0;
    for _ in 0..100 {
        let status = cluster.node(1).expect("node 1").status().await?;
        ranges = status.len() - 1;
        if ranges >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("{n} items written; the user key space is now {ranges} ranges");
    for i in 0..n {
        let v = db.get(format!("item/{i:06}").as_bytes()).await?;
        assert_eq!(v.map(|v| v.len()), Some(512), "item {i}");
    }
    let items = db.scan(b"item/", b"item0", 10_000).await?;
    println!(
        "read back all {n} items; a scan across the ranges returned {} of them in order",
        items.len()
    );
    assert_eq!(items.len(), n as usize);
    for (k, v) in db.scan(b"", b"item/", 100).await? {
        println!(
            "{} = {}",
            String::from_utf8_lossy(&k),
            String::from_utf8_lossy(&v)
        );
    }
    Ok(())
}
