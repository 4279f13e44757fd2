//! The HTTP API: routing, JSON errors and CORS around the route handlers.
//!
//! | route | handler |
//! |---|---|
//! | `GET /events` (and every `[[stream]]` path) | [`events`]: the SSE stream |
//! | `POST /publish` | [`publish`]: append events |
//! | `GET /poll` | [`poll`]: JSON pages for clients without SSE |
//! | `GET /metrics`, `/healthz`, `/readyz`, `/stats` | [`ops`] |
//! | `GET /` | [`ops::console`]: the built-in live console page |
//! | `POST /connections/{id}/topics` | [`connections`]: change an open stream's topics |
//! | `/.well-known/mercure[/subscriptions…]` | [`mercure`]: the Mercure protocol |

pub mod api;
pub mod connections;
pub mod cors;
pub mod direct;
pub mod error;
pub mod events;
pub mod files;
pub mod hooks;
pub mod mercure;
#[cfg(test)]
mod openapi_check;
pub mod ops;
pub mod poll;
pub mod publish;
pub mod routes;
pub mod tickets;

use crate::app::App;
use crate::stream::EventStream;
use crate::topic::Selector;
use bytes::Bytes;
pub use error::ApiError;
use http::header::{HeaderValue, CONTENT_TYPE, ORIGIN};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use routes::Target;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Every response body: a whole buffer or an SSE stream.
pub type Body = Either<Full<Bytes>, EventStream>;

/// What the server knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct Conn {
    /// The client's address.
    pub peer: SocketAddr,
    /// Cancelling it drops the connection (used for clients that stopped reading).
    pub kill: CancellationToken,
}

/// A JSON response with the given status.
pub fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Handles one request; never fails (errors become JSON responses).
pub async fn handle<B>(
    app: Arc<App>,
    conn: Conn,
    req: Request<B>,
) -> Result<Response<Body>, Infallible>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin,
    B::Error: std::fmt::Display,
{
    let origin = req.headers().get(ORIGIN).cloned();
    let pipeline = app.pipeline.load();
    let target = Target::resolve(&pipeline, req.uri().path(), app.config.server.console);
    let mercure_cors;
    let cors = match &app.config.mercure {
        Some(m) if matches!(target, Target::Mercure) => {
            // Mercure clients send cookies: credentials, origins from [mercure].
            mercure_cors = crate::config::CorsConfig {
                origins: m.cors_origins.clone(),
                credentials: true,
            };
            &mercure_cors
        }
        _ => &app.config.server.cors,
    };
    let mut resp = if req.method() == Method::OPTIONS {
        let mut resp = cors::preflight(cors, origin.as_ref(), &req);
        if let Some(allow) = allow_header(&target, req.uri().path(), "OPTIONS") {
            resp.headers_mut().insert(http::header::ALLOW, allow);
        }
        resp
    } else {
        // RFC 9110: a 405 names the methods the resource takes. Worked out
        // only where a 405 can come (not on the publish hot path).
        let allow = match target {
            Target::Api | Target::Mercure => allow_header(&target, req.uri().path(), ""),
            ref t if t.allows(req.method()) == Some(false) => allow_header(t, req.uri().path(), ""),
            _ => None,
        };
        let mut resp = route(&app, &conn, req)
            .await
            .unwrap_or_else(ApiError::into_response);
        if let (StatusCode::METHOD_NOT_ALLOWED, Some(allow)) = (resp.status(), allow) {
            resp.headers_mut().insert(http::header::ALLOW, allow);
        }
        resp
    };
    cors::apply(cors, origin.as_ref(), &mut resp);
    Ok(resp)
}

