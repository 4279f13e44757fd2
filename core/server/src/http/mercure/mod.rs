//! Spout as a Mercure hub: the protocol as Mercure v0.24 speaks it, at
//! `/.well-known/mercure`, on the same log, hub and auth plugins as the rest.
//!
//! A Mercure update is one log event: its first (canonical) topic is the
//! event's topic; the other topics, `private`, the publisher's `id` and
//! `retry` ride in [`crate::event::Extra`]. Mercure subscribers sit in the hub beside
//! native ones; their topic selectors (exact, `*`, URI templates) and the
//! `mercure.subscribe` claim of their token decide what they receive.

pub mod publish;
pub mod subscribe;
pub mod subscriptions;
pub use spout_proto::template;

use crate::app::App;
use crate::http::{ApiError, Body, Conn};
use crate::pipeline::auth::{self, Authorized};
use crate::plugin::bindings::types::Request as PluginRequest;
use crate::plugin::AuthPlugin;
use crate::visibility::{Admission, Facts, Index};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use std::sync::Arc;
use template::TopicSelector;

/// The hub's URL path.
pub const PATH: &str = "/.well-known/mercure";
/// The subscriptions API and the topic prefix of subscription events.
pub const SUBSCRIPTIONS_PATH: &str = "/.well-known/mercure/subscriptions";
/// The JSON-LD context of subscription documents.
pub const CONTEXT: &str = "https://mercure.rocks/";
/// The cookie a browser carries its token in.
pub const COOKIE: &str = "mercureAuthorization";
/// The query parameter a token may come in.
pub const QUERY_PARAM: &str = "authorization";

/// Whether `path` belongs to the Mercure hub.
pub fn is_mercure_path(path: &str) -> bool {
    path == PATH || path.starts_with("/.well-known/mercure/")
}

/// Dispatches a request under `/.well-known/mercure`; 404 when `[mercure]`
/// is not configured.
pub async fn route<B>(
    app: &Arc<App>,
    conn: &Conn,
    req: Request<B>,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin,
    B::Error: std::fmt::Display,
{
    let Some(cfg) = &app.config.mercure else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the Mercure hub is off; add a [mercure] section to the config",
        ));
    };
    let path = req.uri().path().to_owned();
    match (req.method(), path.as_str()) {
        (&Method::GET, PATH) => subscribe::subscribe(app, conn, &req).await,
        (&Method::POST, PATH) => publish::publish(app, conn, req).await,
        (&Method::GET, p) if cfg.subscriptions && is_subscriptions_path(p) => {
            subscriptions::list(app, conn, &req).await
        }
        (_, p) if p == PATH || (cfg.subscriptions && is_subscriptions_path(p)) => {
            Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{} is not allowed on {path}", req.method()),
            ))
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {path}"),
        )),
    }
}

fn is_subscriptions_path(p: &str) -> bool {
    p == SUBSCRIPTIONS_PATH
        || p.strip_prefix(SUBSCRIPTIONS_PATH)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// What one Mercure subscriber asked for and may receive.
#[derive(Debug)]
pub struct Access {
    /// Its subscriber IRI (`urn:uuid:…`).
    pub subscriber: String,
    /// The topic selectors it asked for, as given.
    pub topics: Vec<String>,
    selectors: Vec<TopicSelector>,
    /// Selectors of its token's `mercure.subscribe` claim; `None` when it
    /// came without a token (public updates only).
    allowed: Option<Vec<TopicSelector>>,
    /// Its token's `mercure.payload` claim, shown in subscription documents.
    pub payload: Option<serde_json::Value>,
}

impl Access {
    /// A subscriber asking for `topics`, authorized for `allowed`.
    pub fn new(
        subscriber: String,
        topics: Vec<String>,
        allowed: Option<Vec<String>>,
        payload: Option<serde_json::Value>,
    ) -> Access {
        let compile = |v: &[String]| v.iter().map(|s| TopicSelector::new(s)).collect();
        // One live `Access` per open Mercure subscription (see `Drop`).
        metrics::gauge!("spout_mercure_subscribers").increment(1.0);
        Access {
            subscriber,
            selectors: compile(&topics),
            allowed: allowed.as_deref().map(compile),
            topics,
            payload,
        }
    }

    /// Mercure's rule: some topic matches some requested selector, and a
    /// private update also needs some topic matched by the token's claim.
    fn admits_topics<'a>(
        &self,
        topics: impl Iterator<Item = &'a str> + Clone,
        private: bool,
    ) -> bool {
        let any =
            |sels: &[TopicSelector]| topics.clone().any(|t| sels.iter().any(|s| s.matches(t)));
        any(&self.selectors) && (!private || self.allowed.as_deref().is_some_and(any))
    }
}

