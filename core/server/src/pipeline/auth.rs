//! Running a route's auth plugin on a request and checking what the
//! principal may reach. Errors are [`AuthError`]s; the HTTP layer turns
//! them into statuses.

use crate::plugin::bindings::types::{Principal, Request as PluginRequest};
use crate::plugin::{AuthPlugin, CallError};
use crate::topic::{covered, Selector};
use http::Request;
use std::net::SocketAddr;

/// Why a request is not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The auth plugin could not run (failed call, busy, circuit open):
    /// auth fails closed.
    #[error("authentication failed to run: {0}")]
    Unavailable(String),
    /// The plugin refused the request with this status (4xx/5xx) and reason.
    #[error("{reason}")]
    Denied {
        /// The status the plugin chose.
        status: u16,
        /// Its reason, shown to the client.
        reason: String,
    },
    /// The principal may not reach a requested topic.
    #[error("user `{user}` may not {verb} `{topic}`")]
    Forbidden {
        /// The principal's user.
        user: String,
        /// What was asked (`subscribe to`, `publish to`).
        verb: &'static str,
        /// The selector or topic outside the grant.
        topic: String,
    },
    /// The credentials now name another user than the connection's.
    #[error("the credentials now belong to another user")]
    UserChanged,
}

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
    plugin: &AuthPlugin,
    req: PluginRequest,
) -> Result<(Authorized, PluginRequest), AuthError> {
    plugin
        .run(move |p| Ok(authenticate(p, &req).map(|who| (who, req))))
        .await
        .map_err(unavailable)?
}

fn unavailable(err: CallError) -> AuthError {
    AuthError::Unavailable(err.to_string())
}

/// Runs `plugin` on `req`. A failed call denies (fail closed).
pub fn authenticate(plugin: &AuthPlugin, req: &PluginRequest) -> Result<Authorized, AuthError> {
    match plugin.authenticate(req) {
        Err(err) => Err(unavailable(err)),
        Ok(Err(denial)) => Err(AuthError::Denied {
            status: denial.status,
            reason: denial.reason,
        }),
        Ok(Ok(p)) => Ok(authorized(plugin, p)),
    }
}

fn authorized(plugin: &AuthPlugin, p: Principal) -> Authorized {
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

/// [`AuthError::Forbidden`] unless every requested selector lies within
/// what `auth` allows.
pub fn check_topics<'a>(
    auth: &Authorized,
    requested: impl IntoIterator<Item = &'a Selector>,
    verb: &'static str,
) -> Result<(), AuthError> {
    for sel in requested {
        if !covered(&auth.allowed, sel) {
            return Err(AuthError::Forbidden {
                user: auth.user.clone(),
                verb,
                topic: sel.as_str().to_owned(),
            });
        }
    }
    Ok(())
}
