//! A gRPC client for a Flotilla cluster: the CLI, the load generator and the process
//! tests use it.
//!
//! It holds a channel per endpoint and sends each call to the next endpoint in turn. A
//! call that could not even connect, or that a node refused without running it (it is
//! shutting down, or not initialized, or its HTTP/2 connection refused the stream), is
//! tried on the next endpoint; any other failure
//! is returned as the server's status (the server already retried what was safe to
//! retry).
//!
//! In secure mode it dials with TLS ([`Dialer::client`]) and presents a client
//! certificate, or sends a bearer token with every call ([`Stamp`]).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use flotilla_raftstore::metapb::WriteOp;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::proto::admin_client::AdminClient;
use crate::proto::kv_client::KvClient;
use crate::proto::*;
use crate::tls::dial::Dialer;

/// The largest message the client sends or accepts.
const MAX_MESSAGE: usize = 64 << 20;

/// A channel that adds the client's bearer token (if any) to every call.
pub type Chan = InterceptedService<Channel, Stamp>;

/// Adds `authorization: Bearer TOKEN` to each call.
#[derive(Clone, Debug, Default)]
pub struct Stamp(Option<MetadataValue<Ascii>>);

impl Stamp {
    /// The stamp of `dialer`'s token.
    pub fn of(dialer: &Dialer) -> Result<Stamp, String> {
        match dialer.token() {
            None => Ok(Stamp(None)),
            Some(t) => MetadataValue::try_from(format!("Bearer {t}"))
                .map(|v| Stamp(Some(v)))
                .map_err(|_| "--token: only printable ASCII characters are allowed".into()),
        }
    }
}

impl Interceptor for Stamp {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A client of one cluster.
pub struct Client {
    endpoints: Vec<String>,
    channels: Vec<Chan>,
    next: AtomicUsize,
    secure: bool,
}

impl Client {
    /// A plaintext client of the nodes at `endpoints` (host:port). Connections open on
    /// first use.
    pub fn new(endpoints: &[String]) -> Result<Client, String> {
        Client::with_dialer(endpoints, &Dialer::insecure())
    }

    /// A client of the nodes at `endpoints` that dials with `dialer`.
    pub fn with_dialer(endpoints: &[String], dialer: &Dialer) -> Result<Client, String> {
        if endpoints.is_empty() {
            return Err("no endpoints given (--endpoints HOST:PORT[,HOST:PORT...])".into());
        }
        let stamp = Stamp::of(dialer)?;
        let channels = endpoints
            .iter()
            .map(|e| {
                let ch = dialer
                    .channel(e)
                    .map_err(|err| format!("endpoint {e}: {err}"))?;
                Ok(InterceptedService::new(ch, stamp.clone()))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Client {
            secure: dialer.is_secure(),
            endpoints: endpoints.to_vec(),
            channels,
            next: AtomicUsize::new(0),
        })
    }

    /// True if the client dials with TLS.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The endpoints, in the order given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// A raw client of the service on endpoint `i`.
    pub fn kv_at(&self, i: usize) -> KvClient<Chan> {
        KvClient::new(self.channels[i % self.channels.len()].clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// Runs `call` on the endpoints in turn until one is reachable.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: Fn(Chan) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let n = self.channels.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            match call(self.channels[(start + i) % n].clone()).await {
                Err(s) if not_delivered(&s) || crate::errors::not_run(&s) => last = Some(s),
                r => return r.map(tonic::Response::into_inner),
            }
        }
        Err(last.unwrap_or_else(|| Status::unavailable("no endpoint")))
    }

    fn kv(ch: Chan) -> KvClient<Chan> {
        KvClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Status> {
        let r = self
            .call(|ch| async move { Self::kv(ch).get(GetRequest { key: key.to_vec() }).await })
            .await?;
        Ok(r.found.then_some(r.value))
    }

    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), Status> {
        let req = PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
        };
        self.call(|ch| {
            let req = req.clone();
            async move { Self::kv(ch).put(req).await }
        })
        .await
        .map(|_| ())
    }

