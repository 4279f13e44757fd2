//! `filter-match`: keep events whose JSON `data` matches every condition.
//!
//! A condition is `FIELD:OP[:VALUE]` with OP one of `eq`, `ne`, `in`
//! (comma-separated values), `prefix`, `exists`; FIELD is a dotted path
//! (`user.id`). Conditions come from the plugin config (`where = [..]`,
//! applied to every subscriber) and from the subscriber's query string
//! (`?where=severity:in:warn,error`, repeatable). Events whose data is not
//! JSON pass only when there are no conditions.

use schemars::JsonSchema;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use spout_sdk::{events, Event, Filter, Plugin, RawBatch, Subscription};
use std::borrow::Cow;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Conditions applied to every subscriber (`FIELD:OP[:VALUE]`).
    #[serde(default, rename = "where")]
    conditions: Vec<String>,
    /// Query parameter subscribers use for their conditions (empty: `where`).
    #[serde(default = "default_param")]
    param: String,
}

fn default_param() -> String {
    "where".into()
}

enum Op {
    Eq(String),
    Ne(String),
    In(Vec<String>),
    Prefix(String),
    Exists,
}

struct Cond {
    path: Vec<String>,
    op: Op,
}

fn parse(spec: &str) -> Result<Cond, String> {
    let mut parts = spec.splitn(3, ':');
    let field = parts.next().unwrap_or("");
    let op = parts.next().unwrap_or("");
    let value = parts.next();
    if field.is_empty() {
        return Err(format!("condition `{spec}`: empty field"));
    }
    let need = |v: Option<&str>| {
        v.map(str::to_owned)
            .ok_or(format!("condition `{spec}`: `{op}` needs a value"))
    };
    let op = match op {
        "eq" => Op::Eq(need(value)?),
        "ne" => Op::Ne(need(value)?),
        "in" => Op::In(need(value)?.split(',').map(str::to_owned).collect()),
        "prefix" => Op::Prefix(need(value)?),
        "exists" => Op::Exists,
        other => {
            return Err(format!(
                "condition `{spec}`: unknown op `{other}` (eq, ne, in, prefix, exists)"
            ))
        }
    };
    Ok(Cond {
        path: field.split('.').map(str::to_owned).collect(),
        op,
    })
}

/// Finds the value at `key` in a JSON object without building it: one pass
/// over the object, skipping everything else.
struct Find<'k>(&'k str);

impl<'de> serde::de::DeserializeSeed<'de> for Find<'_> {
    type Value = Option<&'de RawValue>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Find<'_> {
    type Value = Option<&'de RawValue>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        // Keys with escapes cannot be borrowed; such an object is not matched.
        while let Some(key) = map.next_key::<&'de str>()? {
            if found.is_none() && key == self.0 {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let want = self.0.parse::<usize>().ok();
        let mut found = None;
        let mut i = 0;
        while let Some(v) = seq.next_element::<&'de RawValue>()? {
            if Some(i) == want {
                found = Some(v);
            }
            i += 1;
        }
        Ok(found)
    }
    // Scalars have no fields.
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// The raw JSON at a dotted path, if present.
fn lookup<'a>(json: &'a str, path: &[String]) -> Option<&'a str> {
    let mut cur = json;
    for key in path {
        let mut de = serde_json::Deserializer::from_str(cur);
        cur = serde::de::DeserializeSeed::deserialize(Find(key), &mut de)
            .ok()??
            .get();
    }
    Some(cur)
}

/// A scalar's text: strings unquoted, numbers and booleans as written.
fn as_text(raw: &str) -> Option<Cow<'_, str>> {
    match raw.as_bytes().first()? {
        b'"' => serde_json::from_str::<&str>(raw)
            .map(Cow::Borrowed)
            .or_else(|_| serde_json::from_str::<String>(raw).map(Cow::Owned))
            .ok(),
        b'{' | b'[' | b'n' => None,
        _ => Some(Cow::Borrowed(raw)),
    }
}

impl Cond {
    fn matches(&self, data: &str) -> bool {
        let found = lookup(data, &self.path);
        match &self.op {
            Op::Exists => found.is_some(),
            Op::Ne(want) => found.and_then(as_text).is_none_or(|t| t != want.as_str()),
            op => {
                let Some(t) = found.and_then(as_text) else {
                    return false;
                };
                match op {
                    Op::Eq(w) => t == w.as_str(),
                    Op::In(ws) => ws.iter().any(|w| t == w.as_str()),
                    Op::Prefix(p) => t.starts_with(p.as_str()),
                    _ => false,
                }
            }
        }
    }
}

struct Match {
    fixed: Vec<Cond>,
    param: String,
}

impl Plugin for Match {
    const NAME: &'static str = "filter-match";
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        let fixed = c
            .conditions
            .iter()
            .map(|s| parse(s))
            .collect::<Result<_, _>>()?;
        let param = if c.param.is_empty() {
            default_param()
        } else {
            c.param
        };
        Ok(Match { fixed, param })
    }
}

impl Match {
    /// The subscriber's conditions; `None` if one does not parse (such a
    /// subscription matches nothing: fail closed).
    fn conditions(&self, sub: &Subscription) -> Option<Vec<Cond>> {
        sub.params
            .iter()
            .filter(|(k, _)| *k == self.param)
            .map(|(_, v)| parse(v).ok())
            .collect()
    }

    fn matches(&self, conds: &[Cond], event: &Event<'_>) -> bool {
        if self.fixed.is_empty() && conds.is_empty() {
            return true;
        }
        let Ok(data) = std::str::from_utf8(event.data) else {
            return false;
        };
        self.fixed.iter().chain(conds).all(|c| c.matches(data))
    }
}

impl Filter for Match {
    fn keep(&self, sub: &Subscription, event: &Event<'_>) -> bool {
        self.conditions(sub)
            .is_some_and(|conds| self.matches(&conds, event))
    }

    fn keep_batch(&self, sub: &Subscription, batch: &RawBatch, kept: &mut Vec<u32>) {
        // Parse the subscriber's conditions once per call, not per event.
        let Some(conds) = self.conditions(sub) else {
            return;
        };
        for (i, e) in events(batch).enumerate() {
            if self.matches(&conds, &e) {
                kept.push(i as u32);
            }
        }
    }
}

spout_sdk::export_filter!(Match);

#[cfg(test)]
mod tests {
    use super::*;

    fn new(config: &str) -> Result<Match, String> {
        spout_sdk::init(config)
    }

    #[test]
    fn config() {
        for empty in ["", "null", "{}", r#"{"param":""}"#] {
            let m = new(empty).unwrap();
            assert_eq!((m.fixed.len(), m.param.as_str()), (0, "where"));
        }
        let m = new(r#"{"where":["level:in:warn,error","user.id:exists"],"param":"q"}"#).unwrap();
        assert_eq!((m.fixed.len(), m.param.as_str()), (2, "q"));
        assert!(m.fixed[0].matches(r#"{"level":"warn"}"#));
        assert!(!m.fixed[1].matches(r#"{"user":{}}"#));
        let err = |c: &str| new(c).err().unwrap();
        assert!(err(r#"{"where":["level:bogus:1"]}"#).contains("unknown op `bogus`"));
        assert_eq!(
            err(r#"{"where":"level:eq:x"}"#),
            "config key `where`: invalid type: string \"level:eq:x\", expected a sequence"
        );
        assert!(err(r#"{"params":"q"}"#).starts_with("config key `params`: unknown field"));
    }
}
