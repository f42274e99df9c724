//! Multi-process placement: real `flotilla` processes keep every range at its replication
//! factor while nodes die, join, return and are decommissioned, with writers running and
//! every acknowledged write checked at the end.

mod common;

mod placement {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::common::*;
    use flotilla_raftstore::keyspace::META_RANGE_ID;
    use flotilla_raftstore::metapb::ReplicaRole;
    use flotilla_server::client::Client;
    use tonic::Code;

    /// How long placement may take to settle after an event (the dead timeout, a few
    /// rounds, small snapshots), with room for a loaded machine.
    const SETTLE: Duration = Duration::from_secs(120);
    /// The dead-node timeout the tests run with.
    const DEAD_SECS: &str = "4";

    /// Every range's replica nodes, from the leaders' descriptors; `Err` while some range
    /// is not a plain set of `factor` voters on distinct nodes of `allowed`.
    async fn placed(
        client: &Client,
        factor: usize,
        allowed: &[u64],
    ) -> Result<BTreeMap<u64, Vec<u64>>, String> {
        let ranges = client
            .ranges()
            .await
            .map_err(|s| format!("ranges: {}", s.message()))?
            .ranges;
        let mut out = BTreeMap::new();
        for info in ranges {
            let Some(d) = info.descriptor else { continue };
            let nodes: Vec<u64> = d.replicas.iter().map(|r| r.node_id).collect();
            let distinct: BTreeSet<u64> = nodes.iter().copied().collect();
            let voters = d.replicas.iter().all(|r| r.role() == ReplicaRole::Voter);
            if info.leader_node == 0 || !voters || nodes.len() != factor || distinct.len() != factor
            {
                return Err(format!(
                    "range {} has {:?} (leader {})",
                    d.range_id, d.replicas, info.leader_node
                ));
            }
            if let Some(n) = nodes.iter().find(|n| !allowed.contains(n)) {
                return Err(format!(
                    "range {} still has a replica on node {n}: {nodes:?}",
                    d.range_id
                ));
            }
            out.insert(d.range_id, nodes);
        }
        Ok(out)
    }

    /// Polls until [`placed`] holds; returns the placement.
    async fn wait_placed(
        client: &Client,
        factor: usize,
        allowed: &[u64],
        what: &str,
    ) -> BTreeMap<u64, Vec<u64>> {
        poll_until(what, SETTLE, || placed(client, factor, allowed)).await
    }

    /// The node whose replica of the meta range leads (placement runs there).
    async fn meta_leader(client: &Client) -> u64 {
        poll_until("the meta range's leader", SETTLE, || async {
            let ranges = client.ranges().await.map_err(|s| s.to_string())?.ranges;
            let meta = ranges.iter().find(|r| {
                r.descriptor
                    .as_ref()
                    .is_some_and(|d| d.range_id == META_RANGE_ID)
            });
            match meta.map(|r| r.leader_node) {
                Some(n) if n != 0 => Ok(n),
                other => Err(format!("meta leader {other:?}")),
            }
        })
        .await
    }

    /// Replicas per node that `nodes` reports, for the nodes in `among`.
    async fn replica_counts(
        client: &Client,
        among: &[u64],
    ) -> Result<BTreeMap<u64, (u32, u32)>, String> {
        let view = client
            .nodes(true)
            .await
            .map_err(|s| s.message().to_string())?;
        Ok(view
            .nodes
            .iter()
            .filter(|n| among.contains(&n.node_id))
            .map(|n| (n.node_id, (n.replicas, n.leaders)))
            .collect())
    }

