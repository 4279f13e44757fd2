//! A batch plugin: merges a window into one `batch` event whose data is a
//! JSON array of the events' data, carrying the last event's id.
use spout_sdk::{events, BatchBuilder, RawBatch};

struct Merge;

impl spout_sdk::Plugin for Merge {
    const NAME: &'static str = "merge";
    type Config = spout_sdk::NoConfig;
    fn new(_: spout_sdk::NoConfig) -> Result<Self, String> {
        Ok(Merge)
    }
}

impl spout_sdk::Batcher for Merge {
    fn merge(&self, batch: &RawBatch) -> RawBatch {
        let mut out = BatchBuilder::new();
        let all: Vec<_> = events(batch).collect();
        if let Some(last) = all.last() {
            let data: Vec<&str> = all.iter().map(|e| e.text()).collect();
            let json = format!("[{}]", data.join(","));
            out.push(last.id, last.topic, "batch", json.as_bytes(), None);
        }
        out.finish()
    }
}

spout_sdk::export_batch!(Merge);
