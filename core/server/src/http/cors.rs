//! Cross-origin resource sharing from `[server.cors]`; none configured means
//! same-origin only (no CORS headers at all).

use super::Body;
use crate::config::CorsConfig;
use http::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ALLOW, VARY,
};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};

const METHODS: &str = "GET, POST, OPTIONS";
const HEADERS: &str = "content-type, last-event-id, authorization";

/// The `Access-Control-Allow-Origin` value for `origin`, if it is allowed.
fn allowed(cfg: &CorsConfig, origin: &HeaderValue) -> Option<HeaderValue> {
    let origin_str = origin.to_str().ok()?;
    if cfg.origins.iter().any(|o| o == "*") {
        // With credentials the spec forbids `*`: echo the origin instead.
        return Some(if cfg.credentials {
            origin.clone()
        } else {
            HeaderValue::from_static("*")
        });
    }
    cfg.origins
        .iter()
        .any(|o| o.eq_ignore_ascii_case(origin_str))
        .then(|| origin.clone())
}

/// Adds CORS headers to a response for an allowed origin.
pub fn apply(cfg: &CorsConfig, origin: Option<&HeaderValue>, resp: &mut Response<Body>) {
    let Some(value) = origin.and_then(|o| allowed(cfg, o)) else {
        return;
    };
    let h = resp.headers_mut();
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, value);
    h.append(VARY, HeaderValue::from_static("origin"));
    if cfg.credentials {
        h.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

/// Answers an `OPTIONS` preflight: 204, with the allow headers when the origin
/// is allowed (the caller adds the origin headers through [`apply`]).
pub fn preflight<B>(
    cfg: &CorsConfig,
    origin: Option<&HeaderValue>,
    req: &Request<B>,
) -> Response<Body> {
    let mut resp = Response::new(Either::Left(Full::default()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(ALLOW, HeaderValue::from_static(METHODS));
    if origin.and_then(|o| allowed(cfg, o)).is_some() {
        h.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(METHODS),
        );
        let asked = req
            .headers()
            .get(ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or(HeaderValue::from_static(HEADERS));
        h.insert(ACCESS_CONTROL_ALLOW_HEADERS, asked);
        h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
    resp
}
