//! Secure mode: TLS for every connection, mutual TLS between nodes, and who may call what.
//!
//! A node started with `--certs-dir DIR` ([`NodeTls`]) serves gRPC and HTTP over TLS with
//! its `node.crt`, dials other nodes presenting the same certificate, and trusts only
//! certificates signed by the cluster CA (`ca.crt`). Running without TLS is the explicit
//! `--insecure`. The pieces:
//!
//! - [`files`]: the certs directory's layout, and every check of its files;
//! - [`create`]: `flotilla cert create-ca|create-node|create-client|create-token`;
//! - [`accept`]: the listeners' connections (TLS handshakes off the accept loop, a caller
//!   who speaks plaintext to a secure node named in the log), and the caller's verified
//!   identity, which travels with every request of a connection;
//! - [`dial`]: the channels to other nodes, plaintext or TLS, for nodes and clients alike;
//! - [`auth`]: the Internal service admits node certificates only; Kv and Admin admit any
//!   certificate of the CA or a known bearer token.
//!
//! The node's certificate, key and tokens are re-read on SIGHUP ([`NodeTls::reload`]):
//! new connections use them, connections already open keep theirs. The CA is read once.

pub mod accept;
pub mod auth;
pub mod create;
pub mod dial;
pub mod files;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::RwLock;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};

use files::{CertFileError, CertInfo};

/// The crypto provider of every TLS configuration: ring (rustls' other provider,
/// aws-lc-rs, would add a C and CMake build to a workspace that already compiles RocksDB;
/// ring lacks only the post-quantum key exchange, which rustls flags by deprecating it).
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates and keys of a node in secure mode.
#[derive(Debug)]
pub struct NodeTls {
    dir: PathBuf,
    roots: Arc<RootCertStore>,
    key: RwLock<Arc<CertifiedKey>>,
    info: RwLock<CertInfo>,
    /// Accepted bearer tokens: SHA-256 hex → name.
    tokens: RwLock<HashMap<String, String>>,
}

impl NodeTls {
    /// Reads and checks the certs directory of a node: `ca.crt`, `node.crt`, `node.key`,
    /// and `tokens` if present.
    pub fn load(dir: &Path) -> Result<Arc<NodeTls>, CertFileError> {
        if !dir.is_dir() {
            return Err(CertFileError::new(
                dir,
                "is not a directory; create it with `flotilla cert create-ca` and \
                 `flotilla cert create-node`, or start with --insecure",
            ));
        }
        let roots = Arc::new(load_roots(dir)?);
        let (key, info) = load_node_key(dir)?;
        let tokens = files::read_tokens(&dir.join(files::TOKENS))?;
        Ok(Arc::new(NodeTls {
            dir: dir.to_path_buf(),
            roots,
            key: RwLock::new(key),
            info: RwLock::new(info),
            tokens: RwLock::new(tokens),
        }))
    }

    /// Re-reads the node's certificate, key and tokens; on any problem keeps those in use
    /// and returns it. Returns the new certificate's description.
    pub fn reload(&self) -> Result<CertInfo, CertFileError> {
        let (key, info) = load_node_key(&self.dir)?;
        let tokens = files::read_tokens(&self.dir.join(files::TOKENS))?;
        *self.key.write() = key;
        *self.info.write() = info.clone();
        *self.tokens.write() = tokens;
        Ok(info)
    }

    /// The certs directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The certificate in use.
    pub fn info(&self) -> CertInfo {
        self.info.read().clone()
    }

    /// The name of the token whose SHA-256 is `hash`, if it is accepted.
    pub fn token_name(&self, token: &str) -> Option<String> {
        self.tokens.read().get(&files::token_hash(token)).cloned()
    }

