//! The on-disk encoding of one event, versioned so the format can evolve.
//!
//! Layout (integers little-endian): `version u8 = 1`, `flags u8`, `time_ms u64`,
//! `topic: u16 len + bytes`, then when flagged `kind`, `to`, `key`, `wire_id`
//! (each u16 len + bytes), the further topics (`u16` count, then each u16 len +
//! bytes), `retry u32`, then the payload to the end. The topic comes first so
//! replay can skip records of other topics without decoding the rest. The
//! Mercure fields (`private`, `wire_id`, further topics, `retry`) were added
//! as new flag bits, so records written before them read back unchanged.

use crate::event::{Data, DataRef, Event, Extra, NewEvent};
use bytes::Bytes;

const VERSION: u8 = 1;
const TEXT: u8 = 1;
const HAS_KIND: u8 = 2;
const HAS_TO: u8 = 4;
const HAS_KEY: u8 = 8;
const PRIVATE: u8 = 16;
const HAS_WIRE_ID: u8 = 32;
const HAS_ALSO: u8 = 64;
const HAS_RETRY: u8 = 128;

/// Why a stored record could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The record was written by a newer, unknown format.
    #[error("unknown record version {0}")]
    Version(u8),
    /// The record ends before a field it declares.
    #[error("record is truncated")]
    Truncated,
    /// A string field is not UTF-8.
    #[error("record holds invalid UTF-8")]
    Utf8,
}

/// A borrowed, zero-copy view of a stored record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View<'a> {
    /// Acceptance time, ms since the epoch.
    pub time_ms: u64,
    /// Topic.
    pub topic: &'a str,
    /// Event type.
    pub kind: Option<&'a str>,
    /// Target user.
    pub to: Option<&'a str>,
    /// Idempotency key.
    pub key: Option<&'a str>,
    /// Whether `data` is text (else compact JSON).
    pub text: bool,
    /// Payload bytes.
    pub data: &'a [u8],
    /// A private Mercure update.
    pub private: bool,
    /// The Mercure publisher's id for the `id:` line.
    pub wire_id: Option<&'a str>,
    /// The further topics, still encoded (see [`View::also`]).
    also: &'a [u8],
    /// The `retry:` field, ms.
    pub retry: Option<u32>,
}

impl<'a> View<'a> {
    /// Whether a plain (non-Mercure) connection of `user` may receive this
    /// event: not private, and addressed to nobody or to `user`.
    pub fn visible_to(&self, user: Option<&str>) -> bool {
        !self.private && self.to.is_none_or(|to| user == Some(to))
    }

    /// The update's further topics (validated when the record was decoded).
    pub fn also(&self) -> impl Iterator<Item = &'a str> + Clone + 'a {
        let mut r = Reader(self.also);
        std::iter::from_fn(move || r.str().ok())
    }

    /// Whether the record carries Mercure fields.
    pub fn has_extra(&self) -> bool {
        self.private || self.wire_id.is_some() || !self.also.is_empty() || self.retry.is_some()
    }

    /// The payload as framing wants it.
    pub fn data_ref(&self) -> Result<DataRef<'_>, RecordError> {
        Ok(if self.text {
            DataRef::Text(std::str::from_utf8(self.data).map_err(|_| RecordError::Utf8)?)
        } else {
            DataRef::Json(self.data)
        })
    }

    /// Materialises the event (and its SSE frame) with the given id.
    pub fn to_event(&self, id: u64) -> Result<Event, RecordError> {
        let data = if self.text {
            Data::Text(
                std::str::from_utf8(self.data)
                    .map_err(|_| RecordError::Utf8)?
                    .to_owned(),
            )
        } else {
            Data::Json(Bytes::copy_from_slice(self.data))
        };
        Ok(Event::new(
            id,
            self.time_ms,
            NewEvent {
                topic: self.topic.to_owned(),
                kind: self.kind.map(str::to_owned),
                data,
                to: self.to.map(str::to_owned),
                key: self.key.map(str::to_owned),
                extra: self.has_extra().then(|| {
                    Box::new(Extra {
                        also: self.also().map(Box::from).collect(),
                        private: self.private,
                        wire_id: self.wire_id.map(Box::from),
                        retry: self.retry,
                    })
                }),
            },
        ))
    }
}

/// What makes two events with one idempotency key "the same": everything a
/// subscriber receives except the id and the time (topic, type, `to`, the
/// data and whether it is text, Mercure's `private`, further topics and
/// `retry`). Stored beside the key so a retry with the same key and the same
/// content is answered with the first id, and one with other content is a
/// conflict instead of a silent drop.
pub type Digest = [u8; 16];

