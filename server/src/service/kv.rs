//! The client service. Any node accepts these calls and routes them with its own router
//! (a gateway, as in CockroachDB): the caller need not know where ranges live.

use std::sync::Arc;
use std::time::Instant;

use flotilla_router::Db;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::errors::{invalid, router_status};
use crate::gateway::Gateway;
use crate::proto::kv_server::Kv;
use crate::proto::*;
use crate::server::State;

/// `Kv` over a server's shared state.
pub struct KvService(pub Arc<State>);

impl KvService {
    fn db(&self) -> Result<Arc<Db<Gateway>>, Status> {
        self.0.serving().map(|r| r.db.clone())
    }

    /// Attaches a routing hint to `resp` when the range holding user key `key` is led on
    /// another node (this one forwarded the call): see `routes.rs`.
    fn hint<T>(&self, db: &Db<Gateway>, key: &[u8], mut resp: Response<T>) -> Response<T> {
        let stored = flotilla_raftstore::keyspace::user_key(key);
        let router = db.router();
        let leader = router.cached_leader(&stored).filter(|l| *l != self.0.peers.me());
        let Some(leader) = leader else { return resp };
        let (Some((desc, _)), Some(address)) = (router.cached(&stored), self.0.peers.address(leader)) else { return resp };
        use flotilla_raftstore::keyspace::decode_user_key;
        let Some(start) = decode_user_key(&desc.start) else { return resp };
        let end = match desc.end.as_slice() {
            [] => None,
            e => match decode_user_key(e) {
                Some(user) => Some(user),
                None => return resp,
            },
        };
        crate::routes::attach(resp.metadata_mut(), &address, start, end);
        resp
    }

    /// Counts the outcome and latency of one call of `method`.
    fn record<T>(&self, method: &str, started: Instant, result: Result<T, Status>) -> Result<T, Status> {
        let code = result.as_ref().map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        self.0.requests.observe(method, code, started);
        result
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let db = self.db()?;
            let key = req.into_inner().key;
            let span = tracing::debug_span!("kv.get", key_len = key.len());
            let value = db.get(&key).instrument(span).await.map_err(router_status)?;
            let resp = Response::new(GetResponse { found: value.is_some(), value: value.unwrap_or_default() });
            Ok(self.hint(&db, &key, resp))
        }
        .await;
        self.record("get", started, result)
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let db = self.db()?;
            let PutRequest { key, value } = req.into_inner();
            let span = tracing::debug_span!("kv.put", key_len = key.len(), value_len = value.len());
            db.put(&key, &value).instrument(span).await.map_err(router_status)?;
            Ok(self.hint(&db, &key, Response::new(PutResponse {})))
        }
        .await;
        self.record("put", started, result)
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let db = self.db()?;
            let key = req.into_inner().key;
            let span = tracing::debug_span!("kv.delete", key_len = key.len());
            db.delete(&key).instrument(span).await.map_err(router_status)?;
            Ok(self.hint(&db, &key, Response::new(DeleteResponse {})))
        }
        .await;
        self.record("delete", started, result)
    }

    async fn scan(&self, req: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let db = self.db()?;
            let ScanRequest { start, end, limit, max_bytes } = req.into_inner();
            let max = self.0.cfg.store.max_scan_limit;
            let limit = match limit as usize {
                0 => max,
                l if l > max => return Err(invalid(format!("scan limit {l} exceeds the server's maximum of {max}"))),
                l => l,
            };
            if !end.is_empty() && end < start {
                return Err(invalid("scan end sorts before its start"));
            }
            // Answers are paged by bytes as well as by count: the caller follows
            // `resume_key`, and neither side ever holds more than one page.
            let cap = self.0.cfg.store.max_scan_bytes;
            let max_bytes = usize::try_from(max_bytes).unwrap_or(usize::MAX);
            let max_bytes = if max_bytes == 0 { cap } else { max_bytes.min(cap) };
            let span = tracing::debug_span!("kv.scan", limit, max_bytes);
            let page = db.scan_page(&start, &end, limit, max_bytes).instrument(span).await.map_err(router_status)?;
            let pairs = page.pairs.into_iter().map(|(key, value)| KvPair { key, value }).collect();
            Ok(Response::new(ScanResponse { pairs, resume_key: page.resume_key }))
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
            db.batch(ops).instrument(span).await.map_err(router_status)?;
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
            let CompareAndSwapRequest { key, expected, new_value } = req.into_inner();
            let span = tracing::debug_span!("kv.compare_and_swap", key_len = key.len());
            let (succeeded, previous) = db
                .compare_and_swap(&key, expected.as_deref(), new_value.as_deref())
                .instrument(span)
                .await
                .map_err(router_status)?;
            Ok(Response::new(CompareAndSwapResponse { succeeded, previous }))
        }
        .await;
        self.record("compare_and_swap", started, result)
    }
}
