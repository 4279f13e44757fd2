//! SSE framing: whatever a publisher may put in an event (anything that
//! passes `check_field` as `type` or Mercure `id`, any text, any JSON value
//! after `compact_json`, any `retry`), the encoded stream read back by a
//! WHATWG-exact `EventSource` parser gives back exactly the events that were
//! encoded, one per frame, in order:
//! - text data comes back with each CRLF, CR and LF turned into LF (empty
//!   text and trailing line breaks included), JSON data byte for byte;
//! - the type is the event's (or `message`), the last event id is the
//!   frame's `id:` (control frames, heartbeats and `retry` frames leave it);
//! - the stream is UTF-8, uses only the `id`, `event`, `data` and `retry`
//!   fields, each exactly as often as the frames call for (so no input adds
//!   an event, an `id:` or a `retry:`), and ends on a frame boundary.
//!
//! proto's own test parser (`sse::parse::Parser`), fed the same stream in
//! arbitrary chunks, must agree.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use spout_proto::event::{Data, DataRef, Extra};
use spout_proto::publish::{check_field, compact_json};
use spout_proto::sse;
use std::time::Duration;

/// One frame to encode. The input is text: frames separated by RS (0x1e),
/// each a letter and fields separated by US (0x1f):
/// - `E` text event / `J` JSON event: `E id US wire-id US retry US type US data`
///   (empty wire id, retry or type: none; lower case `e`/`j` renders with
///   `put_event_with` into the stream instead of `event_frame`);
/// - `C name US value`: a control frame; `H`: a heartbeat; `R ms`: retry.
#[derive(Debug)]
enum Frame<'a> {
    Event {
        id: u64,
        wire_id: Option<&'a str>,
        retry: Option<u32>,
        kind: Option<&'a str>,
        data: &'a str,
        json: bool,
        owned: bool,
    },
    Control {
        name: &'a str,
        value: &'a str,
    },
    Heartbeat,
    Retry(u32),
}

fn frames(input: &str) -> Vec<Frame<'_>> {
    let some = |v: &&str| !v.is_empty();
    input
        .split('\x1e')
        .take(16)
        .filter_map(|record| {
            let mut chars = record.chars();
            let letter = chars.next()?;
            let rest = chars.as_str();
            Some(match letter {
                'E' | 'J' | 'e' | 'j' => {
                    let mut f = rest.splitn(5, '\x1f');
                    let id = f.next().unwrap_or("");
                    Frame::Event {
                        id: id.parse().unwrap_or(id.len() as u64),
                        wire_id: f.next().filter(some),
                        retry: f.next().and_then(|r| r.parse().ok()),
                        kind: f.next().filter(some),
                        data: f.next().unwrap_or(""),
                        json: matches!(letter, 'J' | 'j'),
                        owned: letter.is_ascii_uppercase(),
                    }
                }
                'C' => {
                    let (name, value) = rest.split_once('\x1f').unwrap_or((rest, ""));
                    Frame::Control { name, value }
                }
                'H' => Frame::Heartbeat,
                'R' => Frame::Retry(rest.parse().unwrap_or(rest.len() as u32)),
                _ => return None,
            })
        })
        .collect()
}

const CONTROL: &[&str] = &["connected", "reset", "shutdown", "overflow", "replaced"];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    kind: String,
    data: String,
    last_id: String,
}

/// The WHATWG "event stream interpretation", written from the spec text
/// (not from `sse::parse`): lines end at CRLF, LF or CR; a blank line
/// dispatches; `field: value` loses one leading space; an `id` with NUL is
/// ignored; `retry` must be all ASCII digits; a partial last line or event
/// is discarded at the end of the stream.
#[derive(Default)]
struct Spec {
    events: Vec<Got>,
    data: String,
    kind: String,
    id_buffer: String,
    retry: Option<u64>,
    comments: usize,
    fields: Vec<String>,
}

impl Spec {
    fn parse(stream: &str) -> (Spec, &str) {
        let mut s = Spec::default();
        let stream = stream.strip_prefix('\u{feff}').unwrap_or(stream);
        let mut rest = stream;
        while let Some(end) = rest.find(['\r', '\n']) {
            let line = &rest[..end];
            let skip = if rest[end..].starts_with("\r\n") {
                2
            } else {
                1
            };
            rest = &rest[end + skip..];
            s.line(line);
        }
        (s, rest)
    }

