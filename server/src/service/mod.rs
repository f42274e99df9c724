//! The gRPC services of a node: [`kv`] for clients, [`admin`] for operators, [`internal`]
//! for other nodes.

pub mod admin;
pub mod internal;
pub mod kv;
pub mod nodes;
