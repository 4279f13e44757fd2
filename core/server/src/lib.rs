//! Spout: a single-binary, real-time event platform — the server crate.
//!
//! Every event comes in through one ingest path
//! ([`pipeline::ingest`]: `POST /publish`, Mercure, sources, webhooks),
//! is appended to the durable log ([`log`], the `spout-log` crate) and only
//! then acknowledged and fanned out ([`hub`]) to Server-Sent Events
//! subscribers ([`stream`], framed by [`sse`]); who receives what is one
//! rule ([`visibility`]). Clients resume with `Last-Event-ID` from the log,
//! so a reconnect loses nothing.
//!
//! ```text
//! POST /publish ─┐
//! Mercure POST  ─┼─> ingest (check, transforms) ─> log.append (id, fsync) ─> fan-out thread ─> hub ─> stream ─> SSE frames
//! sources/hooks ─┘                                      └─ replay / catch-up / GET /poll read the log
//! ```
//!
//! This crate owns the hub, the pipeline, HTTP (its route table and the
//! one place errors become statuses: [`http::error`]), Mercure and the
//! binary. Below it, and never importing it: `spout-plugin` (the wasmtime
//! host), `spout-log` (storage), `spout-proto` (formats) and `spout-topic`;
//! beside it `spout-bench`. Inside it, nothing below [`http`] imports
//! [`http`], and background tasks (reload, sources) get what they need
//! handed to them, not the [`app::App`].
//!
//! [`server::run`] serves an [`app::App`] on any listener until a shutdown
//! future resolves; `main.rs` is only the command line around it.

#![warn(missing_docs)]

pub mod app;
pub mod bans;
pub mod cluster;
pub mod filter;
pub mod http;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod operate;
pub mod pipeline;
pub mod queue;
pub mod replay;
pub mod server;
pub mod shape;
pub mod stream;
pub mod tickets;
pub mod tls;
pub mod visibility;

pub use spout_proto::{brokers, config, event, publish, sse, topic};

/// `spout bench` (the `spout-bench` crate).
pub use spout_bench as bench;
/// The event log (the `spout-log` crate).
pub use spout_log as log;
/// The plugin host (the `spout-plugin` crate).
pub use spout_plugin as plugin;
