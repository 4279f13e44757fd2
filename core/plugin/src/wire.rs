//! Events across the plugin boundary: one byte buffer plus spans.
//!
//! Building a batch copies each field once into `buf`; the component model
//! then moves `buf` and the fixed-size index into the guest in two copies,
//! instead of allocating a string per field per event.

use super::bindings::types::{EventBatch as Batch, EventRef, Span};
use crate::event::{Data, Event, NewEvent};

/// Accumulates events into a [`Batch`].
pub struct BatchBuilder {
    batch: Batch,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        BatchBuilder {
            batch: Batch {
                buf: Vec::new(),
                events: Vec::new(),
            },
        }
    }
}

impl BatchBuilder {
    fn span(&mut self, bytes: &[u8]) -> Span {
        let offset = self.batch.buf.len() as u32;
        self.batch.buf.extend_from_slice(bytes);
        Span {
            offset,
            len: bytes.len() as u32,
        }
    }

    /// Adds one event's fields.
    pub fn push(
        &mut self,
        id: u64,
        time_ms: u64,
        topic: &str,
        kind: Option<&str>,
        data: &[u8],
        target: Option<&str>,
    ) {
        let topic = self.span(topic.as_bytes());
        let kind = self.span(kind.unwrap_or("").as_bytes());
        let data = self.span(data);
        let target = target.map(|t| self.span(t.as_bytes()));
        self.batch.events.push(EventRef {
            id,
            time_ms,
            topic,
            kind,
            data,
            target,
        });
    }

    /// Adds a logged event.
    pub fn push_event(&mut self, e: &Event) {
        self.push(
            e.id,
            e.time_ms,
            &e.topic,
            e.kind.as_deref(),
            data_bytes(&e.data),
            e.to.as_deref(),
        );
    }

    /// Number of events added.
    pub fn len(&self) -> usize {
        self.batch.events.len()
    }

    /// Whether no event was added.
    pub fn is_empty(&self) -> bool {
        self.batch.events.is_empty()
    }

    /// Empties the builder, keeping its allocations.
    pub fn clear(&mut self) {
        self.batch.buf.clear();
        self.batch.events.clear();
    }

    /// The batch built so far.
    pub fn batch(&self) -> &Batch {
        &self.batch
    }
}

/// What a plugin sees as an event's data: JSON text, or the text itself for
/// events published as a JSON string.
pub fn data_bytes(d: &Data) -> &[u8] {
    match d {
        Data::Text(t) => t.as_bytes(),
        Data::Json(j) => j,
    }
}

/// Why a batch returned by a plugin was rejected.
#[derive(Debug, thiserror::Error)]
#[error("event {index}: {what}")]
pub struct Malformed {
    /// Index of the offending event.
    pub index: usize,
    /// What was wrong.
    pub what: String,
}

fn field<'a>(buf: &'a [u8], s: Span, index: usize, name: &str) -> Result<&'a [u8], Malformed> {
    let start = s.offset as usize;
    let end = start.checked_add(s.len as usize);
    end.and_then(|end| buf.get(start..end))
        .ok_or_else(|| Malformed {
            index,
            what: format!(
                "{name} span {}+{} lies outside the {} byte buffer",
                s.offset,
                s.len,
                buf.len()
            ),
        })
}

fn text<'a>(buf: &'a [u8], s: Span, index: usize, name: &str) -> Result<&'a str, Malformed> {
    std::str::from_utf8(field(buf, s, index, name)?).map_err(|_| Malformed {
        index,
        what: format!("{name} is not UTF-8"),
    })
}

/// One event returned by a plugin, checked and owned, with the id it gave.
#[derive(Debug, Clone)]
pub struct Returned {
    /// The id the plugin put on it (a batch frame's last id; 0 if none).
    pub id: u64,
    /// The event itself, ready for validation and the log.
    pub event: NewEvent,
}

