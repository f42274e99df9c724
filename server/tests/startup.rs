//! What a node says when it cannot start, and what its probes say once it runs
//! (issue 14): every refusal names the flag or directory and the next step, before the
//! data directory is touched; `/health` and `/ready` tell a serving node from a waiting
//! one; `/metrics` carries the disk, RocksDB and process figures an alert needs.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Runs `flotilla start ARGS` to its end; returns the exit code and stderr.
fn start(args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("start").args(args);
    if !args.contains(&"--certs-dir") {
        cmd.arg("--insecure");
    }
    let out = cmd.output().expect("run flotilla start");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_startup_flags_are_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let port = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let base = ["--listen", &port, "--http-listen", &http, "--data-dir", d];

    let (code, err) = start(&[&base[..], &["--join", ""]].concat());
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--join \"\"") && err.contains("leave --join out"),
        "{err}"
    );

    let (code, err) = start(&[&base[..], &["--initial-ranges", "2000000"]].concat());
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--initial-ranges 2000000 is out of range"),
        "{err}"
    );

    let (code, err) = start(&[&base[..], &["--node-id", "0"]].concat());
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--node-id 0 is out of range") && err.contains("1..=16777215"),
        "{err}"
    );
    assert!(
        !data.exists(),
        "the data directory was created before the flags were checked"
    );

    std::fs::write(&data, b"not a directory").unwrap();
    let (code, err) = start(&base);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("exists and is not a directory"), "{err}");
}

/// Certificates a node cannot use are refused at start, naming the file and the
/// problem, before the data directory is touched (issue 15).
#[test]
fn bad_certificates_are_refused_at_start_naming_the_file() {
    use flotilla_server::tls::create::{self, Paths, Validity};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let port = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let certs = dir.path().join("certs");
    let c = certs.to_str().unwrap().to_string();
    let base = [
        "--listen",
        &port,
        "--http-listen",
        &http,
        "--data-dir",
        d,
        "--certs-dir",
        &c,
    ];
    let paths = |overwrite| Paths {
        certs_dir: certs.clone(),
        ca_key: dir.path().join("ca.key"),
        overwrite,
    };
    let refused = |args: &[&str], expect: &[&str]| {
        let (code, err) = start(args);
        assert_eq!(code, Some(1), "{err}");
        for e in expect {
            assert!(err.contains(e), "expected {e:?} in: {err}");
        }
    };

    // No certs dir at all; then one without a node certificate.
    refused(&base, &[&c, "is not a directory", "--insecure"]);
    create::create_ca(&paths(false), Validity::days(5)).unwrap();
    refused(&base, &["node.crt", "missing", "create-node"]);

    // Both modes at once.
    refused(
        &[&base[..], &["--insecure"]].concat(),
        &["--insecure", "choose one"],
    );

    // A key that is not the certificate's.
    let hosts = ["127.0.0.1".to_string()];
    create::create_node(&paths(false), 1, &hosts, Validity::days(5)).unwrap();
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(certs.join("ca.crt"), other.join("ca.crt")).unwrap();
    let other_paths = Paths {
        certs_dir: other.clone(),
        ca_key: dir.path().join("ca.key"),
        overwrite: false,
    };
    create::create_node(&other_paths, 1, &hosts, Validity::days(5)).unwrap();
    let good_key = std::fs::read(certs.join("node.key")).unwrap();
    std::fs::copy(other.join("node.key"), certs.join("node.key")).unwrap();
    refused(&base, &["node.key", "does not match the certificate"]);
    std::fs::write(certs.join("node.key"), b"garbage").unwrap();
    refused(&base, &["node.key", "no usable private key"]);
    std::fs::write(certs.join("node.key"), &good_key).unwrap();

    // A certificate that is not PEM.
    let good_cert = std::fs::read(certs.join("node.crt")).unwrap();
    std::fs::write(certs.join("node.crt"), b"hello").unwrap();
    refused(&base, &["node.crt", "holds no certificate"]);

    // Expired, and not yet valid.
    let now = time::OffsetDateTime::now_utc();
    let expired = Validity {
        not_before: now - time::Duration::days(9),
        not_after: now - time::Duration::days(2),
    };
    create::create_node(&paths(true), 1, &hosts, expired).unwrap();
    refused(&base, &["node.crt", "expired on"]);
    let future = Validity {
        not_before: now + time::Duration::days(2),
        not_after: now + time::Duration::days(9),
    };
    create::create_node(&paths(true), 1, &hosts, future).unwrap();
    refused(&base, &["node.crt", "is not valid until"]);

    // A client's certificate in the node's place.
    create::create_client(&paths(true), "alice", Validity::days(5)).unwrap();
    std::fs::copy(certs.join("client.alice.crt"), certs.join("node.crt")).unwrap();
    std::fs::copy(certs.join("client.alice.key"), certs.join("node.key")).unwrap();
    refused(&base, &["node.crt", "client's certificate", "alice"]);

    // A node certificate of another node id than --node-id.
    std::fs::write(certs.join("node.crt"), &good_cert).unwrap();
    std::fs::write(certs.join("node.key"), &good_key).unwrap();
    refused(
        &[&base[..], &["--node-id", "2"]].concat(),
        &["--node-id 2", "node 1's"],
    );

    // The CA itself unreadable.
    std::fs::remove_file(certs.join("ca.crt")).unwrap();
    refused(&base, &["ca.crt", "missing"]);
    assert!(
        !data.exists(),
        "the data directory was created before the certificates were checked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_one_data_directory_is_told_so() {
    let _serial = serial().await;
    let cluster = TestCluster::start(1, ClusterOpts::default()).await;
    let dir = cluster.root().join("node1");
    let (port, http) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let (code, err) = start(&[
        "--listen",
        &port,
        "--http-listen",
        &http,
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("is in use by another process") && err.contains("its own directory"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_tell_a_waiting_node_from_a_serving_one() {
    let _serial = serial().await;
    let root = tempfile::tempdir().unwrap();
    // A node told to join an address where nothing listens waits for `init`.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let extra = ["--join".to_string(), nowhere];
    let mut waiting = NodeProc::new(
        7,
        root.path().join("n7"),
        root.path().join("n7.log"),
        &extra,
    );
    waiting.spawn();
    let http = waiting.http.clone();
    let health = poll_until("/health answers", Duration::from_secs(20), || {
        http_get(&http, "/health")
    })
    .await;
    assert!(
        health.contains("200 OK") && health.contains("\"node_id\":7"),
        "{health}"
    );
    let ready = http_get(&http, "/ready").await.unwrap();
    assert!(
        ready.contains("503") && ready.contains("not initialized"),
        "{ready}"
    );
    waiting.kill9();

    let mut cluster = TestCluster::start(1, ClusterOpts::default()).await;
    let http = cluster.node(1).http.clone();
    let ready = poll_until("/ready", Duration::from_secs(20), || async {
        let r = http_get(&http, "/ready").await?;
        if r.contains("200 OK") {
            Ok(r)
        } else {
            Err(r)
        }
    })
    .await;
    assert!(ready.contains("\"ready\":true"), "{ready}");
    let metrics = http_get(&http, "/metrics").await.unwrap();
    for name in [
        "flotilla_disk_available_bytes",
        "flotilla_ballast_bytes 1048576",
        "flotilla_rocksdb_sst_files_bytes",
        "flotilla_snapshot_retries 0",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
}