/// The [`Digest`] of an event about to be stored.
pub fn digest_new(e: &NewEvent) -> Digest {
    let (text, data): (bool, &[u8]) = match &e.data {
        Data::Text(t) => (true, t.as_bytes()),
        Data::Json(j) => (false, j),
    };
    let x = e.extra.as_deref();
    digest_parts(
        &e.topic,
        e.kind.as_deref(),
        e.to.as_deref(),
        text,
        data,
        x.is_some_and(|x| x.private),
        x.map_or(&[][..], |x| &x.also[..]).iter().map(|t| &**t),
        x.and_then(|x| x.retry),
    )
}

/// The [`Digest`] of a stored record.
pub fn digest_view(v: &View<'_>) -> Digest {
    digest_parts(
        v.topic,
        v.kind,
        v.to,
        v.text,
        v.data,
        v.private,
        v.also(),
        v.retry,
    )
}

#[allow(clippy::too_many_arguments)]
fn digest_parts<'a>(
    topic: &str,
    kind: Option<&str>,
    to: Option<&str>,
    text: bool,
    data: &[u8],
    private: bool,
    also: impl Iterator<Item = &'a str>,
    retry: Option<u32>,
) -> Digest {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    let mut field = |tag: u8, bytes: &[u8]| {
        h.update([tag]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(b't', topic.as_bytes());
    if let Some(k) = kind {
        field(b'k', k.as_bytes());
    }
    if let Some(to) = to {
        field(b'u', to.as_bytes());
    }
    field(if text { b'x' } else { b'j' }, data);
    if private {
        field(b'p', &[]);
    }
    for t in also {
        field(b'a', t.as_bytes());
    }
    if let Some(r) = retry {
        field(b'r', &r.to_le_bytes());
    }
    let full = h.finalize();
    let mut d = [0u8; 16];
    d.copy_from_slice(&full[..16]);
    d
}

/// Encodes an event for storage. String fields are bounded well below
/// `u16::MAX` by publish validation; longer ones are cut at that bound.
#[cfg(test)]
pub fn encode(e: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + e.topic.len() + e.data.len());
    encode_into(&mut out, e);
    out
}

/// Appends the encoding of `e` to `out` (blocks hold many records back to back).
pub fn encode_into(out: &mut Vec<u8>, e: &Event) {
    let data: &[u8] = match &e.data {
        Data::Text(t) => t.as_bytes(),
        Data::Json(j) => j,
    };
    let mut flags = 0;
    if matches!(e.data, Data::Text(_)) {
        flags |= TEXT;
    }
    let x = e.extra.as_deref();
    let wire_id = x.and_then(|x| x.wire_id.as_deref());
    let strs = [
        e.kind.as_deref(),
        e.to.as_deref(),
        e.key.as_deref(),
        wire_id,
    ];
    for (field, bit) in strs.iter().zip([HAS_KIND, HAS_TO, HAS_KEY, HAS_WIRE_ID]) {
        if field.is_some() {
            flags |= bit;
        }
    }
    let also = x.map_or(&[][..], |x| &x.also[..]);
    let retry = x.and_then(|x| x.retry);
    if x.is_some_and(|x| x.private) {
        flags |= PRIVATE;
    }
    if !also.is_empty() {
        flags |= HAS_ALSO;
    }
    if retry.is_some() {
        flags |= HAS_RETRY;
    }
    out.push(VERSION);
    out.push(flags);
    out.extend_from_slice(&e.time_ms.to_le_bytes());
    put_str(out, &e.topic);
    for s in strs.into_iter().flatten() {
        put_str(out, s);
    }
    if !also.is_empty() {
        let n = also.len().min(u16::MAX as usize);
        out.extend_from_slice(&(n as u16).to_le_bytes());
        for t in &also[..n] {
            put_str(out, t);
        }
    }
    if let Some(ms) = retry {
        out.extend_from_slice(&ms.to_le_bytes());
    }
    out.extend_from_slice(data);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = s.len().min(u16::MAX as usize);
    out.extend_from_slice(&(len as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..len]);
}

/// Decodes a stored record without copying.
pub fn decode(bytes: &[u8]) -> Result<View<'_>, RecordError> {
    let mut r = Reader(bytes);
    let version = r.u8()?;
    if version != VERSION {
        return Err(RecordError::Version(version));
    }
    let flags = r.u8()?;
    let time_ms = u64::from_le_bytes(r.take(8)?.try_into().map_err(|_| RecordError::Truncated)?);
    let topic = r.str()?;
    let mut opt = |bit: u8| -> Result<Option<&str>, RecordError> {
        if flags & bit != 0 {
            r.str().map(Some)
        } else {
            Ok(None)
        }
    };
    let kind = opt(HAS_KIND)?;
    let to = opt(HAS_TO)?;
    let key = opt(HAS_KEY)?;
    let wire_id = opt(HAS_WIRE_ID)?;
    let also = if flags & HAS_ALSO != 0 {
        let start = r.0;
        let n = r.take(2)?;
        for _ in 0..u16::from_le_bytes([n[0], n[1]]) {
            r.str()?;
        }
        let used = start.len() - r.0.len();
        &start[2..used]
    } else {
        &[][..]
    };
    let retry = if flags & HAS_RETRY != 0 {
        let b = r.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    } else {
        None
    };
    Ok(View {
        time_ms,
        topic,
        kind,
        to,
        key,
        text: flags & TEXT != 0,
        data: r.0,
        private: flags & PRIVATE != 0,
        wire_id,
        also,
        retry,
    })
}

