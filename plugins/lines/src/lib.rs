//! `lines`: publish each line of a tailed file as one event.
//!
//! The host reads the file and calls `on_input` with one or more complete
//! lines (ending in `\n` or `\r\n`) and metadata such as `("path", ..)`.
//! Every non-blank line becomes an event. In text mode its data is the line
//! as a JSON string; in JSON mode a line holding a JSON object is sent as
//! that object, optionally routed to a sub-topic and typed by its fields,
//! and any other line as `{"line": "<the line>"}`. Lines that are not valid
//! UTF-8 are skipped with a warning.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::value::RawValue;
use spout_sdk::topic::MAX_TOPIC_LEN;
use spout_sdk::{BatchBuilder, Denial, Plugin, Source};
use std::borrow::Cow;
use std::collections::BTreeMap;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Topic the lines are published to (the prefix in JSON mode with
    /// `route_by`): 1-256 bytes of printable ASCII, no spaces or `*`.
    // No `default`: a missing key is `None`, refused in `new` with a hint.
    #[schemars(
        required,
        length(min = 1, max = 256),
        pattern(r"^[\x21-\x29\x2B-\x7E]+$")
    )]
    topic: Option<String>,
    /// Event type of the lines (1-256 bytes, no control characters).
    #[serde(default = "default_type", rename = "type")]
    #[schemars(length(min = 1, max = 256))]
    kind: String,
    /// Parse lines as JSON objects.
    #[serde(default)]
    json: bool,
    /// JSON mode: top-level field whose value is appended to the topic.
    #[serde(default)]
    #[schemars(length(min = 1))]
    route_by: Option<String>,
    /// JSON mode: top-level field whose string value is the event type.
    #[serde(default)]
    #[schemars(length(min = 1))]
    type_field: Option<String>,
}

fn default_type() -> String {
    "line".into()
}

/// Whether `topic` is a concrete topic the host accepts: 1-256 bytes of
/// printable ASCII without spaces or `*`.
fn valid_topic(topic: &str) -> bool {
    spout_sdk::topic::validate_topic(topic).is_ok()
}

/// Whether `kind` may be an event type (the host's rule for `type`).
fn valid_type(kind: &str) -> bool {
    !kind.is_empty() && kind.len() <= 256 && !kind.chars().any(char::is_control)
}

/// The lines of `input`: each ends at `\n` (a `\r` before it is dropped);
/// text after the last `\n` counts as a line too.
fn split_lines(input: &[u8]) -> impl Iterator<Item = &[u8]> {
    input
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// A routing value made safe as a topic segment: `/`, whitespace, `*` and
/// anything outside printable ASCII become `_`.
fn topic_segment(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '/' && c != '*' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The text of a JSON string or number (`None` for other values).
fn scalar_text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let v = raw.get();
    match v.as_bytes().first()? {
        b'"' => serde_json::from_str::<String>(v).ok().map(Cow::Owned),
        b'-' | b'0'..=b'9' => Some(Cow::Borrowed(v)),
        _ => None,
    }
}

/// One line turned into an event.
#[derive(Debug, PartialEq)]
struct LineEvent<'a> {
    topic: Cow<'a, str>,
    kind: Cow<'a, str>,
    data: String,
}

struct Lines {
    topic: String,
    kind: String,
    json: bool,
    route_by: Option<String>,
    type_field: Option<String>,
}

impl Lines {
    /// The event for one non-blank line.
    fn event<'a>(&'a self, line: &str) -> LineEvent<'a> {
        let mut ev = LineEvent {
            topic: Cow::Borrowed(self.topic.as_str()),
            kind: Cow::Borrowed(self.kind.as_str()),
            data: String::new(),
        };
        if !self.json {
            ev.data = serde_json::Value::from(line).to_string();
            return ev;
        }
        // Only a JSON object parses into a map.
        let Ok(object) = serde_json::from_str::<BTreeMap<String, &RawValue>>(line) else {
            ev.data = serde_json::json!({ "line": line }).to_string();
            return ev;
        };
        ev.data = line.trim().to_owned();
        let field = |name: &Option<String>| name.as_ref().and_then(|n| object.get(n)).copied();
        if let Some(value) = field(&self.route_by).and_then(scalar_text) {
            if !value.is_empty() {
                let topic = format!("{}/{}", self.topic, topic_segment(&value));
                if topic.len() <= MAX_TOPIC_LEN {
                    ev.topic = Cow::Owned(topic);
                }
            }
        }
        if let Some(raw) = field(&self.type_field) {
            if let Ok(kind) = serde_json::from_str::<String>(raw.get()) {
                if valid_type(&kind) {
                    ev.kind = Cow::Owned(kind);
                }
            }
        }
        ev
    }
}

