//! The address book: which network address reaches which node, and one gRPC channel per
//! node.
//!
//! Addresses come from three places, in order of precedence: `--peer ID=ADDR` pins (an
//! operator's override, for split-horizon networks and for tests that put a proxy on
//! each link), what a node answered when dialled at a `--join` address, and what other
//! nodes report knowing. Channels connect lazily and reconnect by themselves; a channel is
//! replaced when the node's address changes.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::proto::NodeAddress;
use crate::tls::dial::Dialer;

/// The metadata key naming the caller's cluster on node-to-node calls.
pub const CLUSTER_HEADER: &str = "flotilla-cluster-id";
/// The metadata key naming the calling node.
pub const FROM_NODE_HEADER: &str = "flotilla-from-node";
/// The metadata key giving the newest format the caller's binary reads (absent: from
/// before format versions, 1).
pub const VERSION_HEADER: &str = "flotilla-version";
/// The metadata key giving the cluster version the caller writes by (absent: 1). A callee
/// raises its own to it before it takes anything from the call.
pub const CLUSTER_VERSION_HEADER: &str = "flotilla-cluster-version";

/// The least time a node heard from before must be silent to be suspected down. Nodes
/// send each other a heartbeat batch every `liveness_interval_ticks` (200 ms by default).
pub const SUSPECT_AFTER: Duration = Duration::from_secs(2);

/// What this node knows of the others' addresses.
pub struct Peers {
    me: u64,
    my_address: String,
    pinned: HashMap<u64, String>,
    learned: RwLock<HashMap<u64, String>>,
    channels: Mutex<HashMap<u64, (String, Channel)>>,
    cluster_id: RwLock<Option<String>>,
    heard: Mutex<HashMap<u64, Instant>>,
    /// When each node last answered a `Hello` (discovery asks every node every round).
    answered: Mutex<HashMap<u64, Instant>>,
    suspect_after: Duration,
    /// The cluster's members, once known: addresses of other ids are not learned.
    members: RwLock<Option<Vec<u64>>>,
    /// How channels are dialed (TLS in secure mode).
    dialer: Dialer,
    /// The newest log format this node reads, stamped on its calls.
    binary_version: u32,
    /// The cluster version this node writes by, stamped on its calls.
    cluster_version: Option<flotilla_raftstore::ClusterVersion>,
}

impl Peers {
    /// The book of node `me`, reachable at `my_address`, with operator pins. A node silent
    /// for `suspect_after` (at least [`SUSPECT_AFTER`]) is suspected down: calls to it
    /// fail at once (as not sent) instead of waiting on a dead or partitioned link.
    pub fn new(
        me: u64,
        my_address: String,
        pinned: HashMap<u64, String>,
        suspect_after: Duration,
        dialer: Dialer,
    ) -> Peers {
        Peers {
            me,
            my_address,
            pinned,
            learned: RwLock::default(),
            channels: Mutex::default(),
            cluster_id: RwLock::default(),
            heard: Mutex::default(),
            answered: Mutex::default(),
            suspect_after: suspect_after.max(SUSPECT_AFTER),
            members: RwLock::default(),
            dialer,
            binary_version: flotilla_raftstore::BINARY_VERSION,
            cluster_version: None,
        }
    }

    /// The same book for a node that reads log formats up to `binary` (see
    /// `--binary-version`) and writes by `cluster`.
    pub fn with_versions(
        mut self,
        binary: u32,
        cluster: flotilla_raftstore::ClusterVersion,
    ) -> Peers {
        self.binary_version = binary;
        self.cluster_version = Some(cluster);
        self
    }

    /// The newest log format this node reads.
    pub fn binary_version(&self) -> u32 {
        self.binary_version
    }

    /// How this node dials other nodes.
    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    /// This node's id.
    pub fn me(&self) -> u64 {
        self.me
    }

    /// The address this node advertises.
    pub fn my_address(&self) -> &str {
        &self.my_address
    }

    /// The cluster this node belongs to, once bootstrapped.
    pub fn cluster_id(&self) -> Option<String> {
        self.cluster_id.read().clone()
    }

    /// Records the cluster id and its members (at bootstrap or startup).
    pub fn set_cluster(&self, id: &str, members: Vec<u64>) {
        *self.cluster_id.write() = Some(id.to_string());
        *self.members.write() = Some(members);
    }

    /// Adds `node` to the cluster's members (it joined: the meta range has its record),
    /// so its address may be learned.
    pub fn admit(&self, node: u64) {
        if let Some(members) = self.members.write().as_mut() {
            if !members.contains(&node) {
                members.push(node);
            }
        }
    }

    /// Records that `node` answered a `Hello` just now.
    pub fn answered(&self, node: u64) {
        self.answered.lock().insert(node, Instant::now());
    }

    /// The last time `node` was heard from (Raft traffic) or answered a `Hello`.
    pub fn last_contact(&self, node: u64) -> Option<Instant> {
        let heard = self.heard.lock().get(&node).copied();
        let answered = self.answered.lock().get(&node).copied();
        heard.max(answered)
    }

