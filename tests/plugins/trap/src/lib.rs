//! A filter that traps on every call.
struct Trap;
impl spout_sdk::Plugin for Trap {
    const NAME: &'static str = "trap";
    fn new(_: &str) -> Result<Self, String> {
        Ok(Trap)
    }
}
impl spout_sdk::Filter for Trap {
    fn keep(&self, _: &spout_sdk::Subscription, e: &spout_sdk::Event<'_>) -> bool {
        panic!("trap on event {}", e.id)
    }
}
spout_sdk::export_filter!(Trap);