impl Drop for Access {
    fn drop(&mut self) {
        metrics::gauge!("spout_mercure_subscribers").decrement(1.0);
    }
}

impl Admission for Access {
    /// Addressed updates (`to`) only to their user, then Mercure's rule.
    fn admits(&self, e: &Facts<'_>, user: Option<&str>) -> bool {
        if e.to.is_some_and(|to| user != Some(to)) {
            return false;
        }
        self.admits_topics(e.topics(), e.private)
    }

    /// Filed under its exact topics unless a selector is `*` or a template.
    fn index(&self) -> Index {
        let exact: Option<Vec<Arc<str>>> = self
            .selectors
            .iter()
            .map(|s| s.exact().map(Arc::from))
            .collect();
        match exact {
            Some(topics) => Index::Topics(topics),
            None => Index::Everything,
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The `mercure` claim of a verified token.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Claims {
    /// Topic selectors the token may publish to.
    pub publish: Option<Vec<String>>,
    /// Topic selectors the token may receive private updates of.
    pub subscribe: Option<Vec<String>>,
    /// Free data shown in subscription documents.
    pub payload: Option<serde_json::Value>,
}

impl Claims {
    /// Reads `mercure` from the claims JSON an auth plugin returned; a
    /// token without it (or with a malformed one) grants nothing.
    pub fn from_json(claims: &str) -> Claims {
        #[derive(serde::Deserialize)]
        struct Outer {
            mercure: Option<Claims>,
        }
        match serde_json::from_str::<Outer>(claims) {
            Ok(o) => o.mercure.unwrap_or_default(),
            Err(e) => {
                tracing::debug!(error = %e, "token has no usable mercure claim");
                Claims::default()
            }
        }
    }
}

/// Whether the request carries a token where Mercure looks for one: the
/// `Authorization` header, the `authorization` query parameter, or the
/// `mercureAuthorization` cookie.
fn has_token<B>(req: &Request<B>, query: &[(String, String)]) -> bool {
    req.headers().contains_key(http::header::AUTHORIZATION)
        || query.iter().any(|(k, v)| k == QUERY_PARAM && !v.is_empty())
        || req
            .headers()
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .any(|c| c.trim().starts_with(&format!("{COOKIE}=")))
}

/// Verifies the request's token with `plugin`: `Ok(None)` when there is no
/// token, 401 when there is one but no plugin to verify it, else what the
/// plugin says.
async fn verify<B>(
    plugin: Option<&AuthPlugin>,
    req: &Request<B>,
    query: &[(String, String)],
    conn: &Conn,
) -> Result<Option<(Authorized, PluginRequest)>, ApiError> {
    if !has_token(req, query) {
        return Ok(None);
    }
    let Some(plugin) = plugin else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this hub verifies no tokens: set [mercure] auth to an auth-jwt plugin in Mercure mode",
        ));
    };
    let preq = auth::plugin_request(req, query, conn.peer);
    Ok(Some(auth::authenticate_async(plugin, preq).await?))
}

/// The id a client sees for log sequence `seq`: the publisher's id of that
/// update if it had one, else the sequence number.
pub fn wire_id(app: &App, seq: u64) -> String {
    let mut out = None;
    if seq > 0 {
        let _ = app.log.scan(seq - 1, seq, 1, |_, v| {
            out = v.wire_id.map(str::to_owned);
            Ok(false)
        });
    }
    out.unwrap_or_else(|| seq.to_string())
}
