//! Server-Sent Events framing, exact to the WHATWG `EventSource` parsing rules.
//!
//! Every frame ends with a blank line. Text payloads are split on CR, LF and
//! CRLF into one `data:` line each (a trailing line break yields a final empty
//! `data:` line, which is how the client's parser restores it); JSON payloads
//! are already compact and single-line. Control frames (`connected`, `reset`,
//! `shutdown`, `overflow`) carry no `id:` so they never move the client's
//! Last-Event-ID.

use crate::event::{Data, DataRef, Extra};
use bytes::{BufMut, Bytes, BytesMut};
use std::time::Duration;

/// The heartbeat: a comment line, ignored by clients, that keeps proxies and
/// NAT tables from closing an idle stream and reveals dead peers.
pub const HEARTBEAT: &[u8] = b":\n\n";

/// Renders one logged event as a frame: `id:`, optional `event:`, `data:`
/// lines; a Mercure update's own id and `retry:` when it has them.
pub fn event_frame(id: u64, kind: Option<&str>, data: &Data, extra: Option<&Extra>) -> Bytes {
    let mut buf = BytesMut::with_capacity(32 + kind.map_or(0, str::len) + data.len());
    match extra {
        None => put_event(&mut buf, id, kind, data.as_ref()),
        Some(x) => put_event_with(
            &mut buf,
            id,
            x.wire_id.as_deref(),
            x.retry,
            kind,
            data.as_ref(),
        ),
    }
    buf.freeze()
}

/// Appends one event frame to `buf` (replay renders many into one buffer).
pub fn put_event(buf: &mut BytesMut, id: u64, kind: Option<&str>, data: DataRef<'_>) {
    put_event_with(buf, id, None, None, kind, data)
}

/// Appends one event frame whose `id:` is `wire_id` when given (a Mercure
/// publisher's id) and which sets the client's `retry:` when given.
pub fn put_event_with(
    buf: &mut BytesMut,
    id: u64,
    wire_id: Option<&str>,
    retry: Option<u32>,
    kind: Option<&str>,
    data: DataRef<'_>,
) {
    buf.put_slice(b"id: ");
    match wire_id {
        Some(w) => buf.put_slice(w.as_bytes()),
        None => buf.put_slice(itoa::Buffer::new().format(id).as_bytes()),
    }
    buf.put_u8(b'\n');
    if let Some(ms) = retry {
        buf.put_slice(b"retry: ");
        buf.put_slice(itoa::Buffer::new().format(ms).as_bytes());
        buf.put_u8(b'\n');
    }
    if let Some(kind) = kind {
        buf.put_slice(b"event: ");
        buf.put_slice(kind.as_bytes());
        buf.put_u8(b'\n');
    }
    match data {
        DataRef::Json(json) => {
            buf.put_slice(b"data: ");
            buf.put_slice(json);
            buf.put_u8(b'\n');
        }
        DataRef::Text(text) => {
            for line in lines(text) {
                buf.put_slice(b"data: ");
                buf.put_slice(line.as_bytes());
                buf.put_u8(b'\n');
            }
        }
    }
    buf.put_u8(b'\n');
}

/// Renders a control frame: `event: NAME` and a single-line JSON `data:`.
pub fn control_frame(name: &str, json: &serde_json::Value) -> Bytes {
    let body = json.to_string();
    let mut buf = BytesMut::with_capacity(16 + name.len() + body.len());
    buf.put_slice(b"event: ");
    buf.put_slice(name.as_bytes());
    buf.put_slice(b"\ndata: ");
    buf.put_slice(body.as_bytes());
    buf.put_slice(b"\n\n");
    buf.freeze()
}

/// Renders the `retry:` field that sets the client's reconnection delay.
pub fn retry_frame(retry: Duration) -> Bytes {
    Bytes::from(format!("retry: {}\n\n", retry.as_millis()))
}

/// Splits text into lines the way an `EventSource` parser does: CRLF, lone CR
/// and lone LF each end a line, and the text after the last break (possibly
/// empty) is a line too.
pub fn lines(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut start = Some(0usize);
    std::iter::from_fn(move || {
        let from = start?;
        match memchr::memchr2(b'\n', b'\r', &bytes[from..]) {
            Some(off) => {
                let end = from + off;
                let crlf = bytes[end] == b'\r' && bytes.get(end + 1) == Some(&b'\n');
                start = Some(end + 1 + usize::from(crlf));
                Some(&text[from..end])
            }
            None => {
                start = None;
                Some(&text[from..])
            }
        }
    })
}

