//! `batch`: merge the events a stream collected over its window into one
//! event whose data is a JSON array.
//!
//! Each array item has the shape `GET /poll` returns for an event:
//! `{"id", "topic", "type"?, "data", "time"}` (`type` left out for
//! `message`). Data that is valid JSON is embedded as it is; anything else
//! becomes a JSON string. The merged event carries the last input's id, the
//! first input's topic and, when every input is addressed to the same user,
//! that target. With `debounce_by`, only the latest event per (topic, value
//! of that top-level data field) is kept.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use spout_sdk::{events, BatchBuilder, Batcher, Event, Plugin, RawBatch};
use std::borrow::Cow;
use std::collections::BTreeSet;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Top-level data field to debounce by: only the latest event per
    /// (topic, value of that field) is kept.
    #[serde(default)]
    #[schemars(length(min = 1))]
    debounce_by: Option<String>,
    /// Event type of the merged event (1-256 bytes, no control characters).
    #[serde(default = "default_kind")]
    #[schemars(length(min = 1, max = 256))]
    kind: String,
}

fn default_kind() -> String {
    "batch".into()
}

/// One item of the merged array: an event as `GET /poll` shows it.
#[derive(Serialize)]
struct Item<'a> {
    id: u64,
    topic: &'a str,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    data: Data<'a>,
    time: u64,
}

/// An event's data inside an item: raw JSON, or text as a JSON string.
#[derive(Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Json(&'a RawValue),
    Text(Cow<'a, str>),
}

/// The data as JSON: itself when it is valid JSON, else a JSON string of
/// its text (invalid UTF-8 replaced by U+FFFD).
fn data_of(bytes: &[u8]) -> Data<'_> {
    match std::str::from_utf8(bytes) {
        Ok(text) => match serde_json::from_str::<&RawValue>(text) {
            Ok(raw) => Data::Json(raw),
            Err(_) => Data::Text(Cow::Borrowed(text)),
        },
        Err(_) => Data::Text(String::from_utf8_lossy(bytes)),
    }
}

/// The value of the top-level `field` of `data` as compact JSON text, when
/// the data is a JSON object that has the field (`null` counts as a value).
fn field_value(data: &[u8], field: &str) -> Option<String> {
    let text = std::str::from_utf8(data).ok()?;
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    value.as_object()?.get(field).map(|v| v.to_string())
}

/// Which events survive debouncing by `field`: the latest (last in input
/// order) per (topic, field value); events without the field all survive.
fn debounce(events: &[Event<'_>], field: &str) -> Vec<bool> {
    let mut seen = BTreeSet::new();
    let mut keep = vec![true; events.len()];
    for (i, e) in events.iter().enumerate().rev() {
        if let Some(value) = field_value(e.data, field) {
            keep[i] = seen.insert((e.topic, value));
        }
    }
    keep
}

/// The user every event is addressed to, if they all share one.
fn common_target<'a>(events: &[Event<'a>]) -> Option<&'a str> {
    let first = events.first()?.target?;
    events
        .iter()
        .all(|e| e.target == Some(first))
        .then_some(first)
}

/// A window merged into one event (its type comes from the config).
#[derive(Debug, PartialEq)]
struct Merged<'a> {
    id: u64,
    topic: &'a str,
    target: Option<&'a str>,
    /// The JSON array of items.
    data: String,
}

/// Merges a window's events (ordered by id); `None` for an empty window.
fn merge_window<'a>(events: &[Event<'a>], debounce_by: Option<&str>) -> Option<Merged<'a>> {
    let last = events.last()?;
    let keep = match debounce_by {
        Some(field) => debounce(events, field),
        None => vec![true; events.len()],
    };
    let items: Vec<Item<'_>> = events
        .iter()
        .zip(keep)
        .filter(|(_, keep)| *keep)
        .map(|(e, _)| Item {
            id: e.id,
            topic: e.topic,
            kind: (e.kind != "message").then_some(e.kind),
            data: data_of(e.data),
            time: e.time_ms,
        })
        .collect();
    // Serialising borrowed raw values and strings cannot fail.
    let data = serde_json::to_string(&items).unwrap_or_else(|_| "[]".into());
    Some(Merged {
        id: last.id,
        topic: events[0].topic,
        target: common_target(events),
        data,
    })
}

