//! The files of a certs directory, read and checked: every problem is reported with the
//! file's path, what is wrong with it, and what to do. A node refuses to start on any of
//! them (a missing, unreadable or malformed file, a key that does not match its
//! certificate, a certificate that has expired or is not valid yet); a reload on SIGHUP
//! that meets one keeps the certificates in use and says why.
//!
//! The layout is CockroachDB's: `ca.crt` (the cluster CA, on every node and client),
//! `node.crt`/`node.key` (a node's certificate, which it presents both as a server and as a
//! client of other nodes), `client.NAME.crt`/`client.NAME.key` (a client's), and the CA's
//! key `ca.key`, which only the machine that signs certificates needs. `tokens` (optional)
//! holds the SHA-256 of each bearer token a node accepts.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The cluster CA's certificate.
pub const CA_CERT: &str = "ca.crt";
/// The cluster CA's private key (needed only to sign certificates).
pub const CA_KEY: &str = "ca.key";
/// A node's certificate (server and node-to-node client).
pub const NODE_CERT: &str = "node.crt";
/// A node's private key.
pub const NODE_KEY: &str = "node.key";
/// Hashes of the bearer tokens a node accepts, one `NAME SHA256-HEX` per line.
pub const TOKENS: &str = "tokens";
/// The common name every node certificate carries.
pub const NODE_CN: &str = "node";
/// The URI (subject alternative name) that binds a node certificate to a node id.
pub const NODE_URI_PREFIX: &str = "urn:flotilla:node:";

/// The certificate file of client `name`.
pub fn client_cert(name: &str) -> String {
    format!("client.{name}.crt")
}

/// The key file of client `name`.
pub fn client_key(name: &str) -> String {
    format!("client.{name}.key")
}

/// A problem with one file of a certs directory.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct CertFileError {
    pub path: PathBuf,
    pub problem: String,
}

impl CertFileError {
    pub fn new(path: &Path, problem: impl Into<String>) -> CertFileError {
        CertFileError {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }
}

/// What a node or client needs to know of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject's common name: `node` for nodes, the client's name for clients.
    pub common_name: String,
    /// The node id a node certificate is bound to.
    pub node_id: Option<u64>,
    /// The serial number, in hex.
    pub serial: String,
    /// The end of the validity period, as seconds since the Unix epoch.
    pub not_after: i64,
}

impl CertInfo {
    /// True for a node's certificate.
    pub fn is_node(&self) -> bool {
        self.common_name == NODE_CN
    }
}

fn read(path: &Path, hint: &str) -> Result<Vec<u8>, CertFileError> {
    std::fs::read(path).map_err(|e| {
        let what = match e.kind() {
            std::io::ErrorKind::NotFound => "missing".to_string(),
            _ => format!("cannot be read ({e})"),
        };
        CertFileError::new(path, format!("{what}; {hint}"))
    })
}

/// The certificates of a PEM file (at least one).
pub fn read_certs(path: &Path, hint: &str) -> Result<Vec<CertificateDer<'static>>, CertFileError> {
    let bytes = read(path, hint)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertFileError::new(path, format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(CertFileError::new(
            path,
            "holds no certificate (expected a -----BEGIN CERTIFICATE----- block)",
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn read_key(path: &Path, hint: &str) -> Result<PrivateKeyDer<'static>, CertFileError> {
    let bytes = read(path, hint)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        CertFileError::new(
            path,
            format!(
                "holds no usable private key ({e}; expected a -----BEGIN PRIVATE KEY----- block)"
            ),
        )
    })
}

/// Parses a certificate and checks that it is valid at `now`.
pub fn check_cert(
    path: &Path,
    der: &CertificateDer<'_>,
    now: SystemTime,
) -> Result<CertInfo, CertFileError> {
    let info = describe(der).map_err(|e| CertFileError::new(path, e))?;
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| CertFileError::new(path, format!("not an X.509 certificate ({e})")))?;
    let now_s = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let validity = cert.validity();
    if now_s < validity.not_before.timestamp() {
        return Err(CertFileError::new(
            path,
            format!(
                "is not valid until {} (is this machine's clock right?); issue one valid now",
                validity.not_before
            ),
        ));
    }
    if now_s > validity.not_after.timestamp() {
        return Err(CertFileError::new(
            path,
            format!(
                "expired on {}; issue a new one with `flotilla cert` and the same CA",
                validity.not_after
            ),
        ));
    }
    Ok(info)
}

/// The common name, node id, serial and expiry of a certificate.
pub fn describe(der: &CertificateDer<'_>) -> Result<CertInfo, String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate ({e})"))?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let node_id = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|name| match name {
                GeneralName::URI(uri) => uri.strip_prefix(NODE_URI_PREFIX)?.parse().ok(),
                _ => None,
            })
        });
    Ok(CertInfo {
        common_name,
        node_id,
        serial: cert.raw_serial_as_string(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// The hashes of the accepted bearer tokens, by hash: the token's name.
pub fn read_tokens(
    path: &Path,
) -> Result<std::collections::HashMap<String, String>, CertFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(CertFileError::new(path, format!("cannot be read ({e})"))),
    };
    let mut tokens = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(' ') {
            Some((name, hash)) if hash.trim().len() == 64 => {
                tokens.insert(hash.trim().to_ascii_lowercase(), name.to_string());
            }
            _ => {
                return Err(CertFileError::new(
                    path,
                    format!(
                    "line {}: expected `NAME SHA256-HEX` (as `flotilla cert create-token` writes)",
                    i + 1
                ),
                ))
            }
        }
    }
    Ok(tokens)
}

/// The SHA-256 of a token, in lowercase hex.
pub fn token_hash(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
