//! `schema`: validate each published event's JSON `data` against the JSON
//! Schemas whose rule matches its topic (a Spout selector) and/or its type,
//! and refuse the whole publish (422, with the validation errors) when one
//! does not validate. Valid events are stored unchanged.
//!
//! Data that does not parse as JSON (a text event: a JSON string published
//! arrives as its raw text) is validated as a JSON string of that text.
//! Schemas are compiled once, at init; a schema that does not compile is a
//! config error naming its rule.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use spout_sdk::topic::Selector;
use spout_sdk::{BatchBuilder, Denial, Event, Plugin, Transform};
use std::fmt::Write;

/// At most this many errors are listed in a refusal; the rest are counted.
const MAX_ERRORS: usize = 10;
/// Each listed error is cut to this many bytes (instance values can be big).
const MAX_ERROR_LEN: usize = 200;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The rules; an event must validate against every rule that matches it.
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

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RuleConfig {
    /// Topic selector: exact, `*` (one segment) or a final `**`.
    #[serde(default)]
    topic: Option<String>,
    /// Event type (`message` for events published without one).
    #[serde(default, rename = "type")]
    #[schemars(length(min = 1))]
    kind: Option<String>,
    /// The JSON Schema: an object, a boolean, or a string holding it as JSON.
    #[schemars(extend("type" = ["object", "boolean", "string"]))]
    schema: Value,
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
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn new(config: &str) -> Result<Schema, String> {
        spout_sdk::init(config)
    }

    fn event<'a>(topic: &'a str, kind: &'a str) -> Event<'a> {
        Event {
            id: 1,
            time_ms: 0,
            topic,
            kind,
            data: b"{}",
            target: None,
        }
    }

    #[test]
    fn rules_pick_events_by_topic_selector_and_type() {
        let s = new(
            r#"{"rules":[{"topic":"orders/*","schema":true},{"topic":"logs/**","type":"error","schema":{}},{"topic":"a/*/c","schema":"true"}]}"#,
        )
        .unwrap();
        let picks = |topic, kind| -> Vec<bool> {
            s.rules
                .iter()
                .map(|r| r.matches(&event(topic, kind)))
                .collect()
        };
        assert_eq!(picks("orders/1", "message"), [true, false, false]);
        assert_eq!(picks("orders/1/2", "message"), [false, false, false]);
        assert_eq!(picks("orders", "message"), [false, false, false]);
        assert_eq!(picks("logs/a/b", "error"), [false, true, false]);
        assert_eq!(picks("logs", "error"), [false, false, false]);
        assert_eq!(picks("logs/a", "info"), [false, false, false]);
        assert_eq!(picks("a/b/c", "message"), [false, false, true]);
    }

    #[test]
    fn config_errors() {
        let err = |c: &str| new(c).err().unwrap();
        let e = err(r#"{"rules":[{"topic":"orders/**/x","schema":{}}]}"#);
        assert!(
            e.starts_with(r#"rule 0: topic "orders/**/x""#) && e.contains("wildcard"),
            "{e}"
        );
        assert!(err(r#"{"rules":[{"topic":"or*ders","schema":{}}]}"#).contains("wildcard"));
        assert!(err(r#"{"rules":[{"topic":"a b","schema":{}}]}"#).contains("' '"));
        assert!(err(r#"{"rules":[{"topic":"","schema":{}}]}"#).contains("empty"));
        assert_eq!(
            err(r#"{"rules":[{"topic":"a"}]}"#),
            "config key `rules[0].schema`: missing field `schema`"
        );
        assert!(err(r#"{"strict":true}"#).contains("unknown field `strict`"));
        assert!(err(r#"{"rules":[{"type":"","schema":{}}]}"#).contains("`type` is empty"));
        assert!(err(r#"{"rules":[{"schema":{"type":5}}]}"#).contains("rule 0: invalid schema"));
    }
}
