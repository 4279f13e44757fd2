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
pub mod bench;
pub mod cluster;
pub mod http;
pub mod hub;
pub mod limits;
pub mod log;
pub mod mercure;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod queue;
pub mod server;
pub mod shape;
pub mod stream;
pub mod tickets;
pub mod tls;

pub use spout_proto::{config, event, publish, sse, topic};
