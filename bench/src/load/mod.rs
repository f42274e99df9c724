//! The pieces of `flotilla-load` (see `src/bin/flotilla-load.rs`).

pub mod args;
pub mod conn;
pub mod keys;
pub mod mux;
pub mod report;
pub mod stats;
pub mod worker;
