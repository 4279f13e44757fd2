//! The event: what publishers send, what the log stores and what the hub fans out.

use bytes::Bytes;
use std::sync::Arc;

/// An event's payload, kept in the form it goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// The publisher sent a JSON string: sent as text, one `data:` line per line.
    Text(String),
    /// Any other JSON value, kept as compact single-line JSON text.
    Json(Bytes),
}

/// A borrowed payload: what framing and storage need without owning it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataRef<'a> {
    /// Text, split into `data:` lines.
    Text(&'a str),
    /// Compact JSON, one `data:` line.
    Json(&'a [u8]),
}

impl Data {
    /// Borrows the payload.
    pub fn as_ref(&self) -> DataRef<'_> {
        match self {
            Data::Text(t) => DataRef::Text(t),
            Data::Json(j) => DataRef::Json(j),
        }
    }

    /// Size of the payload in bytes, as limited by `max_event_bytes`.
    pub fn len(&self) -> usize {
        match self {
            Data::Text(t) => t.len(),
            Data::Json(j) => j.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An event accepted for publishing but not yet in the log (no id yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Concrete topic (validated).
    pub topic: String,
    /// SSE event type (`event:` line); `None` means the default `message`.
    pub kind: Option<String>,
    /// Payload.
    pub data: Data,
    /// Only connections of this user receive the event.
    pub to: Option<String>,
    /// Publisher-chosen idempotency key: a retry with the same key on the same
    /// topic returns the original id instead of appending again.
    pub key: Option<String>,
    /// What a Mercure update carries beyond a plain event; `None` for most.
    pub extra: Option<Box<Extra>>,
}

/// What a Mercure update carries beyond a plain event (served by the `spout::http::mercure` module).
/// Boxed behind an `Option` so plain events pay one pointer for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extra {
    /// The update's further topics (its first, canonical topic is `topic`).
    pub also: Vec<Box<str>>,
    /// Only subscribers authorized for one of its topics receive it.
    pub private: bool,
    /// The SSE `id:` the publisher chose; unique across the log, and resolved
    /// back to the log sequence when a client resumes from it.
    pub wire_id: Option<Box<str>>,
    /// The `retry:` field (ms) sent with the event.
    pub retry: Option<u32>,
}

impl Extra {
    /// Whether the event is private (only authorized Mercure subscribers).
    pub fn is_private(extra: &Option<Box<Extra>>) -> bool {
        extra.as_ref().is_some_and(|x| x.private)
    }
}

/// An event as stored in the log, with its id and its pre-rendered SSE frame.
///
/// The frame is rendered once when the event enters the hub (or is read back
/// for replay) so that fan-out to N subscribers is N reference-count bumps,
/// not N serialisations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Strictly increasing log sequence number; the SSE `id:`.
    pub id: u64,
    /// Milliseconds since the Unix epoch when the log accepted the event.
    pub time_ms: u64,
    /// Concrete topic.
    pub topic: Arc<str>,
    /// SSE event type.
    pub kind: Option<Box<str>>,
    /// Payload.
    pub data: Data,
    /// Target user, if any.
    pub to: Option<Box<str>>,
    /// Idempotency key, if the publisher gave one.
    pub key: Option<Box<str>>,
    /// Mercure fields (further topics, private, wire id, retry), if any.
    pub extra: Option<Box<Extra>>,
    frame: Bytes,
}

impl Event {
    /// Builds a logged event and renders its SSE frame.
    pub fn new(id: u64, time_ms: u64, e: NewEvent) -> Event {
        let frame = crate::sse::event_frame(id, e.kind.as_deref(), &e.data, e.extra.as_deref());
        Event {
            id,
            time_ms,
            topic: Arc::from(e.topic),
            kind: e.kind.map(String::into_boxed_str),
            data: e.data,
            to: e.to.map(String::into_boxed_str),
            key: e.key.map(String::into_boxed_str),
            extra: e.extra,
            frame,
        }
    }

    /// The complete SSE frame (`id:`, `event:`, `data:` lines and the blank line).
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// Whether a plain (non-Mercure) connection of `user` may receive this
    /// event: not private, and addressed to nobody or to `user`.
    pub fn visible_to(&self, user: Option<&str>) -> bool {
        if Extra::is_private(&self.extra) {
            return false;
        }
        match &self.to {
            None => true,
            Some(to) => user == Some(&**to),
        }
    }

    /// The id on the wire: the publisher's Mercure id, else the log sequence.
    pub fn wire_id(&self) -> std::borrow::Cow<'_, str> {
        match self.extra.as_ref().and_then(|x| x.wire_id.as_deref()) {
            Some(w) => std::borrow::Cow::Borrowed(w),
            None => std::borrow::Cow::Owned(self.id.to_string()),
        }
    }
}

/// Milliseconds since the Unix epoch, for event timestamps and retention.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
