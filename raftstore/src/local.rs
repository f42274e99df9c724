//! [`LocalCluster`]: several stores in one process, each on its own poller thread and
//! data directory, joined by a [`LocalTransport`]. It backs the demo, the benchmarks and
//! examples until the server and router land.
//!
//! Every node holds a replica of every range; ranges split as they grow. Routing is not
//! done here: the router crate's `Db` runs over a `LocalCluster` (it implements the
//! router's `NodeClient`), and the meta records the nodes produce are handed out through
//! [`LocalCluster::take_meta_updates`] for the router to publish to the meta range.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flotilla_engine::{Engine, EngineOptions};

use crate::config::StoreConfig;
use crate::error::Result;
use crate::metapb::{Epoch, MetaEntry, RangeDescriptor, Replica};
use crate::node::{MetaSink, Node, StoreMsg};
use crate::store::Store;
use crate::transport::LocalTransport;

/// `count` ranges covering the whole key space, split evenly (`keyspace::even_split_point`),
/// with no meta range (for tests of the store alone; a cluster uses
/// [`keyspace::initial_ranges`](crate::keyspace::initial_ranges)),
/// each replicated on nodes `1..=nodes` (replica id = `range_id * 100 + node_id`).
pub fn even_ranges(count: u64, nodes: u64) -> Vec<RangeDescriptor> {
    let count = count.clamp(1, crate::keyspace::MAX_INITIAL_RANGES);
    (0..count)
        .map(|i| {
            let bound = |j: u64| -> Vec<u8> {
                if j == 0 || j == count {
                    Vec::new()
                } else {
                    crate::keyspace::even_split_point(j, count)
                }
            };
            let range_id = i + 1;
            RangeDescriptor {
                range_id,
                start: bound(i),
                end: bound(i + 1),
                epoch: Some(Epoch {
                    version: 1,
                    conf_ver: 1,
                }),
                replicas: (1..=nodes)
                    .map(|n| Replica::voter(n, range_id * 100 + n))
                    .collect(),
                ..Default::default()
            }
        })
        .collect()
}

/// Several stores in one process.
pub struct LocalCluster {
    root: PathBuf,
    cfg: StoreConfig,
    transport: LocalTransport,
    nodes: HashMap<u64, Node>,
    ranges: Vec<RangeDescriptor>,
    meta_tx: tokio::sync::mpsc::UnboundedSender<Vec<MetaEntry>>,
    meta_rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Vec<MetaEntry>>>>,
}

impl LocalCluster {
    /// Bootstraps (if new) and starts nodes `1..=node_count` under `root` with `ranges`.
    pub fn start(
        root: &Path,
        node_count: u64,
        ranges: Vec<RangeDescriptor>,
        cfg: StoreConfig,
    ) -> Result<LocalCluster> {
        let (meta_tx, meta_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut cluster = LocalCluster {
            root: root.to_path_buf(),
            cfg,
            transport: LocalTransport::new(),
            nodes: HashMap::new(),
            ranges,
            meta_tx,
            meta_rx: std::sync::Mutex::new(Some(meta_rx)),
        };
        for node_id in 1..=node_count {
            cluster.start_node(node_id)?;
        }
        Ok(cluster)
    }

    fn start_node(&mut self, node_id: u64) -> Result<()> {
        let dir = self.root.join(format!("node-{node_id}"));
        let fresh = !dir.exists();
        let engine = Engine::open(&dir, &EngineOptions::default())?;
        if fresh {
            Store::bootstrap(&engine, node_id, &self.ranges)?;
        }
        let store = Store::open(node_id, engine, self.cfg.clone())?;
        self.transport
            .register_snapshots(node_id, store.snapshots().root().to_path_buf());
        let meta_tx = self.meta_tx.clone();
        let sink: MetaSink = Arc::new(move |entries| {
            let _ = meta_tx.send(entries);
        });
        let node = Node::start(store, Arc::new(self.transport.clone()), Some(sink));
        let mailbox = node.mailbox();
        self.transport.register(node_id, move |batch| {
            let _ = mailbox.send(StoreMsg::Raft(batch));
        });
        self.nodes.insert(node_id, node);
        Ok(())
    }

    /// The running nodes.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// The running node `node_id`, if any.
    pub fn node(&self, node_id: u64) -> Option<&Node> {
        self.nodes.get(&node_id)
    }

    /// The ranges the cluster was bootstrapped with.
    pub fn ranges(&self) -> &[RangeDescriptor] {
        &self.ranges
    }

    /// The meta records every node produces (once; later calls get `None`).
    pub fn take_meta_updates(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<Vec<MetaEntry>>> {
        self.meta_rx.lock().ok()?.take()
    }

    /// Stops every node.
    pub fn shutdown(self) {
        for (_, node) in self.nodes {
            node.stop();
        }
    }
}
