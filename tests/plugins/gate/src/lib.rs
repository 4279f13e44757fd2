//! An auth plugin that admits anyone as user `anon` until it has seen
//! `max_disconnects` disconnects (counted in its key-value store by
//! `on-disconnect`); then it refuses with 403 and the count. Exercises the
//! disconnect hook and the kv store. `?crash` makes it trap, `?spin` loop
//! until its deadline.
use spout_sdk::{kv, Connection, Denial, Principal, Request};

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Config {
    /// Disconnects after which every request is refused (required).
    max_disconnects: u64,
}

struct Gate {
    max: u64,
}

fn seen() -> u64 {
    kv::get("disconnects")
        .and_then(|v| v.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

impl spout_sdk::Plugin for Gate {
    const NAME: &'static str = "gate";
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        Ok(Gate {
            max: config.max_disconnects,
        })
    }
}

impl spout_sdk::Auth for Gate {
    fn authenticate(&self, req: &Request) -> Result<Principal, Denial> {
        if req.query.iter().any(|(k, _)| k == "crash") {
            panic!("asked to crash");
        }
        if req.query.iter().any(|(k, _)| k == "spin") {
            let mut n = req.path.len() as u64;
            loop {
                n = std::hint::black_box(n.wrapping_mul(31).wrapping_add(7));
            }
        }
        let n = seen();
        if n >= self.max {
            return Err(Denial {
                status: 403,
                reason: format!("{n} disconnects seen"),
            });
        }
        Ok(Principal {
            user: "anon".into(),
            topics: vec!["**".into()],
            claims: "{}".into(),
        })
    }

    fn on_disconnect(&self, conn: &Connection) {
        spout_sdk::log::info(&format!("{} left {}", conn.id, conn.path));
        let _ = kv::set("disconnects", &(seen() + 1).to_le_bytes());
    }
}

spout_sdk::export_auth!(Gate);