/// Dispatches a request to its handler by the route table.
async fn route<B>(app: &Arc<App>, conn: &Conn, req: Request<B>) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin,
    B::Error: std::fmt::Display,
{
    let pipeline = app.pipeline.load();
    let path = req.uri().path().to_owned();
    let target = Target::resolve(&pipeline, &path, app.config.server.console);
    if target.allows(req.method()) == Some(false) {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            match target {
                Target::Hook(_) => format!(
                    "{} is not allowed on {path}; webhooks take POST",
                    req.method()
                ),
                _ => format!("{} is not allowed on {path}", req.method()),
            },
        ));
    }
    // Boxed: hyper keeps the handler future's allocation for the
    // connection's life, so the big branches must not inflate it (~2.7 KB
    // per idle stream otherwise).
    match target {
        Target::Stream(r) => Box::pin(events::subscribe(app, conn, &req, r)).await,
        Target::ConnectionTopics(id) => {
            let id = id.to_owned();
            Box::pin(connections::change(app, conn, req, &id)).await
        }
        Target::Mercure => Box::pin(crate::http::mercure::route(app, conn, req)).await,
        Target::Hook(name) => {
            let name = name.to_owned();
            Box::pin(hooks::deliver(app, req, &name)).await
        }
        Target::Publish => Box::pin(publish::publish(app, conn, req)).await,
        Target::Api => Box::pin(api::route(app, conn, req)).await,
        Target::OpenApi => Ok(ops::openapi()),
        Target::Tickets => Box::pin(tickets::issue(app, conn, req)).await,
        Target::Poll => Box::pin(poll::poll(app, conn, &req)).await,
        Target::Metrics => Ok(ops::metrics(app)),
        Target::Healthz => Ok(ops::healthz()),
        Target::Readyz => Ok(ops::readyz(app)),
        Target::Stats => Ok(ops::stats(app)),
        Target::Console => Ok(ops::console()),
        Target::Favicon => Ok(ops::favicon()),
        Target::Static(dir) => {
            let head = req.method() == Method::HEAD;
            Box::pin(files::serve(dir, &path, head)).await
        }
        Target::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {path}"),
        )),
    }
}

/// The `Allow` value for `path` (its methods, then `extra` if not empty),
/// or `None` where nothing is routed.
fn allow_header(target: &Target<'_>, path: &str, extra: &str) -> Option<HeaderValue> {
    const ALL: [Method; 6] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];
    let mut methods: Vec<&str> = match target {
        Target::NotFound => return None,
        Target::Api => api::ENDPOINTS
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, ms)| ms.iter().map(Method::as_str).collect())?,
        Target::Mercure if path == mercure::PATH => vec!["GET", "POST"],
        Target::Mercure => vec!["GET"],
        t => ALL
            .iter()
            .filter(|m| t.allows(m) == Some(true))
            .map(Method::as_str)
            .collect(),
    };
    if !extra.is_empty() {
        methods.push(extra);
    }
    HeaderValue::from_str(&methods.join(", ")).ok()
}

