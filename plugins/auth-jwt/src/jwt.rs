//! JWT verification, free of SDK types so it stays small and easy to read.
//!
//! Every error is a reason for a 401 answer; `Verifier::new` errors are
//! config errors.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD, URL_SAFE};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, Mac};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Base64url as JWTs use it (unpadded; padding tolerated).
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Tokens longer than this are refused before any decoding.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The plugin config (the TOML table, as JSON).
#[derive(Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `HS256` or `RS256`.
    #[serde(default = "d_algorithm")]
    #[schemars(extend("enum" = ["HS256", "RS256"]))]
    algorithm: String,
    /// HS256 key, as text (use at least 32 bytes).
    #[serde(default)]
    secret: Option<String>,
    /// HS256 key, base64 (standard or URL-safe); instead of `secret`.
    #[serde(default)]
    secret_base64: Option<String>,
    /// RS256 public key, PEM text.
    #[serde(default)]
    public_key: Option<String>,
    /// The token's `aud` must contain one of them.
    #[serde(default)]
    #[schemars(with = "Option<OneOrMany>")]
    audience: Option<Value>,
    /// The token's `iss` must equal it.
    #[serde(default)]
    issuer: Option<String>,
    /// Seconds of clock skew allowed for `exp` and `nbf`.
    #[serde(default)]
    leeway: u64,
    /// Where to look for the token, in order (default: header, cookie, query;
    /// Mercure mode: header, query, cookie).
    // `None` (not set): the default of the mode, see `d_sources`.
    #[serde(default)]
    #[schemars(extend("items" = { "enum": ["header", "cookie", "query"] }))]
    sources: Option<Vec<String>>,
    /// Cookie name (default `spout_token`; Mercure mode: `mercureAuthorization`).
    #[serde(default)]
    cookie: Option<String>,
    /// Query parameter name (default `token`; Mercure mode: `authorization`).
    #[serde(default)]
    query_param: Option<String>,
    /// Claim holding the user id.
    #[serde(default = "d_user_claim")]
    user_claim: String,
    /// Claim holding the allowed topic selectors.
    #[serde(default = "d_topics_claim")]
    topics_claim: String,
    /// Topics for tokens without the topics claim.
    #[serde(default)]
    default_topics: Vec<String>,
    /// Read tokens the way the Mercure hub does.
    #[serde(default)]
    mercure: bool,
}

// `audience` as the schema shows it (parsed as a JSON value and checked
// in `Verifier::new`).
#[allow(dead_code)]
#[derive(JsonSchema)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

fn d_algorithm() -> String {
    "HS256".into()
}
/// Default token sources; Mercure mode uses the hub's order.
fn d_sources(mercure: bool) -> Vec<String> {
    let order: &[&str] = if mercure {
        &["header", "query", "cookie"]
    } else {
        &["header", "cookie", "query"]
    };
    order.iter().map(|s| s.to_string()).collect()
}
/// Default cookie name; Mercure mode uses the hub's.
fn d_cookie(mercure: bool) -> String {
    if mercure {
        "mercureAuthorization"
    } else {
        "spout_token"
    }
    .into()
}
/// Default query parameter; Mercure mode uses the hub's.
fn d_query_param(mercure: bool) -> String {
    if mercure { "authorization" } else { "token" }.into()
}
fn d_user_claim() -> String {
    "sub".into()
}
fn d_topics_claim() -> String {
    "topics".into()
}

enum Key {
    Hs256(Vec<u8>),
    Rs256(RsaPublicKey),
}

#[derive(Clone, Copy, PartialEq)]
enum Source {
    Header,
    Cookie,
    Query,
}

/// A configured verifier.
pub struct Verifier {
    key: Key,
    audience: Vec<String>,
    issuer: Option<String>,
    leeway: f64,
    sources: Vec<Source>,
    cookie: String,
    query_param: String,
    user_claim: String,
    /// Claim holding the topics (not used in Mercure mode).
    topics_claim: String,
    default_topics: Vec<String>,
    /// Mercure mode: read tokens the way the Mercure hub does.
    mercure: bool,
    /// Config remarks worth a log line (weak keys).
    pub warnings: Vec<String>,
}