    /// The gRPC listener's configuration: a client certificate is asked for and, if
    /// given, must chain to the CA; callers without one are judged per service by
    /// [`auth`].
    pub fn grpc_server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, CertFileError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| CertFileError::new(&self.ca_path(), format!("unusable CA ({e})")))?;
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| CertFileError::new(&self.dir, e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// The HTTP listener's configuration (metrics and status need no certificate).
    pub fn http_server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, CertFileError> {
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| CertFileError::new(&self.dir, e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// The configuration this node dials other nodes with: it trusts the CA only and
    /// presents its node certificate.
    pub fn dial_config(self: &Arc<Self>) -> Result<Arc<ClientConfig>, CertFileError> {
        let mut cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| CertFileError::new(&self.dir, e.to_string()))?
            .with_root_certificates(self.roots.clone())
            .with_client_cert_resolver(Arc::new(Resolver(self.clone())));
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.join(files::CA_CERT)
    }
}

/// The CA of a certs directory, as the trust roots.
pub fn load_roots(dir: &Path) -> Result<RootCertStore, CertFileError> {
    let path = dir.join(files::CA_CERT);
    let hint = "copy the cluster CA's ca.crt here (`flotilla cert create-ca` makes one)";
    let mut roots = RootCertStore::empty();
    for der in files::read_certs(&path, hint)? {
        files::check_cert(&path, &der, SystemTime::now())?;
        roots
            .add(der)
            .map_err(|e| CertFileError::new(&path, format!("not a usable CA certificate ({e})")))?;
    }
    Ok(roots)
}

fn load_node_key(dir: &Path) -> Result<(Arc<CertifiedKey>, CertInfo), CertFileError> {
    let cert_path = dir.join(files::NODE_CERT);
    let key_path = dir.join(files::NODE_KEY);
    let hint = "create it with `flotilla cert create-node --node-id N HOST...`";
    let (key, info) = load_pair(&cert_path, &key_path, hint)?;
    if !info.is_node() {
        return Err(CertFileError::new(
            &cert_path,
            format!(
                "is a client's certificate (common name `{}`), not a node's; \
                 create one with `flotilla cert create-node`",
                info.common_name
            ),
        ));
    }
    Ok((key, info))
}

/// A certificate chain and its key, checked: readable, valid now, and matching.
pub fn load_pair(
    cert_path: &Path,
    key_path: &Path,
    hint: &str,
) -> Result<(Arc<CertifiedKey>, CertInfo), CertFileError> {
    let chain = files::read_certs(cert_path, hint)?;
    let info = files::check_cert(cert_path, &chain[0], SystemTime::now())?;
    let key = files::read_key(key_path, hint)?;
    let key = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        let problem = match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "does not match the certificate {} (a key from another pair?)",
                cert_path.display()
            ),
            other => format!("is not a usable private key ({other})"),
        };
        CertFileError::new(key_path, problem)
    })?;
    Ok((Arc::new(key), info))
}

/// Hands out the node's current certificate, as a server and as a client.
#[derive(Debug)]
struct Resolver(Arc<NodeTls>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.key.read().clone())
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.key.read().clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::create::{self, Paths, Validity};
    use super::*;

    fn setup() -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            certs_dir: dir.path().to_path_buf(),
            ca_key: dir.path().join("ca.key"),
            overwrite: false,
        };
        create::create_ca(&paths, Validity::days(5)).unwrap();
        (dir, paths)
    }

    #[test]
    fn a_node_certificate_names_its_node_and_loads() {
        let (dir, paths) = setup();
        let hosts = ["localhost".to_string(), "127.0.0.1".to_string()];
        create::create_node(&paths, 7, &hosts, Validity::days(5)).unwrap();
        let tls = NodeTls::load(dir.path()).unwrap();
        let info = tls.info();
        assert!(info.is_node());
        assert_eq!(info.node_id, Some(7));
        // Made again without --overwrite: refused, naming the file.
        let e = create::create_node(&paths, 7, &hosts, Validity::days(5)).unwrap_err();
        assert!(
            e.to_string().contains("node.crt: exists; pass --overwrite"),
            "{e}"
        );
        // A client may not be called `node`, nor anything a file name would mangle.
        for bad in ["node", "a/b", ""] {
            assert!(
                create::create_client(&paths, bad, Validity::days(5)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_reload_that_meets_a_broken_pair_keeps_the_certificate_in_use() {
        let (dir, mut paths) = setup();
        let hosts = ["127.0.0.1".to_string()];
        create::create_node(&paths, 1, &hosts, Validity::days(5)).unwrap();
        let tls = NodeTls::load(dir.path()).unwrap();
        let first = tls.info().serial;
        paths.overwrite = true;
        create::create_node(&paths, 1, &hosts, Validity::days(5)).unwrap();
        let second = tls.reload().unwrap().serial;
        assert_ne!(first, second);
        std::fs::write(dir.path().join(files::NODE_KEY), b"not a key").unwrap();
        let e = tls.reload().unwrap_err();
        assert!(e.to_string().contains("node.key"), "{e}");
        assert_eq!(tls.info().serial, second);
    }

    #[test]
    fn tokens_are_kept_as_hashes_and_recognised() {
        let (dir, _) = setup();
        let token = create::create_token(dir.path(), "ci").unwrap();
        let text = std::fs::read_to_string(dir.path().join(files::TOKENS)).unwrap();
        assert!(!text.contains(&token), "the token itself is not stored");
        assert!(
            create::create_token(dir.path(), "ci").is_err(),
            "one token per name"
        );
        let hosts = ["127.0.0.1".to_string()];
        let paths = Paths {
            certs_dir: dir.path().to_path_buf(),
            ca_key: dir.path().join("ca.key"),
            overwrite: false,
        };
        create::create_node(&paths, 1, &hosts, Validity::days(5)).unwrap();
        let tls = NodeTls::load(dir.path()).unwrap();
        assert_eq!(tls.token_name(&token).as_deref(), Some("ci"));
        assert_eq!(tls.token_name("guess"), None);
        std::fs::write(dir.path().join(files::TOKENS), "ci short\n").unwrap();
        let e = tls.reload().unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }
}
