//! The operator API under `/api`: topics, presence, disconnect and bans,
//! history erasure, an event browser over the log, and node info. Off
//! unless `[api] auth` names an auth plugin; every call is authorized by
//! it and logged with the principal. The actions themselves are in
//! [`crate::operate`] (cluster-wide in cluster mode).

use super::{json_response, query_pairs, ApiError, Body, Conn};
use crate::app::App;
use crate::bans::Ban;
use crate::hub::Disconnect;
use crate::log::View;
use crate::operate::{self, Ask, OperateError};
use crate::pipeline::auth;
use crate::topic::Selector;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Items per page unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 100;
/// Most items per page.
const MAX_LIMIT: usize = 1000;
/// Log records one event-browser request may look at.
const MAX_BROWSE_SCAN: u64 = 200_000;
/// Longest ban.
const MAX_BAN: Duration = Duration::from_secs(366 * 24 * 3600);

/// The paths under `/api` and the methods each answers (also what the
/// OpenAPI document lists).
pub const ENDPOINTS: &[(&str, &[Method])] = &[
    ("/api/topics", &[Method::GET]),
    ("/api/presence", &[Method::GET]),
    ("/api/disconnect", &[Method::POST]),
    ("/api/bans", &[Method::GET, Method::DELETE]),
    ("/api/history", &[Method::DELETE]),
    ("/api/events", &[Method::GET]),
    ("/api/info", &[Method::GET]),
];

/// Selects the stored events an erasure removes.
type Matcher = Box<dyn Fn(&View<'_>) -> bool + Send + Sync>;

/// Whether `path` is the API's.
pub fn is_api_path(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

impl From<OperateError> for ApiError {
    fn from(e: OperateError) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster_unavailable",
            e.to_string(),
        )
        .retry_after(1)
    }
}

/// Handles one API request end to end.
pub async fn route<B>(
    app: &Arc<App>,
    conn: &Conn,
    req: Request<B>,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let pipeline = app.pipeline.load_full();
    let Some(plugin) = &pipeline.api else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "api_disabled",
            "the operator API is off; name an auth plugin in [api] auth to turn it on",
        ));
    };
    let path = req.uri().path().to_owned();
    let Some((_, methods)) = ENDPOINTS.iter().find(|(p, _)| *p == path) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no API endpoint {path}"),
        ));
    };
    if !methods.contains(req.method()) {
        let allowed: Vec<&str> = methods.iter().map(Method::as_str).collect();
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{path} answers {}", allowed.join(", ")),
        ));
    }
    let query = query_pairs(&req);
    let preq = auth::plugin_request(&req, &query, conn.peer);
    let (who, _) = auth::authenticate_async(plugin, preq).await?;
    tracing::info!(principal = %who.user, method = %req.method(), path = %path, "operator API call");
    let q = Query(&query);
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/api/topics") => topics(app, &q).await,
        (Method::GET, "/api/presence") => presence(app, &q).await,
        (Method::POST, "/api/disconnect") => {
            let body = super::publish::read_limited(app, req).await?;
            disconnect(app, &body, &who.user).await
        }
        (Method::GET, "/api/bans") => Ok(json_response(
            StatusCode::OK,
            &json!({ "bans": app.bans.list() }),
        )),
        (Method::DELETE, "/api/bans") => unban(app, &q).await,
        (Method::DELETE, "/api/history") => erase(app, &q, &who.user).await,
        (Method::GET, "/api/events") => browse(app, &q).await,
        _ => info(app).await,
    }
}

/// Query parameters with typed, validated getters.
struct Query<'a>(&'a [(String, String)]);

impl Query<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn limit(&self) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_limit",
                        format!("limit must be 1..={MAX_LIMIT}, got {v:?}"),
                    )
                }),
        }
    }

    fn selector(&self, name: &str) -> Result<Option<Selector>, ApiError> {
        self.get(name)
            .map(|v| {
                Selector::parse(v).map_err(|e| {
                    ApiError::bad_request("invalid_topic", format!("{name} {v:?}: {e}"))
                })
            })
            .transpose()
    }
}

/// `{"items": [...], "next": cursor|null, "complete": bool}` for one page
/// of `items` after `cursor` (items sorted by `key`).
fn page<T: serde::Serialize>(
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    cursor: Option<&str>,
    limit: usize,
    complete: bool,
) -> Value {
    let total = items.len();
    let rest: Vec<T> = match cursor {
        Some(c) => items
            .into_iter()
            .skip_while(|i| key(i).as_str() <= c)
            .collect(),
        None => items,
    };
    let more = rest.len() > limit;
    let page: Vec<T> = rest.into_iter().take(limit).collect();
    let next = if more { page.last().map(&key) } else { None };
    json!({ "items": page, "total": total, "next": next, "complete": complete })
}

