//! The on-disk encoding of one event, versioned so the format can evolve.
//!
//! Layout (integers little-endian): `version u8 = 1`, `flags u8`, `time_ms u64`,
//! `topic: u16 len + bytes`, then when flagged `kind`, `to`, `key` (each u16
//! len + bytes), then the payload to the end. The topic comes first so replay
//! can skip records of other topics without decoding the rest.

use crate::event::{Data, DataRef, Event, NewEvent};
use bytes::Bytes;

const VERSION: u8 = 1;
const TEXT: u8 = 1;
const HAS_KIND: u8 = 2;
const HAS_TO: u8 = 4;
const HAS_KEY: u8 = 8;

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
}

impl View<'_> {
    /// Whether a connection of `user` may receive this event.
    pub fn visible_to(&self, user: Option<&str>) -> bool {
        self.to.is_none_or(|to| user == Some(to))
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
            },
        ))
    }
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
    for (field, bit) in [(&e.kind, HAS_KIND), (&e.to, HAS_TO), (&e.key, HAS_KEY)] {
        if field.is_some() {
            flags |= bit;
        }
    }
    out.push(VERSION);
    out.push(flags);
    out.extend_from_slice(&e.time_ms.to_le_bytes());
    put_str(out, &e.topic);
    for s in [&e.kind, &e.to, &e.key].into_iter().flatten() {
        put_str(out, s);
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
    Ok(View {
        time_ms,
        topic,
        kind,
        to,
        key,
        text: flags & TEXT != 0,
        data: r.0,
    })
}

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
            },
        )
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