/// A WHATWG-conformant `EventSource` stream parser, used by tests and by the
/// bench tool to read what the server wrote exactly as a browser would.
pub mod parse {
    /// One dispatched event, as `EventSource` would deliver it.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Received {
        /// The event type (`message` when none was given).
        pub kind: String,
        /// The data buffer with its final line break removed.
        pub data: String,
        /// The last event id in force when the event was dispatched.
        pub last_id: String,
    }

    /// Incremental parser state; feed it text in arbitrary chunks.
    #[derive(Debug, Default)]
    pub struct Parser {
        pending: String,
        kind: String,
        data: String,
        last_id: String,
        /// The last `retry:` value seen, in milliseconds.
        pub retry: Option<u64>,
        /// How many comment lines (heartbeats) were seen.
        pub comments: usize,
        skip_lf: bool,
    }

    impl Parser {
        /// Feeds a chunk of the stream; returns the events it completed.
        pub fn feed(&mut self, chunk: &str) -> Vec<Received> {
            let mut out = Vec::new();
            for c in chunk.chars() {
                if self.skip_lf {
                    self.skip_lf = false;
                    if c == '\n' {
                        continue;
                    }
                }
                match c {
                    '\r' | '\n' => {
                        self.skip_lf = c == '\r';
                        let line = std::mem::take(&mut self.pending);
                        self.line(&line, &mut out);
                    }
                    c => self.pending.push(c),
                }
            }
            out
        }

        fn line(&mut self, line: &str, out: &mut Vec<Received>) {
            if line.is_empty() {
                if !self.data.is_empty() {
                    let mut data = std::mem::take(&mut self.data);
                    data.pop();
                    let kind = std::mem::take(&mut self.kind);
                    out.push(Received {
                        kind: if kind.is_empty() {
                            "message".into()
                        } else {
                            kind
                        },
                        data,
                        last_id: self.last_id.clone(),
                    });
                }
                self.kind.clear();
                return;
            }
            if line.starts_with(':') {
                self.comments += 1;
                return;
            }
            let (field, value) = match line.find(':') {
                Some(i) => {
                    let v = &line[i + 1..];
                    (&line[..i], v.strip_prefix(' ').unwrap_or(v))
                }
                None => (line, ""),
            };
            match field {
                "event" => self.kind = value.to_string(),
                "data" => {
                    self.data.push_str(value);
                    self.data.push('\n');
                }
                "id" if !value.contains('\0') => self.last_id = value.to_string(),
                "retry" => {
                    if let Ok(ms) = value.parse() {
                        if value.bytes().all(|b| b.is_ascii_digit()) {
                            self.retry = Some(ms);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse::Parser;
    use super::*;

    fn text_frame(s: &str) -> String {
        String::from_utf8(event_frame(9, Some("t"), &Data::Text(s.into()), None).to_vec()).unwrap()
    }

    #[test]
    fn single_line_frame_bytes() {
        assert_eq!(text_frame("hello"), "id: 9\nevent: t\ndata: hello\n\n");
        let json = event_frame(
            7,
            None,
            &Data::Json(Bytes::from_static(b"{\"id\":7}")),
            None,
        );
        assert_eq!(&json[..], b"id: 7\ndata: {\"id\":7}\n\n");
    }

    #[test]
    fn every_line_break_splits() {
        assert_eq!(
            text_frame("a\nb\r\nc\rd"),
            "id: 9\nevent: t\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(text_frame("a\n"), "id: 9\nevent: t\ndata: a\ndata: \n\n");
        assert_eq!(text_frame(""), "id: 9\nevent: t\ndata: \n\n");
        assert_eq!(
            text_frame("\r\n\r"),
            "id: 9\nevent: t\ndata: \ndata: \ndata: \n\n"
        );
    }

    #[test]
    fn text_round_trips_through_a_conformant_parser() {
        // What a browser gets back is the text with every line break turned into LF.
        let cases = [
            "plain",
            "",
            "\n",
            "two\nlines",
            "crlf\r\nline",
            "cr\ronly",
            "trailing\n",
            "\n\nleading blank lines",
            " leading space",
            "data: looks like a field",
            ": looks like a comment",
            "id: 5",
            "unicode ✓ 日本語 🚀",
            "mixed\r\n\r\n\n\r",
        ];
        for case in cases {
            let mut p = Parser::default();
            let got = p.feed(&text_frame(case));
            assert_eq!(got.len(), 1, "{case:?}");
            let want = case.replace("\r\n", "\n").replace('\r', "\n");
            assert_eq!(got[0].data, want, "{case:?}");
            assert_eq!(got[0].kind, "t");
            assert_eq!(got[0].last_id, "9");
        }
    }

    #[test]
    fn control_frames_have_no_id() {
        let f = control_frame("connected", &serde_json::json!({"connection":"c1"}));
        assert_eq!(
            &f[..],
            b"event: connected\ndata: {\"connection\":\"c1\"}\n\n"
        );
        let mut p = Parser::default();
        let got = p.feed(std::str::from_utf8(&f).unwrap());
        assert_eq!(got[0].last_id, "");
    }

    #[test]
    fn parser_handles_fields_without_colon_and_split_chunks() {
        let mut p = Parser::default();
        assert!(p.feed("retry: 3000\n\n: hb\n\nda").is_empty());
        let got = p.feed("ta\ndata\r\n\r\n");
        assert_eq!(p.retry, Some(3000));
        assert_eq!(p.comments, 1);
        assert_eq!(got[0].data, "\n");
        assert_eq!(retry_frame(Duration::from_secs(3)), "retry: 3000\n\n");
    }
}
