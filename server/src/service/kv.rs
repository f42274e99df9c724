//! The client service. Any node accepts these calls and routes them with its own router
//! (a gateway, as in CockroachDB): the caller need not know where ranges live.
//!
//! `Get`, `Put` and `Delete` are also reachable many at a time over one `Commands`
//! stream (`commands.rs`); both paths run the same `run_*` functions below, so a command
//! behaves, fails, is traced and is counted the same whichever way it came.

use std::sync::Arc;
use std::time::Instant;

use flotilla_router::Db;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::errors::{invalid, router_status};
use crate::gateway::Gateway;
use crate::proto::kv_server::Kv;
use crate::proto::*;
use crate::routes::Hint;
use crate::server::State;

/// `Kv` over a server's shared state.
#[derive(Clone)]
pub struct KvService(pub Arc<State>);

impl KvService {
    fn db(&self) -> Result<Arc<Db<Gateway>>, Status> {
        self.0.serving().map(|r| r.db.clone())
    }

    /// The routing hint for user key `key` when the range holding it is led on another
    /// node (this one forwarded the command): see `routes.rs`. `None` when this node
    /// leads it, or when the cache does not know enough to say.
    fn hint(&self, db: &Db<Gateway>, key: &[u8]) -> Option<Hint> {
        use flotilla_raftstore::keyspace::decode_user_key;
        let stored = flotilla_raftstore::keyspace::user_key(key);
        let router = db.router();
        let leader = router
            .cached_leader(&stored)
            .filter(|l| *l != self.0.peers.me())?;
        let (desc, _) = router.cached(&stored)?;
        let address = self.0.peers.address(leader)?;
        let start = decode_user_key(&desc.start)?.to_vec();
        let end = match desc.end.as_slice() {
            [] => None,
            e => Some(decode_user_key(e)?.to_vec()),
        };
        Some(Hint {
            leader: address,
            start,
            end,
        })
    }

    /// Counts the outcome and latency of one call (or streamed command) of `method`.
    pub(crate) fn record<T>(
        &self,
        method: &str,
        started: Instant,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        let code = result
            .as_ref()
            .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        self.0.requests.observe(method, code, started);
        result
    }

    // The operations `Get`, `Put` and `Delete` share with `Commands` (commands.rs): the
    // answer and the routing hint to return with it. The callers count them (`record`).

    pub(crate) async fn run_get(
        &self,
        req: GetRequest,
    ) -> Result<(GetResponse, Option<Hint>), Status> {
        let db = self.db()?;
        let key = req.key;
        let span = tracing::debug_span!("kv.get", key_len = key.len());
        let value = db.get(&key).instrument(span).await.map_err(router_status)?;
        let resp = GetResponse {
            found: value.is_some(),
            value: value.unwrap_or_default(),
        };
        Ok((resp, self.hint(&db, &key)))
    }

    pub(crate) async fn run_put(
        &self,
        req: PutRequest,
    ) -> Result<(PutResponse, Option<Hint>), Status> {
        let db = self.db()?;
        let PutRequest { key, value } = req;
        let span = tracing::debug_span!("kv.put", key_len = key.len(), value_len = value.len());
        db.put(&key, &value)
            .instrument(span)
            .await
            .map_err(router_status)?;
        Ok((PutResponse {}, self.hint(&db, &key)))
    }

    pub(crate) async fn run_delete(
        &self,
        req: DeleteRequest,
    ) -> Result<(DeleteResponse, Option<Hint>), Status> {
        let db = self.db()?;
        let key = req.key;
        let span = tracing::debug_span!("kv.delete", key_len = key.len());
        db.delete(&key)
            .instrument(span)
            .await
            .map_err(router_status)?;
        Ok((DeleteResponse {}, self.hint(&db, &key)))
    }
}

/// A unary answer, with its routing hint in the metadata (see `routes.rs`).
fn unary<T>((body, hint): (T, Option<Hint>)) -> Response<T> {
    let mut resp = Response::new(body);
    if let Some(h) = hint {
        crate::routes::attach(resp.metadata_mut(), &h.leader, &h.start, h.end.as_deref());
    }
    resp
}

#[tonic::async_trait]
impl Kv for KvService {
    type CommandsStream = super::commands::ResultFrames;

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let started = Instant::now();
        let result = self.run_get(req.into_inner()).await.map(unary);
        self.record("get", started, result)
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let started = Instant::now();
        let result = self.run_put(req.into_inner()).await.map(unary);
        self.record("put", started, result)
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let started = Instant::now();
        let result = self.run_delete(req.into_inner()).await.map(unary);
        self.record("delete", started, result)
    }

    async fn commands(
        &self,
        req: Request<Streaming<CommandsRequest>>,
    ) -> Result<Response<Self::CommandsStream>, Status> {
        Ok(Response::new(super::commands::serve(
            self.clone(),
            req.into_inner(),
        )))
    }

    async fn scan(&self, req: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let db = self.db()?;
            let ScanRequest {
                start,
                end,
                limit,
                max_bytes,
            } = req.into_inner();
            let max = self.0.cfg.store.max_scan_limit;
            let limit = match limit as usize {
                0 => max,
                l if l > max => {
                    return Err(invalid(format!(
                        "scan limit {l} exceeds the server's maximum of {max}"
                    )))
                }
                l => l,
            };
            if !end.is_empty() && end < start {
                return Err(invalid("scan end sorts before its start"));
            }
            // Answers are paged by bytes as well as by count: the caller follows
            // `resume_key`, and neither side ever holds more than one page.
            let cap = self.0.cfg.store.max_scan_bytes;
            let max_bytes = usize::try_from(max_bytes).unwrap_or(usize::MAX);
            let max_bytes = if max_bytes == 0 {
                cap
            } else {
                max_bytes.min(cap)
            };
            let span = tracing::debug_span!("kv.scan", limit, max_bytes);
            let page = db
                .scan_page(&start, &end, limit, max_bytes)
                .instrument(span)
                .await
                .map_err(router_status)?;
            let pairs = page
                .pairs
                .into_iter()
                .map(|(key, value)| KvPair { key, value })
                .collect();
            Ok(Response::new(ScanResponse {
                pairs,
                resume_key: page.resume_key,
            }))
        }
        .await;
        self.record("scan", started, result)
    }

    async fn batch(&self, req: Request<BatchRequest>) -> Result<Response<BatchResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let db = self.db()?;
            let ops = req.into_inner().ops;
            if ops.is_empty() {
                return Err(invalid("a batch needs at least one write"));
            }
            let span = tracing::debug_span!("kv.batch", ops = ops.len());
            db.batch(ops)
                .instrument(span)
                .await
                .map_err(router_status)?;
            Ok(Response::new(BatchResponse {}))
        }
        .await;
        self.record("batch", started, result)
    }

    async fn compare_and_swap(
        &self,
        req: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let db = self.db()?;
            let CompareAndSwapRequest {
                key,
                expected,
                new_value,
            } = req.into_inner();
            let span = tracing::debug_span!("kv.compare_and_swap", key_len = key.len());
            let (succeeded, previous) = db
                .compare_and_swap(&key, expected.as_deref(), new_value.as_deref())
                .instrument(span)
                .await
                .map_err(router_status)?;
            Ok(Response::new(CompareAndSwapResponse {
                succeeded,
                previous,
            }))
        }
        .await;
        self.record("compare_and_swap", started, result)
    }
}
