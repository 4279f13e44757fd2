//! `POST /hooks/NAME`: a webhook source. The body and headers go to the
//! source plugin's `on-input`; its denial is the answer (e.g. 401 for a bad
//! signature) and nothing is published, else its events are stored and
//! their ids returned like `POST /publish`.

use super::publish::read_limited;
use super::{json_response, ApiError, Body};
use crate::app::App;
use crate::pipeline::Driver;
use http::{Request, Response, StatusCode};
use std::sync::Arc;

/// The webhook name of a `/hooks/NAME` path.
pub fn hook_name(path: &str) -> Option<&str> {
    path.strip_prefix("/hooks/")
}

/// Handles one delivery to webhook `name`.
pub async fn deliver<B>(
    app: &Arc<App>,
    req: Request<B>,
    name: &str,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin,
    B::Error: std::fmt::Display,
{
    let pipeline = app.pipeline.load_full();
    let Some(src) = pipeline
        .sources
        .iter()
        .find(|s| matches!(&s.driver, Driver::Webhook(n) if n == name))
    else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no webhook named {name:?}"),
        ));
    };
    let headers = crate::pipeline::auth::header_pairs(req.headers());
    let body = read_limited(app, req).await?;
    let plugin = src.plugin.clone();
    let failed = |e: &dyn std::fmt::Display| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "source_failed",
            e.to_string(),
        )
    };
    let result = plugin
        .run(move |p| p.on_input(&body, &headers))
        .await
        .map_err(|e| failed(&e))?;
    let returned = result.map_err(|d| {
        // A refusal: the plugin's status if it is a client error, else 400.
        let status = StatusCode::from_u16(d.status)
            .ok()
            .filter(StatusCode::is_client_error)
            .unwrap_or(StatusCode::BAD_REQUEST);
        metrics::counter!("spout_webhook_rejections_total", "hook" => name.to_owned()).increment(1);
        ApiError::new(status, "rejected_by_source", d.reason)
    })?;
    let ids = crate::pipeline::source::ingest(&app.ingest, src, returned).await?;
    metrics::counter!("spout_webhook_deliveries_total", "hook" => name.to_owned()).increment(1);
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "ids": ids }),
    ))
}
