//! `github-webhook`: publish GitHub webhook deliveries.
//!
//! The host receives the HTTP request and calls `on_input` with the body and
//! the lower-case header pairs. The `x-hub-signature-256` header must be
//! `sha256=` and the hex HMAC-SHA256 of the body keyed with the configured
//! secret (compared in constant time), or the delivery is refused with 401.
//! The event type is the `x-github-event` header; the topic is
//! `<topic_prefix>/<repository.full_name>` (just `<topic_prefix>` for
//! deliveries without a repository); the data is the JSON body.

use hmac::{Hmac, Mac};
use schemars::JsonSchema;
use serde::Deserialize;
use sha2::Sha256;
use spout_sdk::{BatchBuilder, Denial, Plugin, Source};

type HmacSha256 = Hmac<Sha256>;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The webhook's secret, as set on GitHub; must not be empty.
    // No `default`: a missing key is `None`, refused in `new` with a hint.
    #[schemars(required, length(min = 1))]
    secret: Option<String>,
    /// First segment(s) of every topic: 1-256 bytes of printable ASCII, no
    /// spaces or `*`.
    #[serde(default = "default_prefix")]
    #[schemars(length(min = 1, max = 256), pattern(r"^[\x21-\x29\x2B-\x7E]+$"))]
    topic_prefix: String,
}

fn default_prefix() -> String {
    "github".into()
}

fn deny(status: u16, reason: &str) -> Denial {
    Denial {
        status,
        reason: reason.into(),
    }
}

/// The value of header `name` (names are lower-case), the first if repeated.
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Decodes hex digits (either case) into bytes.
fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let hex = hex.as_bytes();
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.chunks(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            Some((hi * 16 + lo) as u8)
        })
        .collect()
}

/// Whether `signature` (the `x-hub-signature-256` value) is `sha256=` and
/// the hex HMAC-SHA256 of `body` under `key`. The MAC comparison is
/// constant-time.
fn signature_ok(key: &HmacSha256, body: &[u8], signature: &str) -> bool {
    let Some(digest) = signature
        .trim()
        .strip_prefix("sha256=")
        .and_then(decode_hex)
    else {
        return false;
    };
    let mut mac = key.clone();
    mac.update(body);
    mac.verify_slice(&digest).is_ok()
}

/// Whether `event` (the `x-github-event` value) is a plain event name.
fn valid_event_name(event: &str) -> bool {
    !event.is_empty()
        && event.len() <= 256
        && event
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Whether `topic` is a concrete topic the host accepts: 1-256 bytes of
/// printable ASCII without spaces or `*`.
fn valid_topic(topic: &str) -> bool {
    spout_sdk::topic::validate_topic(topic).is_ok()
}

/// The topic for a delivery: `<prefix>/<repository.full_name>`, or the
/// prefix when the body has no repository name (or it would not make a
/// valid topic). `Err` (400) when the body is not JSON.
fn topic_for(prefix: &str, body: &[u8]) -> Result<String, Denial> {
    let body: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| deny(400, "body is not JSON"))?;
    let name = body
        .get("repository")
        .and_then(|r| r.get("full_name"))
        .and_then(serde_json::Value::as_str)
        .filter(|n| !n.is_empty());
    Ok(match name {
        Some(name) if valid_topic(&format!("{prefix}/{name}")) => format!("{prefix}/{name}"),
        _ => prefix.to_owned(),
    })
}

/// `json` without whitespace outside strings. The host writes JSON data on
/// one SSE `data:` line, so a pretty-printed body must lose its line breaks;
/// everything else (key order, numbers, escapes) stays as sent.
fn compact_json(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            if b == b'"' {
                in_string = true;
            }
            out.push(b);
        }
    }
    out
}

struct GithubWebhook {
    key: HmacSha256,
    topic_prefix: String,
}

impl Plugin for GithubWebhook {
    const NAME: &'static str = "github-webhook";
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        let secret = c.secret.ok_or(
            "github-webhook config: `secret` is required (the webhook's secret, as set on GitHub)",
        )?;
        if secret.is_empty() {
            return Err("github-webhook config: `secret` must not be empty".into());
        }
        if !valid_topic(&c.topic_prefix) {
            return Err(format!(
                "`topic_prefix` {:?} is not a valid topic (1-256 bytes of printable ASCII, no spaces or '*')",
                c.topic_prefix
            ));
        }
        let key = HmacSha256::new_from_slice(secret.as_bytes())
            .map_err(|e| format!("github-webhook config: `secret`: {e}"))?;
        Ok(GithubWebhook {
            key,
            topic_prefix: c.topic_prefix,
        })
    }
}

impl GithubWebhook {
    /// Checks a delivery; its topic, event type and data.
    fn accept(
        &self,
        body: &[u8],
        headers: &[(String, String)],
    ) -> Result<(String, String, Vec<u8>), Denial> {
        let signature = header(headers, "x-hub-signature-256").unwrap_or("");
        if !signature_ok(&self.key, body, signature) {
            return Err(deny(401, "invalid signature"));
        }
        let event = header(headers, "x-github-event")
            .map(str::trim)
            .ok_or_else(|| deny(400, "missing x-github-event header"))?;
        if !valid_event_name(event) {
            return Err(deny(400, "invalid x-github-event header"));
        }
        let topic = topic_for(&self.topic_prefix, body)?;
        Ok((topic, event.to_owned(), compact_json(body)))
    }
}

