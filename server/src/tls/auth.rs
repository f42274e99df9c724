//! Who may call what, in secure mode. Every gRPC service is wrapped in an interceptor
//! that judges the caller once per call, from what the connection proved
//! ([`super::accept::PeerInfo`]) and the call's `authorization` header:
//!
//! - **Internal** (Raft traffic, forwarded commands, hellos, bootstraps): only a node
//!   certificate (common name `node`, signed by the cluster CA). A node certificate bound
//!   to node N may only speak as node N. Whatever a client sends here is refused.
//! - **Kv and Admin**: any certificate of the CA (a client's or a node's), or a bearer
//!   token whose SHA-256 is in the node's `tokens` file (for clients behind a proxy that
//!   terminates TLS).
//!
//! The caller's identity goes into the request's extensions ([`Caller`]); admin
//! operations log it. In `--insecure` mode everyone is admitted as `insecure`.

use std::sync::Arc;

use tonic::{Request, Status};

use super::accept::PeerInfo;
use super::NodeTls;

/// Who made a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A node certificate (with the node id it is bound to).
    Node(Option<u64>),
    /// A client certificate's name.
    Client(String),
    /// A bearer token's name.
    Token(String),
    /// Nobody was asked: the node runs with `--insecure`.
    Insecure,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Node(Some(id)) => write!(f, "node {id} (certificate)"),
            Caller::Node(None) => write!(f, "a node (certificate)"),
            Caller::Client(name) => write!(f, "client {name} (certificate)"),
            Caller::Token(name) => write!(f, "{name} (token)"),
            Caller::Insecure => write!(f, "unauthenticated (--insecure)"),
        }
    }
}

/// The caller of a request that passed an interceptor (`Insecure` when nothing was
/// judged).
pub fn caller<T>(req: &Request<T>) -> Caller {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Insecure)
}

/// The interceptors of one node's services.
#[derive(Clone, Debug)]
pub struct Guard {
    tls: Option<Arc<NodeTls>>,
}

impl Guard {
    /// Admits everyone (`--insecure`) or judges callers against `tls`.
    pub fn new(tls: Option<Arc<NodeTls>>) -> Guard {
        Guard { tls }
    }

    /// The Internal service's interceptor.
    pub fn internal(&self, mut req: Request<()>) -> Result<Request<()>, Status> {
        // Insecure: nothing to judge, and nothing to record ([`caller`] says so).
        if self.tls.is_none() {
            return Ok(req);
        }
        let peer = peer(&req);
        let Some(cert) = peer.cert.as_ref() else {
            return Err(Status::unauthenticated(format!(
                "the Internal service answers nodes only, and the caller at {} presented no \
                 certificate: a node must start with --certs-dir holding a node.crt signed by \
                 the cluster CA",
                remote(&peer)
            )));
        };
        if !cert.is_node() {
            return Err(Status::permission_denied(format!(
                "the Internal service answers nodes only: the caller at {} presented client \
                 `{}`'s certificate; clients use the Kv and Admin services",
                remote(&peer),
                cert.common_name
            )));
        }
        let claimed = crate::peers::caller(&req).0.filter(|id| *id != 0);
        if let (Some(claimed), Some(bound)) = (claimed, cert.node_id) {
            if claimed != bound {
                return Err(Status::permission_denied(format!(
                    "the caller at {} claims to be node {claimed} but its certificate is node \
                     {bound}'s",
                    remote(&peer)
                )));
            }
        }
        req.extensions_mut().insert(Caller::Node(cert.node_id));
        Ok(req)
    }

    /// The Kv and Admin services' interceptor.
    pub fn client(&self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let Some(tls) = &self.tls else {
            return Ok(req);
        };
        let peer = peer(&req);
        let caller = match (&peer.cert, bearer(&req)) {
            (Some(cert), _) if cert.is_node() => Caller::Node(cert.node_id),
            (Some(cert), _) => Caller::Client(cert.common_name.clone()),
            (None, Some(token)) => match tls.token_name(token) {
                Some(name) => Caller::Token(name),
                None => {
                    return Err(Status::unauthenticated(format!(
                        "the bearer token of the caller at {} is not one this node accepts \
                         (see `flotilla cert create-token`)",
                        remote(&peer)
                    )))
                }
            },
            (None, None) => {
                return Err(Status::unauthenticated(format!(
                    "this node runs in secure mode and the caller at {} presented neither a \
                     client certificate signed by the cluster CA nor a bearer token: pass \
                     --certs-dir DIR (holding ca.crt and client.NAME.crt) or --token",
                    remote(&peer)
                )))
            }
        };
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

fn peer<T>(req: &Request<T>) -> PeerInfo {
    req.extensions()
        .get::<PeerInfo>()
        .cloned()
        .unwrap_or_default()
}

fn remote(peer: &PeerInfo) -> String {
    peer.remote
        .map(|a| a.to_string())
        .unwrap_or_else(|| "an unknown address".into())
}

fn bearer<T>(req: &Request<T>) -> Option<&str> {
    let value = req.metadata().get("authorization")?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}
