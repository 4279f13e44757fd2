//! Turning `POST /publish` bodies into events, with every check done before
//! anything reaches the log: a request is accepted whole or rejected whole.
//!
//! Bodies are one JSON object, a JSON array of objects (`application/json`),
//! or one object per line (`application/x-ndjson`). Each object is
//! `{"topic", "data", "type"?, "to"?, "id"?}`; unknown fields are rejected so a
//! misspelt `"tpye"` is an error, not a silently untyped event.

use crate::event::{Data, NewEvent};
use crate::topic::{validate_topic, TopicError};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

/// Longest `type`, `to` or `id` accepted.
pub const MAX_FIELD_LEN: usize = 256;

/// The body formats `POST /publish` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// One object or an array of objects.
    Json,
    /// One object per line.
    Ndjson,
}

impl BodyFormat {
    /// Picks the format from a `Content-Type` header value (parameters ignored).
    pub fn from_content_type(value: &str) -> Option<BodyFormat> {
        let mime = value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/json" => Some(BodyFormat::Json),
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines" => Some(BodyFormat::Ndjson),
            _ => None,
        }
    }
}

/// Why a publish body was rejected; each maps to a 4xx with a JSON error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Not JSON, or not the expected shape.
    #[error("event {index}: {message}")]
    Json {
        /// Position of the offending event in the body (0-based).
        index: usize,
        /// What serde_json reported.
        message: String,
    },
    /// The `topic` field is absent.
    #[error("event {index}: missing field `topic`")]
    MissingTopic {
        /// Position in the body.
        index: usize,
    },
    /// The topic is not a valid topic name.
    #[error("event {index}: topic {topic:?}: {source}")]
    Topic {
        /// Position in the body.
        index: usize,
        /// The topic as sent.
        topic: String,
        /// What is wrong with it.
        source: TopicError,
    },
    /// `type`, `to` or `id` is empty, too long or has control characters.
    #[error("event {index}: field `{field}` {problem}")]
    Field {
        /// Position in the body.
        index: usize,
        /// Which field.
        field: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// `data` is larger than `max_event_bytes`.
    #[error("event {index}: data is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// Position in the body.
        index: usize,
        /// Size of the data.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The body holds no event.
    #[error("the body holds no event")]
    Empty,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Incoming<'a> {
    #[serde(borrow)]
    topic: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "type")]
    kind: Option<String>,
    /// `None` only when the field is absent: `"data": null` is the JSON
    /// value `null`, not "no data" (which an `Option` field would make it).
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    to: Option<String>,
    id: Option<String>,
}

fn present<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<&'a RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Parses and validates a whole publish body.
pub fn parse_body(
    format: BodyFormat,
    body: &[u8],
    max_event_bytes: usize,
) -> Result<Vec<NewEvent>, PublishError> {
    let json_err = |index: usize, e: serde_json::Error| PublishError::Json {
        index,
        message: e.to_string(),
    };
    let raw: Vec<Incoming<'_>> = match format {
        BodyFormat::Json => {
            let first = body.iter().find(|b| !b.is_ascii_whitespace());
            if first == Some(&b'[') {
                serde_json::from_slice(body).map_err(|e| json_err(0, e))?
            } else {
                vec![serde_json::from_slice(body).map_err(|e| json_err(0, e))?]
            }
        }
        BodyFormat::Ndjson => body
            .split(|&b| b == b'\n')
            .filter(|line| line.iter().any(|b| !b.is_ascii_whitespace()))
            .enumerate()
            .map(|(i, line)| serde_json::from_slice(line).map_err(|e| json_err(i, e)))
            .collect::<Result<_, _>>()?,
    };
    if raw.is_empty() {
        return Err(PublishError::Empty);
    }
    raw.into_iter()
        .enumerate()
        .map(|(index, e)| validate(index, e, max_event_bytes))
        .collect()
}

fn validate(
    index: usize,
    e: Incoming<'_>,
    max_event_bytes: usize,
) -> Result<NewEvent, PublishError> {
    let topic = e.topic.ok_or(PublishError::MissingTopic { index })?;
    validate_topic(&topic).map_err(|source| PublishError::Topic {
        index,
        topic: topic.to_string(),
        source,
    })?;
    for (field, value) in [("type", &e.kind), ("to", &e.to), ("id", &e.id)] {
        if let Some(v) = value {
            check_field(v).map_err(|problem| PublishError::Field {
                index,
                field,
                problem,
            })?;
        }
    }
    let data = match e.data {
        None => Data::Text(String::new()),
        Some(raw) if raw.get().starts_with('"') => Data::Text(
            serde_json::from_str(raw.get()).map_err(|err| PublishError::Json {
                index,
                message: err.to_string(),
            })?,
        ),
        Some(raw) => Data::Json(Bytes::from(compact_json(raw.get()))),
    };
    if data.len() > max_event_bytes {
        return Err(PublishError::TooLarge {
            index,
            size: data.len(),
            limit: max_event_bytes,
        });
    }
    Ok(NewEvent {
        topic: topic.into_owned(),
        kind: e.kind,
        data,
        to: e.to,
        key: e.id,
        extra: None,
    })
}

