//! Operations endpoints: Prometheus metrics, liveness, readiness, stats.

use super::{json_response, ApiError, Body};
use crate::app::App;
use crate::pipeline::Driver;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};
use serde_json::json;

/// `GET /metrics`: Prometheus text exposition.
pub fn metrics(app: &App) -> Response<Body> {
    app.metrics.run_upkeep();
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from(app.metrics.render()))));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// `GET /`: a small live console (connections, event rate, recent events)
/// that reads the server's own `/stats` and `/events`.
pub fn console() -> Response<Body> {
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from_static(include_bytes!(
        "console.html"
    )))));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

/// `GET /openapi.json`: the OpenAPI 3.1 document of every route Spout
/// serves (kept beside the router; `http/openapi_check.rs` fails when they
/// disagree).
pub fn openapi() -> Response<Body> {
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from_static(include_bytes!(
        "openapi.json"
    )))));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// `GET /favicon.ico`: Spout's icon (a PNG, which browsers take at this
/// path), so pages served by Spout do not log a 404 each.
pub fn favicon() -> Response<Body> {
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from_static(include_bytes!(
        "favicon.png"
    )))));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("image/png"));
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    resp
}

/// `GET /healthz`: the process is up.
pub fn healthz() -> Response<Body> {
    json_response(StatusCode::OK, &json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 while the log accepts writes and shutdown has not begun.
pub fn readyz(app: &App) -> Response<Body> {
    if app.is_ready() {
        json_response(StatusCode::OK, &json!({ "status": "ready" }))
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the server is shutting down or its log is closed",
        )
        .into_response()
    }
}

/// `GET /stats`: connections, users, topics and the log's extent as JSON.
pub fn stats(app: &App) -> Response<Body> {
    let hub = app.hub.stats();
    let log = &app.log;
    let first_id = log.first_id();
    let pipeline = app.pipeline.load();
    let plugins: Vec<_> = pipeline
        .plugins
        .iter()
        .map(|(name, p)| {
            json!({
                "name": name,
                "kind": p.kind().as_str(),
                "calls": p.calls(),
                "errors": p.errors(),
                "refused": p.refused(),
                "retired": p.retired(),
                "running": p.load().0,
                "waiting": p.load().1,
                "circuit": if p.circuit_open() { "open" } else { "closed" },
                "circuit_trips": p.trips(),
                "describe": serde_json::from_str::<serde_json::Value>(p.describe()).unwrap_or(serde_json::Value::Null),
            })
        })
        .collect();
    let relays = app.sources.statuses();
    let reload = app.reload.lock().unwrap_or_else(|e| e.into_inner()).clone();
    json_response(
        StatusCode::OK,
        &json!({
            "connections": hub.connections,
            "peak_connections": hub.peak_connections,
            "users": hub.users,
            "topics": hub.topics,
            "mercure_subscribers": hub.admitted,
            "cluster": app.cluster.as_ref().map(|c| c.to_json()),
            "limits": app.limits.to_json(),
            "log": {
                "first_id": first_id,
                "last_id": log.head(),
                "events": log.count(),
                "bytes": log.bytes(),
            },
            "pipeline": {
                "generation": pipeline.generation,
                "plugins": plugins,
                "streams": pipeline.streams.iter().map(|r| json!({
                    "path": r.path,
                    "auth": r.auth.as_ref().map(|p| p.name()),
                    "filters": r.filters.iter().map(|s| s.plugin.name()).collect::<Vec<_>>(),
                    "batch": r.batch.as_ref().map(|b| json!({
                        "plugin": b.plugin.name(),
                        "window": humantime::format_duration(b.window).to_string(),
                        "max": b.max,
                    })),
                    "compress": r.compress.as_ref().map(|c| c.plugin().name()),
                })).collect::<Vec<_>>(),
                "sources": pipeline.sources.iter().map(|s| {
                    let mut v = json!({ "plugin": s.plugin.name() });
                    match &s.driver {
                        Driver::Every(every) => v["every"] = json!(humantime::format_duration(*every).to_string()),
                        Driver::Tail { path, .. } => v["tail"] = json!(path.display().to_string()),
                        Driver::Webhook(name) => v["webhook"] = json!(format!("/hooks/{name}")),
                    }
                    if !s.transforms.is_empty() {
                        v["transforms"] = json!(s.transforms.iter().map(|t| t.name()).collect::<Vec<_>>());
                    }
                    v
                }).chain(pipeline.brokers.iter().map(|b| {
                    let mut v = json!({
                        "name": b.name,
                        "kind": b.kind.as_str(),
                        "dead_letter": b.dead_letter,
                    });
                    // State, last error, messages, lag: the relay's figures.
                    if let Some(status) = relays.iter().find(|r| r["name"] == b.name.as_str()) {
                        if let (Some(v), Some(s)) = (v.as_object_mut(), status.as_object()) {
                            v.extend(s.iter().map(|(k, x)| (k.clone(), x.clone())));
                        }
                    }
                    if let Some(p) = &b.plugin {
                        v["plugin"] = json!(p.name());
                    }
                    if !b.transforms.is_empty() {
                        v["transforms"] = json!(b.transforms.iter().map(|t| t.name()).collect::<Vec<_>>());
                    }
                    v
                })).collect::<Vec<_>>(),
                "filter_groups": app.groups.count(),
                "last_reload": reload,
            },
            "uptime_seconds": app.started.elapsed().as_secs(),
        }),
    )
}
