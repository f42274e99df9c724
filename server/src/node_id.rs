//! Node ids: configured, remembered, or allocated by the cluster.
//!
//! A node's id is the one `--node-id` (or the file) gives; else the one its data directory
//! records; else, for a new node with `--join`, one the running cluster allocates; else 1
//! (a single-node cluster). The nodes named at `flotilla init` need a configured id: `init`
//! lists them by id before any cluster exists to allocate one.
//!
//! **Allocation** (`Internal.AllocateNodeId`, on any member of a running cluster) bumps a
//! counter in the meta range by compare-and-swap, to one above the highest of: the
//! counter, every node record's id and every id this member has had Raft traffic from. So
//! an id is never handed out twice, nor one that ever served (a replaced disk gets a new
//! id, as CockroachDB's and TiKV's nodes do). The new node records its id in its data
//! directory (synced) before it does anything else, so a restart keeps it; an id whose
//! node died before that is simply never used. It then joins under that id like any
//! other node (`cluster::join_via`). Configured ids and allocated ones share one space: a
//! configured id that collides with an allocated one is refused at join (`node_id_in_use`).

use std::time::Duration;

use flotilla_engine::Engine;
use flotilla_raftstore::cmd::{Command, Response};
use flotilla_raftstore::{Store, MAX_NODE_ID};
use tokio::runtime::Handle;
use tonic::{Code, Status};

use crate::cluster::read_nodes;
use crate::config::ServerConfig;
use crate::errors::{router_status, status, ServerError};
use crate::proto::{AllocateNodeIdRequest, AllocateNodeIdResponse};
use crate::server::State;

/// The meta-range key of the last node id handed out.
pub const LAST_NODE_ID_KEY: &[u8] = b"clast-node-id";

/// How often a node waiting for an id says so in its log (in attempts, one a second).
const WAIT_LOG_EVERY: u32 = 10;

/// Settles `cfg.node_id` before the node opens its store (see the module docs). Blocks
/// until a member allocates an id when one is needed.
pub fn resolve(
    cfg: &mut ServerConfig,
    engine: &Engine,
    runtime: &Handle,
) -> Result<(), ServerError> {
    if cfg.node_id_configured {
        // A directory of another node is refused by `Store::check_owner` next.
        return Ok(());
    }
    if let Some(id) = Store::owner(engine)? {
        tracing::info!(node = id, "node id from the data directory");
        cfg.node_id = id;
        return Ok(());
    }
    if cfg.join.is_empty() {
        return Ok(());
    }
    let id = runtime.block_on(allocate_via(cfg))?;
    Store::claim_owner(engine, id)?;
    cfg.node_id = id;
    Ok(())
}

/// Asks the `--join` addresses, in turn and once a second, for a node id, until one
/// allocates it. Only a refusal that no retry can change (or an address that cannot be
/// dialled at all) stops the node.
async fn allocate_via(cfg: &ServerConfig) -> Result<u64, ServerError> {
    let mut targets = Vec::with_capacity(cfg.join.len());
    for address in &cfg.join {
        let channel = cfg
            .dialer
            .channel(address)
            .map_err(|e| ServerError::Config(format!("--join {address}: {e}")))?;
        targets.push((
            address,
            crate::proto::internal_client::InternalClient::new(channel),
        ));
    }
    let mut attempt = 0u32;
    loop {
        let mut last = String::new();
        for (address, client) in &mut targets {
            let mut call = tonic::Request::new(AllocateNodeIdRequest {
                address: cfg.advertise.clone(),
            });
            call.set_timeout(Duration::from_secs(5));
            match client
                .allocate_node_id(call)
                .await
                .map(tonic::Response::into_inner)
            {
                Ok(resp) => {
                    tracing::info!(node = resp.node_id, cluster = %resp.cluster_id, via = %address, "the cluster allocated this node's id");
                    return Ok(resp.node_id);
                }
                Err(s) if s.code() == Code::ResourceExhausted => {
                    return Err(ServerError::NotAMember(format!(
                        "the node at {address} cannot allocate a node id: {}",
                        s.message()
                    )));
                }
                Err(s) => last = format!("{address}: {}", cfg.dialer.failure(&s)),
            }
        }
        if attempt.is_multiple_of(WAIT_LOG_EVERY) {
            tracing::warn!(
                join = ?cfg.join, last = %last,
                "no --node-id given: waiting for a running cluster at --join to allocate one \
                 (the nodes named at `flotilla init` need --node-id; a node without one joins a cluster already running)"
            );
        }
        attempt = attempt.wrapping_add(1);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `Internal.AllocateNodeId` on a member: the next unused id (see the module docs).
pub async fn allocate(
    state: &State,
    req: AllocateNodeIdRequest,
) -> Result<AllocateNodeIdResponse, Status> {
    // (Serving means the node has a cluster: otherwise `not_initialized`, and the new
    // node asks again.)
    let running = state.serving()?;
    let router = running.db.router();
    for _ in 0..16 {
        let (_, resp) = router
            .execute(
                LAST_NODE_ID_KEY,
                Command::Get {
                    key: LAST_NODE_ID_KEY.to_vec(),
                },
            )
            .await
            .map_err(router_status)?;
        let stored = match resp {
            Response::Value(v) => v,
            _ => None,
        };
        let last = stored
            .as_deref()
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_be_bytes);
        let records = read_nodes(&running).await.map_err(router_status)?;
        let floor = records
            .iter()
            .map(|n| n.node_id)
            .chain(state.members_seen())
            .chain([state.cfg.node_id])
            .max()
            .unwrap_or(0);
        let id = last.max(floor) + 1;
        if id > MAX_NODE_ID {
            return Err(status(
                Code::ResourceExhausted,
                "node_ids_exhausted",
                format!("every node id up to {MAX_NODE_ID} has been used; start the node with an unused --node-id"),
            ));
        }
        let cas = Command::CompareAndSwap {
            key: LAST_NODE_ID_KEY.to_vec(),
            expected: stored,
            new: Some(id.to_be_bytes().to_vec()),
        };
        let (_, resp) = router
            .execute(LAST_NODE_ID_KEY, cas)
            .await
            .map_err(router_status)?;
        if matches!(
            resp,
            Response::Swapped {
                succeeded: true,
                ..
            }
        ) {
            tracing::info!(node = id, address = %req.address, "allocated a node id");
            return Ok(AllocateNodeIdResponse {
                node_id: id,
                cluster_id: running.cluster_id.clone(),
            });
        }
    }
    Err(status(
        Code::Aborted,
        "retry",
        "node id allocation raced other allocations too often; try again".to_string(),
    ))
}
