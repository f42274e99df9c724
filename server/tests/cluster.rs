//! Multi-process tests of a Flotilla cluster: real `flotilla` processes on loopback,
//! driven through the gRPC client and the command line.
//!
//! They cover serving every key from every node, failover after `kill -9` of the busiest
//! leader without losing an acknowledged write, a network partition (an isolated node
//! accepts no write, and converges after the heal), a whole-cluster crash, bad requests,
//! data directories of another node or cluster, clean shutdown on SIGTERM, and the CLI.
//!
//! The harness (`common`) runs these one at a time; every wait polls with a deadline.

mod common;

/// The tests sit in a module so that `cargo test --workspace -- cluster::` selects them.
mod cluster {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::common::*;
    use flotilla_server::client::Client;
    use flotilla_server::proto::{PutResponse, ScanRequest};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tonic::Code;

    /// Generous liveness deadline for a cluster to recover from a failure.
    const RECOVERY: Duration = Duration::from_secs(30);

    type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

    /// `n` pairs named `name`, spread over the key space, with distinct values.
    fn pairs(name: &str, n: u64) -> Pairs {
        (0..n)
            .map(|i| {
                (
                    spread_key(name, i),
                    format!("{name}-value-{i}").into_bytes(),
                )
            })
            .collect()
    }

