//! The flotilla server as a library: the gRPC services, the network transport between
//! nodes, node lifecycle, and the client the CLI, the load generator and the process
//! tests use.
//!
//! - [`start::serve`] runs a node: [`server::State`] owns its data directory and store;
//!   [`service`] holds the gRPC services (client `Kv`, `Admin`, node-to-node `Internal`);
//!   [`http`] serves `/metrics` and `/status`.
//! - [`transport::GrpcTransport`] carries Raft messages between nodes; [`gateway::Gateway`]
//!   lets a node's router reach replicas on other nodes; [`discovery`] and [`peers`]
//!   keep the address book.
//! - [`client::Client`] talks to a cluster; [`cli`] is the command line on top of it.
//!
//! The wire protocol is `proto/flotilla.proto`, described in docs/protocol.md.

// Errors carry descriptors (routing hints) and tonic statuses by value, as the
// callers match on them; boxing them all would cost more clarity than the copies cost.
#![allow(clippy::result_large_err)]

pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod convert;
pub mod discovery;
pub mod disk;
pub mod display;
pub mod errors;
pub mod gateway;
pub mod http;
pub mod identity;
pub mod node_id;
pub mod peers;
pub mod replicate;
pub mod routes;
pub mod server;
pub mod service;
pub mod start;
pub mod telemetry;
pub mod tls;
pub mod transport;

pub mod proto {
    //! Code generated from `proto/flotilla.proto`.
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("flotilla.v1");
}
