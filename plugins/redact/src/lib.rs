//! `redact`: remove or mask configured fields of JSON event data before the
//! events are stored.
//!
//! A field is a dotted path (`user.email`): each segment walks into an
//! object; an array on the way has the rest of the path applied to each of
//! its elements. In `mask` mode the field's value (whatever its type) is
//! replaced by the mask string; in `remove` mode the field is dropped.
//! Objects are rewritten member by member: key order, numbers and untouched
//! values stay exactly as published. Data that is not JSON passes unchanged.

use schemars::JsonSchema;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use spout_sdk::{BatchBuilder, Denial, Event, Plugin, Transform};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Dotted paths of the fields to redact (at least one).
    // No `default`: a missing key is `None`, refused in `new` with a hint.
    #[schemars(required, length(min = 1), inner(length(min = 1)))]
    fields: Option<Vec<String>>,
    /// `mask` (replace the value) or `remove` (drop the member).
    #[serde(default)]
    mode: ModeName,
    /// The replacement string in `mask` mode.
    #[serde(default = "default_mask")]
    mask: String,
}

#[derive(Deserialize, Serialize, JsonSchema, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum ModeName {
    Remove,
    #[default]
    Mask,
}

fn default_mask() -> String {
    "***".into()
}

/// What happens to a matched field.
#[derive(Debug, Clone, PartialEq)]
enum Mode {
    /// Drop the member.
    Remove,
    /// Replace its value by this JSON text (the mask as a JSON string).
    Mask(String),
}

/// A JSON object's members in their order, values kept as raw JSON.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// `json` with the fields at `paths` redacted, or `None` when nothing
/// matched (or it is not JSON). Every path has at least one segment.
fn redact(json: &str, paths: &[&[String]], mode: &Mode) -> Option<String> {
    match json.trim_start().as_bytes().first()? {
        b'{' => redact_object(json, paths, mode),
        b'[' => redact_array(json, paths, mode),
        _ => None,
    }
}

fn redact_object(json: &str, paths: &[&[String]], mode: &Mode) -> Option<String> {
    let Members(members) = serde_json::from_str(json).ok()?;
    let mut changed = false;
    let mut out = String::with_capacity(json.len());
    out.push('{');
    for (key, value) in members {
        let rests: Vec<&[String]> = paths
            .iter()
            .filter(|p| p[0] == key)
            .map(|p| &p[1..])
            .collect();
        let value = if rests.iter().any(|rest| rest.is_empty()) {
            changed = true;
            match mode {
                Mode::Remove => continue,
                Mode::Mask(mask) => mask.clone(),
            }
        } else {
            match redact(value.get(), &rests, mode) {
                Some(v) => {
                    changed = true;
                    v
                }
                None => value.get().to_owned(),
            }
        };
        if out.len() > 1 {
            out.push(',');
        }
        // Serialising a string cannot fail.
        out.push_str(&serde_json::to_string(&key).unwrap_or_default());
        out.push(':');
        out.push_str(&value);
    }
    out.push('}');
    changed.then_some(out)
}

fn redact_array(json: &str, paths: &[&[String]], mode: &Mode) -> Option<String> {
    let items: Vec<&RawValue> = serde_json::from_str(json).ok()?;
    let mut changed = false;
    let mut out = String::with_capacity(json.len());
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match redact(item.get(), paths, mode) {
            Some(v) => {
                changed = true;
                out.push_str(&v);
            }
            None => out.push_str(item.get()),
        }
    }
    out.push(']');
    changed.then_some(out)
}

struct Redact {
    /// The configured paths, split into segments.
    paths: Vec<Vec<String>>,
    mode: Mode,
}

impl Redact {
    /// The event's data with the configured fields redacted, or `None` to
    /// keep it as it is.
    fn rewrite(&self, data: &[u8]) -> Option<String> {
        let json = std::str::from_utf8(data).ok()?;
        let paths: Vec<&[String]> = self.paths.iter().map(Vec::as_slice).collect();
        redact(json, &paths, &self.mode)
    }
}

