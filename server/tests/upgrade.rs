//! A rolling upgrade across a log format change (`raftstore/src/version.rs`), with real
//! processes. Nodes posing as a binary of the first format (`--binary-version 1`) keep
//! the cluster at it while any of them remains; once every node runs the new binary the
//! cluster moves to the new format; from then on an older binary is refused, and says
//! why, and nothing written along the way is lost.

mod common;

mod upgrade {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use crate::common::*;
    use flotilla_server::client::Client;

    const POSE: &str = "--binary-version";
    const OLD: &str = "1";
    const NEW: u32 = flotilla_raftstore::BINARY_VERSION;
    const SETTLE: Duration = Duration::from_secs(60);

    fn key(i: u64) -> Vec<u8> {
        spread_key("upgrade", i)
    }

    /// The cluster version in the settings and each node's recorded binary version, as
    /// `flotilla nodes` reports them.
    async fn versions(client: &Client) -> Result<(u32, BTreeMap<u64, u32>), String> {
        let view = client
            .nodes(false)
            .await
            .map_err(|s| format!("nodes: {}", s.message()))?;
        let nodes = view.nodes.iter().map(|n| (n.node_id, n.version)).collect();
        Ok((view.cluster_version, nodes))
    }

    /// The format version each of `ids` writes by (its `flotilla_cluster_version`).
    async fn written_by(c: &TestCluster, ids: &[u64]) -> Vec<Option<u64>> {
        let mut out = Vec::new();
        for &id in ids {
            out.push(metric(&c.nodes_http(id), "flotilla_cluster_version").await);
        }
        out
    }

    /// Writes applied inside batched entries, summed over the running nodes of `ids`.
    async fn batched(c: &TestCluster, ids: &[u64]) -> u64 {
        let mut sum = 0;
        for &id in ids {
            sum += metric(&c.nodes_http(id), "flotilla_writes_batched_total")
                .await
                .expect("the node's metrics");
        }
        sum
    }

    /// A node-to-node call as node 1 of `cluster` would make it, with a binary that reads
    /// formats up to `version`, writing by cluster version `writes`.
    async fn call_as(
        c: &TestCluster,
        to: u64,
        cluster: &str,
        version: &str,
        writes: &str,
    ) -> tonic::Status {
        use flotilla_server::proto::internal_client::InternalClient;
        use flotilla_server::proto::NodeRangesRequest;
        let channel = flotilla_server::peers::channel_to(&c.endpoint(to)).expect("channel");
        let mut req = tonic::Request::new(NodeRangesRequest::default());
        let md = req.metadata_mut();
        md.insert("flotilla-cluster-id", cluster.parse().unwrap());
        md.insert("flotilla-from-node", "1".parse().unwrap());
        md.insert("flotilla-version", version.parse().unwrap());
        md.insert("flotilla-cluster-version", writes.parse().unwrap());
        match InternalClient::new(channel).node_ranges(req).await {
            Ok(_) => tonic::Status::ok(""),
            Err(s) => s,
        }
    }

    /// Writes keys `range` through node 1, each acknowledged.
    async fn write(c: &TestCluster, range: std::ops::Range<u64>) {
        let keys: Vec<u64> = range.collect();
        let endpoint = c.endpoint(1);
        run_parallel(keys, 16, move |i| {
            let client = client_for(std::slice::from_ref(&endpoint));
            async move {
                let v = format!("v{i}");
                poll_until("an acknowledged put", SETTLE, || async {
                    put_with_deadline(&client, 0, &key(i), v.as_bytes(), Duration::from_secs(5))
                        .await
                        .map_err(|s| format!("put {i}: {s}"))
                })
                .await;
                Ok(())
            }
        })
        .await
        .expect("writes");
    }

