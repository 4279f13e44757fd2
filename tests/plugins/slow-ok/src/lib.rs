//! An auth plugin that accepts everyone as user `anon`, but refuses
//! `init` when its config says `{"reject": true}` (for config validation tests).
use spout_sdk::{Denial, Principal, Request};
struct Anyone;
impl spout_sdk::Plugin for Anyone {
    const NAME: &'static str = "slow-ok";
    fn new(config: &str) -> Result<Self, String> {
        if config.contains("\"reject\":true") {
            return Err("reject = true: refusing this config".into());
        }
        Ok(Anyone)
    }
}
impl spout_sdk::Auth for Anyone {
    fn authenticate(&self, _: &Request) -> Result<Principal, Denial> {
        Ok(Principal {
            user: "anon".into(),
            topics: vec!["**".into()],
            claims: "{}".into(),
        })
    }
}
spout_sdk::export_auth!(Anyone);
