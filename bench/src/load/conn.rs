//! The connection a client sends on: Flotilla's `Kv` gRPC service, or etcd's v3 KV API
//! (`--backend etcd`), behind one `put` and one `get`, so that both systems receive the
//! same keys, values and concurrency from the same closed loop. An etcd get is a
//! linearizable range read of one key (etcd's default, `serializable = false`), the
//! counterpart of Flotilla's linearizable get. Flotilla's gets and puts travel as unary
//! calls (`--rpc unary`) or over the shared `Kv.Commands` streams of `mux.rs` (`--rpc
//! stream`, the default); both follow the same routing hints.

use std::sync::Arc;
use std::time::Duration;

use flotilla_server::proto::command::Op;
use flotilla_server::proto::command_result::Outcome as Answer;
use flotilla_server::proto::kv_client::KvClient;
use flotilla_server::proto::{CommandResult, GetRequest, PutRequest};
use flotilla_server::routes::Routes;
use flotilla_server::tls::dial::Dialer;
use tonic::transport::Channel;

use super::args::{Args, Backend, Rpc};
use super::mux::{Mux, Muxes};
use super::stats::Outcome;

/// Extra time the client waits past the deadline it sends, so that the server's verdict
/// (`Cancelled`/`DeadlineExceeded`) usually arrives before the client gives up.
const GRACE: Duration = Duration::from_millis(500);

/// One client's way to the system under load. A Flotilla connection sends each key to
/// its range's leader when a routing hint told it where that is (`routes`, shared by all
/// clients; `None` with `--no-route`), and to its endpoint otherwise: as a unary call
/// (`Flotilla`) or over the shared `Kv.Commands` stream of that address (`Stream`).
#[derive(Clone)]
pub enum Conn {
    Flotilla {
        kv: KvClient<Channel>,
        routes: Option<Arc<Routes>>,
    },
    Stream {
        home: Arc<Mux>,
        muxes: Arc<Muxes>,
        routes: Option<Arc<Routes>>,
    },
    Etcd(etcd_client::KvClient),
}

/// How every Flotilla connection of this run is dialed (TLS with `--certs-dir`).
pub fn dialer(args: &Args) -> Result<Dialer, String> {
    static DIALER: std::sync::OnceLock<Dialer> = std::sync::OnceLock::new();
    if let Some(d) = DIALER.get() {
        return Ok(d.clone());
    }
    let d =
        Dialer::client(args.certs_dir.as_deref(), &args.user, None).map_err(|e| e.to_string())?;
    Ok(DIALER.get_or_init(|| d).clone())
}

/// The routing hints every Flotilla client of this run shares.
fn shared_routes(args: &Args) -> Option<Arc<Routes>> {
    static ROUTES: std::sync::OnceLock<Arc<Routes>> = std::sync::OnceLock::new();
    let dialer = dialer(args).unwrap_or_default();
    (!args.no_route).then(|| {
        ROUTES
            .get_or_init(|| Arc::new(Routes::with_dialer(dialer)))
            .clone()
    })
}

/// The streams every Flotilla client of this run shares, one per address.
fn shared_muxes(args: &Args) -> Arc<Muxes> {
    static MUXES: std::sync::OnceLock<Arc<Muxes>> = std::sync::OnceLock::new();
    let dialer = dialer(args).unwrap_or_default();
    MUXES
        .get_or_init(|| Arc::new(Muxes::with_dialer(dialer)))
        .clone()
}

/// One connection per endpoint, in the order given (clients share them round-robin
/// unless `--channel-per-client`).
pub async fn connect_all(args: &Args) -> Result<Vec<Conn>, String> {
    // Certificate problems are reported here, before any client starts.
    dialer(args)?;
    match (args.backend, args.rpc) {
        (Backend::Flotilla, Rpc::Unary) => {
            let routes = shared_routes(args);
            args.endpoints
                .iter()
                .map(|e| {
                    Ok(Conn::Flotilla {
                        kv: unary(args, e)?,
                        routes: routes.clone(),
                    })
                })
                .collect()
        }
        (Backend::Flotilla, Rpc::Stream) => {
            let (muxes, routes) = (shared_muxes(args), shared_routes(args));
            args.endpoints
                .iter()
                .map(|e| {
                    let home = muxes.get(e, routes.clone())?;
                    Ok(Conn::Stream {
                        home,
                        muxes: muxes.clone(),
                        routes: routes.clone(),
                    })
                })
                .collect()
        }
        (Backend::Etcd, _) => {
            let mut conns = Vec::with_capacity(args.endpoints.len());
            for e in &args.endpoints {
                conns.push(connect(args, e).await?);
            }
            Ok(conns)
        }
    }
}

