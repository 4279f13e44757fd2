//! `POST /publish`: validate the whole body, append it, answer with the ids.

use super::{json_response, ApiError, Body, Conn};
use crate::app::App;
use crate::event::NewEvent;
use crate::log::LogError;
use crate::pipeline::auth;
use crate::plugin::wire::{data_bytes, BatchBuilder};
use crate::plugin::Plugin;
use crate::publish::{parse_body, BodyFormat, PublishError};
use crate::topic::Selector;
use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> ApiError {
        let code = match &e {
            PublishError::Json { .. } => "invalid_json",
            PublishError::MissingTopic { .. } => "missing_topic",
            PublishError::Topic { .. } => "invalid_topic",
            PublishError::Field { .. } => "invalid_field",
            PublishError::Empty => "empty_body",
            PublishError::TooLarge { .. } => {
                return ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "event_too_large",
                    e.to_string(),
                )
            }
        };
        ApiError::bad_request(code, e.to_string())
    }
}

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
    let events = run_transforms(pipeline.publish.transforms.clone(), events, max_event).await?;
    if events.is_empty() {
        return Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({ "ids": [] }),
        ));
    }
    let count = events.len();
    let ids = app.log.append(events).await.map_err(log_error)?;
    tracing::debug!(count, first = ids.first().copied(), "published");
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "ids": ids }),
    ))
}

/// The answer to a failed append: 409 when an idempotency key (or Mercure
/// update id) was used before with other content, 503 while shutting down or
/// while the shared log (Redis) is unreachable, else 500.
pub fn log_error(e: LogError) -> ApiError {
    match e {
        LogError::Conflict { .. } => {
            ApiError::new(StatusCode::CONFLICT, "id_conflict", e.to_string())
        }
        LogError::Closed => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            e.to_string(),
        ),
        LogError::Unavailable(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            e.to_string(),
        ),
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage_error",
            other.to_string(),
        ),
    }
}

/// Runs a transform chain over the events on the plugin pool (plugin
/// calls block), each plugin's output checked as strictly as a publisher's
/// own events.
pub async fn run_transforms(
    chain: Vec<Arc<Plugin>>,
    events: Vec<NewEvent>,
    max_event: usize,
) -> Result<Vec<NewEvent>, ApiError> {
    if chain.is_empty() || events.is_empty() {
        return Ok(events);
    }
    let pool = chain[0].pool().clone();
    pool.spawn_blocking(move || {
        chain.iter().try_fold(events, |events, plugin| {
            transform(plugin, events, max_event)
        })
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "transform_failed",
            e.to_string(),
        )
    })?
}

/// Runs one transform plugin over the events and checks what it returns as
/// strictly as a publisher's own events.
fn transform(
    plugin: &Plugin,
    events: Vec<NewEvent>,
    max_event: usize,
) -> Result<Vec<NewEvent>, ApiError> {
    let mut batch = BatchBuilder::default();
    for e in &events {
        batch.push(
            0,
            0,
            &e.topic,
            e.kind.as_deref(),
            data_bytes(&e.data),
            e.to.as_deref(),
        );
    }
    let out = plugin
        .apply(batch.batch())
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "transform_failed",
                e.to_string(),
            )
        })?
        .map_err(|d| {
            // A refusal: the plugin's status if it is a client error, else 422.
            let status = StatusCode::from_u16(d.status)
                .ok()
                .filter(StatusCode::is_client_error)
                .unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            ApiError::new(status, "rejected_by_transform", d.reason)
        })?;
    let same_shape = out.len() == events.len();
    out.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let mut e = r.event;
            crate::pipeline::check_event(plugin, &e, max_event).map_err(|detail| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "transform_invalid",
                    detail,
                )
            })?;
            if same_shape {
                // One event in, one out: keep the publisher's idempotency key.
                e.key = events[i].key.clone();
            }
            Ok(e)
        })
        .collect()
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
