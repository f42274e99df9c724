//! The server's error type, and how every client-visible failure becomes a gRPC status.
//!
//! The status codes are part of the protocol (docs/protocol.md) and do not change:
//!
//! | failure | code | `flotilla-error` |
//! |---|---|---|
//! | empty, oversized or malformed request | `INVALID_ARGUMENT` | `invalid_request` |
//! | write of unknown outcome (timeout, node lost mid-call) | `UNKNOWN` | `ambiguous` |
//! | no leader / quorum within the retry budget | `UNAVAILABLE` | `unavailable` |
//! | the node has not joined a cluster yet / is shutting down (nothing ran) | `UNAVAILABLE` | `not_initialized` / `stopping` |
//! | storage failure on a node | `INTERNAL` | `storage` |
//! | no range covers the key (a broken meta range) | `INTERNAL` | `no_range` |
//! | a node or data directory of another cluster | `FAILED_PRECONDITION` | `wrong_cluster` |
//! | `init` of a cluster that is already initialized | `ALREADY_EXISTS` | `already_initialized` |
//!
//! The `flotilla-error` metadata key carries the machine-readable name.

use std::path::PathBuf;

use flotilla_router::Error as RouterError;
use tonic::{Code, Status};

/// Startup and lifecycle failures of a server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot read config file {path}: {source}")]
    ConfigFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source} (is another process using it?)")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] flotilla_engine::Error),
    #[error(transparent)]
    Store(#[from] flotilla_raftstore::Error),
    #[error("{0}")]
    WrongCluster(String),
    /// A certificate, key or token file that cannot be used.
    #[error("certificates: {0}")]
    Cert(#[from] crate::tls::files::CertFileError),
    #[error(
        "data directory {} is in use by another process (its database is locked): is another \
         flotilla node running with this --data-dir? Stop it, or give this node its own directory",
        path.display()
    )]
    DataDirInUse { path: PathBuf },
    #[error("corrupt cluster identity in {path}: {detail}")]
    Identity { path: PathBuf, detail: String },
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The store stopped on its own: the node exits rather than serve without it.
    #[error(
        "the store in {} stopped: {cause}. This node exits instead of serving without it; \
         other nodes keep the data. If the disk is full, delete {}/ballast to make room for \
         the restart, then free space or move the data directory (docs/operations.md, \"Disk full\")",
        path.display(),
        path.display()
    )]
    StoreFailed { path: PathBuf, cause: String },
    /// Another live process already serves this node's id.
    #[error("{0}")]
    DuplicateNode(String),
    /// The node must not go on: its binary is older than its cluster's log format.
    #[error("{0}")]
    Halted(String),
    /// This node served before, and its data directory is now blank.
    #[error("{0}")]
    ReplacedNode(String),
    /// This node is not a member of the initialized cluster it was told to join.
    #[error("{0}")]
    NotAMember(String),
}

impl ServerError {
    /// The process exit code for this error: 74 (`EX_IOERR`) when the store failed, so a
    /// supervisor can tell a storage fault from a configuration mistake (1).
    pub fn exit_code(&self) -> i32 {
        match self {
            ServerError::StoreFailed { .. } => 74,
            _ => 1,
        }
    }
}

/// A status with `code`, `message`, and the machine-readable `flotilla-error` name.
pub fn status(code: Code, name: &'static str, message: impl Into<String>) -> Status {
    let mut s = Status::new(code, message);
    s.metadata_mut().insert(
        "flotilla-error",
        tonic::metadata::MetadataValue::from_static(name),
    );
    s
}

/// The status a router error becomes.
pub fn router_status(e: RouterError) -> Status {
    match &e {
        RouterError::InvalidRequest(_) => {
            status(Code::InvalidArgument, "invalid_request", e.to_string())
        }
        RouterError::Ambiguous(_) => status(
            Code::Unknown,
            "ambiguous",
            format!("{e}; read the key to learn whether the write applied before retrying it"),
        ),
        RouterError::Unavailable { .. } => status(
            Code::Unavailable,
            "unavailable",
            format!("{e}; a majority of the range's replicas may be down or partitioned"),
        ),
        RouterError::Storage(_) => status(Code::Internal, "storage", e.to_string()),
        RouterError::NoRange(_) => status(Code::Internal, "no_range", e.to_string()),
    }
}

/// The status for a request that names no key where one is needed, or is otherwise
/// malformed before it reaches the router.
pub fn invalid(message: impl Into<String>) -> Status {
    status(Code::InvalidArgument, "invalid_request", message)
}

/// The `flotilla-error` names of refusals that ran nothing: a caller may send the call
/// to another node.
pub const NOT_RUN: [&str; 3] = ["not_initialized", "stopping", "wrong_cluster"];

/// True when `s` is a refusal that ran nothing (see [`NOT_RUN`]).
pub fn not_run(s: &Status) -> bool {
    error_name(s).is_some_and(|n| NOT_RUN.contains(&n))
}

/// The `flotilla-error` name of a status, if it has one.
pub fn error_name(s: &Status) -> Option<&str> {
    s.metadata()
        .get("flotilla-error")
        .and_then(|v| v.to_str().ok())
}

/// The status of a call to a node that is shutting down.
pub fn stopping(node_id: u64) -> Status {
    status(
        Code::Unavailable,
        "stopping",
        format!("node {node_id} is shutting down; use another node"),
    )
}

/// The status of a call to a node that is not part of a cluster yet.
pub fn not_initialized(node_id: u64) -> Status {
    status(
        Code::Unavailable,
        "not_initialized",
        format!("node {node_id} has not joined a cluster yet; run `flotilla init --endpoints ADDR` once for the cluster"),
    )
}
