//! A filter that allocates until it hits its memory limit.
struct Bomb;
impl spout_sdk::Plugin for Bomb {
    const NAME: &'static str = "bomb";
    fn new(_: &str) -> Result<Self, String> {
        Ok(Bomb)
    }
}
impl spout_sdk::Filter for Bomb {
    fn keep(&self, _: &spout_sdk::Subscription, _: &spout_sdk::Event<'_>) -> bool {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
        }
    }
}
spout_sdk::export_filter!(Bomb);
