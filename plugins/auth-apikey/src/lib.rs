//! `auth-apikey`: authenticate requests with static API keys.
//!
//! Keys are configured by their SHA-256 hash (`sha256`, preferred: the
//! config then holds no secret) or in plain text (`key`, hashed at init).
//! The incoming key (header, then query parameter) is hashed and compared
//! with every configured hash in constant time. Publishing requests (any
//! method but GET/HEAD/OPTIONS, i.e. POST) need a key with `publish = true`.

use schemars::JsonSchema;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use spout_sdk::{Auth, Denial, Plugin, Principal, Request};
use subtle::ConstantTimeEq;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The accepted keys (at least one).
    #[schemars(length(min = 1))]
    keys: Vec<KeyConfig>,
    /// Header carrying the key (`""` disables it).
    #[serde(default = "d_header")]
    header: String,
    /// Query parameter carrying the key (`""` disables it).
    #[serde(default = "d_query_param")]
    query_param: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct KeyConfig {
    /// Hex SHA-256 of the key (preferred).
    #[serde(default)]
    #[schemars(pattern(r"^[0-9a-fA-F]{64}$"))]
    sha256: Option<String>,
    /// The key in plain text (instead of `sha256`).
    #[serde(default)]
    #[schemars(length(min = 1))]
    key: Option<String>,
    /// User id of the principal.
    #[schemars(length(min = 1))]
    user: String,
    /// Topic selectors the key may reach.
    #[serde(default)]
    topics: Vec<String>,
    /// Whether the key may publish.
    #[serde(default)]
    publish: bool,
}

fn d_header() -> String {
    "x-api-key".into()
}
fn d_query_param() -> String {
    "apikey".into()
}

struct Key {
    hash: [u8; 32],
    user: String,
    topics: Vec<String>,
    publish: bool,
    /// `{"key_user": .., "publish": ..}`, built once.
    claims: String,
}

struct ApiKeyAuth {
    keys: Vec<Key>,
    /// Lower-case header name; empty disables the header.
    header: String,
    /// Query parameter; empty disables the query string.
    query_param: String,
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.trim().as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

fn deny(status: u16, reason: &str) -> Denial {
    Denial {
        status,
        reason: reason.into(),
    }
}

impl Plugin for ApiKeyAuth {
    const NAME: &'static str = "auth-apikey";
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        if c.keys.is_empty() {
            return Err("`keys` must list at least one key".into());
        }
        let header = c.header.trim().to_ascii_lowercase();
        let query_param = c.query_param;
        if header.is_empty() && query_param.is_empty() {
            return Err("`header` and `query_param` are both empty: no way to send a key".into());
        }
        let mut keys: Vec<Key> = Vec::with_capacity(c.keys.len());
        for (i, k) in c.keys.into_iter().enumerate() {
            let n = i + 1;
            if k.user.is_empty() {
                return Err(format!("key #{n}: `user` must not be empty"));
            }
            let hash = match (k.sha256, k.key) {
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "key #{n} ({}): give `sha256` or `key`, not both",
                        k.user
                    ))
                }
                (None, None) => {
                    return Err(format!(
                        "key #{n} ({}): needs `sha256` (preferred) or `key`",
                        k.user
                    ))
                }
                (Some(h), None) => parse_hex(&h).ok_or_else(|| {
                    format!("key #{n} ({}): `sha256` must be 64 hex digits", k.user)
                })?,
                (None, Some(plain)) => {
                    if plain.is_empty() {
                        return Err(format!("key #{n} ({}): `key` must not be empty", k.user));
                    }
                    Sha256::digest(plain.as_bytes()).into()
                }
            };
            if let Some(dup) = keys.iter().find(|o| o.hash == hash) {
                return Err(format!(
                    "key #{n} ({}): same key as user `{}`",
                    k.user, dup.user
                ));
            }
            if k.topics.iter().any(String::is_empty) {
                return Err(format!(
                    "key #{n} ({}): `topics` entries must not be empty",
                    k.user
                ));
            }
            let claims =
                serde_json::json!({ "key_user": k.user, "publish": k.publish }).to_string();
            keys.push(Key {
                hash,
                user: k.user,
                topics: k.topics,
                publish: k.publish,
                claims,
            });
        }
        Ok(ApiKeyAuth {
            keys,
            header,
            query_param,
        })
    }
}

