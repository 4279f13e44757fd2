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
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "d_algorithm")]
    algorithm: String,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    secret_base64: Option<String>,
    #[serde(default)]
    public_key: Option<String>,
    #[serde(default)]
    audience: Option<Value>,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    leeway: u64,
    #[serde(default = "d_sources")]
    sources: Vec<String>,
    #[serde(default = "d_cookie")]
    cookie: String,
    #[serde(default = "d_query_param")]
    query_param: String,
    #[serde(default = "d_user_claim")]
    user_claim: String,
    #[serde(default = "d_topics_claim")]
    topics_claim: String,
    #[serde(default)]
    default_topics: Vec<String>,
    #[serde(default)]
    mercure: bool,
}

fn d_algorithm() -> String {
    "HS256".into()
}
fn d_sources() -> Vec<String> {
    vec!["header".into(), "cookie".into(), "query".into()]
}
fn d_cookie() -> String {
    "spout_token".into()
}
fn d_query_param() -> String {
    "token".into()
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
    /// Path of the topics claim (`["mercure", "subscribe"]` in Mercure mode).
    topics_path: Vec<String>,
    default_topics: Vec<String>,
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
    /// Build a verifier from the config JSON.
    pub fn new(config: &str) -> Result<Self, String> {
        if matches!(config.trim(), "" | "null" | "{}") {
            return Err("auth-jwt needs a config: `secret` (HS256) or `public_key` (RS256)".into());
        }
        let c: Config =
            serde_json::from_str(config).map_err(|e| format!("auth-jwt config: {e}"))?;
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

        if c.sources.is_empty() {
            return Err("`sources` must name at least one of header, cookie, query".into());
        }
        let sources = c
            .sources
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
        let topics_path = if c.mercure {
            vec!["mercure".to_string(), "subscribe".to_string()]
        } else {
            vec![topics_claim]
        };
        if c.default_topics.iter().any(String::is_empty) {
            return Err("`default_topics` entries must not be empty".into());
        }

        Ok(Verifier {
            key,
            audience,
            issuer: c.issuer,
            leeway: c.leeway as f64,
            sources,
            cookie: non_empty("cookie", c.cookie)?,
            query_param: non_empty("query_param", c.query_param)?,
            user_claim: non_empty("user_claim", c.user_claim)?,
            topics_path,
            default_topics: c.default_topics,
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
        let (first, rest) = self
            .topics_path
            .split_first()
            .expect("topics path is never empty");
        let mut v = payload.get(first);
        for k in rest {
            v = v.and_then(|x| x.get(k));
        }
        let name = self.topics_path.join(".");
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
