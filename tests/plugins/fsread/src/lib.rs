//! A filter that reads a file. It imports wasi:filesystem, which plugins get
//! with no directory preopened: it loads, and every read fails, so it keeps
//! nothing.
use spout_sdk::{Event, Subscription};

fn fsread(_: &Subscription, _: &Event) -> bool {
    std::fs::read("/etc/passwd").is_ok()
}

spout_sdk::filter_fn!("fsread", fsread);
