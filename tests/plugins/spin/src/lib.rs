//! A filter whose every call loops forever: the deadline must stop it.
struct Spin;
impl spout_sdk::Plugin for Spin {
    const NAME: &'static str = "spin";
    fn new(_: &str) -> Result<Self, String> {
        Ok(Spin)
    }
}
impl spout_sdk::Filter for Spin {
    fn keep(&self, _: &spout_sdk::Subscription, e: &spout_sdk::Event<'_>) -> bool {
        let mut n = e.id;
        loop {
            n = std::hint::black_box(n.wrapping_mul(31).wrapping_add(7));
        }
    }
}
spout_sdk::export_filter!(Spin);
