//! Secure mode against real processes (issue 15): a cluster started with `--certs-dir`
//! serves clients that present a certificate of its CA (or a known token), over TLS on
//! gRPC and HTTP; everyone else is refused with an error that says why; nodes of another
//! CA or of the other mode cannot join; certificates rotate on SIGHUP under load.
//!
//! (The Jepsen-style workload in secure mode is `jepsen.rs::secure_cluster_kill_the_leaseholder`;
//! refusals at start are in `startup.rs`.)

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use flotilla_server::client::Client;
use flotilla_server::proto::internal_client::InternalClient;
use flotilla_server::proto::HelloRequest;
use flotilla_server::tls::create::{self, Paths, Validity};
use flotilla_server::tls::dial::Dialer;
use flotilla_server::tls::files;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tonic::Code;

/// A TLS dialer trusting `ca` that presents the pair `(cert, key)` as is (no checks of
/// its own, so that the node is the one to judge it).
fn raw_dialer(ca: &Path, pair: Option<(&Path, &Path)>) -> Dialer {
    let mut cfg = client_config(ca, pair);
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Dialer::secure(Arc::new(cfg), ca.parent().unwrap())
}

fn client_config(ca: &Path, pair: Option<(&Path, &Path)>) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("ca.crt") {
        roots.add(c.expect("a certificate")).expect("a root");
    }
    let builder = ClientConfig::builder_with_provider(flotilla_server::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    match pair {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
            let key = PrivateKeyDer::from_pem_file(key).expect("a key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("a usable pair")
        }
    }
}

/// Opens a TLS connection to `addr` trusting `ca`; the server certificate's serial, and
/// the connection (for an HTTP request).
async fn tls_connect(
    addr: &str,
    ca: &Path,
    alpn: &[u8],
) -> (
    String,
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) {
    let mut cfg = client_config(ca, None);
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .expect("a server certificate")[0]
        .clone();
    (files::describe(&leaf).expect("a certificate").serial, tls)
}

/// The serial of the certificate in `dir/node.crt`.
fn serial_of(dir: &Path) -> String {
    let der = CertificateDer::pem_file_iter(dir.join(files::NODE_CERT))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    files::describe(&der).unwrap().serial
}

/// Polls node `log` until it holds `text`.
async fn log_shows(what: &str, log: &Path, text: &str) {
    let (log, text) = (log.to_path_buf(), text.to_string());
    poll_until(what, Duration::from_secs(30), || {
        let (log, text) = (log.clone(), text.clone());
        async move {
            let s = std::fs::read_to_string(&log).unwrap_or_default();
            match s.contains(&text) {
                true => Ok(()),
                false => Err(format!("{} lacks {text:?}", log.display())),
            }
        }
    })
    .await
}

/// Presents `dir/client.NAME.crt` to node 1 as is: the call fails, and node 1's log
/// says `why`.
async fn presented_and_refused(
    cluster: &TestCluster,
    ca: &Path,
    dir: &Path,
    name: &str,
    why: &str,
) {
    let (cert, key) = (
        dir.join(files::client_cert(name)),
        dir.join(files::client_key(name)),
    );
    let dialer = raw_dialer(ca, Some((&cert, &key)));
    let s = Client::with_dialer(&[cluster.endpoint(1)], &dialer)
        .unwrap()
        .put(b"k", b"v")
        .await
        .expect_err(why);
    assert_ne!(s.code(), Code::Ok);
    log_shows(why, &cluster.log(1), why).await;
}

