//! Spout's formats, apart from its runtime: events, SSE framing, topic
//! selectors (from `spout-topic`), publish bodies, `config.toml` and
//! Mercure's URI-template selectors.
//!
//! May not import: the log, the plugin host, the server (this crate sits
//! below all of them; only `spout-topic` is below it).
//!
//! Everything here is pure parsing and encoding of untrusted bytes, kept
//! out of the server crate (wasmtime, sled, hyper) so the fuzz targets in
//! `fuzz/` build in seconds. The server re-exports each module under its
//! old path (`spout::sse`, `spout::config`, ...).

#![warn(missing_docs)]

pub mod brokers;
pub mod config;
pub mod event;
pub mod publish;
pub mod resume;
pub mod sse;
pub mod template;
/// Topic names and selectors (the `spout-topic` crate, shared with plugins).
pub use spout_topic as topic;
