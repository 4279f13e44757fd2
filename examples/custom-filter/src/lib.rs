//! A custom Spout filter: each subscriber sees only events addressed to it
//! (`data.owner` equals the subscriber's user id) or marked `"public": true`.
use spout_sdk::{Event, Subscription};

fn only_mine(sub: &Subscription, event: &Event) -> bool {
    let text = event.text();
    text.contains(&format!("\"owner\":\"{}\"", sub.user)) || text.contains("\"public\":true")
}

spout_sdk::filter_fn!("only-mine", only_mine);