/// What a valid token says.
pub struct Identity {
    pub user: String,
    pub topics: Vec<String>,
    /// The payload, as compact JSON object text.
    pub claims: String,
}

fn non_empty(name: &str, v: String) -> Result<String, String> {
    if v.is_empty() {
        Err(format!("`{name}` must not be empty"))
    } else {
        Ok(v)
    }
}

fn parse_public_key(pem: &str) -> Result<RsaPublicKey, String> {
    let pem = pem.trim();
    if pem.contains("BEGIN RSA PUBLIC KEY") {
        RsaPublicKey::from_pkcs1_pem(pem)
            .map_err(|e| format!("`public_key`: not a PKCS#1 RSA public key: {e}"))
    } else if pem.contains("BEGIN PUBLIC KEY") {
        RsaPublicKey::from_public_key_pem(pem)
            .map_err(|e| format!("`public_key`: not an RSA SubjectPublicKeyInfo key: {e}"))
    } else {
        Err("`public_key` must be PEM text (`-----BEGIN PUBLIC KEY-----` or `-----BEGIN RSA PUBLIC KEY-----`)".into())
    }
}

impl Verifier {
    /// Build a verifier from the parsed config.
    pub fn new(c: Config) -> Result<Self, String> {
        // Nothing set at all (`{}`): say what is needed.
        if serde_json::from_str::<Config>("{}").is_ok_and(|empty| c == empty) {
            return Err("auth-jwt needs a config: `secret` (HS256) or `public_key` (RS256)".into());
        }
        let mut warnings = Vec::new();

        let key = if c.algorithm.eq_ignore_ascii_case("HS256") {
            if c.public_key.is_some() {
                return Err(
                    "`public_key` is for RS256; HS256 takes `secret` or `secret_base64`".into(),
                );
            }
            let secret = match (c.secret, c.secret_base64) {
                (Some(_), Some(_)) => {
                    return Err("give either `secret` or `secret_base64`, not both".into())
                }
                (None, None) => return Err("HS256 needs `secret` or `secret_base64`".into()),
                (Some(s), None) => s.into_bytes(),
                (None, Some(b)) => {
                    let b = b.trim();
                    STANDARD
                        .decode(b)
                        .or_else(|_| URL_SAFE.decode(b))
                        .or_else(|_| B64URL.decode(b))
                        .map_err(|e| format!("`secret_base64` is not valid base64: {e}"))?
                }
            };
            if secret.is_empty() {
                return Err("the HS256 secret must not be empty".into());
            }
            if secret.len() < 32 {
                warnings.push(format!(
                    "HS256 secret is only {} bytes; use at least 32",
                    secret.len()
                ));
            }
            Key::Hs256(secret)
        } else if c.algorithm.eq_ignore_ascii_case("RS256") {
            if c.secret.is_some() || c.secret_base64.is_some() {
                return Err(
                    "`secret`/`secret_base64` are for HS256; RS256 takes `public_key`".into(),
                );
            }
            let pem = c.public_key.ok_or("RS256 needs `public_key` (PEM text)")?;
            let key = parse_public_key(&pem)?;
            let bits = key.n().bits();
            if bits < 2048 {
                warnings.push(format!(
                    "RS256 public key has only {bits} bits; use at least 2048"
                ));
            }
            Key::Rs256(key)
        } else {
            return Err(format!(
                "unsupported `algorithm` `{}` (HS256 or RS256)",
                c.algorithm
            ));
        };

        let audience = match c.audience {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s],
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err("`audience` must be a string or an array of strings".to_string()),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("`audience` must be a string or an array of strings".into()),
        };
        if audience.iter().any(String::is_empty) {
            return Err("`audience` entries must not be empty".into());
        }
        if c.issuer.as_deref() == Some("") {
            return Err("`issuer` must not be empty".into());
        }

