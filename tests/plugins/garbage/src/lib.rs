//! A filter answering with indices that point outside the batch, written
//! against the raw bindings (the SDK would never produce them).
use spout_sdk::bindings::{base, filter};
struct Garbage;
impl base::exports::spout::plugin::lifecycle::Guest for Garbage {
    fn describe() -> String {
        r#"{"name":"garbage","version":"0","config_schema":{}}"#.into()
    }
    fn init(_: String) -> Result<(), String> {
        Ok(())
    }
}
impl filter::Guest for Garbage {
    fn keep(_: spout_sdk::Subscription, events: spout_sdk::RawBatch) -> Vec<u32> {
        vec![events.events.len() as u32 + 7, 0]
    }
}
base::export!(Garbage with_types_in spout_sdk::bindings::base);
filter::export!(Garbage with_types_in spout_sdk::bindings::filter);