async fn topics(app: &Arc<App>, q: &Query<'_>) -> Result<Response<Body>, ApiError> {
    let limit = q.limit()?;
    let selector = q.selector("selector")?;
    let (answers, complete) = operate::everywhere(
        app,
        Ask::Topics {
            selector: selector.map(|s| s.as_str().to_owned()),
        },
    )
    .await?;
    let topics = operate::merge_topics(answers);
    Ok(json_response(
        StatusCode::OK,
        &page(
            topics,
            |t| t.topic.clone(),
            q.get("cursor"),
            limit,
            complete,
        ),
    ))
}

async fn presence(app: &Arc<App>, q: &Query<'_>) -> Result<Response<Body>, ApiError> {
    let limit = q.limit()?;
    let topic = match q.selector("topic")? {
        Some(Selector::Exact(t)) => t.to_string(),
        Some(Selector::Pattern(_)) => {
            return Err(ApiError::bad_request(
                "invalid_topic",
                "presence is asked for one topic, not a pattern",
            ))
        }
        None => {
            return Err(ApiError::bad_request(
                "missing_topic",
                "give the topic: /api/presence?topic=T",
            ))
        }
    };
    let (answers, complete) = operate::everywhere(app, Ask::Presence { topic }).await?;
    let list = operate::merge_presence(answers);
    Ok(json_response(
        StatusCode::OK,
        &page(
            list,
            |c| format!("{:020}:{}", c.since, c.connection),
            q.get("cursor"),
            limit,
            complete,
        ),
    ))
}

/// `POST /api/disconnect`'s body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    user: Option<String>,
    connection: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    ban: Option<String>,
}

async fn disconnect(
    app: &Arc<App>,
    body: &[u8],
    principal: &str,
) -> Result<Response<Body>, ApiError> {
    let b: DisconnectBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("disconnect body: {e}")))?;
    let which = match (b.user, b.connection) {
        (Some(u), None) if !u.is_empty() => Disconnect::User(u),
        (None, Some(c)) if !c.is_empty() => Disconnect::Connection(c),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "give exactly one of user or connection (non-empty)",
            ))
        }
    };
    let reason = b
        .reason
        .unwrap_or_else(|| "disconnected by an operator".into());
    if reason.len() > 1024 {
        return Err(ApiError::bad_request(
            "invalid_body",
            "reason is over 1024 bytes",
        ));
    }
    let ban = match (&b.ban, &which) {
        (None, _) => None,
        (Some(_), Disconnect::Connection(_)) => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "ban applies to a user: give user, not connection",
            ))
        }
        (Some(text), Disconnect::User(user)) => {
            let ttl = humantime::parse_duration(text)
                .ok()
                .filter(|d| !d.is_zero() && *d <= MAX_BAN)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_ban",
                        format!(
                            "ban must be a duration like \"10m\" (at most a year), got {text:?}"
                        ),
                    )
                })?;
            let ban = Ban::new(user, ttl, &reason);
            let stored = ban.clone();
            let a = app.clone();
            tokio::task::spawn_blocking(move || a.bans.add(stored))
                .await
                .map_err(|e| {
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                })??;
            Some(ban)
        }
    };
    tracing::info!(principal, ?which, ban = ?ban.as_ref().map(|b| b.until), "disconnect requested");
    let (answers, complete) = operate::everywhere(
        app,
        Ask::Disconnect {
            which,
            reason,
            ban: ban.clone(),
        },
    )
    .await?;
    let n: u64 = answers
        .iter()
        .filter_map(|a| a.get("disconnected").and_then(Value::as_u64))
        .sum();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "disconnected": n, "ban": ban, "complete": complete }),
    ))
}

async fn unban(app: &Arc<App>, q: &Query<'_>) -> Result<Response<Body>, ApiError> {
    let user = q
        .get("user")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing_user", "give the user: /api/bans?user=U"))?
        .to_owned();
    let a = app.clone();
    let u = user.clone();
    let lifted = tokio::task::spawn_blocking(move || a.bans.lift(&u))
        .await
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
    if app.cluster.is_some() {
        operate::everywhere(app, Ask::Unban { user }).await?;
    }
    Ok(json_response(StatusCode::OK, &json!({ "lifted": lifted })))
}

