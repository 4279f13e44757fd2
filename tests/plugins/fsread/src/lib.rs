//! A filter that reads a file: it imports wasi:filesystem, which plugins may
//! not, so loading it must fail.
struct FsRead;
impl spout_sdk::Plugin for FsRead {
    const NAME: &'static str = "fsread";
    fn new(_: &str) -> Result<Self, String> {
        Ok(FsRead)
    }
}
impl spout_sdk::Filter for FsRead {
    fn keep(&self, _: &spout_sdk::Subscription, _: &spout_sdk::Event<'_>) -> bool {
        std::fs::read("/etc/passwd").is_ok()
    }
}
spout_sdk::export_filter!(FsRead);
