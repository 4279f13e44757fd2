//! `GET /.well-known/mercure?topic=…`: a Mercure subscription as an SSE stream.

use super::subscriptions::{announce, subscription_events};
use super::{verify, wire_id, Access, Claims, PATH};
use crate::app::App;
use crate::http::{query_pairs, ApiError, Body, Conn};
use crate::hub::SubscribeSpec;
use crate::stream::{EventStream, StreamStart};
use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::Either;
use spout_proto::resume;
use std::sync::Arc;

/// Where a resuming client starts: after this log sequence, or live.
fn resume_point(app: &App, value: Option<&str>) -> Result<Option<u64>, ApiError> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if v == "earliest" {
        return Ok(Some(0));
    }
    // A publisher's own id first: it may look like a number too.
    if let Some(seq) = app
        .log
        .find_wire_id(v)
        .map_err(crate::http::ApiError::from)?
    {
        return Ok(Some(seq));
    }
    match v.parse::<u64>() {
        Ok(seq) if seq <= app.log.head() => Ok(Some(seq)),
        // Unknown (removed by retention, or from another hub): live only,
        // as Mercure does for an id it cannot find.
        _ => {
            tracing::debug!(
                last_event_id = v,
                "unknown Mercure last event id; streaming live"
            );
            Ok(None)
        }
    }
}

/// Opens the stream: verifies the token (or admits an anonymous subscriber
/// when allowed), registers the subscriber, replays from `Last-Event-ID` /
/// `lastEventID`, and announces the subscription when that is on.
pub async fn subscribe<B>(
    app: &Arc<App>,
    conn: &Conn,
    req: &Request<B>,
) -> Result<Response<Body>, ApiError> {
    let Some(cfg) = &app.config.mercure else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no Mercure hub",
        ));
    };
    app.limits
        .check_ip(app.limits.client_ip(conn.peer, req.headers()))?;
    let query = query_pairs(req);
    let max = app.config.server.limits.max_topics;
    let topics: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "topic")
        .map(|(_, v)| v.clone())
        .collect();
    if topics.is_empty() {
        return Err(ApiError::bad_request(
            "missing_topic",
            "give at least one topic parameter (a topic, a URI template or *)",
        ));
    }
    if topics.len() > max {
        return Err(ApiError::bad_request(
            "too_many_topics",
            format!("at most {max} topic parameters per request"),
        ));
    }
    if let Some(t) = topics.iter().find(|t| t.len() > 2048) {
        return Err(ApiError::bad_request(
            "invalid_topic",
            format!("topic selector of {} bytes is over 2048", t.len()),
        ));
    }
    let header = req
        .headers()
        .get("last-event-id")
        .map(|v| {
            resume::header_text(v.as_bytes())
                .map_err(|e| ApiError::bad_request(e.code(), e.to_string()))
        })
        .transpose()?;
    let param = query
        .iter()
        .find(|(k, _)| k == "lastEventID")
        .map(|(_, v)| v.as_str());
    let resume = resume_point(app, header.or(param))?;

    let pipeline = app.pipeline.load_full();
    let who = verify(pipeline.mercure.auth.as_ref(), req, &query, conn).await?;
    if who.is_none() && !cfg.anonymous {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this hub admits no anonymous subscribers; send a token",
        ));
    }
    let (user, allowed, payload) = match who {
        Some((who, _)) => {
            let claims = Claims::from_json(&who.claims);
            let user = (!who.user.is_empty()).then_some(who.user);
            (
                user,
                Some(claims.subscribe.unwrap_or_default()),
                claims.payload,
            )
        }
        None => (None, None, None),
    };
    if let Some(u) = &user {
        crate::http::check_ban(app, u)?;
    }
    let subscriber = format!("urn:uuid:{}", uuid::Uuid::new_v4());
    let access = Arc::new(Access::new(subscriber, topics, allowed, payload));

    let sub = app.hub.subscribe(SubscribeSpec {
        selectors: Vec::new(),
        user,
        kill: conn.kill.clone(),
        route: Arc::from(PATH),
        filter: None,
        auth: None,
        admission: Some(access.clone()),
        presence: false,
    })?;
    let head = app.log.head();
    let last_id = if head == 0 {
        "earliest".to_owned()
    } else {
        wire_id(app, head)
    };
    let (cursor, replay_until) = match resume {
        None => (head, None),
        Some(after) => (after.max(app.log.trimmed()).min(head), Some(head)),
    };
    tracing::debug!(subscriber = %access.subscriber, peer = %conn.peer, ?resume, "mercure subscription opened");
    let stream = EventStream::new(
        sub,
        app.replay.clone(),
        StreamStart {
            // A comment: flushes the headers through proxies at once.
            prelude: Bytes::from_static(b":\n\n"),
            cursor,
            replay_until,
            catchup_timeout: app.config.hub.catchup_timeout,
        },
    );
    let stream = if cfg.subscriptions {
        announce(app, subscription_events(&access, true));
        let app = app.clone();
        stream.on_end(Box::new(move || {
            announce(&app, subscription_events(&access, false));
        }))
    } else {
        stream
    };
    let mut resp = Response::new(Either::Right(stream));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache, no-store, must-revalidate, max-age=0"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Ok(v) = HeaderValue::from_str(&last_id) {
        headers.insert("last-event-id", v);
    }
    Ok(resp)
}
