//! The connections a node accepts, plaintext (`--insecure`) or TLS, as one type
//! ([`Conn`]) the gRPC and HTTP servers serve alike.
//!
//! TLS handshakes run in a task per connection, off the accept loop, with a deadline: a
//! caller that stalls its handshake delays no one else. A connection whose first byte is
//! not a TLS handshake record is closed with a warning that names the caller and the
//! likely cause (a node or client started with `--insecure` dialing a secure node).
//!
//! The caller's verified certificate is read once per connection ([`PeerInfo`]); tonic
//! puts it into every request's extensions, where [`super::auth`] looks for it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;

use super::files::{self, CertInfo};

/// How long a caller may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// One accepted connection.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Who is at the other end of a connection.
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    /// True if the connection is TLS.
    pub tls: bool,
    /// The caller's certificate, verified against the cluster CA during the handshake
    /// (`None`: no certificate, or a plaintext connection).
    pub cert: Option<Arc<CertInfo>>,
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        match self {
            Conn::Plain(tcp) => PeerInfo {
                remote: tcp.peer_addr().ok(),
                tls: false,
                cert: None,
            },
            Conn::Tls(tls) => {
                let (tcp, session) = tls.get_ref();
                let cert = session
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|leaf| files::describe(leaf).ok())
                    .map(Arc::new);
                PeerInfo {
                    remote: tcp.peer_addr().ok(),
                    tls: true,
                    cert,
                }
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connections of `listener`, handshaken if `tls` is given, as a channel the
/// servers read. `what` names the listener in log lines (`gRPC`, `HTTP`).
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    what: &'static str,
) -> mpsc::Receiver<std::io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            // Once the server stops reading (shutdown), stop accepting at once and close
            // the listener: a caller then finds the port closed (certainly not served)
            // rather than a connection that is accepted and dropped.
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, listener = what, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let Some(cfg) = tls.clone() else {
                if tx.send(Ok(Conn::Plain(tcp))).await.is_err() {
                    return;
                }
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let handshake = handshake(tcp, remote, cfg, what);
                if let Ok(Some(conn)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                    let _ = tx.send(Ok(conn)).await;
                }
            });
        }
    });
    rx
}

async fn handshake(
    tcp: TcpStream,
    remote: SocketAddr,
    cfg: Arc<ServerConfig>,
    what: &'static str,
) -> Option<Conn> {
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(1) if first[0] == TLS_HANDSHAKE => {}
        Ok(1) => {
            tracing::warn!(
                %remote,
                listener = what,
                "a caller spoke plaintext to this secure node (started with --certs-dir): it \
                 runs with --insecure or without --certs-dir; start every node and client of \
                 the cluster in the same mode"
            );
            return None;
        }
        _ => return None,
    }
    match TlsAcceptor::from(cfg).accept(tcp).await {
        Ok(tls) => Some(Conn::Tls(Box::new(tls))),
        Err(e) => {
            tracing::warn!(%remote, listener = what, error = %e, "TLS handshake refused");
            None
        }
    }
}

/// An HTTP listener over [`incoming`]'s connections, for axum.
pub struct HttpListener {
    pub conns: mpsc::Receiver<std::io::Result<Conn>>,
    pub local: SocketAddr,
}

impl axum::serve::Listener for HttpListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        loop {
            match self.conns.recv().await {
                Some(Ok(conn)) => {
                    let remote = conn.connect_info().remote.unwrap_or(self.local);
                    return (conn, remote);
                }
                Some(Err(_)) => continue,
                // The accept task ended (it never does while the runtime runs).
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
