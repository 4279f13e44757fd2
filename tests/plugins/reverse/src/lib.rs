//! A compress plugin: "encodes" data over 4 bytes by reversing it.
struct Reverse;

impl spout_sdk::Plugin for Reverse {
    const NAME: &'static str = "reverse";
    type Config = spout_sdk::NoConfig;
    fn new(_: spout_sdk::NoConfig) -> Result<Self, String> {
        Ok(Reverse)
    }
}

impl spout_sdk::Compress for Reverse {
    fn encode(&self, data: &[u8]) -> Option<spout_sdk::Encoded> {
        (data.len() > 4).then(|| spout_sdk::Encoded {
            encoding: "reverse".into(),
            data: data.iter().rev().copied().collect(),
        })
    }
}

spout_sdk::export_compress!(Reverse);