async fn erase(app: &Arc<App>, q: &Query<'_>, principal: &str) -> Result<Response<Body>, ApiError> {
    let topic = q.selector("topic")?;
    let user = q.get("user").map(str::to_owned);
    let (what, matches): (String, Matcher) = match (topic, user) {
        (Some(sel), None) => (
            format!("topic {}", sel.as_str()),
            Box::new(move |v: &View<'_>| sel.matches(v.topic) || v.also().any(|t| sel.matches(t))),
        ),
        (None, Some(u)) if !u.is_empty() => (
            format!("user {u}"),
            Box::new(move |v: &View<'_>| v.to == Some(u.as_str())),
        ),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_parameters",
                "give exactly one of topic (a selector) or user: /api/history?topic=T or ?user=U",
            ))
        }
    };
    let log = app.log.clone();
    let erased = tokio::task::spawn_blocking(move || log.erase(&*matches))
        .await
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
    // Reads kept for reconnecting streams may hold what was erased.
    app.replay.forget();
    tracing::info!(principal, what = %what, erased, "history erased");
    Ok(json_response(StatusCode::OK, &json!({ "erased": erased })))
}

/// `GET /api/events?selector=&before=&limit=`: stored events, newest
/// first, paging backwards with `before` (the `next` of the last page).
async fn browse(app: &Arc<App>, q: &Query<'_>) -> Result<Response<Body>, ApiError> {
    let limit = q.limit()?;
    let selector = q.selector("selector")?;
    let before = match q.get("before") {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::bad_request(
                "invalid_before",
                format!("before must be an event id, got {v:?}"),
            )
        })?),
    };
    let log = app.log.clone();
    let page = tokio::task::spawn_blocking(move || -> Result<Value, crate::log::LogError> {
        let head = log.head();
        let floor = log.earliest().saturating_sub(1);
        let mut upto = before.map_or(head, |b| b.saturating_sub(1)).min(head);
        let mut found: Vec<Value> = Vec::new();
        let mut window = (limit as u64 * 4).max(256);
        let mut scanned = 0u64;
        let mut left_over = false;
        while found.len() < limit && upto > floor && scanned < MAX_BROWSE_SCAN {
            let lo = upto.saturating_sub(window).max(floor);
            let mut chunk: Vec<Value> = Vec::new();
            let mut after = lo;
            while after < upto {
                after = log.scan(after, upto, 4096, |id, v| {
                    let wanted = selector
                        .as_ref()
                        .is_none_or(|s| s.matches(v.topic) || v.also().any(|t| s.matches(t)));
                    if wanted {
                        chunk.push(event_json(id, &v));
                    }
                    Ok(true)
                })?;
            }
            scanned += upto - lo;
            chunk.reverse();
            let room = limit - found.len();
            left_over = chunk.len() > room;
            found.extend(chunk.into_iter().take(room));
            upto = lo;
            window = (window * 2).min(65_536);
        }
        // More may lie below: matches this page had no room for, or ids
        // not looked at yet.
        let next = if left_over || upto > floor {
            found
                .last()
                .and_then(|e| e.get("id").and_then(Value::as_u64))
                .or(Some(upto + 1))
        } else {
            None
        };
        Ok(json!({ "items": found, "next": next, "head": head }))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    Ok(json_response(StatusCode::OK, &page))
}

/// One stored event as the browser shows it.
fn event_json(id: u64, v: &View<'_>) -> Value {
    let data = if v.text {
        Value::String(String::from_utf8_lossy(v.data).into_owned())
    } else {
        serde_json::from_slice(v.data)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(v.data).into_owned()))
    };
    let also: Vec<&str> = v.also().collect();
    json!({
        "id": id,
        "topic": v.topic,
        "type": v.kind.unwrap_or("message"),
        "time": v.time_ms,
        "to": v.to,
        "also": also,
        "data": data,
    })
}

async fn info(app: &Arc<App>) -> Result<Response<Body>, ApiError> {
    let (nodes, complete) = operate::everywhere(app, Ask::Info).await?;
    let log = &app.log;
    let reload = app.reload.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "version": env!("CARGO_PKG_VERSION"),
            "node": operate::node_id(app),
            "mode": if app.cluster.is_some() { "cluster" } else { "single" },
            "uptime_ms": app.started.elapsed().as_millis() as u64,
            "connections": nodes.iter().filter_map(|n| n.get("connections").and_then(Value::as_u64)).sum::<u64>(),
            "log": {
                "first_id": log.first_id(),
                "last_id": log.head(),
                "events": log.count(),
                "bytes": log.bytes(),
                "trimmed": log.trimmed(),
            },
            "pipeline": {
                "generation": app.pipeline.load().generation,
                "reload": reload,
            },
            "nodes": nodes,
            "complete": complete,
        }),
    ))
}
