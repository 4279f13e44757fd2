//! The per-connection end of a stream route: batch, then compress, then
//! frame (DESIGN's `filter plugins ─> batch ─> compress ─> SSE frame`).
//!
//! - Batch: the stream collects its events for `window` after the first one
//!   (or until `max`) and the batch plugin merges them. The last frame of a
//!   window always carries the window's last id, so `Last-Event-ID` resume
//!   after a batch frame loses and repeats nothing.
//! - Compress: only for subscribers that asked (`?accept-encoding=gzip` or
//!   `X-Spout-Accept-Encoding: gzip`), so plain EventSource clients never
//!   see an envelope. Encoded data is sent as
//!   `{"compressed":true,"encoding":"gzip","payload":"<base64>"}`.
//!
//! Plugin calls block: [`Shape::render`] runs on a blocking thread. A failed
//! call (counted and logged by the plugin host) sends the events unmerged or
//! uncompressed: shaping never loses an event.

use crate::event::{Data, DataRef, Event};
use crate::pipeline::BatchStage;
use crate::plugin::wire::BatchBuilder;
use crate::plugin::Plugin;
use crate::sse;
use base64::Engine as _;
use bytes::BytesMut;
use std::sync::Arc;
use std::time::Duration;

/// The query parameter and header a subscriber names accepted encodings in.
pub const ACCEPT_PARAM: &str = "accept-encoding";
/// See [`ACCEPT_PARAM`].
pub const ACCEPT_HEADER: &str = "x-spout-accept-encoding";

/// How one connection's events are shaped.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Window batching.
    pub batch: Option<BatchStage>,
    /// Compression, with the encodings this subscriber accepts.
    pub compress: Option<(Arc<Plugin>, Vec<String>)>,
}

impl Shape {
    /// The shape for a subscriber of a route, or `None` when events go out
    /// as they are. `accepted` is what the subscriber sent in the parameter
    /// or header (comma-separated).
    pub fn for_route(route: &crate::pipeline::Route, accepted: &[&str]) -> Option<Shape> {
        let encodings: Vec<String> = accepted
            .iter()
            .flat_map(|v| v.split(','))
            .map(|e| e.trim().to_ascii_lowercase())
            .filter(|e| !e.is_empty())
            .collect();
        let compress = route
            .compress
            .clone()
            .filter(|_| !encodings.is_empty())
            .map(|p| (p, encodings));
        if route.batch.is_none() && compress.is_none() {
            return None;
        }
        Some(Shape {
            batch: route.batch.clone(),
            compress,
        })
    }

    /// The window to wait after a first event, if batching.
    pub fn window(&self) -> Option<Duration> {
        self.batch.as_ref().map(|b| b.window)
    }

    /// Most events merged into one window.
    pub fn max(&self) -> usize {
        self.batch.as_ref().map_or(1, |b| b.max)
    }

    /// Renders `events` (ascending ids) as SSE frames: merged per `max`
    /// events if batching, encoded if compressing. Blocking.
    pub fn render(&self, events: &[Arc<Event>]) -> BytesMut {
        let mut out = BytesMut::new();
        match &self.batch {
            Some(b) => {
                for window in events.chunks(b.max) {
                    self.merge(&b.plugin, window, &mut out);
                }
            }
            None => {
                for e in events {
                    self.frame(&mut out, e.id, e.kind.as_deref(), e.data.as_ref());
                }
            }
        }
        out
    }

    fn merge(&self, plugin: &Plugin, window: &[Arc<Event>], out: &mut BytesMut) {
        let (Some(first), Some(last)) = (window.first(), window.last()) else {
            return;
        };
        let mut batch = BatchBuilder::default();
        for e in window {
            batch.push_event(e);
        }
        let merged = match plugin.merge(batch.batch()) {
            Ok(m) => m,
            Err(_) => {
                // Counted and logged by the plugin host: send them unmerged.
                for e in window {
                    self.frame(out, e.id, e.kind.as_deref(), e.data.as_ref());
                }
                return;
            }
        };
        // Ids must stay within the window and ascend; the last frame always
        // carries the window's last id, so a resume from it skips exactly
        // the merged events.
        let mut prev = first.id.saturating_sub(1);
        let n = merged.len();
        for (i, r) in merged.into_iter().enumerate() {
            let id = if i + 1 == n {
                last.id
            } else if (first.id..=last.id).contains(&r.id) && r.id > prev {
                r.id
            } else {
                prev.max(first.id)
            };
            prev = id;
            let e = r.event;
            self.frame(out, id, e.kind.as_deref(), e.data.as_ref());
        }
    }

    /// One frame, its data encoded if the subscriber accepts the encoding.
    fn frame(&self, out: &mut BytesMut, id: u64, kind: Option<&str>, data: DataRef<'_>) {
        if let Some(encoded) = self.encode(data) {
            sse::put_event(out, id, kind, encoded.as_ref());
        } else {
            sse::put_event(out, id, kind, data);
        }
    }

    fn encode(&self, data: DataRef<'_>) -> Option<Data> {
        let (plugin, accepted) = self.compress.as_ref()?;
        let bytes = match data {
            DataRef::Text(t) => t.as_bytes(),
            DataRef::Json(j) => j,
        };
        // A failed call is counted and logged by the plugin host.
        let encoded = plugin.encode(bytes).ok()??;
        if !accepted.contains(&encoded.encoding) {
            return None;
        }
        let envelope = serde_json::json!({
            "compressed": true,
            "encoding": encoded.encoding,
            "payload": base64::engine::general_purpose::STANDARD.encode(&encoded.data),
        });
        let envelope = envelope.to_string();
        // base64 and the envelope add a third and ~55 bytes: only send it
        // when it is still smaller than the data itself.
        (envelope.len() < bytes.len()).then(|| Data::Json(envelope.into()))
    }
}