    pub async fn delete(&self, key: &[u8]) -> Result<(), Status> {
        self.call(|ch| async move {
            Self::kv(ch)
                .delete(DeleteRequest { key: key.to_vec() })
                .await
        })
        .await
        .map(|_| ())
    }

    /// Up to `limit` pairs of `[start, end)` (0: no count limit; then the whole span),
    /// following the server's pages.
    pub async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Status> {
        let mut out = Vec::new();
        let mut from = start.to_vec();
        loop {
            let want = if limit == 0 {
                0
            } else {
                limit - out.len() as u32
            };
            let (pairs, resume) = self.scan_page(&from, end, want, 0).await?;
            out.extend(pairs);
            match resume {
                Some(k) if limit == 0 || (out.len() as u32) < limit => from = k,
                _ => return Ok(out),
            }
        }
    }

    /// One page of a scan of `[start, end)`: at most `limit` pairs (0: the server's
    /// maximum) and about `max_bytes` (0: the server's maximum), and the key to continue
    /// from (`None`: the scan reached `end`).
    pub async fn scan_page(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
        max_bytes: u64,
    ) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, Option<Vec<u8>>), Status> {
        let req = ScanRequest {
            start: start.to_vec(),
            end: end.to_vec(),
            limit,
            max_bytes,
        };
        let r = self.call(|ch| {
            let req = req.clone();
            async move { Self::kv(ch).scan(req).await }
        });
        let r = r.await?;
        Ok((
            r.pairs.into_iter().map(|p| (p.key, p.value)).collect(),
            r.resume_key,
        ))
    }

    pub async fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new_value: Option<&[u8]>,
    ) -> Result<(bool, Option<Vec<u8>>), Status> {
        let req = CompareAndSwapRequest {
            key: key.to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            new_value: new_value.map(<[u8]>::to_vec),
        };
        let r = self.call(|ch| {
            let req = req.clone();
            async move { Self::kv(ch).compare_and_swap(req).await }
        });
        let r = r.await?;
        Ok((r.succeeded, r.previous))
    }

    /// Applies `ops` atomically (their keys must lie in one range).
    pub async fn batch(&self, ops: Vec<WriteOp>) -> Result<(), Status> {
        let req = BatchRequest { ops };
        self.call(|ch| {
            let req = req.clone();
            async move { Self::kv(ch).batch(req).await }
        })
        .await
        .map(|_| ())
    }

    pub async fn init(
        &self,
        initial_ranges: u32,
        replication_factor: u32,
    ) -> Result<InitResponse, Status> {
        let req = InitRequest {
            initial_ranges,
            replication_factor,
        };
        self.call(|ch| async move { admin(ch).init(req).await })
            .await
    }

    pub async fn status(&self) -> Result<StatusResponse, Status> {
        self.call(|ch| async move { admin(ch).status(StatusRequest {}).await })
            .await
    }

    /// The members' view (`sizes`: measure the bytes each node holds, which reads every
    /// range the nodes lead).
    pub async fn nodes(&self, sizes: bool) -> Result<NodesResponse, Status> {
        let req = NodesRequest { skip_sizes: !sizes };
        self.call(|ch| async move { admin(ch).nodes(req).await })
            .await
    }

    /// Starts (`leave`) or undoes a decommission of `node_id`.
    pub async fn decommission(&self, node_id: u64, leave: bool) -> Result<NodesResponse, Status> {
        let req = DecommissionRequest { node_id };
        self.call(|ch| async move {
            match leave {
                true => admin(ch).decommission(req).await,
                false => admin(ch).recommission(req).await,
            }
        })
        .await
    }

    pub async fn set_replication_factor(
        &self,
        replication_factor: u32,
    ) -> Result<NodesResponse, Status> {
        let req = SetReplicationFactorRequest { replication_factor };
        self.call(|ch| async move { admin(ch).set_replication_factor(req).await })
            .await
    }

    pub async fn ranges(&self) -> Result<RangesResponse, Status> {
        self.call(|ch| async move { admin(ch).ranges(RangesRequest {}).await })
            .await
    }

    pub async fn split(&self, key: &[u8]) -> Result<SplitResponse, Status> {
        self.call(|ch| async move { admin(ch).split(SplitRequest { key: key.to_vec() }).await })
            .await
    }

    /// Changes range `range_id`'s replicas (see the `ChangeReplicas` RPC).
    pub async fn change_replicas(
        &self,
        range_id: u64,
        add: &[u64],
        remove: &[u64],
    ) -> Result<ChangeReplicasResponse, Status> {
        let req = ChangeReplicasRequest {
            range_id,
            add: add.to_vec(),
            remove: remove.to_vec(),
        };
        self.call(|ch| {
            let req = req.clone();
            async move { admin(ch).change_replicas(req).await }
        })
        .await
    }
}