        let sources = c.sources.unwrap_or_else(|| d_sources(c.mercure));
        if sources.is_empty() {
            return Err("`sources` must name at least one of header, cookie, query".into());
        }
        let sources = sources
            .iter()
            .map(|s| match s.as_str() {
                "header" => Ok(Source::Header),
                "cookie" => Ok(Source::Cookie),
                "query" => Ok(Source::Query),
                other => Err(format!(
                    "unknown token source `{other}` (header, cookie, query)"
                )),
            })
            .collect::<Result<_, _>>()?;

        let topics_claim = non_empty("topics_claim", c.topics_claim)?;
        if c.default_topics.iter().any(String::is_empty) {
            return Err("`default_topics` entries must not be empty".into());
        }

        Ok(Verifier {
            key,
            audience,
            issuer: c.issuer,
            leeway: c.leeway as f64,
            sources,
            cookie: non_empty("cookie", c.cookie.unwrap_or_else(|| d_cookie(c.mercure)))?,
            query_param: non_empty(
                "query_param",
                c.query_param.unwrap_or_else(|| d_query_param(c.mercure)),
            )?,
            user_claim: non_empty("user_claim", c.user_claim)?,
            topics_claim,
            default_topics: c.default_topics,
            mercure: c.mercure,
            warnings,
        })
    }

    /// The token of a request, from the first configured source that has one.
    pub fn find_token<'a>(
        &self,
        headers: &'a [(String, String)],
        query: &'a [(String, String)],
    ) -> Option<&'a str> {
        self.sources.iter().find_map(|s| match s {
            Source::Header => bearer(headers),
            Source::Cookie => cookie(headers, &self.cookie),
            Source::Query => query
                .iter()
                .find(|(k, v)| *k == self.query_param && !v.is_empty())
                .map(|(_, v)| v.trim()),
        })
    }

    /// Verify `token` at `now_ms` (wall clock, ms since the epoch).
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Identity, String> {
        let payload = self.check_signature(token)?;
        self.check_times(&payload, now_ms as f64 / 1000.0)?;
        self.check_issuer(&payload)?;
        self.check_audience(&payload)?;
        let user = match payload.get(&self.user_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            // Mercure tokens usually carry no `sub`: the user is "" then.
            None | Some(Value::Null) | Some(Value::String(_)) if self.mercure => String::new(),
            None | Some(Value::Null) => {
                return Err(format!("token has no {} claim", self.user_claim))
            }
            Some(_) => return Err(format!("token {} claim is not a string", self.user_claim)),
        };
        let topics = self.topics(&payload)?;
        let claims = Value::Object(payload).to_string();
        Ok(Identity {
            user,
            topics,
            claims,
        })
    }

    /// Check the header and signature; returns the payload object.
    fn check_signature(&self, token: &str) -> Result<Map<String, Value>, String> {
        if token.len() > MAX_TOKEN_LEN {
            return Err("token too long".into());
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("malformed token".into());
        };
        let header = decode_object(h).map_err(|e| format!("malformed token header: {e}"))?;
        let want = match self.key {
            Key::Hs256(_) => "HS256",
            Key::Rs256(_) => "RS256",
        };
        match header.get("alg") {
            Some(Value::String(a)) if a == want => {}
            Some(Value::String(a)) => {
                return Err(format!(
                    "token algorithm {a} not accepted (expected {want})"
                ))
            }
            _ => return Err("malformed token header: no alg".into()),
        }
        if header.contains_key("crit") {
            return Err("token has unsupported critical header parameters".into());
        }
        let sig = B64URL
            .decode(s)
            .map_err(|_| "malformed token signature".to_string())?;
        let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
        let ok = match &self.key {
            Key::Hs256(secret) => {
                let mut mac =
                    <Hmac<Sha256> as Mac>::new_from_slice(secret).map_err(|e| e.to_string())?;
                mac.update(signed);
                // Constant-time comparison.
                mac.verify_slice(&sig).is_ok()
            }
            Key::Rs256(key) => {
                let hash = Sha256::digest(signed);
                key.verify(Pkcs1v15Sign::new::<Sha256>(), &hash, &sig)
                    .is_ok()
            }
        };
        if !ok {
            return Err("invalid token signature".into());
        }
        decode_object(p).map_err(|e| format!("malformed token payload: {e}"))
    }

    fn check_times(&self, payload: &Map<String, Value>, now: f64) -> Result<(), String> {
        if let Some(exp) = numeric(payload, "exp")? {
            if now >= exp + self.leeway {
                return Err("token expired".into());
            }
        }
        if let Some(nbf) = numeric(payload, "nbf")? {
            if now + self.leeway < nbf {
                return Err("token not yet valid (nbf)".into());
            }
        }
        Ok(())
    }

    fn check_issuer(&self, payload: &Map<String, Value>) -> Result<(), String> {
        let Some(want) = &self.issuer else {
            return Ok(());
        };
        match payload.get("iss") {
            Some(Value::String(iss)) if iss == want => Ok(()),
            Some(Value::String(iss)) => Err(format!("token issuer `{iss}` not accepted")),
            Some(_) => Err("token iss claim is not a string".into()),
            None => Err("token has no iss claim".into()),
        }
    }

    fn check_audience(&self, payload: &Map<String, Value>) -> Result<(), String> {
        if self.audience.is_empty() {
            return Ok(());
        }
        let ok = match payload.get("aud") {
            Some(Value::String(a)) => self.audience.contains(a),
            Some(Value::Array(items)) => items.iter().any(|v| {
                v.as_str()
                    .is_some_and(|a| self.audience.iter().any(|w| w == a))
            }),
            Some(_) => return Err("token aud claim is not a string or array".into()),
            None => return Err("token has no aud claim".into()),
        };
        if ok {
            Ok(())
        } else {
            Err("token audience not accepted".into())
        }
    }

    fn topics(&self, payload: &Map<String, Value>) -> Result<Vec<String>, String> {
        let (name, v) = if self.mercure {
            // As the hub reads it: `mercure.subscribe` is an array of
            // strings; a missing (or null) claim or array means none.
            let v = match payload.get("mercure") {
                None | Some(Value::Null) => None,
                Some(Value::Object(m)) => m.get("subscribe"),
                Some(_) => return Err("token mercure claim is not an object".into()),
            };
            if let Some(v) = v {
                if !matches!(v, Value::Null | Value::Array(_)) {
                    return Err("token mercure.subscribe claim must be an array".into());
                }
            }
            ("mercure.subscribe", v)
        } else {
            (self.topics_claim.as_str(), payload.get(&self.topics_claim))
        };
        match v {
            None | Some(Value::Null) => Ok(self.default_topics.clone()),
            Some(Value::String(s)) => Ok(s.split_whitespace().map(str::to_owned).collect()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) if !s.is_empty() => Ok(s.clone()),
                    _ => Err(format!(
                        "token {name} claim must hold topic selector strings"
                    )),
                })
                .collect(),
            Some(_) => Err(format!(
                "token {name} claim must be an array or a space-separated string"
            )),
        }
    }
}