    /// Puts every pair through `client`, 32 at a time; every put must succeed.
    async fn put_all(client: Arc<Client>, pairs: &Pairs) {
        run_parallel(pairs.clone(), 32, move |(key, value)| {
            let client = client.clone();
            async move {
                // An outcome-unknown answer is repeated: each key has this one writer, which
                // waits for each put, so a repeated put changes nothing. (A node killed a
                // moment ago still looks like the leader to its peers, and through the test's
                // proxies a dead node accepts connections and drops them: calls routed there
                // end of unknown outcome until a new leader is known.) Every other failure
                // fails the test.
                let mut last = String::new();
                let deadline = std::time::Instant::now() + RECOVERY;
                while std::time::Instant::now() < deadline {
                    match tokio::time::timeout(CALL_TIMEOUT, client.put(&key, &value)).await {
                        Ok(Ok(())) => return Ok(()),
                        Ok(Err(s)) if s.code() == Code::Unknown => {
                            last = s.message().to_string();
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Ok(Err(s)) => {
                            return Err(format!(
                                "put {}: {:?}: {}",
                                show(&key),
                                s.code(),
                                s.message()
                            ))
                        }
                        Err(_) => return Err(format!("put {}: no answer", show(&key))),
                    }
                }
                Err(format!(
                    "put {}: outcome unknown until the deadline, last: {last}",
                    show(&key)
                ))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("a put on a healthy cluster failed: {e}"));
    }

    /// Every pair in the key space, through `client`, page by page.
    async fn scan_all(client: &Client) -> Pairs {
        let mut all = Vec::new();
        let mut start = Vec::new();
        loop {
            let page = client.scan(&start, b"", 3000).await.expect("scan");
            let Some((last, _)) = page.last() else {
                return all;
            };
            start = last.clone();
            start.push(0);
            all.extend(page);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_nodes_serve_every_key_from_every_node() {
        let _serial = serial().await;
        let cluster = TestCluster::start(3, ClusterOpts::ranges(4)).await;
        assert_eq!(
            cluster.range_count().await,
            5,
            "4 user ranges and the meta range"
        );
        let written = pairs("every", 10_000);
        put_all(Arc::new(cluster.client()), &written).await;
        for id in cluster.ids() {
            verify_acked(Arc::new(cluster.client_of(id)), &written, RECOVERY)
                .await
                .unwrap_or_else(|e| panic!("reading through node {id} alone: {e}"));
        }
        let mut expected = written.clone();
        expected.sort();
        let scanned = scan_all(&cluster.client_of(2)).await;
        assert_eq!(
            scanned.len(),
            expected.len(),
            "the scan returns every key once"
        );
        if let Some(i) = (0..expected.len()).find(|&i| scanned[i] != expected[i]) {
            panic!(
                "scan differs at {i}: got {}, expected {}",
                show(&scanned[i].0),
                show(&expected[i].0)
            );
        }
        // The server's own maximum page (limit 0) holds them all as well.
        let page = cluster
            .client_of(3)
            .scan(b"", b"", 0)
            .await
            .expect("scan with limit 0");
        assert_eq!(
            page, expected,
            "a limit-0 scan returns up to the server maximum (10,000)"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killing_the_busiest_leader_loses_no_acknowledged_write() {
        let _serial = serial().await;
        let mut cluster = TestCluster::start(3, ClusterOpts::ranges(8)).await;
        let ranges = cluster.range_count().await;
        let writers = Writers::start(Arc::new(cluster.client()), 4, "busy");
        writers.wait_acked(200, RECOVERY).await;

        let counts = cluster.leader_counts().await;
        let (&victim, &led) = counts
            .iter()
            .max_by_key(|(_, n)| **n)
            .expect("leader counts");
        assert!(led > 0, "some node leads a range: {counts:?}");
        let at_kill = writers.acked_count();
        cluster.kill9(victim);
        eprintln!(
            "killed node {victim} (leading {led} of {ranges} ranges) after {at_kill} acked writes"
        );
        writers
            .wait_acked(at_kill + 100, Duration::from_secs(20))
            .await;
        wait_led_without(&cluster, victim).await;
        let more = writers.acked_count() + 200;
        writers.wait_acked(more, RECOVERY).await;
        let failed = writers.failed_count();
        let acked = writers.stop().await;
        eprintln!("{} writes acknowledged, {failed} failed", acked.len());

        cluster.restart(victim);
        wait_caught_up(&cluster, victim, ranges).await;
        for id in cluster.ids() {
            verify_acked(Arc::new(cluster.client_of(id)), &acked, RECOVERY)
                .await
                .unwrap_or_else(|e| panic!("reading through node {id}: {e}"));
        }
        // With another node down, the restarted one is half of every quorum: a new leader
        // needs its vote, and a write commits only once it has the whole log.
        let other = cluster.ids().into_iter().find(|&id| id != victim).unwrap();
        cluster.kill9(other);
        let via_victim = Arc::new(cluster.client_of(victim));
        verify_acked(via_victim.clone(), &acked, RECOVERY)
            .await
            .unwrap_or_else(|e| {
                panic!("reading through the restarted node {victim} with node {other} down: {e}")
            });
        put_all(via_victim, &pairs("after-restart", 50)).await;
        // A client of every node skips the dead one: a call that cannot connect is tried on
        // the next endpoint, so none fails.
        let client = cluster.client();
        for i in 0..6u64 {
            let key = spread_key("failover", i);
            let r = tokio::time::timeout(CALL_TIMEOUT, client.put(&key, b"x"))
                .await
                .expect("put answers");
            r.unwrap_or_else(|s| {
                panic!("put {i} with node {other} down failed instead of trying another endpoint: {s:?}")
            });
        }
    }

    /// Waits until every range has a leader other than `dead`, as the other nodes see it.
    async fn wait_led_without(cluster: &TestCluster, dead: u64) {
        let client = cluster.client_without(&[dead]);
        poll_until(
            &format!("every range led by a node other than {dead}"),
            Duration::from_secs(20),
            || async {
                let r = client.ranges().await.map_err(|s| s.to_string())?;
                let stale: Vec<u64> = r
                    .ranges
                    .iter()
                    .filter(|i| i.leader_node == 0 || i.leader_node == dead)
                    .filter_map(|i| i.descriptor.as_ref().map(|d| d.range_id))
                    .collect();
                if stale.is_empty() {
                    Ok(())
                } else {
                    Err(format!("ranges {stale:?} still without a live leader"))
                }
            },
        )
        .await;
    }

    /// Waits until `status` shows node `id` live with a replica of each of the `ranges`.
    async fn wait_caught_up(cluster: &TestCluster, id: u64, ranges: usize) {
        let client = cluster.client();
        poll_until(
            &format!("node {id} live with {ranges} replicas"),
            READY_TIMEOUT,
            || async {
                let status = client.status().await.map_err(|s| s.to_string())?;
                match status.nodes.iter().find(|n| n.node_id == id) {
                    Some(n) if n.live && n.replicas as usize == ranges => Ok(()),
                    other => Err(format!("node {id}: {other:?}")),
                }
            },
        )
        .await;
    }

    /// Puts of `pairs` through `client` (the majority side of a partition): each key is
    /// retried until acknowledged (each key has this one writer, so a repeated put
    /// changes nothing), all within `RECOVERY`.
    async fn write_majority(client: Arc<Client>, pairs: &Pairs) {
        let n = client.endpoints().len();
        run_parallel(pairs.clone(), 8, move |(key, value)| {
            let client = client.clone();
            async move {
                let deadline = std::time::Instant::now() + RECOVERY;
                let mut i = 0;
                loop {
                    i += 1;
                    let r = put_with_deadline(&client, i % n, &key, &value, Duration::from_secs(5))
                        .await;
                    match r {
                        Ok(()) => return Ok(()),
                        Err(s) if std::time::Instant::now() >= deadline => {
                            return Err(format!(
                                "put {} never succeeded: {:?}: {}",
                                show(&key),
                                s.code(),
                                s.message()
                            ))
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|e| panic!("the majority side stopped taking writes: {e}"));
    }

    /// Puts `iso-k` keys through the isolated node's client, a few at a time; returns each
    /// key with its outcome.
    async fn write_isolated(
        client: Arc<Client>,
        n: u64,
    ) -> Vec<(Vec<u8>, Result<(), tonic::Status>)> {
        let mut tasks = Vec::new();
        for i in 0..n {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let key = spread_key("iso-k", i);
                // Long enough for the gateway's router to give its final answer.
                let r =
                    put_with_deadline(&client, 0, &key, b"refused?", Duration::from_secs(30)).await;
                (key, r)
            }));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("isolated writer"));
        }
        out
    }

    /// `init` sent to every node at once still gives one cluster: every node reports the
    /// same cluster id, and a later `init` answers ALREADY_EXISTS.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_inits_make_one_cluster() {
        let _serial = serial().await;
        let opts = ClusterOpts {
            init_through: vec![3, 2, 1],
            ..ClusterOpts::ranges(2)
        };
        let cluster = TestCluster::start(3, opts).await;
        let mut ids = Vec::new();
        for id in cluster.ids() {
            let status = cluster.client_of(id).status().await.expect("status");
            assert_eq!(
                status.nodes.iter().filter(|n| n.live).count(),
                3,
                "node {id} sees every node live"
            );
            ids.push(status.cluster_id);
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "every node in one cluster: {ids:?}");
        let again = cluster
            .client_of(2)
            .init(2, 3)
            .await
            .expect_err("a second init");
        assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
        put_all(Arc::new(cluster.client()), &pairs("one-cluster", 20)).await;
    }

    /// SIGTERM drains the node first: its ranges move to other nodes before it stops, so
    /// writers on the other nodes see no failure at all, and the node exits 0 having
    /// given up every leadership.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigterm_of_a_leader_drains_it_without_failed_writes() {
        let _serial = serial().await;
        let mut cluster = TestCluster::start(3, ClusterOpts::ranges(8)).await;
        let counts = cluster.leader_counts().await;
        let (&victim, &led) = counts
            .iter()
            .max_by_key(|(_, n)| **n)
            .expect("leader counts");
        assert!(led > 0, "some node leads a range: {counts:?}");
        let writers = Writers::start(Arc::new(cluster.client_without(&[victim])), 4, "drain");
        writers.wait_acked(200, RECOVERY).await;
        let status = cluster.terminate(victim).await;
        assert_eq!(
            status.code(),
            Some(0),
            "SIGTERM ends node {victim} with exit code 0"
        );
        let log = std::fs::read_to_string(cluster.log_of(victim)).unwrap_or_default();
        assert!(
            log.contains("draining"),
            "node {victim} did not drain before stopping:\n{log}"
        );
        assert!(
            !log.contains("still leading"),
            "node {victim} stopped before handing every range over:\n{log}"
        );
        let more = writers.acked_count() + 200;
        writers.wait_acked(more, RECOVERY).await;
        let failed = writers.failed_count();
        let acked = writers.stop().await;
        eprintln!("{} writes acknowledged, {failed} failed, around the drain of node {victim} (led {led})", acked.len());
        assert_eq!(failed, 0, "writes failed while node {victim} drained");
        verify_acked(
            Arc::new(cluster.client_without(&[victim])),
            &acked,
            RECOVERY,
        )
        .await
        .expect("acknowledged writes");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_isolated_node_accepts_no_writes_and_converges_after_heal() {
        let _serial = serial().await;
        let mut cluster = TestCluster::start(3, ClusterOpts::ranges(4)).await;
        let before = pairs("before", 200);
        put_all(Arc::new(cluster.client()), &before).await;
        let node3 = Arc::new(cluster.client_of(3));
        // Node 3's router now knows every range and its leader.
        verify_acked(node3.clone(), &before, RECOVERY)
            .await
            .expect("reads through node 3 before the partition");

        cluster.isolate(3);
        let during = pairs("during", 100);
        let majority = Arc::new(cluster.client_without(&[3]));
        let (_, refused) = tokio::join!(
            write_majority(majority, &during),
            write_isolated(node3.clone(), 8)
        );
        for (key, outcome) in &refused {
            assert!(
                outcome.is_err(),
                "put {} through the isolated node 3 was acknowledged",
                show(key)
            );
        }

        cluster.heal();
        poll_until(
            "a put through node 3 after the heal",
            Duration::from_secs(60),
            || {
                let node3 = node3.clone();
                async move {
                    let r =
                        put_with_deadline(&node3, 0, b"heal-probe", b"ok", Duration::from_secs(5))
                            .await;
                    r.map_err(|s| format!("{:?}: {}", s.code(), s.message()))
                }
            },
        )
        .await;
        verify_acked(node3.clone(), &during, RECOVERY)
            .await
            .expect("writes of the partition through node 3");
        verify_acked(node3.clone(), &before, RECOVERY)
            .await
            .expect("writes before the partition through node 3");

        let definite: Vec<&Vec<u8>> = refused
            .iter()
            .filter(|(_, r)| r.as_ref().is_err_and(definitely_not_applied))
            .map(|(k, _)| k)
            .collect();
        let codes: Vec<String> = refused
            .iter()
            .map(|(_, r)| format!("{:?}", r.as_ref().err().map(|s| s.code())))
            .collect();
        eprintln!(
            "isolated puts: {} refused for certain, outcomes {codes:?}",
            definite.len()
        );
        // The isolated gateway gives up on silent nodes at once, so most refusals are
        // definite (UNAVAILABLE), not deadlines.
        assert!(
            !definite.is_empty(),
            "no put through the isolated node was refused for certain: {codes:?}"
        );
        for id in cluster.ids() {
            let client = cluster.client_of(id);
            for key in &definite {
                let got = get_eventually(&client, key, RECOVERY).await.expect("get");
                assert_eq!(
                    got,
                    None,
                    "put {} was refused during the partition but node {id} has it",
                    show(key)
                );
            }
        }
        // Node 3 has caught up: with node 1 gone, no write commits without it.
        cluster.kill9(1);
        put_all(node3.clone(), &pairs("after-heal", 50)).await;
        verify_acked(node3, &during, RECOVERY)
            .await
            .expect("writes of the partition through node 3 with node 1 down");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn all_nodes_killed_and_restarted_lose_nothing() {
        let _serial = serial().await;
        let mut cluster = TestCluster::start(3, ClusterOpts::ranges(4)).await;
        let writers = Writers::start(Arc::new(cluster.client()), 4, "crash");
        writers.wait_acked(300, RECOVERY).await;
        for id in cluster.ids() {
            cluster.kill9(id);
        }
        let acked = writers.stop().await;
        eprintln!("{} writes acknowledged before the crash", acked.len());
        // Two of three come back first: a node still down does not stop a majority.
        cluster.restart(1);
        cluster.restart(2);
        let majority = Arc::new(cluster.client_without(&[3]));
        verify_acked(majority.clone(), &acked, RECOVERY)
            .await
            .expect("acknowledged writes, node 3 still down");
        put_all(majority, &pairs("node-3-down", 50)).await;
        cluster.restart(3);
        cluster.wait_ready().await;
        verify_acked(Arc::new(cluster.client()), &acked, RECOVERY)
            .await
            .expect("every acknowledged write survives");
        // And the cluster takes writes again.
        put_all(Arc::new(cluster.client()), &pairs("after-crash", 50)).await;
    }

    /// Asserts `r` failed with INVALID_ARGUMENT and a message mentioning `word`.
    fn expect_invalid<T: std::fmt::Debug>(what: &str, r: Result<T, tonic::Status>, word: &str) {
        match r {
            Err(s) => {
                assert_eq!(s.code(), Code::InvalidArgument, "{what}: {s:?}");
                assert!(
                    s.message().contains(word),
                    "{what}: the message should mention {word:?}: {}",
                    s.message()
                );
            }
            Ok(v) => panic!("{what} succeeded: {v:?}"),
        }
    }

    /// A message whose field 1 has the wrong wire type for every Kv request.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Bogus {
        #[prost(uint64, tag = "1")]
        key: u64,
    }

    /// Sends `Bogus` to Kv.Put on `endpoint` as a raw gRPC call.
    async fn undecodable_put(endpoint: &str) -> Result<PutResponse, tonic::Status> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        let codec: tonic::codec::ProstCodec<Bogus, PutResponse> =
            tonic::codec::ProstCodec::default();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/flotilla.v1.Kv/Put");
        grpc.unary(tonic::Request::new(Bogus { key: 42 }), path, codec)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Writes garbage to a gRPC port; the server must close the connection.
    async fn garbage_connection(endpoint: &str) {
        let mut stream = tokio::net::TcpStream::connect(endpoint)
            .await
            .expect("connect");
        let mut garbage = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        garbage.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        let _ = stream.write_all(&garbage).await;
        let mut buf = [0u8; 4096];
        let closed = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "the server kept a connection of garbage open"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_requests_get_clear_errors_and_the_server_keeps_serving() {
        let _serial = serial().await;
        let cluster = TestCluster::start(3, ClusterOpts::ranges(2)).await;
        let c = cluster.client_of(1);
        expect_invalid("put of an empty key", c.put(b"", b"v").await, "empty");
        expect_invalid("get of an empty key", c.get(b"").await, "empty");
        expect_invalid("delete of an empty key", c.delete(b"").await, "empty");
        expect_invalid(
            "put of a 9000-byte key",
            c.put(&[b'k'; 9000], b"v").await,
            "max_key_size",
        );
        expect_invalid(
            "get of a 9000-byte key",
            c.get(&[b'k'; 9000]).await,
            "max_key_size",
        );
        expect_invalid(
            "put of an 8192-byte key",
            c.put(&[b'k'; 8192], b"v").await,
            "max_key_size",
        );
        let longest = vec![b'l'; 8191];
        c.put(&longest, b"longest")
            .await
            .expect("the longest key (8191 bytes) is accepted");
        assert_eq!(
            c.get(&longest).await.expect("get"),
            Some(b"longest".to_vec())
        );

        let big = vec![7u8; 8 << 20];
        c.put(b"big", &big)
            .await
            .expect("a value of exactly max_value_size is accepted");
        assert!(
            c.get(b"big").await.expect("get big") == Some(big),
            "the 8 MiB value reads back intact"
        );
        expect_invalid(
            "put of 8 MiB + 1",
            c.put(b"too-big", &vec![1u8; (8 << 20) + 1]).await,
            "max_value_size",
        );
        match c.put(b"huge", &vec![2u8; 20 << 20]).await {
            Ok(()) => panic!("a 20 MiB put was accepted"),
            Err(s) => eprintln!("20 MiB put refused with {:?}: {}", s.code(), s.message()),
        }
        let mut kv = c.kv_at(0);
        let scan = kv
            .scan(ScanRequest {
                limit: 1_000_000,
                ..Default::default()
            })
            .await;
        expect_invalid("scan with limit 1,000,000", scan, "limit");
        expect_invalid(
            "scan whose end is before its start",
            c.scan(b"b", b"a", 10).await,
            "end",
        );

        garbage_connection(&cluster.endpoint(2)).await;
        let bogus = undecodable_put(&cluster.endpoint(3)).await;
        assert!(bogus.is_err(), "an undecodable Put was accepted: {bogus:?}");
        eprintln!(
            "undecodable put refused: {:?}",
            bogus.err().map(|s| s.code())
        );

        for id in cluster.ids() {
            let c = cluster.client_of(id);
            let key = format!("still-serving-{id}");
            c.put(key.as_bytes(), b"yes")
                .await
                .unwrap_or_else(|s| panic!("put through node {id}: {s}"));
            assert_eq!(
                c.get(key.as_bytes()).await.expect("get"),
                Some(b"yes".to_vec()),
                "node {id}"
            );
            assert_eq!(
                c.get(b"too-big").await.expect("get"),
                None,
                "a refused value was not stored"
            );
            assert_eq!(
                c.get(b"huge").await.expect("get"),
                None,
                "a refused value was not stored"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn node_refuses_a_foreign_data_dir() {
        let _serial = serial().await;
        let mut cluster = TestCluster::start(3, ClusterOpts::ranges(1)).await;
        let root = cluster.root().to_path_buf();
        let join = vec!["--join".to_string(), cluster.endpoints().join(",")];

        // Node 2's directory, started as node 3.
        let status = cluster.terminate(2).await;
        assert!(status.success(), "node 2 stopped cleanly: {status:?}");
        let dir2 = cluster.node(2).dir.clone();
        let mut imposter = NodeProc::new(3, dir2, log_path(&root, "imposter"), &join);
        imposter.spawn();
        let exit = imposter
            .wait_exit(RECOVERY)
            .await
            .expect("a node on another node's directory exits");
        assert!(!exit.success(), "exit status {exit:?}");
        assert!(
            imposter.log_text().contains("belongs to node"),
            "log:\n{}",
            imposter.log_text()
        );
        cluster.restart(2);

        // A single-node cluster's directory, started against this cluster.
        let dir = root.join("lone");
        let mut lone = NodeProc::new(1, dir.clone(), log_path(&root, "lone"), &[]);
        lone.spawn();
        let lone_client = client_for(&[lone.listen.clone()]);
        poll_until("the lone node to serve", READY_TIMEOUT, || async {
            lone_client.put(b"x", b"1").await.map_err(|s| s.to_string())
        })
        .await;
        let lone_cluster = lone_client.status().await.expect("status").cluster_id;
        assert!(lone.terminate(RECOVERY).await.success());
        let mut stray = NodeProc::new(1, dir, log_path(&root, "stray"), &join);
        stray.spawn();
        let exit = stray
            .wait_exit(RECOVERY)
            .await
            .expect("a node of another cluster exits");
        assert!(!exit.success(), "exit status {exit:?}");
        assert!(
            stray.log_text().contains("belongs to cluster"),
            "log:\n{}",
            stray.log_text()
        );
        assert!(
            stray.log_text().contains(&lone_cluster),
            "the message names the directory's cluster"
        );

        // The cluster is undisturbed.
        cluster.wait_ready().await;
        put_all(Arc::new(cluster.client()), &pairs("undisturbed", 20)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigterm_shuts_down_cleanly_and_restart_resumes() {
        let _serial = serial().await;
        let root = tempfile::tempdir().expect("temp dir");
        let mut node = NodeProc::new(
            1,
            root.path().join("data"),
            log_path(root.path(), "node1"),
            &[],
        );
        node.spawn();
        let client = Arc::new(client_for(&[node.listen.clone()]));
        poll_until("the node to serve", READY_TIMEOUT, || async {
            client.put(b"first", b"1").await.map_err(|s| s.to_string())
        })
        .await;
        let written = pairs("term", 300);
        put_all(client.clone(), &written).await;

        let status = node.terminate(RECOVERY).await;
        assert_eq!(
            status.code(),
            Some(0),
            "SIGTERM ends the node with exit code 0"
        );
        assert!(
            tokio::net::TcpStream::connect(&node.listen).await.is_err(),
            "nothing listens after the exit"
        );

        node.spawn();
        let client = Arc::new(client_for(&[node.listen.clone()]));
        verify_acked(client.clone(), &written, READY_TIMEOUT)
            .await
            .expect("every key after the restart");
        assert_eq!(
            client.get(b"first").await.expect("get"),
            Some(b"1".to_vec())
        );
        client
            .put(b"after", b"restart")
            .await
            .expect("writes after the restart");
    }

    /// `flotilla start` with no flags is refused (secure or not must be said); `flotilla
    /// start --insecure`: a single-node cluster on the default ports with its data in
    /// ./flotilla-data, metrics and status over HTTP, SIGTERM exits 0.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn start_insecure_without_other_flags_serves_a_single_node_cluster() {
        let _serial = serial().await;
        let cwd = tempfile::tempdir().expect("temp dir");
        let refused = std::process::Command::new(BIN)
            .arg("start")
            .current_dir(cwd.path())
            .output()
            .expect("run flotilla start");
        let err = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{err}");
        assert!(
            err.contains("--certs-dir DIR") && err.contains("--insecure"),
            "{err}"
        );
        assert!(
            !cwd.path().join("flotilla-data").exists(),
            "nothing created"
        );
        let log = std::fs::File::create(cwd.path().join("log")).expect("log file");
        let mut child = std::process::Command::new(BIN)
            .args(["start", "--insecure"])
            .current_dir(cwd.path())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn flotilla start");
        let client = Arc::new(client_for(&["127.0.0.1:6180".to_string()]));
        poll_until("the default node to serve", READY_TIMEOUT, || async {
            client.put(b"k", b"v").await.map_err(|s| s.to_string())
        })
        .await;
        assert_eq!(client.get(b"k").await.expect("get"), Some(b"v".to_vec()));
        assert!(
            cwd.path().join("flotilla-data").is_dir(),
            "data in ./flotilla-data"
        );
        let metrics = http_get("127.0.0.1:6181", "/metrics")
            .await
            .expect("GET /metrics");
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        let names = [
            "flotilla_node_id 1",
            "flotilla_commands_applied_total",
            "flotilla_leaders",
            "flotilla_lease_reads_total",
            "flotilla_kv_requests_total{method=\"put\",code=\"Ok\"}",
            "flotilla_kv_request_seconds_bucket",
        ];
        for name in names {
            assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
        }
        let status = http_get("127.0.0.1:6181", "/status")
            .await
            .expect("GET /status");
        assert!(
            status.contains("cluster ") && status.contains("leader"),
            "{status}"
        );
        let pid = child.id().to_string();
        assert!(std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success());
        let exited = poll_until("the node to exit after SIGTERM", RECOVERY, || {
            let done = child.try_wait().ok().flatten();
            async move { done.ok_or_else(|| "still running".to_string()) }
        })
        .await;
        assert_eq!(exited.code(), Some(0), "clean exit");
    }

    /// Runs a client command against `eps`; returns (exit code, stdout, stderr).
    fn cli(args: &[&str], eps: &str) -> (i32, String, String) {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--endpoints", eps]);
        let out = run_cli(&all);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (
            out.status.code().unwrap_or(-1),
            text(&out.stdout),
            text(&out.stderr),
        )
    }

    /// Rows of a table printed by `ranges` or `status`: lines starting with a number.
    fn rows(table: &str) -> Vec<&str> {
        table
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|w| w.parse::<u64>().is_ok())
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cli_commands_work() {
        let _serial = serial().await;
        let cluster = TestCluster::start(3, ClusterOpts::ranges(2)).await;
        let eps = cluster.endpoints().join(",");
        let eps = eps.as_str();

        let (code, _, err) = cli(&["kv", "put", "a", "1"], eps);
        assert_eq!(code, 0, "kv put: {err}");
        let (code, out, err) = cli(&["kv", "get", "a"], eps);
        assert_eq!((code, out.trim()), (0, "1"), "kv get: {err}");
        let (code, _, _) = cli(&["kv", "get", "missing"], eps);
        assert_eq!(code, 1, "kv get of an absent key exits 1");
        let (code, out, err) = cli(&["kv", "scan"], eps);
        assert_eq!(code, 0, "kv scan: {err}");
        assert!(out.lines().any(|l| l == "a\t1"), "kv scan lists a: {out}");
        let (code, _, err) = cli(&["kv", "put", "", "x"], eps);
        assert_eq!(code, 2, "an empty key is an error");
        assert!(err.starts_with("error: InvalidArgument"), "{err}");

        let (code, before, err) = cli(&["ranges"], eps);
        assert_eq!(code, 0, "ranges: {err}");
        let header = before.lines().next().unwrap_or_default();
        assert!(
            header.contains("range") && header.contains("leader"),
            "ranges prints a header: {before}"
        );
        let count = rows(&before).len();
        assert_eq!(count, 3, "2 user ranges and the meta range: {before}");
        let (code, out, err) = cli(&["split", "m"], eps);
        assert_eq!(code, 0, "split: {out}{err}");
        poll_until("the split in the range table", RECOVERY, || async {
            let (code, after, err) = cli(&["ranges"], eps);
            if code == 0 && rows(&after).len() == count + 1 {
                Ok(())
            } else {
                Err(format!("{code} {after}{err}"))
            }
        })
        .await;

        let (code, out, err) = cli(&["status"], eps);
        assert_eq!(code, 0, "status: {out}{err}");
        let live = rows(&out)
            .iter()
            .filter(|l| l.split_whitespace().nth(2) == Some("yes"))
            .count();
        assert_eq!(live, 3, "three live nodes: {out}");
    }
}
