//! A filter that leaks 64 KiB of its memory on every event it sees and keeps
//! the event: a guest runtime that grows a little per call (as
//! componentize-js does), which the host retires before it hits its limit.
use spout_sdk::{Event, Subscription};

fn leak(_: &Subscription, _: &Event) -> bool {
    std::mem::forget(std::hint::black_box(vec![1u8; 64 << 10]));
    true
}

spout_sdk::filter_fn!("leak", leak);
