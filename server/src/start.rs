//! `flotilla start`: bind the listeners, open the node, serve gRPC and HTTP, discover the
//! other nodes, and shut down cleanly on SIGTERM or Ctrl-C: hand leadership to the other
//! nodes, stop the store (its last round is written and synced), then stop accepting
//! calls and let those in flight finish. A store that stops on its own (a write failed:
//! disk full, I/O error) ends the process too, with `ServerError::StoreFailed` (exit code
//! 74): fail-stop, as TiKV and CockroachDB do, never a node that answers without a store.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;

use crate::config::ServerConfig;
use crate::errors::ServerError;
use crate::proto::admin_server::AdminServer;
use crate::proto::internal_server::InternalServer;
use crate::proto::kv_server::KvServer;
use crate::server::State;
use crate::service::admin::AdminService;
use crate::service::internal::InternalService;
use crate::service::kv::KvService;
use crate::tls::accept;
use crate::tls::auth::Guard;
use crate::transport::MAX_FRAME_BYTES;

/// How long calls in flight may take to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(5);
/// How long a node that stopped its store keeps answering `stopping` before it closes.
const STOPPED_GRACE: Duration = Duration::from_secs(1);

/// Runs a node until SIGTERM / Ctrl-C, or until it must stop (a fatal error).
pub async fn serve(cfg: ServerConfig) -> Result<(), ServerError> {
    crate::server::check_data_dir(&cfg)?;
    let grpc_listener = bind(&cfg.listen.to_string()).await?;
    let http_listener = bind(&cfg.http_listen.to_string()).await?;
    let (listen, http) = (cfg.listen, cfg.http_listen);
    let handle = tokio::runtime::Handle::current();
    let state = tokio::task::spawn_blocking(move || State::open(cfg, handle))
        .await
        .map_err(|e| ServerError::Config(format!("startup task failed: {e}")))??;
    tracing::info!(node = state.cfg.node_id, %listen, %http, data = %state.cfg.data_dir.display(), "flotilla node serving");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let grpc = tokio::spawn(grpc_server(state.clone(), grpc_listener, stop_rx.clone()));
    let http_task = http_server(state.clone(), http_listener, stop_rx.clone())?;
    if let Some(tls) = state.cfg.tls.clone() {
        tokio::spawn(reload_on_sighup(tls));
    }
    let discovery = crate::discovery::run(state.clone());
    let placement = tokio::spawn(crate::replicate::run(state.clone()));

    let outcome = tokio::select! {
        r = discovery => r,
        _ = shutdown_signal() => {
            tracing::info!("shutdown signal received; draining calls");
            Ok(())
        }
        cause = state.halted() => Err(ServerError::Halted(cause)),
        cause = state.store_failed() => {
            tracing::error!(%cause, data = %state.cfg.data_dir.display(), "the store stopped; exiting");
            Err(ServerError::StoreFailed { path: state.cfg.data_dir.clone(), cause })
        }
    };
    // The store drains (hands its leaderships to other nodes) and stops first (its last
    // round is written and synced), while this node still serves: ranges it led move
    // without an election timeout. Calls in flight then finish (client calls this node
    // was routing are retried on the other nodes; Raft streams into it end).
    placement.abort();
    let s = state.clone();
    let _ = tokio::task::spawn_blocking(move || s.stop()).await;
    if outcome.is_ok() {
        // Keep answering for a moment with the store stopped: calls other nodes' routers
        // send here now get `stopping` (certainly not run, so they are retried elsewhere,
        // and the routers stop sending here) instead of being cut off mid-call, which
        // would leave their writes of unknown outcome.
        tokio::time::sleep(STOPPED_GRACE).await;
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(DRAIN, grpc).await;
    let _ = tokio::time::timeout(DRAIN, http_task).await;
    tracing::info!(node = state.cfg.node_id, "stopped");
    outcome
}

async fn bind(addr: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: addr.to_string(),
            source,
        })
}

async fn grpc_server(
    state: Arc<State>,
    listener: TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ServerError> {
    // A compare-and-swap carries two values and a key.
    let kv_limit = 2 * state.cfg.store.max_value_size + state.cfg.store.max_key_size + (64 << 10);
    // Accepted sockets get TCP_NODELAY in `accept::incoming` (`Server::tcp_nodelay` only
    // applies to sockets tonic binds itself), or small answers wait out delayed ACKs.
    let tls = match &state.cfg.tls {
        Some(t) => Some(t.grpc_server_config()?),
        None => None,
    };
    let incoming = ReceiverStream::new(accept::incoming(listener, tls, "gRPC"));
    let guard = Guard::new(state.cfg.tls.clone());
    let (g1, g2, g3) = (guard.clone(), guard.clone(), guard);
    let kv = KvServer::new(KvService(state.clone())).max_decoding_message_size(kv_limit);
    let admin = AdminServer::new(AdminService(state.clone()));
    let internal = InternalServer::new(InternalService(state.clone()))
        .max_decoding_message_size(MAX_FRAME_BYTES)
        .max_encoding_message_size(MAX_FRAME_BYTES);
    tonic::transport::Server::builder()
        .add_service(InterceptedService::new(kv, move |r| g1.client(r)))
        .add_service(InterceptedService::new(admin, move |r| g2.client(r)))
        .add_service(InterceptedService::new(internal, move |r| g3.internal(r)))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await?;
    Ok(())
}

/// Serves `/metrics`, `/status` and `/ready`, over TLS in secure mode.
fn http_server(
    state: Arc<State>,
    listener: TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, ServerError> {
    let routes = crate::http::routes(state.clone());
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let Some(tls) = &state.cfg.tls else {
        let server = axum::serve(listener, routes).with_graceful_shutdown(shutdown);
        return Ok(tokio::spawn(async move { server.await }));
    };
    let local = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: state.cfg.http_listen.to_string(),
        source,
    })?;
    let conns = accept::incoming(listener, Some(tls.http_server_config()?), "HTTP");
    let listener = accept::HttpListener { conns, local };
    let server = axum::serve(listener, routes).with_graceful_shutdown(shutdown);
    Ok(tokio::spawn(async move { server.await }))
}

/// Re-reads the node's certificate, key and tokens on each SIGHUP.
async fn reload_on_sighup(tls: Arc<crate::tls::NodeTls>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch for SIGHUP: certificates are reloaded only by a restart");
        return;
    };
    while hup.recv().await.is_some() {
        match tls.reload() {
            Ok(info) => tracing::info!(
                dir = %tls.dir().display(),
                serial = %info.serial,
                not_after = info.not_after,
                "SIGHUP: reloaded the node certificate; new connections use it"
            ),
            Err(e) => tracing::error!(
                error = %e,
                serial = %tls.info().serial,
                "SIGHUP: kept the certificate in use; the new files cannot be used"
            ),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