/// Checks every span of a returned batch and turns it into events. Data that
/// parses as JSON stays JSON; anything else becomes text.
pub fn decode(batch: &Batch) -> Result<Vec<Returned>, Malformed> {
    let buf = &batch.buf;
    batch
        .events
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let topic = text(buf, r.topic, i, "topic")?;
            let kind = text(buf, r.kind, i, "kind")?;
            let data = text(buf, r.data, i, "data")?;
            let to = match r.target {
                Some(t) => Some(text(buf, t, i, "target")?.to_owned()),
                None => None,
            };
            if kind.contains(['\n', '\r']) {
                return Err(Malformed {
                    index: i,
                    what: "kind has a line break".into(),
                });
            }
            let data = match serde_json::from_str::<&serde_json::value::RawValue>(data) {
                // JSON goes on one `data:` line: line breaks between tokens
                // (pretty-printed JSON) would end the frame early.
                Ok(_) if data.contains(['\n', '\r']) => Data::Json(compact_json(data).into()),
                Ok(_) => Data::Json(bytes::Bytes::copy_from_slice(data.trim().as_bytes())),
                Err(_) => Data::Text(data.to_owned()),
            };
            Ok(Returned {
                id: r.id,
                event: NewEvent {
                    topic: topic.to_owned(),
                    // `message` is the SSE default: stored as no type.
                    kind: (!kind.is_empty() && kind != "message").then(|| kind.to_owned()),
                    data,
                    to,
                    key: None,
                    extra: None,
                },
            })
        })
        .collect()
}

/// Removes the whitespace between the tokens of valid JSON (strings are
/// kept as they are; JSON strings cannot hold raw line breaks).
fn compact_json(json: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in json.as_bytes() {
        if in_string {
            out.push(b);
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            in_string = b == b'"';
            out.push(b);
        }
    }
    out
}

/// Checks a filter's answer (ascending indices below `n`) and turns it into
/// a keep-mask.
pub fn keep_mask(indices: &[u32], n: usize) -> Result<Vec<bool>, Malformed> {
    let mut mask = vec![false; n];
    let mut last: Option<u32> = None;
    for (pos, &i) in indices.iter().enumerate() {
        if i as usize >= n || last.is_some_and(|l| i <= l) {
            return Err(Malformed {
                index: pos,
                what: format!("kept index {i} is out of range or out of order (batch of {n})"),
            });
        }
        mask[i as usize] = true;
        last = Some(i);
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_spans() {
        let mut b = BatchBuilder::default();
        b.push(7, 1, "a/b", Some("x"), br#"{"k":1}"#, Some("u"));
        b.push(8, 2, "c", None, b"plain", None);
        let back = decode(b.batch()).unwrap();
        assert_eq!(back[0].id, 7);
        assert_eq!(back[0].event.topic, "a/b");
        assert_eq!(back[0].event.kind.as_deref(), Some("x"));
        assert_eq!(back[0].event.to.as_deref(), Some("u"));
        assert!(matches!(back[0].event.data, Data::Json(_)));
        assert_eq!(back[1].event.data, Data::Text("plain".into()));
        assert_eq!(back[1].event.kind, None);

        // Pretty-printed JSON is compacted to one line; strings keep their spaces.
        let mut p = BatchBuilder::default();
        p.push(
            1,
            1,
            "t",
            None,
            b"{\n  \"a b\": [1,\r\n 2],\n \"c\": \"x \\\" y\"\n}",
            None,
        );
        let back = decode(p.batch()).unwrap();
        assert_eq!(
            back[0].event.data,
            Data::Json(bytes::Bytes::from_static(br#"{"a b":[1,2],"c":"x \" y"}"#))
        );
        let mut k = BatchBuilder::default();
        k.push(1, 1, "t", Some("a\nid: 9"), b"1", None);
        assert!(decode(k.batch()).is_err());

        let mut bad = b.batch().clone();
        bad.events[1].data = Span {
            offset: u32::MAX,
            len: 10,
        };
        assert!(decode(&bad).unwrap_err().what.contains("outside"));

        assert_eq!(keep_mask(&[0, 2], 3).unwrap(), vec![true, false, true]);
        assert!(keep_mask(&[3], 3).is_err());
        assert!(keep_mask(&[1, 1], 3).is_err());
    }
}
