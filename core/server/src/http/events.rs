//! `GET /events`: open an SSE stream, resuming from `Last-Event-ID` if given.

use super::{admit, query_pairs, selectors, ApiError, Body, Conn};
use crate::app::App;
use crate::filter::subscription;
use crate::hub::SubscribeSpec;
use crate::pipeline::Route;
use crate::plugin::bindings::types::Connection;
use crate::sse;
use crate::stream::{EventStream, StreamStart};
use bytes::BytesMut;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Request, Response};
use http_body_util::Either;
use spout_proto::resume;
use std::sync::Arc;

/// Parses the resume point: the `Last-Event-ID` header, else `?lastEventId=`.
/// An empty value means "no resume point", as browsers send it.
pub fn last_event_id<B>(
    req: &Request<B>,
    query: &[(String, String)],
) -> Result<Option<u64>, ApiError> {
    let parsed = match req.headers().get("last-event-id") {
        Some(v) => resume::parse_header(v.as_bytes()),
        None => match query.iter().find(|(k, _)| k == "lastEventId") {
            Some((_, v)) => resume::parse_value(v),
            None => Ok(None),
        },
    };
    parsed.map_err(|e| ApiError::bad_request(e.code(), e.to_string()))
}

/// Opens the stream. The subscriber is registered before the log head is
/// read, so replay and live events meet without a gap (see [`crate::stream`]).
pub async fn subscribe<B>(
    app: &Arc<App>,
    conn: &Conn,
    req: &Request<B>,
    route: &Route,
) -> Result<Response<Body>, ApiError> {
    let query = query_pairs(req);
    let selectors = selectors(&query, app.config.server.limits.max_topics)?;
    let resume = last_event_id(req, &query)?;
    let topics: Vec<String> = selectors.iter().map(|s| s.as_str().to_string()).collect();
    let who = match admit(app, conn.peer, req, &query, route, &selectors).await {
        Ok(who) => who,
        Err(e) => return super::refusal_for(req, e),
    };
    let filter = (!route.filters.is_empty()).then(|| {
        let sub = subscription(
            who.user.as_deref().unwrap_or(""),
            &who.claims,
            &selectors,
            &query,
        );
        app.groups.get(&route.path, sub, &route.filters)
    });
    let user = who.user;

    let sub = app.hub.subscribe(SubscribeSpec {
        selectors,
        user: user.clone(),
        kill: conn.kill.clone(),
        route: Arc::from(route.path.as_str()),
        filter,
        auth: who.auth_request,
        admission: None,
        presence: route.presence,
    })?;
    let head = app.log.head();

    let mut prelude = BytesMut::new();
    prelude.extend_from_slice(&sse::retry_frame(app.config.server.retry));
    prelude.extend_from_slice(&sse::control_frame(
        "connected",
        &serde_json::json!({ "connection": &*sub.subscriber.conn_id, "topics": topics, "last_id": head }),
    ));
    let (cursor, replay_until) = match resume {
        None => (head, None),
        Some(requested) => {
            let trimmed = app.log.trimmed();
            if requested < trimmed || requested > head {
                let earliest = app.log.earliest();
                prelude.extend_from_slice(&sse::control_frame(
                    "reset",
                    &serde_json::json!({ "requested": requested, "earliest": earliest }),
                ));
                (if requested > head { head } else { trimmed }, Some(head))
            } else {
                (requested, Some(head))
            }
        }
    };
    tracing::debug!(connection = %sub.subscriber.conn_id, peer = %conn.peer, ?resume, "stream opened");
    let conn_id = sub.subscriber.conn_id.to_string();
    let stream = EventStream::new(
        sub,
        app.replay.clone(),
        StreamStart {
            prelude: prelude.freeze(),
            cursor,
            replay_until,
            catchup_timeout: app.config.hub.catchup_timeout,
        },
    );
    let accepted: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == crate::shape::ACCEPT_PARAM)
        .map(|(_, v)| v.as_str())
        .chain(
            req.headers()
                .get_all(crate::shape::ACCEPT_HEADER)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        )
        .collect();
    let stream = stream.shaped(crate::shape::Shape::for_stages(
        route.batch.as_ref(),
        route.compress.as_ref(),
        &accepted,
    ));
    let stream = if route.auth.is_some() {
        let app = app.clone();
        let path = route.path.clone();
        let user = user.unwrap_or_default();
        stream.on_end(Box::new(move || {
            // The route's auth plugin as of now (it may have been reloaded).
            let pipeline = app.pipeline.load();
            if let Some(plugin) = pipeline.route(&path).and_then(|r| r.auth.as_ref()) {
                let conn = Connection {
                    id: conn_id,
                    user,
                    path,
                };
                // A failure is logged and counted by the plugin host. On
                // the plugin pool, like every plugin call.
                let plugin = plugin.clone();
                let pool = plugin.pool().clone();
                drop(pool.spawn_blocking(move || {
                    let _ = plugin.on_disconnect(&conn);
                }));
            }
        }))
    } else {
        stream
    };
    let mut resp = Response::new(Either::Right(stream));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}
