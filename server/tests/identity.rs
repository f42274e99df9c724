//! One node id is one live process, and a node that served is never re-created from a
//! blank disk (issue 14): a wiped data directory and a copied one are both refused, with
//! a message that says what happened, while the cluster goes on serving.

mod common;

use std::time::Duration;

use common::*;

const EXIT: Duration = Duration::from_secs(30);

/// The value of `flag` on a node's command line.
fn flag(args: &[String], flag: &str) -> String {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} in {args:?}"));
    args[i + 1].clone()
}

async fn cluster_still_serves(cluster: &TestCluster, key: &[u8]) {
    let client = cluster.client_of(1);
    poll_until("the cluster takes a write", EXIT, || async {
        client.put(key, b"after").await.map_err(|s| s.to_string())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_disk_was_wiped_refuses_to_rejoin_as_new() {
    let _serial = serial().await;
    let mut cluster = TestCluster::start(3, ClusterOpts::default()).await;
    cluster.client().put(b"before", b"1").await.unwrap();
    cluster.kill9(3);
    let dir = cluster.node(3).dir.clone();
    std::fs::remove_dir_all(&dir).unwrap();
    cluster.restart(3);
    let status = cluster.node(3).wait_exit(EXIT).await;
    let log = cluster.node(3).log_tail(5);
    let status = status.unwrap_or_else(|| panic!("the wiped node 3 kept running:\n{log}"));
    assert!(!status.success(), "{status}");
    assert!(
        log.contains("wiped or replaced") && log.contains("Restore its data directory"),
        "{log}"
    );
    // `init` again must not hand it the initial ranges either.
    let init = cluster.client_of(1).init(4, 3).await;
    assert!(init.is_err_and(|s| s.code() == tonic::Code::AlreadyExists));
    assert!(
        !dir.join("db").exists()
            || cluster.node(3).log_text().matches("store started").count() == 1
    );
    cluster_still_serves(&cluster, b"after-wipe").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_copied_data_directory_is_refused_while_its_node_is_live() {
    let _serial = serial().await;
    let mut cluster = TestCluster::start(3, ClusterOpts::default()).await;
    cluster.client().put(b"before", b"1").await.unwrap();
    // A copy of node 2's data directory, taken while the process is frozen.
    let copy = cluster.root().join("node2-copy");
    let original = cluster.node(2).dir.clone();
    assert!(cluster.node(2).pause());
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&original)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cluster.node(2).resume());
    assert!(cp.success());
    let join = flag(cluster.node(2).args(), "--join");
    let log = cluster.root().join("node2-copy.log");
    let mut impostor = NodeProc::new(2, copy, log, &["--join".to_string(), join]);
    impostor.spawn();
    let status = impostor.wait_exit(EXIT).await;
    let text = impostor.log_tail(5);
    let status = status.unwrap_or_else(|| panic!("a second process ran as node 2:\n{text}"));
    assert!(!status.success(), "{status}");
    assert!(text.contains("already served by a live process"), "{text}");
    assert!(
        !impostor.log_text().contains("store started"),
        "the copy started its store:\n{text}"
    );
    // The real node 2 is untouched.
    assert!(cluster.node(2).is_running());
    cluster.wait_ready().await;
    cluster_still_serves(&cluster, b"after-copy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joining_node_with_an_id_already_in_use_is_refused() {
    let _serial = serial().await;
    let mut cluster = TestCluster::start(3, ClusterOpts::default()).await;
    // Node 3 is stopped: its id is still a member's (it holds replicas), so a fresh
    // process under that id, at another address, must not be admitted.
    cluster.node(3).kill9();
    let join = flag(cluster.node(1).args(), "--join");
    let dir = cluster.root().join("node3-again");
    let mut again = NodeProc::new(
        3,
        dir,
        cluster.root().join("node3-again.log"),
        &["--join".to_string(), join],
    );
    again.spawn();
    let status = again.wait_exit(EXIT).await;
    let text = again.log_tail(5);
    let status = status.unwrap_or_else(|| panic!("a second node 3 was not refused:\n{text}"));
    assert!(!status.success(), "{status}");
    // The members have had Raft traffic from node 3: they answer that it served, and the
    // blank process stops before asking to join (the Join refusal is the backstop).
    assert!(
        text.contains("node 3 has served in cluster") && text.contains("fresh --node-id"),
        "{text}"
    );
    assert!(
        !again.log_text().contains("store started"),
        "the refused node started a store:\n{text}"
    );
}