/// Whether `kind` may be an event type (the host's rule for `type`).
fn valid_type(kind: &str) -> bool {
    !kind.is_empty() && kind.len() <= 256 && !kind.chars().any(char::is_control)
}

struct Batch {
    debounce_by: Option<String>,
    kind: String,
}

impl Plugin for Batch {
    const NAME: &'static str = "batch";
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        if c.debounce_by.as_deref() == Some("") {
            return Err(
                "`debounce_by` must not be empty (leave it out to keep every event)".into(),
            );
        }
        if !valid_type(&c.kind) {
            return Err(format!(
                "`kind` {:?} is not a valid event type (1-256 bytes, no control characters)",
                c.kind
            ));
        }
        Ok(Batch {
            debounce_by: c.debounce_by,
            kind: c.kind,
        })
    }
}

impl Batcher for Batch {
    fn merge(&self, batch: &RawBatch) -> RawBatch {
        let window: Vec<Event<'_>> = events(batch).collect();
        let mut out = BatchBuilder::new();
        if let Some(m) = merge_window(&window, self.debounce_by.as_deref()) {
            out.push(m.id, m.topic, &self.kind, m.data.as_bytes(), m.target);
        }
        out.finish()
    }
}

spout_sdk::export_batch!(Batch);

#[cfg(test)]
mod tests {
    use super::*;

    fn ev<'a>(id: u64, topic: &'a str, kind: &'a str, data: &'a str) -> Event<'a> {
        Event {
            id,
            time_ms: 1000 + id,
            topic,
            kind,
            data: data.as_bytes(),
            target: None,
        }
    }

    #[test]
    fn merges_like_poll() {
        let window = [
            ev(7, "orders", "created", r#"{"id":1}"#),
            ev(8, "orders/2", "message", "plain \"text\""),
            ev(9, "orders", "message", "1.50"),
        ];
        let m = merge_window(&window, None).unwrap();
        assert_eq!((m.id, m.topic, m.target), (9, "orders", None));
        assert_eq!(
            m.data,
            r#"[{"id":7,"topic":"orders","type":"created","data":{"id":1},"time":1007},{"id":8,"topic":"orders/2","data":"plain \"text\"","time":1008},{"id":9,"topic":"orders","data":1.50,"time":1009}]"#
        );
        assert_eq!(merge_window(&[], None), None);
    }

    #[test]
    fn targets() {
        let mut a = ev(1, "t", "message", "1");
        let mut b = ev(2, "t", "message", "2");
        a.target = Some("alice");
        b.target = Some("alice");
        assert_eq!(merge_window(&[a, b], None).unwrap().target, Some("alice"));
        b.target = Some("bob");
        assert_eq!(merge_window(&[a, b], None).unwrap().target, None);
        b.target = None;
        assert_eq!(merge_window(&[a, b], None).unwrap().target, None);
    }

    #[test]
    fn debounces() {
        let window = [
            ev(1, "p", "message", r#"{"sku":"a","n":1}"#),
            ev(2, "p", "message", r#"{"sku":"b","n":1}"#),
            ev(3, "q", "message", r#"{"sku":"a","n":1}"#),
            ev(4, "p", "message", r#"{"other":1}"#),
            ev(5, "p", "message", "not json"),
            ev(6, "p", "message", r#"{"other":2}"#),
            ev(7, "p", "message", r#"{"sku":"a","n":2}"#),
        ];
        let m = merge_window(&window, Some("sku")).unwrap();
        let ids: Vec<u64> = serde_json::from_str::<Vec<serde_json::Value>>(&m.data)
            .unwrap()
            .iter()
            .map(|i| i["id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids, [2, 3, 4, 5, 6, 7]);
        assert_eq!((m.id, m.topic), (7, "p"));
    }

    #[test]
    fn config() {
        assert_eq!(spout_sdk::init::<Batch>("").unwrap().kind, "batch");
        let b = spout_sdk::init::<Batch>(r#"{"debounce_by":"sku","kind":"prices"}"#).unwrap();
        assert_eq!(
            (b.debounce_by.as_deref(), b.kind.as_str()),
            (Some("sku"), "prices")
        );
        assert!(spout_sdk::init::<Batch>(r#"{"debounce":"sku"}"#).is_err());
        assert!(spout_sdk::init::<Batch>(r#"{"debounce_by":""}"#).is_err());
        assert!(spout_sdk::init::<Batch>(r#"{"kind":"a\nb"}"#).is_err());
    }
}