#[derive(Clone)]
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }

    fn str(&mut self) -> Result<&'a str, RecordError> {
        let len = self.take(2)?;
        let len = u16::from_le_bytes([len[0], len[1]]) as usize;
        std::str::from_utf8(self.take(len)?).map_err(|_| RecordError::Utf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: Data, kind: Option<&str>, to: Option<&str>, key: Option<&str>) -> Event {
        Event::new(
            42,
            1_700_000_000_123,
            NewEvent {
                topic: "orders/eu".into(),
                kind: kind.map(Into::into),
                data,
                to: to.map(Into::into),
                key: key.map(Into::into),
                extra: None,
            },
        )
    }

    #[test]
    fn round_trips_mercure_fields() {
        let mut e = event(Data::Text("hi".into()), Some("t"), None, None);
        let extra = Extra {
            also: vec!["https://ex.com/a".into(), "b".into()],
            private: true,
            wire_id: Some("urn:uuid:1".into()),
            retry: Some(2500),
        };
        e = Event::new(
            42,
            e.time_ms,
            NewEvent {
                topic: "orders/eu".into(),
                kind: Some("t".into()),
                data: Data::Text("hi".into()),
                to: None,
                key: None,
                extra: Some(Box::new(extra)),
            },
        );
        let bytes = encode(&e);
        let view = decode(&bytes).unwrap();
        assert!(view.private && !view.visible_to(None));
        assert_eq!(view.wire_id, Some("urn:uuid:1"));
        assert_eq!(view.also().collect::<Vec<_>>(), ["https://ex.com/a", "b"]);
        assert_eq!(view.retry, Some(2500));
        assert_eq!(view.data, b"hi");
        let back = view.to_event(42).unwrap();
        assert_eq!(back, e);
        assert_eq!(
            &back.frame()[..],
            b"id: urn:uuid:1\nretry: 2500\nevent: t\ndata: hi\n\n"
        );
        for cut in 0..bytes.len() - 2 {
            assert!(decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn round_trips_every_shape() {
        let cases = [
            event(
                Data::Text("a\nb ✓".into()),
                Some("created"),
                Some("u1"),
                Some("k"),
            ),
            event(
                Data::Json(Bytes::from_static(b"{\"id\":7}")),
                None,
                None,
                None,
            ),
            event(Data::Text(String::new()), None, Some("bob"), None),
            event(
                Data::Json(Bytes::from_static(b"[]")),
                Some("t"),
                None,
                Some("key-1"),
            ),
        ];
        for e in cases {
            let bytes = encode(&e);
            let view = decode(&bytes).unwrap();
            assert_eq!(view.topic, "orders/eu");
            assert_eq!(view.to_event(42).unwrap(), e);
        }
    }

    #[test]
    fn rejects_damage() {
        let e = event(Data::Text("x".into()), Some("k"), None, None);
        let bytes = encode(&e);
        // Every prefix that cuts a declared field is detected, never misread
        // (the last byte is payload, so only the full length and one short decode).
        for cut in 0..bytes.len() - 1 {
            assert_eq!(
                decode(&bytes[..cut]),
                Err(RecordError::Truncated),
                "cut {cut}"
            );
        }
        let mut newer = bytes.clone();
        newer[0] = 2;
        assert_eq!(decode(&newer), Err(RecordError::Version(2)));
    }
}
