//! A transform that stores each event as published plus a copy on
//! `audit/<topic>` typed `audit`, and drops events typed `secret`.
use spout_sdk::{BatchBuilder, Event};

struct Audit;

impl spout_sdk::Plugin for Audit {
    const NAME: &'static str = "audit";
    fn new(_: &str) -> Result<Self, String> {
        Ok(Audit)
    }
}

impl spout_sdk::Transform for Audit {
    fn apply(&self, e: &Event<'_>, out: &mut BatchBuilder) {
        if e.kind == "secret" {
            return;
        }
        out.push_event(e);
        out.push(0, &format!("audit/{}", e.topic), "audit", e.data, None);
    }
}

spout_sdk::export_transform!(Audit);