    /// Restarts node `id` as the new binary (or, `old`, posing as the old one).
    async fn restart_as(c: &mut TestCluster, id: u64, old: bool) {
        if c.node(id).is_running() {
            c.terminate(id).await;
        }
        let args = c.node(id).args_mut();
        if let Some(i) = args.iter().position(|a| a == POSE) {
            args.drain(i..i + 2);
        }
        if old {
            args.extend([POSE.to_string(), OLD.to_string()]);
        }
        c.restart(id);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_format_moves_once_every_node_reads_it_and_older_binaries_are_refused_after() {
        let _serial = serial().await;
        let opts = ClusterOpts {
            extra_args: vec![POSE.to_string(), OLD.to_string()],
            ..ClusterOpts::ranges(4)
        };
        let mut c = TestCluster::start(3, opts).await;
        let client = c.client();
        write(&c, 0..50).await;
        let all_old = BTreeMap::from([(1, 1), (2, 1), (3, 1)]);
        poll_until("every node's record at version 1", SETTLE, || async {
            match versions(&client).await? {
                (1, v) if v == all_old => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;

        // A node takes nothing from a caller at a newer cluster version than it writes by
        // before it has raised its own; one whose binary cannot read that version refuses
        // the call, and stops.
        let cluster_id = client.status().await.expect("status").cluster_id;
        let refused = call_as(&c, 3, &cluster_id, "2", "2").await;
        assert_eq!(
            refused.code(),
            tonic::Code::FailedPrecondition,
            "{refused:?}"
        );
        assert!(
            refused.message().contains("runs at format version 2"),
            "{refused:?}"
        );
        c.node(3)
            .wait_exit(SETTLE)
            .await
            .expect("a node asked to go past its binary's format stops");
        c.restart(3);
        c.wait_ready().await;

        // A rolling upgrade: nodes 1 and 2, one at a time, with writes between.
        for id in [1, 2] {
            restart_as(&mut c, id, false).await;
            c.wait_ready().await;
            poll_until("the upgraded node's record", SETTLE, || async {
                let (_, v) = versions(&client).await?;
                (v.get(&id) == Some(&NEW))
                    .then_some(())
                    .ok_or(format!("{v:?}"))
            })
            .await;
            write(&c, 50 * id..50 * id + 50).await;
        }
        // Node 3 still reads only the old format: the cluster stays at it.
        let (cluster, records) = versions(&client).await.expect("versions");
        assert_eq!(records, BTreeMap::from([(1, NEW), (2, NEW), (3, 1)]));
        assert_eq!(
            cluster, 1,
            "the cluster moved on while node 3 runs the old binary"
        );
        assert_eq!(written_by(&c, &[1, 2, 3]).await, vec![Some(1); 3]);
        assert_eq!(
            batched(&c, &[1, 2, 3]).await,
            0,
            "a batched entry was written while node 3 could not read it"
        );

        // The last node: now every node reads the new format, and all of them move.
        restart_as(&mut c, 3, false).await;
        c.wait_ready().await;
        poll_until("every node writing the new format", SETTLE, || async {
            let by = written_by(&c, &[1, 2, 3]).await;
            let (cluster, _) = versions(&client).await?;
            match (cluster, by.iter().all(|v| *v == Some(NEW as u64))) {
                (v, true) if v == NEW => Ok(()),
                _ => Err(format!("settings at {cluster}, nodes at {by:?}")),
            }
        })
        .await;
        write(&c, 150..400).await;
        assert!(
            batched(&c, &[1, 2, 3]).await > 0,
            "no write was batched after the cluster moved to batched entries"
        );
        // A call from a binary of the old format is refused now, with the reason; one from
        // this binary is not.
        let refused = call_as(&c, 2, &cluster_id, OLD, OLD).await;
        assert_eq!(
            refused.code(),
            tonic::Code::FailedPrecondition,
            "{refused:?}"
        );
        assert!(
            refused.message().contains("reads format versions up to 1"),
            "{refused:?}"
        );
        let accepted = call_as(&c, 2, &cluster_id, &NEW.to_string(), &NEW.to_string()).await;
        assert_eq!(accepted.code(), tonic::Code::Ok, "{accepted:?}");

        // Back to the old binary on node 3: its disk says the cluster moved on.
        restart_as(&mut c, 3, true).await;
        let status = c
            .node(3)
            .wait_exit(SETTLE)
            .await
            .expect("a node older than the cluster's format stops");
        assert!(!status.success());
        let log = c.node(3).log_text();
        assert!(
            log.contains("runs at format version 2") && log.contains("newer binary"),
            "node 3 did not say why it stopped:\n{}",
            c.node(3).log_tail(20)
        );

        // Node 3 on the new binary again: everything written is there.
        restart_as(&mut c, 3, false).await;
        c.wait_ready().await;
        for i in 0..400 {
            let want = format!("v{i}").into_bytes();
            let got = get_eventually(&client, &key(i), SETTLE)
                .await
                .expect("read");
            assert_eq!(got, Some(want), "key {i}");
        }

        // A new node with an older binary is not admitted.
        let id = c.add_node_with(1, &[POSE, OLD]);
        c.node(id)
            .wait_exit(SETTLE)
            .await
            .expect("an old binary that asks to join stops");
        let log = c.node(id).log_text();
        assert!(
            log.contains("reads format versions up to 1"),
            "node {id} did not say why it stopped:\n{}",
            c.node(id).log_tail(20)
        );
    }
}
