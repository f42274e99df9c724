//! The gRPC services of a node: [`kv`] for clients (with [`commands`], its streamed form),
//! [`admin`] for operators, [`internal`] for other nodes.

pub mod admin;
pub mod commands;
pub mod internal;
pub mod kv;
pub mod nodes;
