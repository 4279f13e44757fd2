//! Spout: a single-binary, real-time event platform.
//!
//! Publishers `POST /publish`; every event is appended to a durable log
//! ([`log`]) and only then acknowledged and fanned out ([`hub`]) to
//! Server-Sent Events subscribers ([`stream`], framed by [`sse`]). Clients
//! resume with `Last-Event-ID` from the log, so a reconnect loses nothing.
//!
//! ```text
//! POST /publish ─> publish (parse, validate) ─> log.append (id, fsync) ─> hub ─> stream ─> SSE frames
//!                                                      └─ replay / catch-up / GET /poll read the log
//! ```
//!
//! [`server::run`] serves an [`app::App`] on any listener until a shutdown
//! future resolves; `main.rs` is only the command line around it.

#![warn(missing_docs)]

pub mod app;
pub mod cluster;
pub mod http;
pub mod hub;
pub mod limits;
pub mod mercure;
pub mod metrics;
pub mod pipeline;
pub mod queue;
pub mod server;
pub mod shape;
pub mod stream;
pub mod tickets;
pub mod tls;
pub mod visibility;

pub use spout_proto::{config, event, publish, sse, topic};

/// `spout bench` (the `spout-bench` crate).
pub use spout_bench as bench;
/// The event log (the `spout-log` crate).
pub use spout_log as log;
/// The plugin host (the `spout-plugin` crate).
pub use spout_plugin as plugin;