    /// True when an answer or a call claiming `cluster` may teach this node addresses:
    /// before bootstrap anything may; afterwards only the same cluster.
    pub fn same_cluster(&self, cluster: &str) -> bool {
        match self.cluster_id.read().as_deref() {
            None => true,
            Some(mine) => mine == cluster,
        }
    }

    /// The address to reach `node` at, if known.
    pub fn address(&self, node: u64) -> Option<String> {
        if node == self.me {
            return Some(self.my_address.clone());
        }
        self.pinned
            .get(&node)
            .cloned()
            .or_else(|| self.learned.read().get(&node).cloned())
    }

    /// Learns that `node` is reachable at `address` (pins win).
    pub fn learn(&self, node: u64, address: &str) {
        if node == 0 || node == self.me || address.is_empty() || self.pinned.contains_key(&node) {
            return;
        }
        if self
            .members
            .read()
            .as_ref()
            .is_some_and(|m| !m.contains(&node))
        {
            return;
        }
        let mut learned = self.learned.write();
        if learned.get(&node).map(String::as_str) != Some(address) {
            tracing::info!(node, address, "learned node address");
            learned.insert(node, address.to_string());
        }
    }

    /// Records that `node` was just heard from: a Raft frame arrived from it. (Only Raft
    /// traffic counts: a hello answered on another path says nothing of this one.)
    pub fn heard_from(&self, node: u64) {
        self.heard.lock().insert(node, Instant::now());
    }

    /// True when `node` was heard from once but not recently. A node never heard from is
    /// not suspected: the first call must be allowed to reach it.
    pub fn suspected(&self, node: u64) -> bool {
        node != self.me
            && self
                .heard
                .lock()
                .get(&node)
                .is_some_and(|t| t.elapsed() > self.suspect_after)
    }

    /// Every node known, this one included, by id.
    pub fn known(&self) -> Vec<NodeAddress> {
        let mut all: BTreeMap<u64, String> = self.learned.read().clone().into_iter().collect();
        all.extend(self.pinned.clone());
        all.insert(self.me, self.my_address.clone());
        all.into_iter()
            .map(|(node_id, address)| NodeAddress { node_id, address })
            .collect()
    }

    /// A channel to `node`, or `None` when its address is unknown.
    pub fn channel(&self, node: u64) -> Option<Channel> {
        let address = self.address(node)?;
        let mut channels = self.channels.lock();
        if let Some((a, ch)) = channels.get(&node) {
            if *a == address {
                return Some(ch.clone());
            }
        }
        let ch = self.dialer.channel(&address).ok()?;
        channels.insert(node, (address, ch.clone()));
        Some(ch)
    }

    /// Says `Hello` over `channel` as this node, with process nonce `nonce` (0: a probe,
    /// which claims nothing; see `discovery::probe`).
    pub async fn hello(
        &self,
        channel: Channel,
        nonce: u64,
    ) -> Result<crate::proto::HelloResponse, tonic::Status> {
        let mut req = tonic::Request::new(crate::proto::HelloRequest {
            node_id: self.me,
            address: self.my_address.clone(),
            cluster_id: self.cluster_id().unwrap_or_default(),
            process_nonce: nonce,
            version: self.binary_version,
        });
        req.set_timeout(Duration::from_secs(2));
        self.stamp(&mut req);
        let mut client = crate::proto::internal_client::InternalClient::new(channel);
        Ok(client.hello(req).await?.into_inner())
    }

    /// Adds this node's identity to an outgoing node-to-node call.
    pub fn stamp<T>(&self, req: &mut tonic::Request<T>) {
        let md = req.metadata_mut();
        if let Some(id) = self
            .cluster_id()
            .and_then(|c| MetadataValue::try_from(c).ok())
        {
            md.insert(CLUSTER_HEADER, id);
        }
        md.insert(FROM_NODE_HEADER, MetadataValue::from(self.me));
        md.insert(VERSION_HEADER, MetadataValue::from(self.binary_version));
        if let Some(v) = &self.cluster_version {
            md.insert(CLUSTER_VERSION_HEADER, MetadataValue::from(v.get()));
        }
    }
}

/// A lazily connecting plaintext channel to `address` (host:port), as
/// [`Dialer::channel`] makes them (for insecure clients and tests).
pub fn channel_to(address: &str) -> Result<Channel, tonic::transport::Error> {
    Dialer::insecure().channel(address)
}

/// The caller's node id and cluster id from a node-to-node call's metadata.
pub fn caller<T>(req: &tonic::Request<T>) -> (Option<u64>, Option<String>) {
    let md = req.metadata();
    let node = md
        .get(FROM_NODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok());
    let cluster = md
        .get(CLUSTER_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (node, cluster)
}

/// The newest format the caller's binary reads, and the cluster version it writes by,
/// from a node-to-node call's metadata (absent: 1).
pub fn caller_versions<T>(req: &tonic::Request<T>) -> (u32, u32) {
    let read = |key| {
        req.metadata()
            .get(key)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
            .max(flotilla_raftstore::version::V1_SINGLE)
    };
    (read(VERSION_HEADER), read(CLUSTER_VERSION_HEADER))
}
