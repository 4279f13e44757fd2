//! A transform that stores each event as published plus a copy on
//! `audit/<topic>` typed `audit`, drops events typed `secret` and refuses
//! the whole publish (422) when an event is typed `forbidden`.
use spout_sdk::{BatchBuilder, Denial, Event};

struct Audit;

impl spout_sdk::Plugin for Audit {
    const NAME: &'static str = "audit";
    type Config = spout_sdk::NoConfig;
    fn new(_: spout_sdk::NoConfig) -> Result<Self, String> {
        Ok(Audit)
    }
}

impl spout_sdk::Transform for Audit {
    fn apply(&self, e: &Event<'_>, out: &mut BatchBuilder) -> Result<(), Denial> {
        if e.kind == "secret" {
            return Ok(());
        }
        if e.kind == "forbidden" {
            return Err(Denial {
                status: 422,
                reason: format!("events of type forbidden are refused ({})", e.topic),
            });
        }
        out.push_event(e);
        out.push(0, &format!("audit/{}", e.topic), "audit", e.data, None);
        Ok(())
    }
}

spout_sdk::export_transform!(Audit);
