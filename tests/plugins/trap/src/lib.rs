//! A filter that traps on every call.
use spout_sdk::{Event, Subscription};

fn trap(_: &Subscription, e: &Event) -> bool {
    panic!("trap on event {}", e.id)
}

spout_sdk::filter_fn!("trap", trap);
