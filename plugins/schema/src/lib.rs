//! `schema`: validate each published event's JSON `data` against the JSON
//! Schemas whose rule matches its topic (a Spout selector) and/or its type,
//! and refuse the whole publish (422, with the validation errors) when one
//! does not validate. Valid events are stored unchanged.
//!
//! Data that does not parse as JSON (a text event: a JSON string published
//! arrives as its raw text) is validated as a JSON string of that text.
//! Schemas are compiled once, at init; a schema that does not compile is a
//! config error naming its rule.

use serde::Deserialize;
use serde_json::Value;
use spout_sdk::{BatchBuilder, Denial, Event, Plugin, Transform};
use std::fmt::Write;

/// At most this many errors are listed in a refusal; the rest are counted.
const MAX_ERRORS: usize = 10;
/// Each listed error is cut to this many bytes (instance values can be big).
const MAX_ERROR_LEN: usize = 200;
/// A topic is quoted in a refusal up to this many bytes.
const MAX_TOPIC_LEN: usize = 256;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    rules: Vec<RuleConfig>,
    /// Refuse events that no rule matches.
    #[serde(default)]
    require_match: bool,
    /// Assert `format` keywords (`email`, `date-time`, ...); by default they
    /// are annotations only, as the 2019-09 and 2020-12 drafts say.
    #[serde(default)]
    validate_formats: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleConfig {
    /// Topic selector: exact, `*` (one segment) or a final `**`.
    topic: Option<String>,
    /// Event type (`message` for events published without one).
    #[serde(rename = "type")]
    kind: Option<String>,
    schema: Value,
}

/// One segment of a topic selector.
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**` (last only): one or more segments.
    Rest,
}

/// A topic selector, as Spout's subscribers write them.
struct Selector(Vec<Segment>);

impl Selector {
    fn parse(text: &str) -> Result<Selector, String> {
        if text.is_empty() {
            return Err("is empty".into());
        }
        if text.len() > MAX_TOPIC_LEN {
            return Err(format!("is longer than {MAX_TOPIC_LEN} bytes"));
        }
        if let Some(c) = text.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(format!(
                "contains {c:?}; topics are printable ASCII without spaces"
            ));
        }
        let parts: Vec<&str> = text.split('/').collect();
        let last = parts.len() - 1;
        parts
            .iter()
            .enumerate()
            .map(|(i, part)| match *part {
                "*" => Ok(Segment::One),
                "**" if i == last => Ok(Segment::Rest),
                p if p.contains('*') => Err(format!(
                    "wildcard in segment {p:?}: use '*' as a whole segment or '**' as the last one"
                )),
                p => Ok(Segment::Literal(p.to_owned())),
            })
            .collect::<Result<_, _>>()
            .map(Selector)
    }

    fn matches(&self, topic: &str) -> bool {
        let mut parts = topic.split('/');
        for seg in &self.0 {
            match seg {
                Segment::Rest => return parts.next().is_some(),
                Segment::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(lit) => {
                    if parts.next() != Some(lit.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

struct Rule {
    topic: Option<Selector>,
    kind: Option<String>,
    validator: jsonschema::Validator,
}

impl Rule {
    fn matches(&self, e: &Event<'_>) -> bool {
        self.kind.as_deref().is_none_or(|k| k == e.kind)
            && self.topic.as_ref().is_none_or(|s| s.matches(e.topic))
    }
}

struct Schema {
    rules: Vec<Rule>,
    require_match: bool,
}

fn compile(i: usize, rule: RuleConfig, formats: bool) -> Result<Rule, String> {
    let topic = rule
        .topic
        .map(|t| Selector::parse(&t).map_err(|e| format!("rule {i}: topic {t:?}: {e}")))
        .transpose()?;
    let kind = match rule.kind {
        Some(k) if k.is_empty() => return Err(format!("rule {i}: `type` is empty")),
        k => k,
    };
    // A schema is an object or a boolean; a string holds one as JSON text
    // (a schema pasted into a TOML multi-line string).
    let schema = match rule.schema {
        Value::String(text) => serde_json::from_str(&text)
            .map_err(|e| format!("rule {i}: `schema` is a string but not JSON: {e}"))?,
        schema => schema,
    };
    let validator = jsonschema::options()
        .should_validate_formats(formats)
        .build(&schema)
        .map_err(|e| {
            let at = e.instance_path().as_str();
            let at = if at.is_empty() {
                String::new()
            } else {
                format!(" at {at}")
            };
            format!("rule {i}: invalid schema{at}: {}", cut(&e.to_string()))
        })?;
    Ok(Rule {
        topic,
        kind,
        validator,
    })
}

/// `s` cut to [`MAX_ERROR_LEN`] bytes (on a char boundary), marked with `…`.
fn cut(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= MAX_ERROR_LEN {
        return s.into();
    }
    let mut end = MAX_ERROR_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end]).into()
}

/// The event's data as a JSON value; text that is not JSON is a string.
fn instance(data: &[u8]) -> Value {
    serde_json::from_slice(data)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(data).into_owned()))
}

fn refuse(reason: String) -> Denial {
    Denial {
        status: 422,
        reason,
    }
}

impl Plugin for Schema {
    const NAME: &'static str = "schema";
    const CONFIG_SCHEMA: &'static str = r#"{"type":"object","properties":{"rules":{"type":"array","items":{"type":"object","properties":{"topic":{"type":"string"},"type":{"type":"string"},"schema":{"type":["object","boolean","string"]}},"required":["schema"],"additionalProperties":false}},"require_match":{"type":"boolean"},"validate_formats":{"type":"boolean"}},"additionalProperties":false}"#;

    fn new(config: &str) -> Result<Self, String> {
        let c: Config = if config.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(config).map_err(|e| e.to_string())?
        };
        let rules = c
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| compile(i, r, c.validate_formats))
            .collect::<Result<Vec<_>, _>>()?;
        if rules.is_empty() && !c.require_match {
            spout_sdk::log::warn("no rules: every event passes unchecked");
        }
        Ok(Schema {
            rules,
            require_match: c.require_match,
        })
    }
}

impl Transform for Schema {
    fn apply(&self, e: &Event<'_>, out: &mut BatchBuilder) -> Result<(), Denial> {
        let mut matching = self.rules.iter().filter(|r| r.matches(e)).peekable();
        if matching.peek().is_none() {
            if self.require_match {
                return Err(refuse(format!(
                    "no schema for topic {} (type {})",
                    cut(e.topic),
                    e.kind
                )));
            }
            out.push_event(e);
            return Ok(());
        }
        let value = instance(e.data);
        let mut reason = String::new();
        let mut count = 0usize;
        for rule in matching {
            for err in rule.validator.iter_errors(&value) {
                count += 1;
                if count > MAX_ERRORS {
                    continue;
                }
                reason.push_str(if count == 1 { ": " } else { "; " });
                let at = err.instance_path().as_str();
                let msg = if at.is_empty() {
                    err.to_string()
                } else {
                    format!("{at}: {err}")
                };
                reason.push_str(&cut(&msg));
            }
        }
        if count == 0 {
            out.push_event(e);
            return Ok(());
        }
        if count > MAX_ERRORS {
            let _ = write!(reason, "; and {} more", count - MAX_ERRORS);
        }
        Err(refuse(format!("{}{reason}", cut(e.topic))))
    }
}

spout_sdk::export_transform!(Schema);
