//! `POST /publish`: validate the whole body, hand it to the ingest path
//! (transforms, append), answer with the ids.

use super::{json_response, ApiError, Body, Conn};
use crate::app::App;
use crate::pipeline::auth;
use crate::pipeline::ingest::Producer;
use crate::publish::{parse_body, BodyFormat};
use crate::topic::Selector;
use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;

/// Handles a publish request end to end.
/// With `[publish] auth`, the publisher must authenticate and may publish
/// only to topics its principal covers; `[publish] transforms` then rewrite
/// the events before they are stored.
pub async fn publish<B>(
    app: &Arc<App>,
    conn: &Conn,
    req: Request<B>,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let limits = &app.config.server.limits;
    let pipeline = app.pipeline.load_full();
    let publisher = match &pipeline.publish.auth {
        Some(plugin) => {
            let query = super::query_pairs(&req);
            let preq = auth::plugin_request(&req, &query, conn.peer);
            Some(auth::authenticate_async(plugin, preq).await?.0)
        }
        None => None,
    };
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = BodyFormat::from_content_type(content_type).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content-type {content_type:?} is not supported; use application/json or application/x-ndjson"),
        )
    })?;
    let body = read_limited(app, req).await?;
    let max_event = limits.max_event_bytes.as_u64() as usize;
    let events = parse_body(format, &body, max_event)?;
    if let Some(who) = &publisher {
        let topics: Vec<Selector> = events
            .iter()
            .map(|e| Selector::Exact(Arc::from(e.topic.as_str())))
            .collect();
        auth::check_topics(who, &topics, "publish to")?;
    }
    let ids = app
        .ingest
        .ingest(Producer::Publisher, events, &pipeline.publish.transforms)
        .await?;
    tracing::debug!(count = ids.len(), first = ids.first().copied(), "published");
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "ids": ids }),
    ))
}

/// Reads a publish-like body under the server's `max_body_bytes` and
/// `body_timeout`.
pub async fn read_limited<B>(app: &App, req: Request<B>) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let max = app.config.server.limits.max_body_bytes.as_u64() as usize;
    read_body(req, max, app.config.server.body_timeout).await
}

/// Reads the body up to `max` bytes; a body that stalls for `idle` is cut off.
pub async fn read_body<B>(req: Request<B>, max: usize, idle: Duration) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is over the limit of {max} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut body = req.into_body();
    let mut buf = BytesMut::new();
    loop {
        let frame = tokio::time::timeout(idle, body.frame())
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!(
                        "the request body stalled for {}",
                        humantime::format_duration(idle)
                    ),
                )
            })?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| ApiError::bad_request("body_read_failed", e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}
