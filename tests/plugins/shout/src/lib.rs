//! A filter that writes every event it sees to stdout (and keeps it): a
//! plugin's stdout goes through WASI to the host's log, which must work
//! wherever the host runs filters (never on an async runtime worker).
use spout_sdk::{Event, Subscription};

fn shout(_: &Subscription, e: &Event) -> bool {
    println!("shout: event {} on {}: {}", e.id, e.topic, e.text());
    true
}

spout_sdk::filter_fn!("shout", shout);
