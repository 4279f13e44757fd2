//! `GET /poll`: pages of events as JSON, for clients that cannot hold an SSE stream.

use super::{admit, json_response, query_pairs, selectors, ApiError, Body, Conn};
use crate::app::App;
use crate::filter::{subscription, FilterGroup};
use crate::pipeline::DEFAULT_STREAM;
use crate::plugin::wire::BatchBuilder;
use crate::visibility::{Audience, Facts};
use http::{Request, Response, StatusCode};
use serde::Serialize;
use serde_json::value::RawValue;
use std::sync::Arc;

/// Default and largest page size.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Log records examined per request, so one poll cannot scan the whole log.
const MAX_SCAN: usize = 10_000;
/// Longest `wait` (seconds) a long poll may ask for.
const MAX_WAIT: u64 = 30;

fn number<T: std::str::FromStr>(
    query: &[(String, String)],
    name: &str,
    code: &'static str,
) -> Result<Option<T>, ApiError> {
    match query.iter().find(|(k, _)| k == name) {
        None => Ok(None),
        Some((_, v)) => v.parse().map(Some).map_err(|_| {
            ApiError::bad_request(code, format!("{name}={v:?} is not a non-negative integer"))
        }),
    }
}

/// One event in a poll page.
#[derive(Serialize)]
struct PolledEvent {
    id: u64,
    topic: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    /// The JSON value exactly as published (text payloads as a JSON string).
    data: Box<RawValue>,
    /// Milliseconds since the epoch when the log accepted it.
    time: u64,
}

/// Set when `after` is older than retention: events were removed unseen.
#[derive(Serialize)]
struct Reset {
    requested: u64,
    earliest: u64,
}

#[derive(Serialize)]
struct Page {
    events: Vec<PolledEvent>,
    next: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reset: Option<Reset>,
}

/// Returns `{"events": [...], "next": M}`; ask again with `after=M`.
/// With `wait=S` (≤ 30) and nothing new, it answers when an event arrives
/// or after S seconds (a long poll).
/// `next` moves past scanned records even when none matched, so a client
/// never re-reads the same stretch of log.
/// Auth and filters are those of the `/events` route.
pub async fn poll<B>(
    app: &Arc<App>,
    conn: &Conn,
    req: &Request<B>,
) -> Result<Response<Body>, ApiError> {
    let query = query_pairs(req);
    let selectors = selectors(&query, app.config.server.limits.max_topics)?;
    let pipeline = app.pipeline.load();
    let route = pipeline
        .route(DEFAULT_STREAM)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no /events route"))?;
    let who = admit(app, conn.peer, req, &query, route, &selectors).await?;
    let filter = (!route.filters.is_empty()).then(|| {
        let sub = subscription(
            who.user.as_deref().unwrap_or(""),
            &who.claims,
            &selectors,
            &query,
        );
        Arc::new(FilterGroup::standalone(
            &route.path,
            sub,
            route.filters.clone(),
        ))
    });
    let user = who.user;
    let after: u64 = number(&query, "after", "invalid_after")?.unwrap_or(0);
    let limit: usize = number(&query, "limit", "invalid_limit")?.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be 1..={MAX_LIMIT}"),
        ));
    }
    let wait = number::<u64>(&query, "wait", "invalid_wait")?.unwrap_or(0);
    if wait > MAX_WAIT {
        return Err(ApiError::bad_request(
            "invalid_wait",
            format!("wait must be 0..={MAX_WAIT} seconds"),
        ));
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait);
    let storage = |e: &dyn std::fmt::Display| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage_error",
            e.to_string(),
        )
    };
    let (events, next) = loop {
        // Armed before the log is read: an append in between still wakes us.
        let appended = app.hub.appended();
        tokio::pin!(appended);
        appended.as_mut().enable();
        let log = app.log.clone();
        let head = log.head();
        let (selectors, user, filter) = (selectors.clone(), user.clone(), filter.clone());
        let (events, next) = tokio::task::spawn_blocking(move || {
            let mut events: Vec<PolledEvent> = Vec::new();
            let mut batch = BatchBuilder::default();
            let audience = Audience {
                selectors: &selectors,
                user: user.as_deref(),
                admission: None,
            };
            let next = log.scan(after, head, MAX_SCAN, |id, view| {
                if audience.admits(&Facts::of_view(&view)) {
                    if filter.is_some() {
                        batch.push(id, view.time_ms, view.topic, view.kind, view.data, view.to);
                    }
                    let json = if view.text {
                        serde_json::to_string(&String::from_utf8_lossy(view.data))
                            .unwrap_or_else(|_| "null".into())
                    } else {
                        String::from_utf8_lossy(view.data).into_owned()
                    };
                    events.push(PolledEvent {
                        id,
                        topic: view.topic.to_string(),
                        kind: view.kind.map(str::to_string),
                        data: RawValue::from_string(json)
                            .unwrap_or_else(|_| RawValue::NULL.to_owned()),
                        time: view.time_ms,
                    });
                }
                Ok(events.len() < limit)
            });
            if let Some(group) = &filter {
                let keep = group.evaluate(&batch);
                let mut keep = keep.into_iter();
                events.retain(|_| keep.next().unwrap_or(false));
            }
            next.map(|next| (events, next))
        })
        .await
        .map_err(|e| storage(&e))?
        .map_err(|e| storage(&e))?;
        // Long poll: nothing yet, the whole log was seen, time is left.
        if !events.is_empty() || next < head || after > head || app.is_closing() {
            break (events, next);
        }
        if tokio::time::timeout_at(deadline, appended).await.is_err() {
            break (events, next);
        }
    };
    let trimmed = app.log.trimmed();
    let head = app.log.head();
    // Older than retention, or newer than the log (a restored or wiped
    // log): say so, as `/events` does, and continue from what exists.
    let (reset, next) = if after < trimmed || after > head {
        let reset = Reset {
            requested: after,
            earliest: app.log.earliest(),
        };
        (Some(reset), next.min(head))
    } else {
        (None, next)
    };
    Ok(json_response(
        StatusCode::OK,
        &Page {
            events,
            next,
            reset,
        },
    ))
}
