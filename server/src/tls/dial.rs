//! Channels to nodes: plaintext, or TLS that trusts the cluster CA only and presents this
//! process's certificate (a node's own, or a client's). Nodes, the CLI, the Rust client
//! and `flotilla-load` all dial through a [`Dialer`].
//!
//! The TLS handshake runs in tonic's connector, so a channel reconnects with whatever
//! certificate is current (a node's is replaced on SIGHUP). A handshake that fails is
//! explained: a node that answers without TLS runs with `--insecure`; a certificate the
//! CA did not sign belongs to another cluster.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use super::files::{self, CertFileError};

/// How channels are dialed: plaintext, or TLS with a configuration.
#[derive(Clone, Default)]
pub struct Dialer {
    tls: Option<Arc<ClientConfig>>,
    /// Where the CA came from, for error messages.
    certs_dir: Option<PathBuf>,
    /// A bearer token to send with every call (clients only).
    token: Option<String>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("tls", &self.tls.is_some())
            .field("certs_dir", &self.certs_dir)
            .field("token", &self.token.is_some())
            .finish()
    }
}

impl Dialer {
    /// Plaintext channels (`--insecure`).
    pub fn insecure() -> Dialer {
        Dialer::default()
    }

    /// TLS channels with `cfg`, whose CA came from `certs_dir`.
    pub fn secure(cfg: Arc<ClientConfig>, certs_dir: &Path) -> Dialer {
        Dialer {
            tls: Some(cfg),
            certs_dir: Some(certs_dir.to_path_buf()),
            token: None,
        }
    }

    /// A client's dialer: TLS if `certs_dir` is given (trusting its `ca.crt` and
    /// presenting `client.USER.crt` if it exists), and `token` with every call.
    pub fn client(
        certs_dir: Option<&Path>,
        user: &str,
        token: Option<String>,
    ) -> Result<Dialer, CertFileError> {
        let mut dialer = match certs_dir {
            None => Dialer::insecure(),
            Some(dir) => Dialer::secure(client_config(dir, user)?, dir),
        };
        dialer.token = token;
        Ok(dialer)
    }

    /// True for TLS.
    pub fn is_secure(&self) -> bool {
        self.tls.is_some()
    }

    /// The bearer token to send, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// A failed call to a node, said for a log line or an error: the status message,
    /// the deepest cause of a transport failure (where a refused TLS handshake is
    /// explained), and, for a plaintext dialer whose connection was cut, the likely
    /// mismatch.
    pub fn failure(&self, s: &tonic::Status) -> String {
        let mut text = s.message().to_string();
        let mut source = std::error::Error::source(s);
        let mut deepest = None;
        while let Some(e) = source {
            deepest = Some(e.to_string());
            source = e.source();
        }
        if let Some(d) = deepest.filter(|d| !text.contains(d.as_str())) {
            text = format!("{text}: {d}");
        }
        if !self.is_secure() && crate::client::connection_broke(s) && !crate::client::unreachable(s)
        {
            text.push_str(
                " (if that node runs in secure mode, start this process with --certs-dir)",
            );
        }
        text
    }

    /// A lazily connecting channel to `address` (host:port), tuned for node-to-node
    /// traffic: no Nagle delay, a short connect timeout, keepalives that notice a dead
    /// peer.
    pub fn channel(&self, address: &str) -> Result<Channel, tonic::transport::Error> {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(2))
            .keep_alive_timeout(Duration::from_secs(4))
            .keep_alive_while_idle(true);
        Ok(match &self.tls {
            None => endpoint.connect_lazy(),
            Some(cfg) => endpoint.connect_with_connector_lazy(TlsDial {
                cfg: cfg.clone(),
                certs_dir: self.certs_dir.clone().unwrap_or_default(),
            }),
        })
    }
}

/// A client's TLS configuration from a certs directory.
fn client_config(dir: &Path, user: &str) -> Result<Arc<ClientConfig>, CertFileError> {
    let roots = Arc::new(super::load_roots(dir)?);
    let builder = ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| CertFileError::new(dir, e.to_string()))?
        .with_root_certificates(roots);
    let (cert, key) = (
        dir.join(files::client_cert(user)),
        dir.join(files::client_key(user)),
    );
    let mut cfg = if cert.exists() {
        let hint = "create it with `flotilla cert create-client NAME`";
        let (pair, _) = super::load_pair(&cert, &key, hint)?;
        builder
            .with_client_auth_cert(pair.cert.clone(), files::read_key(&key, hint)?)
            .map_err(|e| CertFileError::new(&cert, e.to_string()))?
    } else {
        // TLS without a client certificate: the nodes then want a bearer token.
        builder.with_no_client_auth()
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// tonic's connector for TLS channels.
#[derive(Clone)]
struct TlsDial {
    cfg: Arc<ClientConfig>,
    certs_dir: PathBuf,
}

type DialFuture =
    Pin<Box<dyn Future<Output = Result<TokioIo<TlsStream<TcpStream>>, std::io::Error>> + Send>>;

impl tower::Service<Uri> for TlsDial {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = DialFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> DialFuture {
        let (cfg, certs_dir) = (self.cfg.clone(), self.certs_dir.clone());
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().to_string();
            let port = uri.port_u16().unwrap_or(443);
            let bare = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let tcp = TcpStream::connect((bare.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(bare.clone()).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host}: {e}"))
            })?;
            let tls = TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .map_err(|e| explain(e, &format!("{host}:{port}"), &certs_dir))?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// A failed handshake, said in terms of what to do.
fn explain(e: std::io::Error, address: &str, certs_dir: &Path) -> std::io::Error {
    let text = e.to_string();
    let ca = certs_dir.join(files::CA_CERT);
    let why = if text.contains("InvalidContentType") || text.contains("corrupt message") {
        format!(
            "the node at {address} answered without TLS: it runs with --insecure while this \
             process uses --certs-dir {}; start every node the same way",
            certs_dir.display()
        )
    } else if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        // (BadSignature: a CA of the same name but another key.)
        format!(
            "the node at {address} presented a certificate not signed by {} (a node of \
             another cluster, or certificates from another CA)",
            ca.display()
        )
    } else if text.contains("NotValidForName") {
        format!(
            "the node at {address} presented a certificate that does not name that host; \
             recreate it with `flotilla cert create-node` listing every name it is dialed by"
        )
    } else if text.contains("alert") {
        format!(
            "the node at {address} refused this process's certificate ({text}): it is not \
             signed by that node's CA, has expired, or is missing"
        )
    } else {
        format!("TLS handshake with {address} failed: {text}")
    };
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, why)
}