/// A base64url JSON object segment.
fn decode_object(seg: &str) -> Result<Map<String, Value>, String> {
    let bytes = B64URL
        .decode(seg)
        .map_err(|_| "bad base64url".to_string())?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => Err(format!("bad JSON: {e}")),
    }
}

/// A NumericDate claim, if present.
fn numeric(payload: &Map<String, Value>, name: &str) -> Result<Option<f64>, String> {
    match payload.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("token {name} claim is not a number")),
        Some(_) => Err(format!("token {name} claim is not a number")),
    }
}

/// `Authorization: Bearer <token>`.
fn bearer(headers: &[(String, String)]) -> Option<&str> {
    headers
        .iter()
        .filter(|(k, _)| k == "authorization")
        .find_map(|(_, v)| {
            let (scheme, tok) = v.trim().split_once(' ')?;
            let tok = tok.trim();
            (scheme.eq_ignore_ascii_case("bearer") && !tok.is_empty()).then_some(tok)
        })
}

/// The value of cookie `name` from any `Cookie` header.
fn cookie<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k == "cookie")
        .flat_map(|(_, v)| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            if k.trim() != name {
                return None;
            }
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            (!v.is_empty()).then_some(v)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const NOW_MS: u64 = 1_700_000_000_000;

    /// An HS256 token for `payload`, signed with `SECRET`.
    fn token(payload: &Value) -> String {
        let h = B64URL.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let p = B64URL.encode(payload.to_string());
        let signed = format!("{h}.{p}");
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(signed.as_bytes());
        let sig = B64URL.encode(mac.finalize().into_bytes());
        format!("{signed}.{sig}")
    }

    /// A verifier for `SECRET` with `extra` config keys.
    fn verifier(extra: Value) -> Verifier {
        let mut config = serde_json::json!({ "secret": SECRET });
        config
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        new(&config.to_string()).unwrap()
    }

    /// A verifier from config JSON, parsed as `init` parses it.
    fn new(config: &str) -> Result<Verifier, String> {
        Verifier::new(serde_json::from_str(config).map_err(|e| e.to_string())?)
    }

    #[test]
    fn config_errors() {
        let err = |c: &str| new(c).err().unwrap();
        assert!(err("{}").contains("needs a config"));
        assert!(err(r#"{"algorithm":"RS256"}"#).contains("RS256 needs `public_key`"));
        assert!(err(r#"{"algorithm":"ES256","secret":"s"}"#).contains("unsupported `algorithm`"));
        assert!(err(r#"{"secret":"s","audience":5}"#).contains("`audience` must be"));
        assert!(err(r#"{"secret":"s","sources":["body"]}"#).contains("unknown token source"));
        assert!(err(r#"{"secret":"s","leeway":-1}"#).contains("invalid value"));
        assert!(err(r#"{"secret":"s","secrets":"t"}"#).contains("unknown field `secrets`"));
        assert!(new(r#"{"algorithm":"hs256","secret":"s","audience":["a","b"]}"#).is_ok());
    }

    fn mercure() -> Verifier {
        verifier(serde_json::json!({ "mercure": true }))
    }

    fn verify(v: &Verifier, payload: Value) -> Result<Identity, String> {
        v.verify(&token(&payload), NOW_MS)
    }

    fn strings(items: &[&str]) -> Vec<(String, String)> {
        items
            .chunks(2)
            .map(|kv| (kv[0].to_string(), kv[1].to_string()))
            .collect()
    }

    #[test]
    fn test_helper_token_verifies() {
        let v = verifier(serde_json::json!({}));
        let id = verify(&v, serde_json::json!({ "sub": "alice", "topics": ["a/*"] })).unwrap();
        assert_eq!(id.user, "alice");
        assert_eq!(id.topics, ["a/*"]);
        let other = new(r#"{"secret":"another-secret-of-32-or-more-bytes!"}"#).unwrap();
        assert_eq!(
            other
                .verify(&token(&serde_json::json!({ "sub": "a" })), NOW_MS)
                .err()
                .unwrap(),
            "invalid token signature"
        );
    }

    // 1. The user claim.

    #[test]
    fn mercure_missing_user_is_empty() {
        let v = mercure();
        let id = verify(&v, serde_json::json!({ "mercure": { "subscribe": ["a"] } })).unwrap();
        assert_eq!(id.user, "");
        assert_eq!(
            verify(&v, serde_json::json!({ "sub": null })).unwrap().user,
            ""
        );
        assert_eq!(
            verify(&v, serde_json::json!({ "sub": "" })).unwrap().user,
            ""
        );
        // A configured user claim behaves the same.
        let v = verifier(serde_json::json!({ "mercure": true, "user_claim": "uid" }));
        assert_eq!(
            verify(&v, serde_json::json!({ "sub": "x" })).unwrap().user,
            ""
        );
        assert_eq!(
            verify(&v, serde_json::json!({ "uid": "bob" }))
                .unwrap()
                .user,
            "bob"
        );
    }

    #[test]
    fn mercure_present_user_is_used() {
        let v = mercure();
        assert_eq!(
            verify(&v, serde_json::json!({ "sub": "alice" }))
                .unwrap()
                .user,
            "alice"
        );
        assert_eq!(
            verify(&v, serde_json::json!({ "sub": 42 })).unwrap().user,
            "42"
        );
    }

    #[test]
    fn mercure_bad_user_is_error() {
        let v = mercure();
        for bad in [
            serde_json::json!(true),
            serde_json::json!(["alice"]),
            serde_json::json!({ "id": "alice" }),
        ] {
            assert_eq!(
                verify(&v, serde_json::json!({ "sub": bad })).err().unwrap(),
                "token sub claim is not a string"
            );
        }
    }

    #[test]
    fn plain_missing_user_is_error() {
        let v = verifier(serde_json::json!({}));
        assert_eq!(
            verify(&v, serde_json::json!({ "topics": ["a"] }))
                .err()
                .unwrap(),
            "token has no sub claim"
        );
        assert_eq!(
            verify(&v, serde_json::json!({ "sub": null }))
                .err()
                .unwrap(),
            "token has no sub claim"
        );
        assert!(verify(&v, serde_json::json!({ "sub": "" })).is_err());
        assert!(verify(&v, serde_json::json!({ "sub": true })).is_err());
        let v = verifier(serde_json::json!({ "mercure": false }));
        assert!(verify(&v, serde_json::json!({})).is_err());
    }

    // 2. The topics.

    #[test]
    fn mercure_topics_from_subscribe() {
        let v = mercure();
        let id = verify(
            &v,
            serde_json::json!({
                "topics": ["ignored"],
                "mercure": { "subscribe": ["orders/{id}", "https://example.com/books/1"] }
            }),
        )
        .unwrap();
        assert_eq!(id.topics, ["orders/{id}", "https://example.com/books/1"]);
        let id = verify(&v, serde_json::json!({ "mercure": { "subscribe": [] } })).unwrap();
        assert!(id.topics.is_empty());
    }

    #[test]
    fn mercure_missing_topics_are_empty() {
        let v = mercure();
        for payload in [
            serde_json::json!({}),
            serde_json::json!({ "topics": ["ignored"] }),
            serde_json::json!({ "mercure": null }),
            serde_json::json!({ "mercure": {} }),
            serde_json::json!({ "mercure": { "publish": ["a"] } }),
            serde_json::json!({ "mercure": { "subscribe": null } }),
        ] {
            let id = verify(&v, payload.clone()).unwrap();
            assert!(id.topics.is_empty(), "{payload}");
        }
        // Configured `default_topics` still apply.
        let v = verifier(serde_json::json!({ "mercure": true, "default_topics": ["public/*"] }));
        assert_eq!(
            verify(&v, serde_json::json!({})).unwrap().topics,
            ["public/*"]
        );
    }

    #[test]
    fn mercure_bad_topics_are_error() {
        let v = mercure();
        for sub in [
            serde_json::json!("a b"),
            serde_json::json!(1),
            serde_json::json!(true),
            serde_json::json!({ "a": 1 }),
        ] {
            assert_eq!(
                verify(&v, serde_json::json!({ "mercure": { "subscribe": sub } }))
                    .err()
                    .unwrap(),
                "token mercure.subscribe claim must be an array"
            );
        }
        assert!(verify(&v, serde_json::json!({ "mercure": { "subscribe": [1] } })).is_err());
        assert_eq!(
            verify(&v, serde_json::json!({ "mercure": ["a"] }))
                .err()
                .unwrap(),
            "token mercure claim is not an object"
        );
    }

    #[test]
    fn plain_topics_unchanged() {
        let v = verifier(serde_json::json!({}));
        let id = verify(&v, serde_json::json!({ "sub": "a", "topics": "x y" })).unwrap();
        assert_eq!(id.topics, ["x", "y"]);
        let id = verify(
            &v,
            serde_json::json!({ "sub": "a", "mercure": { "subscribe": ["m"] } }),
        )
        .unwrap();
        assert!(id.topics.is_empty());
    }

    // 3. Where the token comes from.

    #[test]
    fn mercure_default_sources() {
        let v = mercure();
        let headers = strings(&[
            "authorization",
            "Bearer H",
            "cookie",
            "spout_token=S; mercureAuthorization=C",
        ]);
        let query = strings(&["token", "T", "authorization", "Q"]);
        assert_eq!(v.find_token(&headers, &query), Some("H"));
        // Query before cookie.
        assert_eq!(v.find_token(&headers[1..], &query), Some("Q"));
        assert_eq!(v.find_token(&headers[1..], &query[..1]), Some("C"));
        assert_eq!(v.find_token(&[], &query[..1]), None);
    }

    #[test]
    fn plain_default_sources_unchanged() {
        let v = verifier(serde_json::json!({}));
        let headers = strings(&["cookie", "spout_token=S; mercureAuthorization=C"]);
        let query = strings(&["token", "T", "authorization", "Q"]);
        // Cookie before query.
        assert_eq!(v.find_token(&headers, &query), Some("S"));
        assert_eq!(v.find_token(&[], &query), Some("T"));
        assert_eq!(v.find_token(&[], &query[1..]), None);
    }

    #[test]
    fn mercure_explicit_sources_win() {
        let v = verifier(serde_json::json!({
            "mercure": true,
            "cookie": "c",
            "query_param": "q",
            "sources": ["cookie", "query"]
        }));
        let headers = strings(&[
            "authorization",
            "Bearer H",
            "cookie",
            "mercureAuthorization=M; c=C",
        ]);
        let query = strings(&["authorization", "A", "q", "Q"]);
        assert_eq!(v.find_token(&headers, &query), Some("C"));
        assert_eq!(v.find_token(&headers[..1], &query), Some("Q"));
        assert_eq!(v.find_token(&headers[..1], &query[..1]), None);
        // Only some keys set: the others keep Mercure's defaults.
        let v = verifier(serde_json::json!({ "mercure": true, "cookie": "c" }));
        let query = strings(&["authorization", "A"]);
        assert_eq!(v.find_token(&headers[1..], &[]), Some("C"));
        assert_eq!(v.find_token(&headers[1..], &query), Some("A"));
        // Explicitly empty values are still config errors.
        for bad in [
            serde_json::json!({ "mercure": true, "sources": [] }),
            serde_json::json!({ "mercure": true, "cookie": "" }),
            serde_json::json!({ "mercure": true, "query_param": "" }),
        ] {
            let mut config = bad.clone();
            config["secret"] = SECRET.into();
            assert!(new(&config.to_string()).is_err(), "{bad}");
        }
    }

    // 4. The claims.

    #[test]
    fn mercure_claims_are_the_whole_payload() {
        let v = mercure();
        let payload = serde_json::json!({
            "exp": 1_800_000_000u64,
            "mercure": {
                "publish": ["p/1"],
                "subscribe": ["s/1"],
                "payload": { "user": "https://example.com/users/1", "n": [1, 2] }
            }
        });
        let id = verify(&v, payload.clone()).unwrap();
        let claims: Value = serde_json::from_str(&id.claims).unwrap();
        assert_eq!(claims, payload);
    }
}