    /// Polls until every replica node `id` holds is one its range's current descriptor
    /// lists: replicas removed while it was away are gone.
    async fn wait_no_stale_replicas(cluster: &mut TestCluster, id: u64) {
        let client = cluster.client();
        let http = cluster.node(id).http.clone();
        poll_until(
            &format!("node {id}'s stale replicas removed"),
            SETTLE,
            || async {
                let ranges = client.ranges().await.map_err(|s| s.to_string())?.ranges;
                let current: BTreeMap<u64, Vec<u64>> = ranges
                    .iter()
                    .filter_map(|r| r.descriptor.as_ref())
                    .map(|d| (d.range_id, d.replicas.iter().map(|r| r.node_id).collect()))
                    .collect();
                let held = metric(&http, "flotilla_replicas")
                    .await
                    .ok_or("no metrics yet")?;
                let should = current.values().filter(|nodes| nodes.contains(&id)).count() as u64;
                if held == should {
                    Ok(())
                } else {
                    Err(format!(
                        "node {id} holds {held} replicas, ranges list it in {should}"
                    ))
                }
            },
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn five_nodes_keep_three_replicas_through_a_death_a_join_and_a_decommission() {
        let _serial = serial().await;
        let opts = ClusterOpts {
            extra_args: vec!["--dead-node-timeout".into(), DEAD_SECS.into()],
            ..ClusterOpts::ranges(8)
        };
        let mut cluster = TestCluster::start(5, opts).await;
        let client = cluster.client();
        let all: Vec<u64> = (1..=5).collect();
        let initial =
            wait_placed(&client, 3, &all, "three voters per range on distinct nodes").await;
        assert_eq!(initial.len(), 9, "the meta range and 8 user ranges");

        // The node running placement (the meta range's leaseholder) dies under load: the
        // meta range and every other range it held get a new replica elsewhere.
        let victim = meta_leader(&client).await;
        let others: Vec<u64> = all.iter().copied().filter(|n| *n != victim).collect();
        let survivor = others[0];
        let writers = Writers::start(Arc::new(cluster.client_without(&[victim])), 4, "w");
        writers.wait_acked(50, SETTLE).await;
        cluster.kill9(victim);
        let died = Instant::now();
        let client = cluster.client_without(&[victim]);
        let after_death =
            wait_placed(&client, 3, &others, "every range back to 3 live voters").await;
        eprintln!(
            "replication restored {:?} after node {victim} died (dead timeout {DEAD_SECS} s)",
            died.elapsed()
        );
        assert!(after_death.values().all(|nodes| !nodes.contains(&victim)));
        let acked = writers.acked_count();
        writers.wait_acked(acked + 50, SETTLE).await;

        // A sixth node joins through a survivor, finds every range (the meta range moved),
        // and receives its share of replicas and leaders, with no failed request.
        let failed_before = writers.failed_count();
        let sixth = cluster.add_node(survivor);
        let mut live = others.clone();
        live.push(sixth);
        poll_until("the sixth node to get its share", SETTLE, || async {
            let counts = replica_counts(&client, &live).await?;
            let (min, max) = (
                counts.values().map(|c| c.0).min().unwrap_or(0),
                counts.values().map(|c| c.0).max().unwrap_or(0),
            );
            let leaders = || counts.values().map(|c| c.1);
            let leader_spread = leaders().max().unwrap_or(0) - leaders().min().unwrap_or(0);
            let mine = counts.get(&sixth).copied().unwrap_or_default();
            // Leaders are placed too (placement records preferred leaders): the new node
            // leads its share, and no node leads more than two ranges above another.
            if mine.0 >= 2 && mine.1 >= 1 && max - min <= 3 && leader_spread <= 2 {
                Ok(())
            } else {
                Err(format!("replicas, leaders per node: {counts:?}"))
            }
        })
        .await;
        let sixth_client = client_for(&[cluster.endpoint(sixth)]);
        sixth_client
            .put(b"through-the-sixth", b"v")
            .await
            .expect("a put through the new node");
        assert_eq!(
            sixth_client.get(b"through-the-sixth").await.expect("get"),
            Some(b"v".to_vec())
        );
        assert_eq!(
            writers.failed_count(),
            failed_before,
            "a request failed while the sixth node joined"
        );

        // The dead node returns: its replicas removed meanwhile are garbage-collected.
        cluster.restart(victim);
        wait_no_stale_replicas(&mut cluster, victim).await;
        // Its router started from the meta range's shape at init, which has moved since.
        let returned = client_for(&[cluster.endpoint(victim)]);
        poll_until("a put through the returned node", SETTLE, || async {
            returned
                .put(b"through-the-returned", b"v")
                .await
                .map_err(|s| s.message().to_string())
        })
        .await;

        // Decommission a node under load: no failed request, it ends empty, and stopping
        // it changes nothing.
        let leaving = others[1];
        let failed_before = writers.failed_count();
        client
            .decommission(leaving, true)
            .await
            .expect("decommission");
        poll_until("the decommissioned node to be empty", SETTLE, || async {
            let view = client
                .nodes(true)
                .await
                .map_err(|s| s.message().to_string())?;
            let row = view
                .nodes
                .iter()
                .find(|n| n.node_id == leaving)
                .ok_or("no row")?;
            if row.liveness == "decommissioned" && row.replicas == 0 && row.leases == 0 {
                Ok(())
            } else {
                Err(format!("{row:?}"))
            }
        })
        .await;
        assert_eq!(
            writers.failed_count(),
            failed_before,
            "a request failed during the decommission"
        );
        let mut staying: Vec<u64> = (1..=sixth).filter(|n| *n != leaving).collect();
        staying.sort_unstable();
        cluster.terminate(leaving).await;
        let client = cluster.client_without(&[leaving]);
        wait_placed(&client, 3, &staying, "every range on the remaining nodes").await;
        let acked = writers.acked_count();
        writers.wait_acked(acked + 50, SETTLE).await;
        let acked = writers.stop().await;
        verify_acked(Arc::new(client), &acked, SETTLE)
            .await
            .expect("every acknowledged write is readable");

        // Exactly one node runs placement, and it says so on /metrics and /status.
        let https: Vec<String> = staying
            .iter()
            .map(|n| cluster.node(*n).http.clone())
            .collect();
        let runner = poll_until("one placement node", SETTLE, || async {
            let mut active = Vec::new();
            for h in &https {
                if metric(h, "flotilla_placement_active").await == Some(1) {
                    active.push(h.clone());
                }
            }
            if active.len() == 1 {
                Ok(active.remove(0))
            } else {
                Err(format!("active on {active:?}"))
            }
        })
        .await;
        assert_eq!(
            metric(&runner, "flotilla_ranges_under_replicated").await,
            Some(0)
        );
        assert_eq!(
            metric(&runner, "flotilla_ranges_unavailable").await,
            Some(0)
        );
        let page = http_get(&runner, "/status").await.expect("/status");
        assert!(
            page.contains("placement runs here: 0 ranges under-replicated"),
            "{page}"
        );
        let mut moves = 0;
        for h in &https {
            moves += metric(h, "flotilla_replica_moves_done").await.unwrap_or(0);
        }
        // Restarted nodes forget their counts; the placement nodes of this test made at
        // least the moves off the decommissioned node.
        assert!(moves >= 1, "no move counted");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_single_node_grows_to_three_and_bad_membership_requests_are_refused() {
        let _serial = serial().await;
        let root = tempfile::Builder::new()
            .prefix("flotilla-grow-")
            .tempdir()
            .expect("temp dir");
        let node = |id: u64, extra: &[String]| {
            NodeProc::new(
                id,
                root.path().join(format!("node{id}")),
                root.path().join(format!("node{id}.log")),
                extra,
            )
        };
        let mut first = node(1, &["--initial-ranges".into(), "4".into()]);
        first.spawn();
        let client = client_for(&[first.listen.clone()]);
        // Alone, at the default factor 3, every range is under-replicated and says so.
        let view = poll_until("the single node to serve", SETTLE, || async {
            let v = client
                .nodes(true)
                .await
                .map_err(|s| s.message().to_string())?;
            if v.under_replicated == 5 {
                Ok(v)
            } else {
                Err(format!("{v:?}"))
            }
        })
        .await;
        assert_eq!(view.replication_factor, 3);
        client
            .put(b"before-growth", b"1")
            .await
            .expect("put on one node");

        // The two new nodes have no --node-id: the cluster allocates them 2 and 3 (in
        // either order: they ask at the same time).
        let join = vec!["--join".to_string(), first.listen.clone()];
        let mut second = node(2, &join).without_node_id();
        let mut third = node(3, &join).without_node_id();
        second.spawn();
        third.spawn();
        let client = client_for(&[
            first.listen.clone(),
            second.listen.clone(),
            third.listen.clone(),
        ]);
        wait_placed(&client, 3, &[1, 2, 3], "every range on all three nodes").await;
        let view = client.nodes(true).await.expect("nodes");
        assert_eq!(
            (view.under_replicated, view.unavailable),
            (0, 0),
            "{view:?}"
        );
        assert!(view.nodes.iter().all(|n| n.liveness == "live"), "{view:?}");
        assert_eq!(
            client.get(b"before-growth").await.expect("get"),
            Some(b"1".to_vec())
        );
        let ids = |v: &flotilla_server::proto::NodesResponse| -> BTreeMap<String, u64> {
            v.nodes
                .iter()
                .map(|n| (n.address.clone(), n.node_id))
                .collect()
        };
        let allocated = ids(&view);
        assert_eq!(
            allocated.values().copied().collect::<BTreeSet<u64>>(),
            BTreeSet::from([1, 2, 3]),
            "{view:?}"
        );
        // A restart without --node-id keeps the id its data directory recorded: the
        // restarted process itself answers under it, and no other id appears.
        let third_id = allocated[&third.listen];
        third.kill9();
        third.spawn();
        let restarted = client_for(&[third.listen.clone()]);
        let v = poll_until("the restarted node to answer", SETTLE, || async {
            restarted
                .nodes(false)
                .await
                .map_err(|s| s.message().to_string())
        })
        .await;
        assert_eq!(
            v.answered_by, third_id,
            "the restarted node took another id: {v:?}"
        );
        assert_eq!(ids(&v), allocated, "{v:?}");

        // Bad input: each refused with a clear error, nothing changed.
        let unknown = client
            .decommission(99, true)
            .await
            .expect_err("unknown node");
        assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
        assert!(
            unknown.message().contains("node 99 is not a member"),
            "{}",
            unknown.message()
        );
        let last = client
            .decommission(3, true)
            .await
            .expect_err("too few nodes");
        assert_eq!(last.code(), Code::FailedPrecondition, "{last:?}");
        assert!(
            last.message()
                .contains("fewer than the replication factor 3"),
            "{}",
            last.message()
        );
        for bad in [0, 8] {
            let e = client
                .set_replication_factor(bad)
                .await
                .expect_err("bad factor");
            assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
            assert!(
                e.message()
                    .contains(&format!("replication factor {bad} is out of range")),
                "{}",
                e.message()
            );
        }
        let view = client.nodes(true).await.expect("nodes");
        assert!(
            view.nodes.iter().all(|n| n.liveness == "live"),
            "a refused request changed something: {view:?}"
        );

        // A lower factor is carried out, and a raise above the node count is accepted
        // with the shortfall shown as under-replicated.
        client.set_replication_factor(2).await.expect("factor 2");
        wait_placed(&client, 2, &[1, 2, 3], "every range down to two voters").await;
        let view = client.set_replication_factor(5).await.expect("factor 5");
        assert_eq!(view.replication_factor, 5);
        poll_until(
            "ranges shown under-replicated at factor 5",
            SETTLE,
            || async {
                let v = client
                    .nodes(true)
                    .await
                    .map_err(|s| s.message().to_string())?;
                if v.under_replicated == 5 {
                    Ok(())
                } else {
                    Err(format!("{} under-replicated", v.under_replicated))
                }
            },
        )
        .await;
        wait_placed(
            &client,
            3,
            &[1, 2, 3],
            "every range back on all three nodes",
        )
        .await;
        for p in [&mut first, &mut second, &mut third] {
            p.kill9();
        }
    }
}