/// A connection of its own to `endpoint` (in stream mode: a stream of its own to it;
/// the streams to leaders are still shared).
pub async fn connect(args: &Args, endpoint: &str) -> Result<Conn, String> {
    match (args.backend, args.rpc) {
        (Backend::Flotilla, Rpc::Unary) => {
            let kv = unary(args, endpoint)?;
            Ok(Conn::Flotilla {
                kv,
                routes: shared_routes(args),
            })
        }
        (Backend::Flotilla, Rpc::Stream) => {
            let channel = dialer(args)?
                .channel(endpoint)
                .map_err(|e| format!("endpoint {endpoint}: {e}"))?;
            let routes = shared_routes(args);
            let home = Arc::new(Mux::new(endpoint.to_string(), channel, routes.clone()));
            Ok(Conn::Stream {
                home,
                muxes: shared_muxes(args),
                routes,
            })
        }
        (Backend::Etcd, _) => {
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
            Conn::Stream {
                home,
                muxes,
                routes,
            } => {
                let mux = streamed(home, muxes, routes.as_ref(), &key);
                let answer = tokio::time::timeout(
                    within,
                    mux.call(Op::Put(PutRequest { key, value }), timeout),
                )
                .await;
                streamed_outcome(&mux, home, routes.as_deref(), answer)
            }
            Conn::Etcd(kv) => etcd(
                tokio::time::timeout(within, kv.put(key, value, None)).await,
                |_| Outcome::Ok,
            ),
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
                let found = |r: tonic::Response<flotilla_server::proto::GetResponse>| {
                    found(r.into_inner().found)
                };
                grpc(answer, found)
            }
            Conn::Stream {
                home,
                muxes,
                routes,
            } => {
                let mux = streamed(home, muxes, routes.as_ref(), &key);
                let answer =
                    tokio::time::timeout(within, mux.call(Op::Get(GetRequest { key }), timeout))
                        .await;
                streamed_outcome(&mux, home, routes.as_deref(), answer)
            }
            Conn::Etcd(kv) => {
                let found = |r: etcd_client::GetResponse| found(!r.kvs().is_empty());
                etcd(tokio::time::timeout(within, kv.get(key, None)).await, found)
            }
        }
    }
}

/// A unary client of `endpoint`.
fn unary(args: &Args, endpoint: &str) -> Result<KvClient<Channel>, String> {
    let channel = dialer(args)?
        .channel(endpoint)
        .map_err(|e| format!("endpoint {endpoint}: {e}"))?;
    Ok(KvClient::new(channel).max_decoding_message_size(64 << 20))
}

/// The client to send `key` on: its leader's, if a hint named one (with its address).
fn routed(
    kv: &KvClient<Channel>,
    routes: Option<&Routes>,
    key: &[u8],
) -> (Option<String>, KvClient<Channel>) {
    match routes.and_then(|r| r.route(key)) {
        Some((leader, channel)) => (Some(leader), KvClient::new(channel)),
        None => (None, kv.clone()),
    }
}

/// Learns the hint of an answer; forgets a leader that could not be reached.
fn learn<T>(
    routes: Option<&Routes>,
    leader: Option<&str>,
    answer: &Timed<Result<tonic::Response<T>, tonic::Status>>,
) {
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

/// The stream to send `key` on: its leader's, if a hint named one, else the endpoint's.
fn streamed(home: &Arc<Mux>, muxes: &Muxes, routes: Option<&Arc<Routes>>, key: &[u8]) -> Arc<Mux> {
    let Some(leader) = routes.and_then(|r| r.leader(key)) else {
        return home.clone();
    };
    if leader == home.address() {
        return home.clone();
    }
    // An address that cannot be a URI is no route: forget it and use the endpoint.
    match muxes.get(&leader, routes.cloned()) {
        Ok(mux) => mux,
        Err(_) => {
            if let Some(r) = routes {
                r.forget(&leader);
            }
            home.clone()
        }
    }
}

/// The outcome of a streamed command (its hint was learned by the mux's reader); forgets
/// a leader that answered UNAVAILABLE (a broken stream, or no quorum behind it), as the
/// unary path does.
fn streamed_outcome(
    mux: &Mux,
    home: &Mux,
    routes: Option<&Routes>,
    answer: Timed<Result<CommandResult, tonic::Status>>,
) -> Outcome {
    let error = |code: tonic::Code, message: String| {
        if code == tonic::Code::Unavailable && !std::ptr::eq(mux, home) {
            if let Some(r) = routes {
                r.forget(mux.address());
            }
        }
        Outcome::Err(format!("{code:?}"), message)
    };
    match answer {
        Err(_) => client_timeout(),
        Ok(Err(status)) => error(status.code(), status.message().to_string()),
        Ok(Ok(result)) => match result.outcome {
            Some(Answer::Get(g)) => found(g.found),
            Some(Answer::Put(_)) | Some(Answer::Delete(_)) => Outcome::Ok,
            Some(Answer::Error(e)) => error(tonic::Code::from_i32(e.code), e.message),
            None => Outcome::Err(
                "Unknown".into(),
                format!("command {} was answered without an outcome", result.id),
            ),
        },
    }
}

fn found(yes: bool) -> Outcome {
    if yes {
        Outcome::Ok
    } else {
        Outcome::Miss
    }
}

type Timed<T> = Result<T, tokio::time::error::Elapsed>;

fn grpc<T>(
    r: Timed<Result<tonic::Response<T>, tonic::Status>>,
    ok: impl FnOnce(tonic::Response<T>) -> Outcome,
) -> Outcome {
    match r {
        Err(_) => client_timeout(),
        Ok(Err(status)) => {
            Outcome::Err(format!("{:?}", status.code()), status.message().to_string())
        }
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
    Outcome::Err(
        "ClientTimeout".into(),
        "no answer within --timeout-ms".into(),
    )
}
