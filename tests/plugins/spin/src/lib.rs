//! A filter whose every call loops forever: the deadline must stop it.
use spout_sdk::{Event, Subscription};

fn spin(_: &Subscription, e: &Event) -> bool {
    let mut n = e.id;
    loop {
        n = std::hint::black_box(n.wrapping_mul(31).wrapping_add(7));
    }
}

spout_sdk::filter_fn!("spin", spin);
