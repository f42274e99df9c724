//! `flotilla cert create-ca|create-node|create-client|create-token`: the certificates of a
//! secure cluster, made with rcgen (ECDSA P-256 keys), laid out as `files` describes.
//!
//! - The CA is self-signed, may sign certificates only (`keyCertSign`), and is valid for
//!   10 years by default.
//! - A node certificate has the common name `node`, the node's host names and addresses as
//!   subject alternative names (what other nodes and clients check when they dial it),
//!   the URI `urn:flotilla:node:N` binding it to one node id, and both the server and the
//!   client purposes (a node dials other nodes with it). 5 years by default.
//! - A client certificate has the client's name as its common name and the client purpose
//!   only, so it can never serve as a node. 5 years by default.
//!
//! Nothing is overwritten without `--overwrite`; private keys are written with mode 0600.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use super::files::{self, CertFileError, NODE_CN, NODE_URI_PREFIX};

/// When a new certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (clocks of other machines may lag) for `days` days.
    pub fn days(days: u32) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - time::Duration::hours(1),
            not_after: now + time::Duration::days(i64::from(days)),
        }
    }
}

/// Where `flotilla cert` reads and writes.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The directory the new files go to, and where `ca.crt` is read from.
    pub certs_dir: PathBuf,
    /// The CA's private key.
    pub ca_key: PathBuf,
    /// Replace files that exist.
    pub overwrite: bool,
}

impl Paths {
    fn out(&self, name: &str) -> PathBuf {
        self.certs_dir.join(name)
    }
}

fn rcgen_err(path: &Path, e: rcgen::Error) -> CertFileError {
    CertFileError::new(path, format!("cannot be made: {e}"))
}

/// Writes a new CA: `ca.crt` in the certs directory and its key at `ca_key`.
pub fn create_ca(paths: &Paths, validity: Validity) -> Result<Vec<PathBuf>, CertFileError> {
    let (cert_path, key_path) = (paths.out(files::CA_CERT), paths.ca_key.clone());
    refuse_existing(paths, &[&cert_path, &key_path])?;
    let key = KeyPair::generate().map_err(|e| rcgen_err(&key_path, e))?;
    // A name of its own, so that a certificate of another cluster's CA is reported as
    // signed by an unknown issuer rather than by a bad signature of a same-named one.
    let name = format!("Flotilla CA {:08x}", rand::random::<u32>());
    let mut params = base_params(Vec::new(), &name, validity, &cert_path)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params
        .self_signed(&key)
        .map_err(|e| rcgen_err(&cert_path, e))?;
    write_file(&key_path, key.serialize_pem().as_bytes(), true)?;
    write_file(&cert_path, cert.pem().as_bytes(), false)?;
    Ok(vec![cert_path, key_path])
}

/// Writes `node.crt` and `node.key` for node `node_id`, reachable at `hosts`.
pub fn create_node(
    paths: &Paths,
    node_id: u64,
    hosts: &[String],
    validity: Validity,
) -> Result<Vec<PathBuf>, CertFileError> {
    let (cert_path, key_path) = (paths.out(files::NODE_CERT), paths.out(files::NODE_KEY));
    if hosts.is_empty() {
        return Err(CertFileError::new(
            &cert_path,
            "needs at least one HOST (the names and addresses other nodes and clients dial, \
             e.g. `localhost 127.0.0.1 node1.example.com`)",
        ));
    }
    let mut params = base_params(hosts.to_vec(), NODE_CN, validity, &cert_path)?;
    let uri = format!("{NODE_URI_PREFIX}{node_id}");
    let uri = uri
        .as_str()
        .try_into()
        .map_err(|e| rcgen_err(&cert_path, e))?;
    params.subject_alt_names.push(SanType::URI(uri));
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    issue(paths, params, &cert_path, &key_path)
}

/// Writes `client.NAME.crt` and `client.NAME.key`.
pub fn create_client(
    paths: &Paths,
    name: &str,
    validity: Validity,
) -> Result<Vec<PathBuf>, CertFileError> {
    let cert_path = paths.out(&files::client_cert(name));
    let key_path = paths.out(&files::client_key(name));
    check_client_name(name, &cert_path)?;
    let mut params = base_params(Vec::new(), name, validity, &cert_path)?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    issue(paths, params, &cert_path, &key_path)
}

