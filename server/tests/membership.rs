//! Multi-process membership change: replicas of every range move between real
//! `flotilla` processes while writers run, through the Admin RPC and the CLI.

mod common;

mod membership {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::common::*;
    use flotilla_raftstore::metapb::ReplicaRole;

    const RECOVERY: Duration = Duration::from_secs(60);

    /// Polls node `http`'s metrics until it holds no replica.
    async fn wait_no_replicas(what: &str, http: String) {
        poll_until(what, RECOVERY, || {
            let http = http.clone();
            async move {
                match metric(&http, "flotilla_replicas").await {
                    Some(0) => Ok(()),
                    other => Err(format!("{other:?} replicas left")),
                }
            }
        })
        .await;
    }

    /// The range ids the cluster reports, the meta range included.
    async fn range_ids(cluster: &TestCluster) -> Vec<u64> {
        let ranges = cluster.client().ranges().await.expect("ranges").ranges;
        ranges
            .into_iter()
            .filter_map(|r| r.descriptor.map(|d| d.range_id))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replacing_a_replica_of_every_range_under_load_loses_no_acknowledged_write() {
        let _serial = serial().await;
        let mut cluster = TestCluster::start(4, ClusterOpts::ranges(4).manual_placement(4)).await;
        let client = cluster.client();
        let ids = range_ids(&cluster).await;
        assert_eq!(ids.len(), 5, "4 user ranges and the meta range: {ids:?}");
        // Make room on node 4: every range drops its replica there.
        for &id in &ids {
            let d = client
                .change_replicas(id, &[], &[4])
                .await
                .expect("remove node 4")
                .descriptor
                .unwrap();
            assert!(d.replica_on(4).is_none(), "range {id}: {d:?}");
        }
        wait_no_replicas(
            "node 4 to destroy its replicas",
            cluster.node(4).http.clone(),
        )
        .await;

        let writers = Writers::start(Arc::new(cluster.client_without(&[1])), 3, "move");
        writers.wait_acked(100, RECOVERY).await;
        // Replace node 1's replica of every range with one on node 4, while writes go on.
        for &id in &ids {
            let d = client
                .change_replicas(id, &[4], &[1])
                .await
                .expect("replace node 1 by node 4")
                .descriptor
                .unwrap();
            assert!(d.replica_on(1).is_none(), "range {id}: {d:?}");
            assert_eq!(
                d.replica_on(4).map(|r| r.role()),
                Some(ReplicaRole::Voter),
                "range {id}: {d:?}"
            );
        }
        let more = writers.acked_count() + 100;
        writers.wait_acked(more, RECOVERY).await;
        let failed = writers.failed_count();
        let acked = writers.stop().await;
        eprintln!(
            "{} writes acknowledged, {failed} failed while every range moved",
            acked.len()
        );
        wait_no_replicas(
            "node 1 to destroy its replicas",
            cluster.node(1).http.clone(),
        )
        .await;
        // Every acknowledged write reads back through each node that still serves, node 1
        // included (it holds no replica now: its router goes to the others).
        for id in cluster.ids() {
            verify_acked(Arc::new(cluster.client_of(id)), &acked, RECOVERY)
                .await
                .unwrap_or_else(|e| panic!("reading through node {id}: {e}"));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cli_changes_replicas_shows_roles_and_refuses_bad_changes() {
        let _serial = serial().await;
        // Placement off: it would restore the removed replica itself (the range is below
        // its factor), racing the CLI's own add.
        let opts = ClusterOpts {
            extra_args: vec!["--disable-placement".into()],
            ..ClusterOpts::ranges(1)
        };
        let cluster = TestCluster::start(3, opts).await;
        let ep = cluster.endpoint(1);
        let id = range_ids(&cluster).await.into_iter().max().unwrap();
        let out = run_cli(&[
            "change-replicas",
            &id.to_string(),
            "--remove",
            "3",
            "--endpoints",
            &ep,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("range {id}: replicas 1,2 ")),
            "{text}"
        );
        let out = run_cli(&[
            "change-replicas",
            &id.to_string(),
            "--add",
            "3",
            "-o",
            "json",
            "--endpoints",
            &ep,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let roles: Vec<&str> = json["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["voter", "voter", "voter"], "{json}");
        let id_text = id.to_string();
        for (args, expect) in [
            (vec!["--add", "9"], "node 9 is not a member of this cluster"),
            (vec!["--add", "2"], "already holds replica"),
            (vec!["--remove", "1,2"], "fewer than half"),
        ] {
            let mut cmd = vec!["change-replicas", id_text.as_str()];
            cmd.extend(args.iter().copied());
            cmd.extend(["--endpoints", &ep]);
            let out = run_cli(&cmd);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && err.contains(expect),
                "{cmd:?}: {err}"
            );
        }
        let ranges = run_cli(&["ranges", "--endpoints", &ep]);
        assert!(ranges.status.success());
    }
}
