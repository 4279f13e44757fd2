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
//! Unbatched events are encoded once per route (a short cache by event id
//! shared by its subscribers), not once per subscriber.
//!
//! Plugin calls block: [`Shape::render`] runs on a blocking thread. A failed
//! call (counted and logged by the plugin host) sends the events unmerged or
//! uncompressed: shaping never loses an event.

use crate::event::{DataRef, Event};
use crate::plugin::wire::BatchBuilder;
use crate::plugin::{BatchPlugin, CompressPlugin};
use crate::sse;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The query parameter and header a subscriber names accepted encodings in.
pub const ACCEPT_PARAM: &str = "accept-encoding";
/// See [`ACCEPT_PARAM`].
pub const ACCEPT_HEADER: &str = "x-spout-accept-encoding";

/// A stream's batch stage: the plugin and the window the host keeps.
#[derive(Debug, Clone)]
pub struct BatchStage {
    /// The batch plugin (`merge`).
    pub plugin: BatchPlugin,
    /// How long a window stays open after its first event.
    pub window: Duration,
    /// Most events in one window.
    pub max: usize,
}

/// How one connection's events are shaped.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Window batching.
    pub batch: Option<BatchStage>,
    /// Compression, with the encodings this subscriber accepts.
    pub compress: Option<(Arc<Compressor>, Vec<String>)>,
    /// The plugin pool its renders run on.
    pool: tokio::runtime::Handle,
}

impl Shape {
    /// The shape for a subscriber of a route with these stages, or `None`
    /// when events go out as they are. `accepted` is what the subscriber
    /// sent in the parameter or header (comma-separated).
    pub fn for_stages(
        batch: Option<&BatchStage>,
        compress: Option<&Arc<Compressor>>,
        accepted: &[&str],
    ) -> Option<Shape> {
        let encodings: Vec<String> = accepted
            .iter()
            .flat_map(|v| v.split(','))
            .map(|e| e.trim().to_ascii_lowercase())
            .filter(|e| !e.is_empty())
            .collect();
        let compress = compress
            .cloned()
            .filter(|_| !encodings.is_empty())
            .map(|p| (p, encodings));
        let pool = match (batch, &compress) {
            (Some(b), _) => b.plugin.pool().clone(),
            (None, Some((c, _))) => c.plugin.pool().clone(),
            (None, None) => return None,
        };
        Some(Shape {
            batch: batch.cloned(),
            compress,
            pool,
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

    /// Where its plugin calls run (the plugin pool).
    pub fn pool(&self) -> &tokio::runtime::Handle {
        &self.pool
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
            None => self.frames(&mut out, events),
        }
        out
    }

    fn merge(&self, plugin: &BatchPlugin, window: &[Arc<Event>], out: &mut BytesMut) {
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
                self.frames(out, window);
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

    /// Events as they are, data encoded where the subscriber accepts it.
    /// Each event's envelope comes from the route's cache, so N subscribers
    /// cost one plugin call per event, not N.
    fn frames(&self, out: &mut BytesMut, events: &[Arc<Event>]) {
        for e in events {
            let data = e.data.as_ref();
            let encoded = self.compress.as_ref().and_then(|(c, accepted)| {
                c.envelope_of(e.id, data)
                    .filter(|(enc, _)| accepted.iter().any(|a| **a == **enc))
            });
            match encoded {
                Some((_, envelope)) => {
                    sse::put_event(out, e.id, e.kind.as_deref(), DataRef::Json(&envelope))
                }
                None => sse::put_event(out, e.id, e.kind.as_deref(), data),
            }
        }
    }

    /// One merged frame (its data is this connection's own: not cached).
    fn frame(&self, out: &mut BytesMut, id: u64, kind: Option<&str>, data: DataRef<'_>) {
        let encoded = self.compress.as_ref().and_then(|(c, accepted)| {
            c.envelope(data)
                .filter(|(enc, _)| accepted.iter().any(|a| **a == **enc))
        });
        match encoded {
            Some((_, envelope)) => sse::put_event(out, id, kind, DataRef::Json(&envelope)),
            None => sse::put_event(out, id, kind, data),
        }
    }
}

/// Encoded data: the encoding and the JSON envelope to send instead.
type Envelope = (Box<str>, Bytes);

/// Envelopes remembered per route (by event id).
const RECENT: usize = 256;

/// A route's compress stage: the plugin and the envelopes it made for the
/// latest events, shared by every subscriber of the route.
#[derive(Debug)]
pub struct Compressor {
    plugin: CompressPlugin,
    recent: Mutex<VecDeque<(u64, Option<Envelope>)>>,
}

impl Compressor {
    /// A compress stage around `plugin`.
    pub fn new(plugin: CompressPlugin) -> Compressor {
        Compressor {
            plugin,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
        }
    }

    /// The compress plugin.
    pub fn plugin(&self) -> &CompressPlugin {
        &self.plugin
    }

    /// The envelope of logged event `id`, made once and remembered for the
    /// route's other subscribers.
    fn envelope_of(&self, id: u64, data: DataRef<'_>) -> Option<Envelope> {
        let lock = || self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, known)) = lock().iter().rev().find(|(i, _)| *i == id) {
            return known.clone();
        }
        // Encoded outside the lock; two subscribers may race to make the
        // same envelope, which is harmless.
        let made = self.envelope(data);
        let mut recent = lock();
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back((id, made.clone()));
        made
    }

    /// Encodes `data` into an envelope, or `None` to send it as it is.
    fn envelope(&self, data: DataRef<'_>) -> Option<Envelope> {
        let bytes = match data {
            DataRef::Text(t) => t.as_bytes(),
            DataRef::Json(j) => j,
        };
        // A failed call is counted and logged by the plugin host.
        let encoded = self.plugin.encode(bytes).ok()??;
        let envelope = serde_json::json!({
            "compressed": true,
            "encoding": encoded.encoding,
            "payload": base64::engine::general_purpose::STANDARD.encode(&encoded.data),
        })
        .to_string();
        // base64 and the envelope add a third and ~55 bytes: only send it
        // when it is still smaller than the data itself.
        (envelope.len() < bytes.len()).then(|| (encoded.encoding.into(), envelope.into()))
    }
}
