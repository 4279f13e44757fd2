//! `gzip`: compress event data with gzip for subscribers that accept it.
//!
//! Data shorter than `min_bytes`, or that gzip does not make smaller, is
//! left alone (`None`). The plugin returns raw gzip bytes; the host wraps
//! them for the subscriber as
//! `{"compressed":true,"encoding":"gzip","payload":"<base64>"}`.

use flate2::write::GzEncoder;
use flate2::Compression;
use schemars::JsonSchema;
use serde::Deserialize;
use spout_sdk::{Compress, Encoded, Plugin};
use std::io::Write;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Smallest data length worth compressing, in bytes.
    #[serde(default = "default_min_bytes")]
    min_bytes: u64,
    /// Compression level, 0 (store) to 9 (smallest).
    #[serde(default = "default_level")]
    #[schemars(range(max = 9))]
    level: u32,
}

fn default_min_bytes() -> u64 {
    1024
}

fn default_level() -> u32 {
    6
}

/// `data` gzipped at `level`, if that is shorter than `data`.
fn gzip_smaller(data: &[u8], level: u32) -> Option<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 2), Compression::new(level));
    enc.write_all(data).ok()?;
    let out = enc.finish().ok()?;
    (out.len() < data.len()).then_some(out)
}

struct Gzip {
    min_bytes: u64,
    level: u32,
}

impl Plugin for Gzip {
    const NAME: &'static str = "gzip";
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        if c.level > 9 {
            return Err(format!("`level` must be 0-9, not {}", c.level));
        }
        Ok(Gzip {
            min_bytes: c.min_bytes,
            level: c.level,
        })
    }
}

impl Compress for Gzip {
    fn encode(&self, data: &[u8]) -> Option<Encoded> {
        if (data.len() as u64) < self.min_bytes {
            return None;
        }
        gzip_smaller(data, self.level).map(|data| Encoded {
            encoding: "gzip".into(),
            data,
        })
    }
}

spout_sdk::export_compress!(Gzip);

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::io::Read;

    #[test]
    fn compresses_only_when_smaller() {
        let data = "{\"msg\":\"hello hello hello\"}".repeat(100);
        let gz = gzip_smaller(data.as_bytes(), 6).unwrap();
        assert!(gz.len() < data.len());
        let mut back = String::new();
        GzDecoder::new(&gz[..]).read_to_string(&mut back).unwrap();
        assert_eq!(back, data);
        // Level 0 stores: never smaller.
        assert!(gzip_smaller(data.as_bytes(), 0).is_none());
        assert!(gzip_smaller(b"x", 9).is_none());
    }

    #[test]
    fn config() {
        assert!(spout_sdk::init::<Gzip>("").is_ok());
        assert_eq!(spout_sdk::init::<Gzip>(r#"{"level":9}"#).unwrap().level, 9);
        assert!(spout_sdk::init::<Gzip>(r#"{"level":10}"#).is_err());
        assert!(spout_sdk::init::<Gzip>(r#"{"min_bytes":-1}"#).is_err());
        assert!(spout_sdk::init::<Gzip>(r#"{"minbytes":1}"#).is_err());
        let g = spout_sdk::init::<Gzip>(r#"{"min_bytes":0}"#).unwrap();
        assert!(g.encode(&[b'a'; 4096]).is_some());
        assert!(spout_sdk::init::<Gzip>("{}")
            .unwrap()
            .encode(&[b'a'; 1000])
            .is_none());
    }
}
