//! A source plugin: `poll` emits one `tick` event on topic `ticks`; input is
//! split into one `line` event per non-empty line; empty input is refused.
use spout_sdk::{BatchBuilder, Denial};

struct Tick;

impl spout_sdk::Plugin for Tick {
    const NAME: &'static str = "tick";
    type Config = spout_sdk::NoConfig;
    fn new(_: spout_sdk::NoConfig) -> Result<Self, String> {
        Ok(Tick)
    }
}

impl spout_sdk::Source for Tick {
    fn poll(&self, now_ms: u64, out: &mut BatchBuilder) {
        out.push(
            0,
            "ticks",
            "tick",
            format!("{{\"at\":{now_ms}}}").as_bytes(),
            None,
        );
    }

    fn on_input(
        &self,
        input: &[u8],
        meta: &[(String, String)],
        out: &mut BatchBuilder,
    ) -> Result<(), Denial> {
        let topic = meta
            .iter()
            .find(|(k, _)| k == "topic")
            .map_or("lines", |(_, v)| v.as_str());
        let text = std::str::from_utf8(input).map_err(|_| Denial {
            status: 400,
            reason: "not UTF-8".into(),
        })?;
        if text.trim().is_empty() {
            return Err(Denial {
                status: 400,
                reason: "empty input".into(),
            });
        }
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            out.push(0, topic, "line", line.as_bytes(), None);
        }
        Ok(())
    }
}

spout_sdk::export_source!(Tick);
