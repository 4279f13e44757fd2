//! Spout's formats, apart from its runtime: events, SSE framing, topic
//! selectors, publish bodies and `config.toml`.
//!
//! Everything here is pure parsing and encoding of untrusted bytes, kept
//! out of the server crate (wasmtime, sled, hyper) so the fuzz targets in
//! `fuzz/` build in seconds. The server re-exports each module under its
//! old path (`spout::sse`, `spout::config`, ...).

#![warn(missing_docs)]

pub mod config;
pub mod event;
pub mod publish;
pub mod resume;
pub mod sse;
pub mod topic;