impl ApiKeyAuth {
    /// The key sent with a request: the header first, then the query parameter.
    fn presented<'a>(&self, req: &'a Request) -> Option<&'a str> {
        let from_header = || {
            req.headers
                .iter()
                .find(|(k, v)| !self.header.is_empty() && *k == self.header && !v.trim().is_empty())
                .map(|(_, v)| v.trim())
        };
        let from_query = || {
            req.query
                .iter()
                .find(|(k, v)| {
                    !self.query_param.is_empty() && *k == self.query_param && !v.is_empty()
                })
                .map(|(_, v)| v.as_str())
        };
        from_header().or_else(from_query)
    }

    /// The configured key whose hash matches; every entry is compared, in
    /// constant time, whatever matches.
    fn lookup(&self, presented: &str) -> Option<&Key> {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for k in &self.keys {
            if bool::from(k.hash.ct_eq(&hash)) {
                found = Some(k);
            }
        }
        found
    }
}

/// Whether a request publishes (anything but a safe method: POST in practice).
fn is_publish(method: &str) -> bool {
    !(method.eq_ignore_ascii_case("GET")
        || method.eq_ignore_ascii_case("HEAD")
        || method.eq_ignore_ascii_case("OPTIONS"))
}

impl Auth for ApiKeyAuth {
    fn authenticate(&self, req: &Request) -> Result<Principal, Denial> {
        let presented = self
            .presented(req)
            .ok_or_else(|| deny(401, "missing API key"))?;
        let key = self
            .lookup(presented)
            .ok_or_else(|| deny(401, "unknown API key"))?;
        if is_publish(&req.method) && !key.publish {
            return Err(deny(403, "key may not publish"));
        }
        Ok(Principal {
            user: key.user.clone(),
            topics: key.topics.clone(),
            claims: key.claims.clone(),
        })
    }
}

spout_sdk::export_auth!(ApiKeyAuth);

#[cfg(test)]
mod tests {
    use super::*;

    fn new(config: &str) -> Result<ApiKeyAuth, String> {
        spout_sdk::init(config)
    }

    #[test]
    fn config() {
        let a = new(r#"{"keys":[{"key":"k1","user":"alice","topics":["a/*"]},{"sha256":"2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b","user":"bob","publish":true}]}"#).unwrap();
        assert_eq!(a.keys.len(), 2);
        assert_eq!(
            (a.header.as_str(), a.query_param.as_str()),
            ("x-api-key", "apikey")
        );
        assert_eq!(a.lookup("k1").map(|k| k.user.as_str()), Some("alice"));
        let err = |c: &str| new(c).err().unwrap();
        for empty in ["", "null", "{}"] {
            assert_eq!(err(empty), "config: missing field `keys`");
        }
        assert_eq!(
            err(r#"{"keys":[{"key":"k"}]}"#),
            "config key `keys[0].user`: missing field `user`"
        );
        assert!(err(r#"{"keys":[{"key":"k","user":"a","admin":true}]}"#)
            .starts_with("config key `keys[0].admin`: unknown field `admin`"));
        assert!(err(r#"{"keys":[]}"#).contains("at least one key"));
        assert!(err(r#"{"keys":[{"user":"a"}]}"#).contains("needs `sha256`"));
        assert!(err(r#"{"keys":[{"sha256":"ab","user":"a"}]}"#).contains("64 hex digits"));
        assert!(
            err(r#"{"keys":[{"key":"k","user":"a"},{"key":"k","user":"b"}]}"#)
                .contains("same key as user `a`")
        );
        assert!(
            err(r#"{"keys":[{"key":"k","user":"a"}],"header":"","query_param":""}"#)
                .contains("both empty")
        );
    }
}
