//! `POST /publish` bodies (input: a `Content-Type` line, then the body):
//! `parse_body` never panics, with either format and any limit, and whatever it accepts is what the body said and safe to frame:
//! - every event's topic is valid (`validate_topic`), its `type`, `to` and
//!   `id` pass `check_field`, its data is within the limit;
//! - JSON data is one line (no CR or LF: it goes on a single `data:` line)
//!   and is the same JSON value as the body's `data`; string data is the
//!   body's string (`null` is JSON `null`); a missing `data` is empty text;
//! - events come back one per object, in order (checked against an
//!   independent `serde_json::Value` reading of the body).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use spout_proto::event::Data;
use spout_proto::publish::{check_field, parse_body, BodyFormat, PublishError};
use spout_proto::topic::validate_topic;

/// The input's first line is the `Content-Type` (a `limit=N` parameter in
/// it, ignored by the server, sets `max_event_bytes`; default 64 KiB); the
/// rest is the body.
fn split(input: &[u8]) -> Option<(BodyFormat, usize, &[u8])> {
    let nl = input.iter().position(|&b| b == b'\n')?;
    let content_type = std::str::from_utf8(&input[..nl]).ok()?;
    let format = BodyFormat::from_content_type(content_type)?;
    let limit = content_type
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("limit="))
        .find_map(|n| n.parse().ok())
        .unwrap_or(65536);
    Some((format, limit, &input[nl + 1..]))
}

/// The body as plain JSON values, one per event, read the way the format
/// says (`None` when this reading fails; then nothing is compared).
fn reference(format: BodyFormat, body: &[u8]) -> Option<Vec<Value>> {
    match format {
        BodyFormat::Json => match serde_json::from_slice(body).ok()? {
            Value::Array(items) => Some(items),
            v => Some(vec![v]),
        },
        BodyFormat::Ndjson => body
            .split(|&b| b == b'\n')
            .filter(|line| line.iter().any(|b| !b.is_ascii_whitespace()))
            .map(|line| serde_json::from_slice(line).ok())
            .collect(),
    }
}

fn text_field(obj: &Value, key: &str) -> Option<String> {
    obj.get(key).and_then(Value::as_str).map(str::to_owned)
}

fuzz_target!(|input: &[u8]| {
    let Some((format, limit, body)) = split(input) else {
        return;
    };
    let result = parse_body(format, body, limit);
    let events = match result {
        Ok(events) => events,
        Err(e) => {
            let _ = e.to_string();
            if let PublishError::Topic { topic, source, .. } = &e {
                assert_eq!(validate_topic(topic).as_ref(), Err(source));
            }
            return;
        }
    };
    assert!(!events.is_empty());
    for e in &events {
        validate_topic(&e.topic).expect("accepted an invalid topic");
        for v in [&e.kind, &e.to, &e.key].into_iter().flatten() {
            check_field(v).expect("accepted a bad type/to/id");
        }
        assert!(e.data.len() <= limit);
        assert!(e.extra.is_none());
        if let Data::Json(json) = &e.data {
            assert!(!json.contains(&b'\n') && !json.contains(&b'\r'), "{json:?}");
            assert!(!json.is_empty());
        }
    }
    let Some(objects) = reference(format, body) else {
        return;
    };
    assert_eq!(objects.len(), events.len());
    for (obj, e) in objects.iter().zip(&events) {
        assert_eq!(text_field(obj, "topic").as_deref(), Some(&*e.topic));
        assert_eq!(text_field(obj, "type"), e.kind);
        assert_eq!(text_field(obj, "to"), e.to);
        assert_eq!(text_field(obj, "id"), e.key);
        match (obj.get("data"), &e.data) {
            (None, Data::Text(t)) => assert_eq!(t, ""),
            (Some(Value::String(s)), Data::Text(t)) => assert_eq!(s, t),
            (Some(v), Data::Json(json)) => {
                let got: Value = serde_json::from_slice(json).expect("data is not JSON");
                assert_eq!(&got, v);
            }
            (want, got) => panic!("data {want:?} became {got:?}"),
        }
    }
});