impl Source for GithubWebhook {
    fn on_input(
        &self,
        body: &[u8],
        headers: &[(String, String)],
        out: &mut BatchBuilder,
    ) -> Result<(), Denial> {
        let (topic, event, data) = self.accept(body, headers)?;
        out.push(0, &topic, &event, &data, None);
        Ok(())
    }
}

spout_sdk::export_source!(GithubWebhook);

#[cfg(test)]
mod tests {
    use super::*;

    // From GitHub's "Validating webhook deliveries" documentation.
    const DOC_SECRET: &str = "It's a Secret to Everybody";
    const DOC_BODY: &[u8] = b"Hello, World!";
    const DOC_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn hook() -> GithubWebhook {
        spout_sdk::init::<GithubWebhook>(&serde_json::json!({ "secret": DOC_SECRET }).to_string())
            .unwrap()
    }

    fn sign(body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(DOC_SECRET.as_bytes()).unwrap();
        mac.update(body);
        let tag = mac.finalize().into_bytes();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256={hex}")
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn github_documented_signature() {
        let key = hook().key;
        assert!(signature_ok(&key, DOC_BODY, DOC_SIG));
        assert!(signature_ok(
            &key,
            DOC_BODY,
            &DOC_SIG.to_uppercase().replace("SHA256=", "sha256=")
        ));
        assert!(!signature_ok(&key, b"Hello, World?", DOC_SIG));
        assert!(!signature_ok(&key, DOC_BODY, &DOC_SIG[..70]));
        assert!(!signature_ok(&key, DOC_BODY, &DOC_SIG[7..]));
        assert!(!signature_ok(&key, DOC_BODY, "sha256=zz"));
        assert!(!signature_ok(&key, DOC_BODY, ""));
    }

    #[test]
    fn deliveries() {
        let h = hook();
        let body = b"{\n  \"ref\": \"refs/heads/main\",\n  \"repository\": {\"full_name\": \"octo/hello world\"}\n}";
        let sig = sign(body);
        let (topic, event, data) = h
            .accept(
                body,
                &headers(&[("x-github-event", "push"), ("x-hub-signature-256", &sig)]),
            )
            .unwrap();
        assert_eq!(topic, "github");
        assert_eq!(event, "push");
        assert_eq!(
            data,
            br#"{"ref":"refs/heads/main","repository":{"full_name":"octo/hello world"}}"#
        );

        let body = br#"{"zen":"x","repository":{"full_name":"octo/hello"}}"#;
        let sig = sign(body);
        let ok = headers(&[("x-github-event", "ping"), ("x-hub-signature-256", &sig)]);
        let (topic, event, data) = h.accept(body, &ok).unwrap();
        assert_eq!(
            (topic.as_str(), event.as_str()),
            ("github/octo/hello", "ping")
        );
        assert_eq!(data, body);

        let status = |body: &[u8], hs: &[(&str, &str)]| h.accept(body, &headers(hs)).unwrap_err();
        let d = status(body, &[("x-github-event", "ping")]);
        assert_eq!((d.status, d.reason.as_str()), (401, "invalid signature"));
        let d = status(
            body,
            &[("x-github-event", "ping"), ("x-hub-signature-256", DOC_SIG)],
        );
        assert_eq!(d.status, 401);
        assert_eq!(status(body, &[("x-hub-signature-256", &sig)]).status, 400);
        assert_eq!(
            status(
                body,
                &[("x-github-event", "a\nb"), ("x-hub-signature-256", &sig)]
            )
            .status,
            400
        );
        let sig = sign(b"payload=%7B%7D");
        assert_eq!(
            status(
                b"payload=%7B%7D",
                &[("x-github-event", "push"), ("x-hub-signature-256", &sig)]
            )
            .status,
            400
        );
        let sig = sign(b"{}");
        let (topic, _, _) = h
            .accept(
                b"{}",
                &headers(&[("x-github-event", "meta"), ("x-hub-signature-256", &sig)]),
            )
            .unwrap();
        assert_eq!(topic, "github");
    }

    #[test]
    fn config() {
        assert!(spout_sdk::init::<GithubWebhook>("")
            .err()
            .unwrap()
            .contains("`secret` is required"));
        assert!(spout_sdk::init::<GithubWebhook>(r#"{"secret":""}"#).is_err());
        assert!(spout_sdk::init::<GithubWebhook>(r#"{"secret":"s","prefix":"x"}"#).is_err());
        assert!(
            spout_sdk::init::<GithubWebhook>(r#"{"secret":"s","topic_prefix":"a b"}"#).is_err()
        );
        assert!(
            spout_sdk::init::<GithubWebhook>(r#"{"secret":"s","topic_prefix":"gh/events"}"#)
                .is_ok()
        );
    }
}