impl Plugin for Lines {
    const NAME: &'static str = "lines";
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        let topic = c
            .topic
            .ok_or("lines config: `topic` is required (the topic lines are published to)")?;
        if !valid_topic(&topic) {
            return Err(format!(
                "`topic` {topic:?} is not a valid topic (1-256 bytes of printable ASCII, no spaces or '*')"
            ));
        }
        if !valid_type(&c.kind) {
            return Err(format!(
                "`type` {:?} is not a valid event type (1-256 bytes, no control characters)",
                c.kind
            ));
        }
        for (key, value) in [("route_by", &c.route_by), ("type_field", &c.type_field)] {
            match value.as_deref() {
                Some("") => return Err(format!("`{key}` must not be empty")),
                Some(_) if !c.json => {
                    return Err(format!(
                        "`{key}` reads a JSON field: it needs `json = true`"
                    ))
                }
                _ => {}
            }
        }
        Ok(Lines {
            topic,
            kind: c.kind,
            json: c.json,
            route_by: c.route_by,
            type_field: c.type_field,
        })
    }
}

impl Source for Lines {
    fn on_input(
        &self,
        input: &[u8],
        meta: &[(String, String)],
        out: &mut BatchBuilder,
    ) -> Result<(), Denial> {
        for line in split_lines(input) {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Ok(line) = std::str::from_utf8(line) else {
                let path = meta
                    .iter()
                    .find(|(k, _)| k == "path")
                    .map_or("?", |(_, v)| v.as_str());
                spout_sdk::log::warn(&format!(
                    "{path}: skipped a line that is not valid UTF-8 ({} bytes)",
                    line.len()
                ));
                continue;
            };
            let ev = self.event(line);
            out.push(0, &ev.topic, &ev.kind, ev.data.as_bytes(), None);
        }
        Ok(())
    }
}

spout_sdk::export_source!(Lines);

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(config: &str) -> Lines {
        spout_sdk::init::<Lines>(config).unwrap()
    }

    fn ev(topic: &str, kind: &str, data: &str) -> LineEvent<'static> {
        LineEvent {
            topic: Cow::Owned(topic.into()),
            kind: Cow::Owned(kind.into()),
            data: data.into(),
        }
    }

    #[test]
    fn splits_lines() {
        let got: Vec<&[u8]> = split_lines(b"a\r\nb\n\nc").collect();
        assert_eq!(got, [&b"a"[..], b"b", b"", b"c"]);
        assert_eq!(split_lines(b"x\n").count(), 2);
    }

    #[test]
    fn text_mode() {
        let l = lines(r#"{"topic":"logs/app"}"#);
        assert_eq!(
            l.event(r#"said "hi"	now"#),
            ev("logs/app", "line", r#""said \"hi\"\tnow""#)
        );
    }

    #[test]
    fn json_mode() {
        let l = lines(r#"{"topic":"logs","json":true,"route_by":"service","type_field":"level"}"#);
        assert_eq!(
            l.event(r#"{"service":"api/v1 eu","level":"warn","n":1}"#),
            ev(
                "logs/api_v1_eu",
                "warn",
                r#"{"service":"api/v1 eu","level":"warn","n":1}"#
            )
        );
        assert_eq!(
            l.event(r#"{"service":7,"level":3}"#),
            ev("logs/7", "line", r#"{"service":7,"level":3}"#)
        );
        assert_eq!(
            l.event(r#"{"service":["x"],"level":"bad\ntype"}"#),
            ev("logs", "line", r#"{"service":["x"],"level":"bad\ntype"}"#)
        );
        assert_eq!(
            l.event("not json"),
            ev("logs", "line", r#"{"line":"not json"}"#)
        );
        assert_eq!(l.event("[1,2]"), ev("logs", "line", r#"{"line":"[1,2]"}"#));
        let long = format!(r#"{{"service":"{}"}}"#, "x".repeat(300));
        assert_eq!(l.event(&long).topic, "logs");
    }

    #[test]
    fn config() {
        assert!(spout_sdk::init::<Lines>("")
            .err()
            .unwrap()
            .contains("`topic` is required"));
        assert!(spout_sdk::init::<Lines>(r#"{"topic":"a","route_by":"x"}"#)
            .err()
            .unwrap()
            .contains("json = true"));
        assert!(spout_sdk::init::<Lines>(r#"{"topic":"a","path":"/x"}"#).is_err());
        assert!(spout_sdk::init::<Lines>(r#"{"topic":"a b"}"#).is_err());
        assert!(spout_sdk::init::<Lines>(r#"{"topic":"a","json":true,"type_field":""}"#).is_err());
    }
}
