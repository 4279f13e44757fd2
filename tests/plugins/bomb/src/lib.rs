//! A filter that allocates until it hits its memory limit.
use spout_sdk::{Event, Subscription};

fn bomb(_: &Subscription, _: &Event) -> bool {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
    }
}

spout_sdk::filter_fn!("bomb", bomb);