fn paths(dir: &Path, ca_key: &Path) -> Paths {
    Paths {
        certs_dir: dir.to_path_buf(),
        ca_key: ca_key.to_path_buf(),
        overwrite: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_cluster_admits_its_clients_and_refuses_everyone_else() {
    let _serial = serial().await;
    let cluster = TestCluster::start(3, ClusterOpts::ranges(4).secure()).await;
    let ca_dir = certs::ca_dir(cluster.root());
    let ca = ca_dir.join(files::CA_CERT);
    let ep = cluster.endpoint(1);

    // The cluster's own client (client.root.crt) reads and writes, and so does the CLI.
    let client = cluster.client();
    client
        .put(b"secure", b"yes")
        .await
        .expect("put with a client certificate");
    assert_eq!(client.get(b"secure").await.unwrap(), Some(b"yes".to_vec()));
    let ca_arg = ca_dir.display().to_string();
    let out = run_cli(&[
        "kv",
        "get",
        "secure",
        "--endpoints",
        &ep,
        "--certs-dir",
        &ca_arg,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes");

    // HTTP is TLS too: /ready answers over TLS.
    let http = cluster.nodes_http(1);
    let (_, mut conn) = tls_connect(&http, &ca, b"http/1.1").await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A plaintext client: refused; the CLI says to pass --certs-dir; the node names it.
    let plain = Client::new(std::slice::from_ref(&ep)).unwrap();
    let err = plain.put(b"k", b"v").await.expect_err("plaintext refused");
    assert_ne!(err.code(), Code::Ok);
    let out = run_cli(&["kv", "put", "k", "v", "--endpoints", &ep]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--certs-dir"), "{stderr}");
    log_shows(
        "the plaintext caller named",
        &cluster.log(1),
        "spoke plaintext",
    )
    .await;

    // TLS but no certificate and no token.
    let anonymous = Client::with_dialer(std::slice::from_ref(&ep), &raw_dialer(&ca, None)).unwrap();
    let s = anonymous.put(b"k", b"v").await.expect_err("no certificate");
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    assert!(
        s.message().contains("neither a client certificate"),
        "{s:?}"
    );

    // A client certificate of another CA.
    let other = cluster.root().join("other-ca");
    let other_key = other.join("ca.key");
    create::create_ca(&paths(&other, &other_key), Validity::days(5)).unwrap();
    create::create_client(&paths(&other, &other_key), "mallory", Validity::days(5)).unwrap();
    presented_and_refused(
        &cluster,
        &ca,
        &other,
        "mallory",
        "invalid peer certificate: UnknownIssuer",
    )
    .await;

    // An expired client certificate of the right CA: the CLI refuses to present it, and
    // a node refuses it when presented anyway.
    let expired_dir = cluster.root().join("expired");
    std::fs::create_dir_all(&expired_dir).unwrap();
    std::fs::copy(&ca, expired_dir.join(files::CA_CERT)).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let past = Validity {
        not_before: now - time::Duration::days(10),
        not_after: now - time::Duration::days(1),
    };
    create::create_client(&paths(&expired_dir, &ca_dir.join("ca.key")), "old", past).unwrap();
    let exp_arg = expired_dir.display().to_string();
    let out = run_cli(&[
        "kv",
        "get",
        "secure",
        "--endpoints",
        &ep,
        "--certs-dir",
        &exp_arg,
        "--user",
        "old",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("client.old.crt") && stderr.contains("expired on"),
        "{stderr}"
    );
    presented_and_refused(&cluster, &ca, &expired_dir, "old", "certificate expired").await;

    // A client certificate calling the Internal service.
    let root_client = raw_dialer(
        &ca,
        Some((
            &ca_dir.join("client.root.crt"),
            &ca_dir.join("client.root.key"),
        )),
    );
    let s = InternalClient::new(root_client.channel(&ep).unwrap())
        .hello(HelloRequest::default())
        .await
        .expect_err("a client calling Internal");
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(
        s.message().contains("answers nodes only") && s.message().contains("root"),
        "{s:?}"
    );

    // A node's certificate may speak only as its own node.
    let node2 = cluster.root().join("node2-certs");
    let as_node2 = raw_dialer(
        &ca,
        Some((&node2.join(files::NODE_CERT), &node2.join(files::NODE_KEY))),
    );
    let mut hello = tonic::Request::new(HelloRequest::default());
    hello.metadata_mut().insert(
        flotilla_server::peers::FROM_NODE_HEADER,
        "3".parse().unwrap(),
    );
    let s = InternalClient::new(as_node2.channel(&ep).unwrap())
        .hello(hello)
        .await
        .expect_err("node 2 claiming to be node 3");
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(s.message().contains("claims to be node 3"), "{s:?}");

    // Bearer tokens: added to every node's certs dir and picked up on SIGHUP.
    let token = create::create_token(&ca_dir, "ci-bot").unwrap();
    for id in cluster.ids() {
        let dir = cluster.root().join(format!("node{id}-certs"));
        std::fs::copy(ca_dir.join(files::TOKENS), dir.join(files::TOKENS)).unwrap();
        assert!(cluster.node_signal(id, "HUP"));
    }
    for id in cluster.ids() {
        log_shows("the tokens reloaded", &cluster.log(id), "SIGHUP: reloaded").await;
    }
    let with_token = Dialer::client(Some(&ca_dir), "nobody", Some(token)).unwrap();
    let by_token = Client::with_dialer(&cluster.endpoints(), &with_token).unwrap();
    by_token
        .put(b"token", b"ok")
        .await
        .expect("a put with a token");
    let wrong = Dialer::client(Some(&ca_dir), "nobody", Some("0".repeat(64))).unwrap();
    let s = Client::with_dialer(std::slice::from_ref(&ep), &wrong)
        .unwrap()
        .put(b"k", b"v")
        .await
        .expect_err("an unknown token");
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");

    // Admin operations log who asked.
    client
        .split(&spread_key("split-here", 1))
        .await
        .expect("split");
    let logs: String = cluster
        .ids()
        .iter()
        .map(|&id| std::fs::read_to_string(cluster.log(id)).unwrap())
        .collect();
    assert!(
        logs.contains("client root (certificate)"),
        "no admin line names the caller"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_another_ca_or_another_mode_cannot_join() {
    let _serial = serial().await;
    let mut cluster = TestCluster::start(3, ClusterOpts::ranges(2).secure()).await;
    let root = cluster.root().to_path_buf();
    let seed = cluster.endpoint(1);

    // A node whose certificates come from another CA.
    let other = root.join("other-ca");
    let other_key = other.join("ca.key");
    create::create_ca(&paths(&other, &other_key), Validity::days(5)).unwrap();
    let hosts = ["127.0.0.1".to_string()];
    create::create_node(&paths(&other, &other_key), 4, &hosts, Validity::days(5)).unwrap();
    let mut stranger = NodeProc::new(
        4,
        root.join("node4"),
        root.join("node4.log"),
        &[
            "--join".into(),
            seed.clone(),
            "--certs-dir".into(),
            other.display().to_string(),
        ],
    );
    stranger.spawn();
    log_shows("the stranger told why", &stranger.log, "not signed by").await;

    // A node started with --insecure.
    let mut plain = NodeProc::new(
        5,
        root.join("node5"),
        root.join("node5.log"),
        &["--join".into(), seed.clone()],
    );
    plain.spawn();
    log_shows(
        "the plaintext node told why",
        &plain.log,
        "start this process with --certs-dir",
    )
    .await;
    log_shows(
        "the secure node told why",
        &cluster.log(1),
        "spoke plaintext",
    )
    .await;
    let status = cluster.client().status().await.expect("status");
    assert_eq!(
        status.nodes.len(),
        3,
        "no stranger joined: {:?}",
        status.nodes
    );

    // A secure node joining an insecure one.
    let mut lone = NodeProc::new(6, root.join("node6"), root.join("node6.log"), &[]);
    lone.spawn();
    let secure_dir = certs::node_certs(&root, 7);
    let mut joiner = NodeProc::new(
        7,
        root.join("node7"),
        root.join("node7.log"),
        &[
            "--join".into(),
            lone.listen.clone(),
            "--certs-dir".into(),
            secure_dir.display().to_string(),
        ],
    );
    joiner.spawn();
    log_shows("the secure joiner told why", &joiner.log, "--insecure").await;
    assert!(cluster.node(1).is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_on_sighup_under_load() {
    let _serial = serial().await;
    let mut cluster = TestCluster::start(3, ClusterOpts::ranges(4).secure()).await;
    let root = cluster.root().to_path_buf();
    let ca = certs::ca_dir(&root).join(files::CA_CERT);
    let writers = Writers::start(Arc::new(cluster.client()), 4, "rot");
    writers.wait_acked(50, Duration::from_secs(30)).await;

    let mut new_serials = Vec::new();
    for id in cluster.ids() {
        let dir = certs::node_certs(&root, id);
        new_serials.push(serial_of(&dir));
        assert!(cluster.node(id).signal("HUP"));
    }
    for (i, id) in cluster.ids().into_iter().enumerate() {
        log_shows("the reload", &cluster.log(id), &new_serials[i]).await;
        let (serial, _) = tls_connect(&cluster.endpoint(id), &ca, b"h2").await;
        assert_eq!(
            serial, new_serials[i],
            "node {id} presents its new certificate"
        );
    }
    let before = writers.acked_count();
    writers
        .wait_acked(before + 100, Duration::from_secs(30))
        .await;

    // A broken pair is not taken: the node says so and keeps serving with the last one.
    let dir1 = root.join("node1-certs");
    std::fs::copy(
        root.join("node2-certs").join(files::NODE_KEY),
        dir1.join(files::NODE_KEY),
    )
    .unwrap();
    assert!(cluster.node(1).signal("HUP"));
    log_shows(
        "the refused reload",
        &cluster.log(1),
        "kept the certificate in use",
    )
    .await;
    let (serial, _) = tls_connect(&cluster.endpoint(1), &ca, b"h2").await;
    assert_eq!(serial, new_serials[0]);
    let before = writers.acked_count();
    writers
        .wait_acked(before + 50, Duration::from_secs(30))
        .await;

    let failed = writers.failed_count();
    let acked = writers.stop().await;
    assert_eq!(failed, 0, "no put failed while certificates rotated");
    verify_acked(Arc::new(cluster.client()), &acked, Duration::from_secs(60))
        .await
        .expect("every acknowledged write");
}