/// The decoded query string as (name, value) pairs, in order.
pub fn query_pairs<B>(req: &Request<B>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// The `topic` parameters as selectors (at least one, at most `max`).
pub fn selectors(query: &[(String, String)], max: usize) -> Result<Vec<Selector>, ApiError> {
    let mut out: Vec<Selector> = Vec::new();
    // Raw parameters are counted (duplicates too), as the OpenAPI document's
    // `maxItems` says: the fuzzer found 101 repeated topics accepted.
    for (n, (_, value)) in query.iter().filter(|(k, _)| k == "topic").enumerate() {
        if n == max {
            return Err(ApiError::bad_request(
                "too_many_topics",
                format!("at most {max} topic parameters per request"),
            ));
        }
        let sel = Selector::parse(value)
            .map_err(|e| ApiError::bad_request("invalid_topic", format!("topic {value:?}: {e}")))?;
        if !out.contains(&sel) {
            out.push(sel);
        }
    }
    if out.is_empty() {
        return Err(ApiError::bad_request(
            "missing_topic",
            "give at least one topic parameter, e.g. ?topic=orders or ?topic=orders/*",
        ));
    }
    Ok(out)
}

/// Who a subscribe request (`GET` on a stream route or `/poll`) is, once
/// the route's auth plugin (if any) accepted it for the requested topics.
pub struct Admitted {
    /// The user events with `to` are matched against.
    pub user: Option<String>,
    /// The principal's claims (JSON), `{}` without auth.
    pub claims: String,
    /// The request the auth plugin saw, kept for re-checks on reload.
    pub auth_request: Option<Arc<crate::plugin::bindings::types::Request>>,
}

/// Runs the route's auth plugin and checks the requested topics against
/// what it grants (401/403 from the plugin, 403 for topics, 503 if the
/// plugin fails). Without auth, `?user=` applies as before.
pub async fn admit<B>(
    app: &Arc<App>,
    peer: SocketAddr,
    req: &Request<B>,
    query: &[(String, String)],
    route: &crate::pipeline::Route,
    selectors: &[Selector],
) -> Result<Admitted, ApiError> {
    use crate::pipeline::auth;
    app.limits
        .check_ip(app.limits.client_ip(peer, req.headers()))?;
    let ticket = query.iter().find(|(k, _)| k == "ticket");
    let admitted: Result<Admitted, ApiError> = match &route.auth {
        Some(_) if ticket.is_some() => {
            let id = ticket.map_or("", |(_, v)| v.as_str());
            let t = tickets::redeem(app, id, &route.path).await?;
            let who = auth::Authorized {
                user: t.user,
                claims: t.claims,
                allowed: t
                    .allowed
                    .iter()
                    .filter_map(|s| Selector::parse(s).ok())
                    .collect(),
            };
            auth::check_topics(&who, selectors, "subscribe to")?;
            Ok(Admitted {
                user: Some(who.user),
                claims: who.claims,
                auth_request: Some(Arc::new(t.request.into())),
            })
        }
        Some(plugin) => {
            let preq = auth::plugin_request(req, query, peer);
            let (who, preq) = auth::authenticate_async(plugin, preq).await?;
            auth::check_topics(&who, selectors, "subscribe to")?;
            Ok(Admitted {
                user: Some(who.user),
                claims: who.claims,
                auth_request: Some(Arc::new(preq)),
            })
        }
        None => Ok(Admitted {
            user: user_param(app, query)?,
            claims: "{}".into(),
            auth_request: None,
        }),
    };
    let admitted = admitted?;
    if let Some(u) = &admitted.user {
        check_ban(app, u)?;
    }
    Ok(admitted)
}

/// Refuses a banned user's new stream: 403 `banned` naming when the ban
/// ends (a stream route answers an EventSource 204 instead: see
/// [`refusal_for`]).
pub fn check_ban(app: &App, user: &str) -> Result<(), ApiError> {
    match app.bans.of(user) {
        None => Ok(()),
        Some(ban) => {
            let left =
                std::time::Duration::from_millis(ban.until.saturating_sub(crate::event::now_ms()));
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "banned",
                format!(
                    "user `{user}` is banned for {} more ({})",
                    humantime::format_duration(std::time::Duration::from_secs(
                        left.as_secs().max(1)
                    )),
                    ban.reason
                ),
            ))
        }
    }
}

/// What a stream route answers a refused subscribe: a banned client that
/// asks for `text/event-stream` (every EventSource does) gets `204 No
/// Content`, which per the SSE spec makes it stop reconnecting; every
/// other refusal is its error.
pub fn refusal_for<B>(req: &Request<B>, err: ApiError) -> Result<Response<Body>, ApiError> {
    let wants_stream = req
        .headers()
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    if err.error == "banned" && wants_stream {
        let mut resp = Response::new(Either::Left(Full::new(Bytes::new())));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        resp.headers_mut().insert(
            "x-spout-refused",
            http::header::HeaderValue::from_static("banned"),
        );
        return Ok(resp);
    }
    Err(err)
}

/// The subscriber's user from `?user=`, which is only honoured when
/// `server.insecure_user_param` is on (anyone could claim any user).
pub fn user_param(app: &App, query: &[(String, String)]) -> Result<Option<String>, ApiError> {
    let Some((_, user)) = query.iter().find(|(k, _)| k == "user") else {
        return Ok(None);
    };
    if !app.config.server.insecure_user_param {
        return Err(ApiError::bad_request(
            "user_param_disabled",
            "the user query parameter is disabled; set server.insecure_user_param = true (development only)",
        ));
    }
    if user.is_empty() || user.len() > crate::publish::MAX_FIELD_LEN {
        return Err(ApiError::bad_request(
            "invalid_user",
            "user must be 1..=256 bytes",
        ));
    }
    Ok(Some(user.clone()))
}