/// Adds a new bearer token for `name` to the certs directory's `tokens` file (only its
/// SHA-256 is kept) and returns the token, to be shown once.
pub fn create_token(certs_dir: &Path, name: &str) -> Result<String, CertFileError> {
    let path = certs_dir.join(files::TOKENS);
    check_client_name(name, &path)?;
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let existing = files::read_tokens(&path)?;
    if existing.values().any(|n| n == name) {
        return Err(CertFileError::new(
            &path,
            format!("already holds a token named `{name}`; remove its line to replace it"),
        ));
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| CertFileError::new(&path, format!("cannot be written ({e})")))?;
    writeln!(file, "{name} {}", files::token_hash(&token))
        .map_err(|e| CertFileError::new(&path, format!("cannot be written ({e})")))?;
    Ok(token)
}

fn check_client_name(name: &str, path: &Path) -> Result<(), CertFileError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        return Err(CertFileError::new(
            path,
            format!("client name `{name}`: use 1 to 64 letters, digits, `_`, `-` or `.`"),
        ));
    }
    if name == NODE_CN {
        return Err(CertFileError::new(
            path,
            "`node` is the common name of node certificates; choose another client name",
        ));
    }
    Ok(())
}

fn base_params(
    sans: Vec<String>,
    common_name: &str,
    validity: Validity,
    path: &Path,
) -> Result<CertificateParams, CertFileError> {
    let mut params = CertificateParams::new(sans).map_err(|e| rcgen_err(path, e))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Flotilla");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.serial_number = Some(SerialNumber::from(rand::random::<u64>() >> 1));
    Ok(params)
}

/// Signs `params` with the CA and writes the certificate and a new key.
fn issue(
    paths: &Paths,
    mut params: CertificateParams,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Vec<PathBuf>, CertFileError> {
    refuse_existing(paths, &[cert_path, key_path])?;
    let ca_cert_path = paths.out(files::CA_CERT);
    let hint = "create the CA first (`flotilla cert create-ca`) or copy its ca.crt here";
    let ca_pem = std::fs::read_to_string(&ca_cert_path)
        .map_err(|e| CertFileError::new(&ca_cert_path, format!("cannot be read ({e}); {hint}")))?;
    let ca_key_pem = std::fs::read_to_string(&paths.ca_key).map_err(|e| {
        CertFileError::new(
            &paths.ca_key,
            format!("cannot be read ({e}); give the CA's key with --ca-key"),
        )
    })?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)
        .map_err(|e| CertFileError::new(&paths.ca_key, format!("not a private key ({e})")))?;
    let ca_params = CertificateParams::from_ca_cert_pem(&ca_pem)
        .map_err(|e| CertFileError::new(&ca_cert_path, format!("not a CA certificate ({e})")))?;
    let ca = ca_params
        .self_signed(&ca_key)
        .map_err(|e| rcgen_err(&ca_cert_path, e))?;
    if ca.der().as_ref().is_empty() || !ca_key_matches(&ca_pem, &ca_key) {
        return Err(CertFileError::new(
            &paths.ca_key,
            format!("is not the key of {}", ca_cert_path.display()),
        ));
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(|e| rcgen_err(key_path, e))?;
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .map_err(|e| rcgen_err(cert_path, e))?;
    write_file(key_path, key.serialize_pem().as_bytes(), true)?;
    write_file(cert_path, cert.pem().as_bytes(), false)?;
    Ok(vec![cert_path.to_path_buf(), key_path.to_path_buf()])
}

/// True if `key` is the key of the CA certificate `ca_pem`.
fn ca_key_matches(ca_pem: &str, key: &KeyPair) -> bool {
    use rustls_pki_types::pem::PemObject;
    let Ok(der) = rustls_pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()) else {
        return false;
    };
    match x509_parser::parse_x509_certificate(&der) {
        Ok((_, cert)) => cert.public_key().raw == key.public_key_der().as_slice(),
        Err(_) => false,
    }
}

fn refuse_existing(paths: &Paths, targets: &[&Path]) -> Result<(), CertFileError> {
    if paths.overwrite {
        return Ok(());
    }
    match targets.iter().find(|p| p.exists()) {
        Some(p) => Err(CertFileError::new(
            p,
            "exists; pass --overwrite to replace it (nodes pick up new certificates on SIGHUP)",
        )),
        None => Ok(()),
    }
}

fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), CertFileError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e: std::io::Error| CertFileError::new(path, format!("cannot be written ({e})"));
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    // Written beside and renamed over, so a node reloading on SIGHUP never reads half a
    // file.
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}
