//! Running a route's auth plugin on a request and checking what the
//! principal may reach.

use crate::http::ApiError;
use crate::plugin::bindings::types::{Principal, Request as PluginRequest};
use crate::plugin::Plugin;
use crate::topic::{covered, Selector};
use http::{Request, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;

/// A principal the auth plugin accepted.
#[derive(Debug, Clone)]
pub struct Authorized {
    /// User id.
    pub user: String,
    /// Claims as JSON text.
    pub claims: String,
    /// What it may subscribe or publish to.
    pub allowed: Vec<Selector>,
}

/// Headers as plugins see them: (lower-case name, value) pairs, values
/// that are not UTF-8 decoded lossily.
pub fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// The request as an auth plugin sees it (header names lower-case).
pub fn plugin_request<B>(
    req: &Request<B>,
    query: &[(String, String)],
    peer: SocketAddr,
) -> PluginRequest {
    PluginRequest {
        method: req.method().as_str().to_owned(),
        path: req.uri().path().to_owned(),
        query: query.to_vec(),
        headers: header_pairs(req.headers()),
        remote_addr: peer.to_string(),
    }
}

/// Runs `plugin` on `req` on the plugin pool and hands the request back.
/// Plugin calls are synchronous and WASI's sync bindings must not run on an
/// async worker, so request handlers use this. A plugin whose queue is full
/// (or whose circuit is open) answers at once: 503 `auth_unavailable`.
pub async fn authenticate_async(
    plugin: &Arc<Plugin>,
    req: PluginRequest,
) -> Result<(Authorized, PluginRequest), ApiError> {
    plugin
        .run(move |p| Ok(authenticate(p, &req).map(|who| (who, req))))
        .await
        .map_err(unavailable)?
}

fn unavailable(err: crate::plugin::CallError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "auth_unavailable",
        format!("authentication failed to run: {err}"),
    )
}

/// Runs `plugin` on `req`. A failed call denies (fail closed) with 503.
pub fn authenticate(plugin: &Plugin, req: &PluginRequest) -> Result<Authorized, ApiError> {
    match plugin.authenticate(req) {
        Err(err) => Err(unavailable(err)),
        Ok(Err(denial)) => {
            let status = StatusCode::from_u16(denial.status).unwrap_or(StatusCode::UNAUTHORIZED);
            let error = match status {
                StatusCode::UNAUTHORIZED => "unauthorized",
                StatusCode::FORBIDDEN => "forbidden",
                StatusCode::TOO_MANY_REQUESTS => "rate_limited",
                _ => "denied",
            };
            Err(ApiError::new(status, error, denial.reason))
        }
        Ok(Ok(p)) => Ok(authorized(plugin, p)),
    }
}

fn authorized(plugin: &Plugin, p: Principal) -> Authorized {
    let allowed = p
        .topics
        .iter()
        .filter_map(|t| match Selector::parse(t) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(plugin = plugin.name(), topic = %t, error = %e, "auth plugin granted an invalid topic selector; ignored");
                None
            }
        })
        .collect();
    let claims = if p.claims.trim().is_empty() {
        "{}".to_owned()
    } else {
        p.claims
    };
    Authorized {
        user: p.user,
        claims,
        allowed,
    }
}

/// 403 unless every requested selector lies within what `auth` allows.
pub fn check_topics<'a>(
    auth: &Authorized,
    requested: impl IntoIterator<Item = &'a Selector>,
    verb: &str,
) -> Result<(), ApiError> {
    for sel in requested {
        if !covered(&auth.allowed, sel) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("user `{}` may not {verb} `{}`", auth.user, sel.as_str()),
            ));
        }
    }
    Ok(())
}
