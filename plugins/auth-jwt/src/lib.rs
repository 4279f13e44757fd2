//! `auth-jwt`: authenticate subscribers and publishers with HS256 or RS256
//! JSON Web Tokens.
//!
//! The token comes from `Authorization: Bearer ..`, a cookie or a query
//! parameter (in the configured order). The principal's user is the
//! `user_claim` claim, its topics the `topics_claim` claim (an array of
//! selectors or one space-separated string), its claims the whole payload.
//! Time checks (`exp`, `nbf`, with `leeway`) use the host's wall clock.
//! Every refusal is a 401; the host decides 403s from the topics.

mod jwt;

use spout_sdk::{Auth, Denial, Plugin, Principal, Request};

struct JwtAuth(jwt::Verifier);

fn deny(reason: impl Into<String>) -> Denial {
    Denial {
        status: 401,
        reason: reason.into(),
    }
}

impl Plugin for JwtAuth {
    const NAME: &'static str = "auth-jwt";
    type Config = jwt::Config;

    fn new(config: jwt::Config) -> Result<Self, String> {
        let v = jwt::Verifier::new(config)?;
        for w in &v.warnings {
            spout_sdk::log::warn(w);
        }
        Ok(JwtAuth(v))
    }
}

impl Auth for JwtAuth {
    fn authenticate(&self, req: &Request) -> Result<Principal, Denial> {
        let token = self
            .0
            .find_token(&req.headers, &req.query)
            .ok_or_else(|| deny("missing token"))?;
        let id = self
            .0
            .verify(token, spout_sdk::clock::wall_ms())
            .map_err(deny)?;
        Ok(Principal {
            user: id.user,
            topics: id.topics,
            claims: id.claims,
        })
    }
}

spout_sdk::export_auth!(JwtAuth);