/// Checks a short text field that goes on an SSE line (`type`, `to`, `id`):
/// non-empty, at most [`MAX_FIELD_LEN`] bytes, no control characters.
pub fn check_field(v: &str) -> Result<(), &'static str> {
    if v.is_empty() {
        Err("is empty")
    } else if v.len() > MAX_FIELD_LEN {
        Err("is longer than 256 bytes")
    } else if v.chars().any(char::is_control) {
        Err("contains control characters (line breaks would corrupt the SSE frame)")
    } else {
        Ok(())
    }
}

/// Removes insignificant whitespace from already-validated JSON text, so a
/// pretty-printed value goes on one `data:` line. Unlike a parse and
/// re-serialise, numbers and key order stay exactly as the publisher sent them.
pub fn compact_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            if c == '"' {
                in_string = true;
            }
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(body: &str) -> Result<Vec<NewEvent>, PublishError> {
        parse_body(BodyFormat::Json, body.as_bytes(), 1024)
    }

    #[test]
    fn single_array_and_ndjson() {
        let e = one(r#"{"topic":"orders","type":"created","data":{"id": 7}}"#).unwrap();
        assert_eq!(e[0].data, Data::Json(Bytes::from_static(b"{\"id\":7}")));
        assert_eq!(e[0].kind.as_deref(), Some("created"));
        let e = one(r#" [{"topic":"a","data":"x\ny"},{"topic":"b","data":1.50}]"#).unwrap();
        assert_eq!(e[0].data, Data::Text("x\ny".into()));
        assert_eq!(e[1].data, Data::Json(Bytes::from_static(b"1.50")));
        let e = parse_body(
            BodyFormat::Ndjson,
            b"{\"topic\":\"a\",\"data\":1}\n\n{\"topic\":\"b\",\"data\":2,\"id\":\"k\"}\n",
            1024,
        )
        .unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].key.as_deref(), Some("k"));
    }

    #[test]
    fn null_data_is_json_null() {
        // Found by fuzz/publish_body: `"data": null` was taken for a missing
        // `data` and sent as an empty text, which no JSON reader accepts.
        let e = one(r#"{"topic":"a","data":null}"#).unwrap();
        assert_eq!(e[0].data, Data::Json(Bytes::from_static(b"null")));
        let e = one(r#"[{"topic":"a","data" : null },{"topic":"b"}]"#).unwrap();
        assert_eq!(e[0].data, Data::Json(Bytes::from_static(b"null")));
        assert_eq!(e[1].data, Data::Text(String::new()));
    }

    #[test]
    fn compaction_keeps_strings_intact() {
        assert_eq!(
            compact_json("{ \"a b\" : [ 1 ,\n 2 ], \"c\":\"x \\\" y\" }"),
            "{\"a b\":[1,2],\"c\":\"x \\\" y\"}"
        );
    }

    #[test]
    fn rejections() {
        assert!(matches!(one("{"), Err(PublishError::Json { .. })));
        assert!(matches!(
            one(r#"{"data":1}"#),
            Err(PublishError::MissingTopic { index: 0 })
        ));
        assert!(matches!(
            one(r#"{"topic":"a b","data":1}"#),
            Err(PublishError::Topic { .. })
        ));
        assert!(matches!(
            one(r#"{"topic":"a","data":1,"tpye":"x"}"#),
            Err(PublishError::Json { .. })
        ));
        assert!(matches!(
            one(r#"{"topic":"a","type":"x\ny","data":1}"#),
            Err(PublishError::Field { field: "type", .. })
        ));
        assert!(matches!(one("[]"), Err(PublishError::Empty)));
        let big = format!(r#"{{"topic":"a","data":"{}"}}"#, "x".repeat(1025));
        assert!(matches!(
            one(&big),
            Err(PublishError::TooLarge { size: 1025, .. })
        ));
        assert_eq!(
            BodyFormat::from_content_type("Application/JSON; charset=utf-8"),
            Some(BodyFormat::Json)
        );
        assert_eq!(BodyFormat::from_content_type("text/plain"), None);
    }
}