impl Plugin for Redact {
    const NAME: &'static str = "redact";
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        let fields = c
            .fields
            .ok_or("redact config: `fields` is required (dotted paths such as \"user.email\")")?;
        if fields.is_empty() {
            return Err("redact config: `fields` must list at least one path".into());
        }
        let mut paths = Vec::with_capacity(fields.len());
        for field in &fields {
            let path: Vec<String> = field.split('.').map(str::to_owned).collect();
            if path.iter().any(String::is_empty) {
                return Err(format!(
                    "redact config: field {field:?} has an empty path segment"
                ));
            }
            paths.push(path);
        }
        let mode = match c.mode {
            ModeName::Remove => Mode::Remove,
            ModeName::Mask => Mode::Mask(serde_json::Value::from(c.mask).to_string()),
        };
        Ok(Redact { paths, mode })
    }
}

impl Transform for Redact {
    fn apply(&self, e: &Event<'_>, out: &mut BatchBuilder) -> Result<(), Denial> {
        match self.rewrite(e.data) {
            Some(data) => out.push(0, e.topic, e.kind, data.as_bytes(), e.target),
            None => out.push(0, e.topic, e.kind, e.data, e.target),
        }
        Ok(())
    }
}

spout_sdk::export_transform!(Redact);

#[cfg(test)]
mod tests {
    use super::*;

    fn new(config: &str) -> Result<Redact, String> {
        spout_sdk::init(config)
    }

    fn run(config: &str, data: &str) -> Option<String> {
        new(config).unwrap().rewrite(data.as_bytes())
    }

    #[test]
    fn masks_and_removes() {
        let data = r#"{"user":{"name":"a","email":"a@x"},"password":"p","n":1.50}"#;
        let cfg = r#"{"fields":["password","user.email"]}"#;
        assert_eq!(
            run(cfg, data).unwrap(),
            r#"{"user":{"name":"a","email":"***"},"password":"***","n":1.50}"#
        );
        let cfg = r#"{"fields":["password","user.email"],"mode":"remove"}"#;
        assert_eq!(run(cfg, data).unwrap(), r#"{"user":{"name":"a"},"n":1.50}"#);
        let cfg = r#"{"fields":["user"],"mask":"[gone]"}"#;
        assert_eq!(
            run(cfg, data).unwrap(),
            r#"{"user":"[gone]","password":"p","n":1.50}"#
        );
    }

    #[test]
    fn walks_arrays() {
        let cfg = r#"{"fields":["cards.number","items.card.number"],"mode":"remove"}"#;
        let data = r#"[{"cards":[{"number":"4111","exp":"12/30"},{"exp":"1/31"},5]},{"items":[[{"card":{"number":1}}]]}]"#;
        assert_eq!(
            run(cfg, data).unwrap(),
            r#"[{"cards":[{"exp":"12/30"},{"exp":"1/31"},5]},{"items":[[{"card":{}}]]}]"#
        );
    }

    #[test]
    fn passes_through() {
        let cfg = r#"{"fields":["password"]}"#;
        assert_eq!(run(cfg, "plain text"), None);
        assert_eq!(run(cfg, "42"), None);
        assert_eq!(run(cfg, r#"{"user":"a"}"#), None);
        assert_eq!(run(cfg, r#"{"password":1"#), None);
        assert_eq!(
            run(cfg, r#"{"a\"b":1,"password":null}"#).unwrap(),
            r#"{"a\"b":1,"password":"***"}"#
        );
    }

    #[test]
    fn config() {
        assert!(new("").err().unwrap().contains("`fields` is required"));
        assert!(new(r#"{"fields":[]}"#).is_err());
        assert!(new(r#"{"fields":["a..b"]}"#).is_err());
        assert!(new(r#"{"fields":["a"],"mode":"hash"}"#).is_err());
        assert!(new(r#"{"fields":["a"],"masks":"x"}"#).is_err());
    }
}