    fn line(&mut self, line: &str) {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            self.comments += 1;
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        self.fields.push(field.to_owned());
        match field {
            "event" => self.kind = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.id_buffer = value.to_owned(),
            // (Digits beyond u64 cannot come from the encoder's u32.)
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok().or(self.retry);
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        if self.data.is_empty() {
            self.kind.clear();
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        let kind = std::mem::take(&mut self.kind);
        self.events.push(Got {
            kind: if kind.is_empty() {
                "message".into()
            } else {
                kind
            },
            data,
            last_id: self.id_buffer.clone(),
        });
    }
}

fn normalize(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

fuzz_target!(|input: &str| {
    let mut stream = BytesMut::new();
    let mut want = Vec::new();
    let (mut last_id, mut retry) = (String::new(), None::<u64>);
    let (mut ids, mut kinds, mut retries, mut heartbeats) = (0, 0, 0, 0);
    for frame in frames(input) {
        match frame {
            Frame::Event {
                id,
                wire_id,
                retry: r,
                kind,
                data,
                json,
                owned,
            } => {
                // What both publish paths let through (`check_field`).
                let kind = kind.filter(|k| check_field(k).is_ok());
                let wire_id = wire_id.filter(|w| check_field(w).is_ok());
                let (data, expect) = match (json, data) {
                    (false, t) => {
                        let lines: Vec<&str> = sse::lines(t).collect();
                        assert!(lines.iter().all(|l| !l.contains(['\r', '\n'])));
                        assert_eq!(lines.join("\n"), normalize(t));
                        (Data::Text(t.to_owned()), normalize(t))
                    }
                    (true, j) => {
                        let Ok(raw) = serde_json::from_str::<&RawValue>(j) else {
                            continue;
                        };
                        let compact = compact_json(raw.get());
                        assert!(!compact.contains(['\r', '\n']), "{compact:?}");
                        if let (Ok(a), Ok(b)) = (
                            serde_json::from_str::<serde_json::Value>(raw.get()),
                            serde_json::from_str::<serde_json::Value>(&compact),
                        ) {
                            assert_eq!(a, b, "compaction changed {j:?}");
                        }
                        (Data::Json(compact.clone().into()), compact)
                    }
                };
                if owned {
                    let extra = (wire_id.is_some() || r.is_some()).then(|| Extra {
                        wire_id: wire_id.map(Into::into),
                        retry: r,
                        ..Extra::default()
                    });
                    stream.extend_from_slice(&sse::event_frame(id, kind, &data, extra.as_ref()));
                } else {
                    let data_ref = match &data {
                        Data::Text(t) => DataRef::Text(t),
                        Data::Json(j) => DataRef::Json(j),
                    };
                    sse::put_event_with(&mut stream, id, wire_id, r, kind, data_ref);
                }
                last_id = wire_id.map_or_else(|| id.to_string(), str::to_owned);
                if let Some(r) = r {
                    retry = Some(u64::from(r));
                    retries += 1;
                }
                ids += 1;
                kinds += usize::from(kind.is_some());
                want.push(Got {
                    kind: kind.unwrap_or("message").to_owned(),
                    data: expect,
                    last_id: last_id.clone(),
                });
            }
            Frame::Control { name, value } => {
                let name = CONTROL
                    .iter()
                    .find(|c| **c == name)
                    .unwrap_or(&CONTROL[name.len() % CONTROL.len()]);
                let json = serde_json::json!({ "connection": value, "n": value.len() });
                stream.extend_from_slice(&sse::control_frame(name, &json));
                kinds += 1;
                want.push(Got {
                    kind: (*name).to_owned(),
                    data: json.to_string(),
                    last_id: last_id.clone(),
                });
            }
            Frame::Heartbeat => {
                stream.extend_from_slice(sse::HEARTBEAT);
                heartbeats += 1;
            }
            Frame::Retry(ms) => {
                stream.extend_from_slice(&sse::retry_frame(Duration::from_millis(u64::from(ms))));
                retry = Some(u64::from(ms));
                retries += 1;
            }
        }
    }

    let text = std::str::from_utf8(&stream).expect("the encoder wrote invalid UTF-8");
    let (spec, partial) = Spec::parse(text);
    assert_eq!(partial, "", "the stream ends mid-line");
    assert!(
        spec.data.is_empty() && spec.kind.is_empty(),
        "the stream ends mid-event"
    );
    assert_eq!(spec.events, want, "stream {text:?}");
    assert_eq!(spec.retry, retry);
    assert_eq!(spec.comments, heartbeats);
    for f in &spec.fields {
        assert!(
            matches!(f.as_str(), "id" | "event" | "data" | "retry"),
            "field {f:?} in {text:?}"
        );
    }
    let count = |name: &str| spec.fields.iter().filter(|f| *f == name).count();
    assert_eq!(count("id"), ids, "{text:?}");
    assert_eq!(count("event"), kinds, "{text:?}");
    assert_eq!(count("retry"), retries, "{text:?}");

    // proto's test parser, fed in arbitrary chunks (at char boundaries).
    let mut parser = sse::parse::Parser::default();
    let mut got = Vec::new();
    let mut rest = text;
    for cut in input.bytes() {
        if rest.is_empty() {
            break;
        }
        let mut at = (usize::from(cut) % rest.len()).max(1);
        while !rest.is_char_boundary(at) {
            at += 1;
        }
        got.extend(parser.feed(&rest[..at]));
        rest = &rest[at..];
    }
    got.extend(parser.feed(rest));
    let got: Vec<Got> = got
        .into_iter()
        .map(|r| Got {
            kind: r.kind,
            data: r.data,
            last_id: r.last_id,
        })
        .collect();
    assert_eq!(got, want, "sse::parse::Parser disagrees on {text:?}");
    assert_eq!(parser.retry, retry);
    assert_eq!(parser.comments, heartbeats);
});
