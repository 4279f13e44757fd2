//! A filter that reads a file: it imports wasi:filesystem, which plugins may
//! not, so loading it must fail.
use spout_sdk::{Event, Subscription};

fn fsread(_: &Subscription, _: &Event) -> bool {
    std::fs::read("/etc/passwd").is_ok()
}

spout_sdk::filter_fn!("fsread", fsread);
