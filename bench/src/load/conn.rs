//! The connection a client sends on: Flotilla's `Kv` gRPC service, or etcd's v3 KV API
//! (`--backend etcd`), behind one `put` and one `get`, so that both systems receive the
//! same keys, values and concurrency from the same closed loop. An etcd get is a
//! linearizable range read of one key (etcd's default, `serializable = false`), the
//! counterpart of Flotilla's linearizable get.

use std::sync::Arc;
use std::time::Duration;

use flotilla_server::client::Client;
use flotilla_server::proto::kv_client::KvClient;
use flotilla_server::proto::{GetRequest, PutRequest};
use flotilla_server::routes::Routes;
use tonic::transport::Channel;

use super::args::{Args, Backend};
use super::stats::Outcome;

/// Extra time the client waits past the deadline it sends, so that the server's verdict
/// (`Cancelled`/`DeadlineExceeded`) usually arrives before the client gives up.
const GRACE: Duration = Duration::from_millis(500);

/// One client's way to the system under load. A Flotilla connection sends each key to
/// its range's leader when a routing hint told it where that is (`routes`, shared by all
/// clients; `None` with `--no-route`), and to its endpoint otherwise.
#[derive(Clone)]
pub enum Conn {
    Flotilla { kv: KvClient<Channel>, routes: Option<Arc<Routes>> },
    Etcd(etcd_client::KvClient),
}

/// The routing hints every Flotilla client of this run shares.
fn shared_routes(args: &Args) -> Option<Arc<Routes>> {
    static ROUTES: std::sync::OnceLock<Arc<Routes>> = std::sync::OnceLock::new();
    (!args.no_route).then(|| ROUTES.get_or_init(Arc::default).clone())
}

/// One connection per endpoint, in the order given (clients share them round-robin
/// unless `--channel-per-client`).
pub async fn connect_all(args: &Args) -> Result<Vec<Conn>, String> {
    match args.backend {
        Backend::Flotilla => {
            let client = Client::new(&args.endpoints)?;
            let routes = shared_routes(args);
            Ok((0..args.endpoints.len()).map(|i| Conn::Flotilla { kv: client.kv_at(i), routes: routes.clone() }).collect())
        }
        Backend::Etcd => {
            let mut conns = Vec::with_capacity(args.endpoints.len());
            for e in &args.endpoints {
                conns.push(connect(args, e).await?);
            }
            Ok(conns)
        }
    }
}

/// A connection of its own to `endpoint`.
pub async fn connect(args: &Args, endpoint: &str) -> Result<Conn, String> {
    match args.backend {
        Backend::Flotilla => {
            let kv = Client::new(&[endpoint.to_string()])?.kv_at(0);
            Ok(Conn::Flotilla { kv, routes: shared_routes(args) })
        }
        Backend::Etcd => {
            let options = etcd_client::ConnectOptions::new()
                .with_timeout(args.timeout())
                .with_connect_timeout(Duration::from_secs(5));
            let client = etcd_client::Client::connect([endpoint], Some(options))
                .await
                .map_err(|e| format!("etcd endpoint {endpoint}: {e}"))?;
            Ok(Conn::Etcd(client.kv_client()))
        }
    }
}

impl Conn {
    /// Sets `key` to `value`.
    pub async fn put(&mut self, key: Vec<u8>, value: Vec<u8>, timeout: Duration) -> Outcome {
        let within = timeout + GRACE;
        match self {
            Conn::Flotilla { kv, routes } => {
                let (leader, mut kv) = routed(kv, routes.as_deref(), &key);
                let mut req = tonic::Request::new(PutRequest { key, value });
                req.set_timeout(timeout);
                let answer = tokio::time::timeout(within, kv.put(req)).await;
                learn(routes.as_deref(), leader.as_deref(), &answer);
                grpc(answer, |_| Outcome::Ok)
            }
            Conn::Etcd(kv) => etcd(tokio::time::timeout(within, kv.put(key, value, None)).await, |_| Outcome::Ok),
        }
    }

    /// Reads `key` linearizably.
    pub async fn get(&mut self, key: Vec<u8>, timeout: Duration) -> Outcome {
        let within = timeout + GRACE;
        match self {
            Conn::Flotilla { kv, routes } => {
                let (leader, mut kv) = routed(kv, routes.as_deref(), &key);
                let mut req = tonic::Request::new(GetRequest { key });
                req.set_timeout(timeout);
                let answer = tokio::time::timeout(within, kv.get(req)).await;
                learn(routes.as_deref(), leader.as_deref(), &answer);
                let found = |r: tonic::Response<flotilla_server::proto::GetResponse>| found(r.into_inner().found);
                grpc(answer, found)
            }
            Conn::Etcd(kv) => {
                let found = |r: etcd_client::GetResponse| found(!r.kvs().is_empty());
                etcd(tokio::time::timeout(within, kv.get(key, None)).await, found)
            }
        }
    }
}

/// The client to send `key` on: its leader's, if a hint named one (with its address).
fn routed(kv: &KvClient<Channel>, routes: Option<&Routes>, key: &[u8]) -> (Option<String>, KvClient<Channel>) {
    match routes.and_then(|r| r.route(key)) {
        Some((leader, channel)) => (Some(leader), KvClient::new(channel)),
        None => (None, kv.clone()),
    }
}

/// Learns the hint of an answer; forgets a leader that could not be reached.
fn learn<T>(routes: Option<&Routes>, leader: Option<&str>, answer: &Timed<Result<tonic::Response<T>, tonic::Status>>) {
    let Some(routes) = routes else { return };
    match answer {
        Ok(Ok(resp)) => routes.learn(resp.metadata()),
        Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
            if let Some(leader) = leader {
                routes.forget(leader);
            }
        }
        _ => {}
    }
}

fn found(yes: bool) -> Outcome {
    if yes { Outcome::Ok } else { Outcome::Miss }
}

type Timed<T> = Result<T, tokio::time::error::Elapsed>;

fn grpc<T>(r: Timed<Result<tonic::Response<T>, tonic::Status>>, ok: impl FnOnce(tonic::Response<T>) -> Outcome) -> Outcome {
    match r {
        Err(_) => client_timeout(),
        Ok(Err(status)) => Outcome::Err(format!("{:?}", status.code()), status.message().to_string()),
        Ok(Ok(resp)) => ok(resp),
    }
}

fn etcd<T>(r: Timed<Result<T, etcd_client::Error>>, ok: impl FnOnce(T) -> Outcome) -> Outcome {
    match r {
        Err(_) => client_timeout(),
        Ok(Err(etcd_client::Error::GRpcStatus(status))) => {
            Outcome::Err(format!("{:?}", status.code()), status.message().to_string())
        }
        Ok(Err(e)) => Outcome::Err("Transport".into(), e.to_string()),
        Ok(Ok(resp)) => ok(resp),
    }
}

fn client_timeout() -> Outcome {
    Outcome::Err("ClientTimeout".into(), "no answer within --timeout-ms".into())
}
