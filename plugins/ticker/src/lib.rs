//! `ticker`: on every tick of its `[[source]]` (`every = "1s"`), publish
//! one event with the server's live figures.
//!
//! The data is `{"time", "connections", "events_per_second",
//! "events_total", "uptime_ms"}`: the host's `poll` time (ms since the
//! epoch) and the `stats` import's snapshot.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use spout_sdk::{BatchBuilder, Plugin, Source, Stats};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Topic the ticks are published to (1-256 bytes of printable ASCII,
    /// no spaces or `*`).
    #[serde(default = "default_topic")]
    #[schemars(length(min = 1, max = 256), pattern(r"^[\x21-\x29\x2B-\x7E]+$"))]
    topic: String,
    /// Event type of the ticks (1-256 bytes, no control characters).
    #[serde(default = "default_type", rename = "type")]
    #[schemars(length(min = 1, max = 256))]
    kind: String,
}

fn default_topic() -> String {
    "spout/ticker".into()
}

fn default_type() -> String {
    "tick".into()
}

/// The data of one tick.
#[derive(Serialize)]
struct Tick {
    time: u64,
    connections: u64,
    /// `null` if the host ever reports a non-finite rate.
    events_per_second: f64,
    events_total: u64,
    uptime_ms: u64,
}

/// The JSON data of a tick at `now_ms` with the figures `s`.
fn tick_json(now_ms: u64, s: &Stats) -> String {
    let tick = Tick {
        time: now_ms,
        connections: s.connections,
        events_per_second: s.events_per_second,
        events_total: s.events_total,
        uptime_ms: s.uptime_ms,
    };
    // A struct of numbers always serialises.
    serde_json::to_string(&tick).unwrap_or_else(|_| "{}".into())
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

struct Ticker {
    topic: String,
    kind: String,
}

impl Plugin for Ticker {
    const NAME: &'static str = "ticker";
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        if !valid_topic(&c.topic) {
            return Err(format!(
                "`topic` {:?} is not a valid topic (1-256 bytes of printable ASCII, no spaces or '*')",
                c.topic
            ));
        }
        if !valid_type(&c.kind) {
            return Err(format!(
                "`type` {:?} is not a valid event type (1-256 bytes, no control characters)",
                c.kind
            ));
        }
        Ok(Ticker {
            topic: c.topic,
            kind: c.kind,
        })
    }
}

impl Source for Ticker {
    fn poll(&self, now_ms: u64, out: &mut BatchBuilder) {
        let data = tick_json(now_ms, &spout_sdk::stats());
        out.push(0, &self.topic, &self.kind, data.as_bytes(), None);
    }
}

spout_sdk::export_source!(Ticker);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_data() {
        let s = Stats {
            connections: 3,
            events_total: 42,
            events_per_second: 1.5,
            uptime_ms: 9000,
        };
        assert_eq!(
            tick_json(1_700_000_000_000, &s),
            r#"{"time":1700000000000,"connections":3,"events_per_second":1.5,"events_total":42,"uptime_ms":9000}"#
        );
        let nan = Stats {
            events_per_second: f64::NAN,
            ..s
        };
        assert!(tick_json(1, &nan).contains(r#""events_per_second":null"#));
    }

    #[test]
    fn config() {
        let t = spout_sdk::init::<Ticker>("").unwrap();
        assert_eq!(
            (t.topic.as_str(), t.kind.as_str()),
            ("spout/ticker", "tick")
        );
        let t = spout_sdk::init::<Ticker>(r#"{"topic":"ops/stats","type":"stats"}"#).unwrap();
        assert_eq!((t.topic.as_str(), t.kind.as_str()), ("ops/stats", "stats"));
        assert!(spout_sdk::init::<Ticker>(r#"{"topic":"a b"}"#).is_err());
        assert!(spout_sdk::init::<Ticker>(r#"{"topic":"a/*"}"#).is_err());
        assert!(spout_sdk::init::<Ticker>(r#"{"type":""}"#).is_err());
        assert!(spout_sdk::init::<Ticker>(r#"{"every":"1s"}"#).is_err());
    }
}