/// True when the connection broke at the transport level (not an answer of a node): a
/// plaintext client talking to a secure node sees this, as the node closes the
/// connection at its first byte.
pub fn connection_broke(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
    ) && s.metadata().get("flotilla-error").is_none()
}

/// True when a call failed to connect at all (so it was certainly not executed): the TCP
/// connect was refused or timed out. (A connection that opened and then broke is not
/// this: the call may have been delivered.)
pub fn unreachable(s: &Status) -> bool {
    const CONNECT: [&str; 2] = ["tcp connect error", "error trying to connect"];
    if s.code() != Code::Unavailable {
        return false;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    let mut texts = vec![s.message().to_string()];
    while let Some(e) = cause {
        texts.push(e.to_string());
        cause = e.source();
    }
    texts.iter().any(|t| CONNECT.iter().any(|c| t.contains(c)))
}

/// True when a node refused the call before running it, as HTTP/2 lets a server do: the
/// call's stream came after the last one a graceful shutdown's `GOAWAY` let through, or
/// the server reset it with `REFUSED_STREAM`. HTTP/2 promises such a stream was not
/// processed (RFC 9113, section 8.7), so the call is certainly not executed and is safe
/// to send elsewhere, as gRPC's "transparent retry" does. Tonic reports the first as
/// `Internal` ("h2 protocol error"), which says nothing of the sort; this looks under it.
pub fn refused_unprocessed(s: &Status) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = cause {
        if let Some(err) = e.downcast_ref::<h2::Error>() {
            // A remote GOAWAY without an error reaches only the streams above its last
            // stream id; every stream it let through ends some other way. (h2 would also
            // give it to every open stream if the peer then pushed on a refused stream,
            // which a server may not do to a client that disabled push, as hyper's does.)
            let refused = match err.reason() {
                Some(h2::Reason::NO_ERROR) => err.is_go_away(),
                Some(h2::Reason::REFUSED_STREAM) => err.is_reset(),
                _ => false,
            };
            return refused && err.is_remote();
        }
        cause = e.source();
    }
    false
}

/// True when a call certainly did not run on the node it was sent to: it never
/// connected ([`unreachable`]) or the node refused its stream ([`refused_unprocessed`]).
pub fn not_delivered(s: &Status) -> bool {
    unreachable(s) || refused_unprocessed(s)
}

/// A status's message with the chain of errors under it ("transport error: connection
/// reset by peer"), which is what tells a person what happened.
pub fn with_causes(status: &Status) -> String {
    let mut text = status.message().to_string();
    let mut cause = std::error::Error::source(status);
    while let Some(e) = cause {
        let more = e.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = e.source();
    }
    text
}

/// An Admin client that accepts answers as large as the status of 100,000 ranges
/// (tonic's default limit is 4 MiB).
fn admin(ch: Chan) -> AdminClient<Chan> {
    AdminClient::new(ch).max_decoding_message_size(MAX_MESSAGE)
}

#[cfg(test)]
mod refusal_tests;
