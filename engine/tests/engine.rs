//! Engine behaviour: column family isolation, bounded scans, snapshots, batches, reopen.

use flotilla_engine::{Cf, Engine, EngineOptions};

fn open(dir: &tempfile::TempDir) -> Engine {
    Engine::open(dir.path(), &EngineOptions::default()).expect("open engine")
}

fn collect(engine: &Engine, cf: Cf, start: &[u8], end: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    engine
        .scan(cf, start, end, |k, _| {
            out.push(k.to_vec());
            true
        })
        .unwrap();
    out
}

#[test]
fn column_families_are_separate_key_spaces() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(&dir);
    let mut wb = engine.batch();
    wb.put(Cf::Data, b"k", b"data");
    wb.put(Cf::Meta, b"k", b"meta");
    engine.write(wb, true).unwrap();
    assert_eq!(
        engine.get(Cf::Data, b"k").unwrap().as_deref(),
        Some(&b"data"[..])
    );
    assert_eq!(
        engine.get(Cf::Meta, b"k").unwrap().as_deref(),
        Some(&b"meta"[..])
    );
    assert_eq!(engine.get(Cf::Raft, b"k").unwrap(), None);
}

#[test]
fn scans_respect_both_bounds_and_early_stop() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(&dir);
    let mut wb = engine.batch();
    for k in [&b"a"[..], b"b", b"c", b"d", b"e"] {
        wb.put(Cf::Data, k, b"v");
    }
    engine.write(wb, false).unwrap();
    assert_eq!(
        collect(&engine, Cf::Data, b"b", b"d"),
        vec![b"b".to_vec(), b"c".to_vec()]
    );
    assert_eq!(
        collect(&engine, Cf::Data, b"d", b"").len(),
        2,
        "empty end is unbounded"
    );
    let mut n = 0;
    engine
        .scan(Cf::Data, b"", b"", |_, _| {
            n += 1;
            n < 3
        })
        .unwrap();
    assert_eq!(n, 3, "callback returning false stops the scan");
}

#[test]
fn snapshot_does_not_see_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(&dir);
    let mut wb = engine.batch();
    wb.put(Cf::Data, b"x", b"1");
    engine.write(wb, false).unwrap();
    let snap = engine.snapshot();
    let mut wb = engine.batch();
    wb.put(Cf::Data, b"x", b"2");
    wb.put(Cf::Data, b"y", b"2");
    engine.write(wb, false).unwrap();
    assert_eq!(
        snap.get(Cf::Data, b"x").unwrap().as_deref(),
        Some(&b"1"[..])
    );
    let mut seen = Vec::new();
    snap.scan(Cf::Data, b"", b"", |k, v| {
        seen.push((k.to_vec(), v.to_vec()));
        true
    })
    .unwrap();
    assert_eq!(seen, vec![(b"x".to_vec(), b"1".to_vec())]);
}

#[test]
fn delete_range_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open(&dir);
        let mut wb = engine.batch();
        for i in 0u8..10 {
            wb.put(Cf::Raft, &[i], b"e");
        }
        assert_eq!(wb.len(), 10);
        engine.write(wb, true).unwrap();
        let mut wb = engine.batch();
        wb.delete_range(Cf::Raft, &[2], &[8]);
        wb.delete(Cf::Raft, &[9]);
        engine.write(wb, true).unwrap();
    }
    let engine = open(&dir);
    let keys = collect(&engine, Cf::Raft, b"", b"");
    assert_eq!(keys, vec![vec![0], vec![1], vec![8]]);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _engine = open(&dir);
    let err = Engine::open(dir.path(), &EngineOptions::default()).unwrap_err();
    assert!(err.to_string().contains("open the data directory"), "{err}");
}

#[test]
fn column_families_open_with_their_memtable_options() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), &EngineOptions::default()).unwrap();
    drop(engine);
    // RocksDB records the options it opened with; the Raft column family's section must
    // name the prefix extractor, and only that one.
    let options = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("OPTIONS-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .last()
        .expect("an OPTIONS file");
    let section = |cf: &str| -> String {
        let start = options
            .find(&format!("[CFOptions \"{cf}\"]"))
            .unwrap_or_else(|| panic!("no {cf} section"));
        let rest = &options[start + 1..];
        rest[..rest.find("\n[CFOptions").unwrap_or(rest.len())].to_string()
    };
    let hint = "memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.8";
    assert!(section("raft").contains(hint), "{}", section("raft"));
    assert!(
        !section("default").contains(hint),
        "the data column family has no hint prefix"
    );
    // Small memtables for data and meta, and no in-place updates anywhere: with them on
    // any column family, RocksDB gives no snapshots at all (see `cf_base_options`).
    let data = section("default");
    assert!(data.contains("write_buffer_size=8388608"), "{data}");
    let meta = section("meta");
    assert!(meta.contains("write_buffer_size=4194304"), "{meta}");
    for cf in ["default", "raft", "meta"] {
        assert!(
            section(cf).contains("inplace_update_support=false"),
            "{cf}: {}",
            section(cf)
        );
    }
}
