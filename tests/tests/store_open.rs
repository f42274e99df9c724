//! Opening a store: a data directory belongs to one node id.

use flotilla_engine::{Engine, EngineOptions};
use flotilla_raftstore::local::even_ranges;
use flotilla_raftstore::{Error, Store, StoreConfig};

#[test]
fn a_data_directory_of_another_node_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
    Store::bootstrap(&engine, 1, &even_ranges(2, 3)).unwrap();
    let err = Store::open(2, engine.clone(), StoreConfig::default())
        .err()
        .expect("refused");
    assert!(matches!(err, Error::InvalidRequest(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("belongs to node") && msg.contains("--node-id"),
        "{msg}"
    );
    let store = Store::open(1, engine.clone(), StoreConfig::default()).unwrap();
    assert_eq!(store.range_ids(), vec![1, 2]);
    drop(store);
    let again = Store::bootstrap(&engine, 1, &even_ranges(2, 3)).unwrap_err();
    assert!(again.to_string().contains("already exists"), "{again}");
}
