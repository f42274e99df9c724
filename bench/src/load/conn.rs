//! The connection a client sends on: Flotilla's `Kv` gRPC service, or etcd's v3 KV API
//! (`--backend etcd`), behind one `put` and one `get`, so that both systems receive the
//! same keys, values and concurrency from the same closed loop. An etcd get is a
//! linearizable range read of one key (etcd's default, `serializable = false`), the
//! counterpart of Flotilla's linearizable get.

use std::time::Duration;

use flotilla_server::client::Client;
use flotilla_server::proto::kv_client::KvClient;
use flotilla_server::proto::{GetRequest, PutRequest};
use tonic::transport::Channel;

use super::args::{Args, Backend};
use super::stats::Outcome;

/// Extra time the client waits past the deadline it sends, so that the server's verdict
/// (`Cancelled`/`DeadlineExceeded`) usually arrives before the client gives up.
const GRACE: Duration = Duration::from_millis(500);

/// One client's way to the system under load.
#[derive(Clone)]
pub enum Conn {
    Flotilla(KvClient<Channel>),
    Etcd(etcd_client::KvClient),
}

/// One connection per endpoint, in the order given (clients share them round-robin
/// unless `--channel-per-client`).
pub async fn connect_all(args: &Args) -> Result<Vec<Conn>, String> {
    match args.backend {
        Backend::Flotilla => {
            let client = Client::new(&args.endpoints)?;
            Ok((0..args.endpoints.len()).map(|i| Conn::Flotilla(client.kv_at(i))).collect())
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
        Backend::Flotilla => Ok(Conn::Flotilla(Client::new(&[endpoint.to_string()])?.kv_at(0))),
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
            Conn::Flotilla(kv) => {
                let mut req = tonic::Request::new(PutRequest { key, value });
                req.set_timeout(timeout);
                grpc(tokio::time::timeout(within, kv.put(req)).await, |_| Outcome::Ok)
            }
            Conn::Etcd(kv) => etcd(tokio::time::timeout(within, kv.put(key, value, None)).await, |_| Outcome::Ok),
        }
    }

    /// Reads `key` linearizably.
    pub async fn get(&mut self, key: Vec<u8>, timeout: Duration) -> Outcome {
        let within = timeout + GRACE;
        match self {
            Conn::Flotilla(kv) => {
                let mut req = tonic::Request::new(GetRequest { key });
                req.set_timeout(timeout);
                let found = |r: tonic::Response<flotilla_server::proto::GetResponse>| found(r.into_inner().found);
                grpc(tokio::time::timeout(within, kv.get(req)).await, found)
            }
            Conn::Etcd(kv) => {
                let found = |r: etcd_client::GetResponse| found(!r.kvs().is_empty());
                etcd(tokio::time::timeout(within, kv.get(key, None)).await, found)
            }
        }
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
