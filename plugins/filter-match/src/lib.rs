//! `filter-match`: keep events whose JSON `data` matches every condition.
//!
//! A condition is `FIELD:OP[:VALUE]` with OP one of `eq`, `ne`, `in`
//! (comma-separated values), `prefix`, `exists`; FIELD is a dotted path
//! (`user.id`). Conditions come from the plugin config (`where = [..]`,
//! applied to every subscriber) and from the subscriber's query string
//! (`?where=severity:in:warn,error`, repeatable). Events whose data is not
//! JSON pass only when there are no conditions.

use serde::Deserialize;
use serde_json::Value;
use spout_sdk::{Event, Filter, Plugin, Subscription};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default, rename = "where")]
    conditions: Vec<String>,
    /// Query parameter subscribers use (default `where`).
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

fn lookup<'v>(mut v: &'v Value, path: &[String]) -> Option<&'v Value> {
    for key in path {
        v = match v {
            Value::Object(m) => m.get(key)?,
            Value::Array(a) => a.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

fn as_text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        Value::String(s) => Some(s.as_str().into()),
        Value::Number(n) => Some(n.to_string().into()),
        Value::Bool(b) => Some(if *b { "true" } else { "false" }.into()),
        _ => None,
    }
}

impl Cond {
    fn matches(&self, data: &Value) -> bool {
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
    const CONFIG_SCHEMA: &'static str = r#"{"type":"object","properties":{"where":{"type":"array","items":{"type":"string"}},"param":{"type":"string"}},"additionalProperties":false}"#;

    fn new(config: &str) -> Result<Self, String> {
        let c: Config = if config.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(config).map_err(|e| e.to_string())?
        };
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

impl Filter for Match {
    fn keep(&self, sub: &Subscription, event: &Event<'_>) -> bool {
        // Subscriber conditions that do not parse match nothing (fail closed).
        let mut conds = Vec::new();
        for (k, v) in &sub.params {
            if *k == self.param {
                match parse(v) {
                    Ok(c) => conds.push(c),
                    Err(_) => return false,
                }
            }
        }
        if self.fixed.is_empty() && conds.is_empty() {
            return true;
        }
        let Ok(data) = serde_json::from_slice::<Value>(event.data) else {
            return false;
        };
        self.fixed
            .iter()
            .chain(conds.iter())
            .all(|c| c.matches(&data))
    }
}

spout_sdk::export_filter!(Match);
