//! Embedding Flotilla: three replicated stores in this process, used through `Db`.
//!
//! Run: `cargo run --example embedded` (or `cargo build --workspace --examples` and run
//! `$CARGO_TARGET_DIR/debug/examples/embedded`, which shares the test suite's RocksDB build).

use std::sync::Arc;

use flotilla_raftstore::local::{even_ranges, LocalCluster};
use flotilla_raftstore::StoreConfig;
use flotilla_router::{Db, RetryPolicy, Router};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // Three nodes, each with its own data directory, holding 4 ranges between them.
    let cluster = Arc::new(LocalCluster::start(dir.path(), 3, even_ranges(4, 3), StoreConfig::default())?);
    let db = Db::new(Router::new(cluster.clone(), cluster.clone(), RetryPolicy::default()));

    for (k, v) in [("apple", "red"), ("banana", "yellow"), ("zucchini", "green")] {
        db.put(k.as_bytes(), v.as_bytes()).await?;
    }
    let swapped = db.compare_and_swap(b"apple", Some(b"red"), Some(b"green")).await?;
    println!("apple: red -> green swapped: {}", swapped.0);
    for (k, v) in db.scan(b"", b"", 100).await? {
        println!("{} = {}", String::from_utf8_lossy(&k), String::from_utf8_lossy(&v));
    }
    drop(db);
    if let Ok(cluster) = Arc::try_unwrap(cluster) {
        cluster.shutdown();
    }
    Ok(())
}
