//! `POST /tickets`: trade a route's credentials for a one-time ticket
//! (see [`crate::tickets`]).

use super::{json_response, query_pairs, ApiError, Body, Conn};
use crate::app::App;
use crate::event::now_ms;
use crate::pipeline::auth;
use crate::tickets::Ticket;
use http::{Request, Response, StatusCode};
use std::sync::Arc;

fn store_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ticket_store_unavailable",
        e.to_string(),
    )
}

/// Issues a ticket for the stream route `?path=` (default `/events`),
/// authenticated by that route's auth plugin.
pub async fn issue<B>(
    app: &Arc<App>,
    conn: &Conn,
    req: Request<B>,
) -> Result<Response<Body>, ApiError> {
    let query = query_pairs(&req);
    let path = query
        .iter()
        .find(|(k, _)| k == "path")
        .map_or(crate::pipeline::DEFAULT_STREAM, |(_, v)| v.as_str())
        .to_owned();
    let pipeline = app.pipeline.load_full();
    let route = pipeline.route(&path).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no stream route {path}"),
        )
    })?;
    let plugin = route.auth.as_ref().ok_or_else(|| {
        ApiError::bad_request(
            "route_without_auth",
            format!("stream route {path} has no auth plugin: it needs no ticket"),
        )
    })?;
    let preq = auth::plugin_request(&req, &query, conn.peer);
    let (who, preq) = auth::authenticate_async(plugin, preq).await?;
    let ttl = app.config.server.ticket_ttl;
    let ticket = Ticket {
        route: path.clone(),
        user: who.user,
        claims: who.claims,
        allowed: who.allowed.iter().map(|s| s.as_str().to_owned()).collect(),
        request: (&preq).into(),
        expires_ms: now_ms() + ttl.as_millis() as u64,
    };
    let app2 = app.clone();
    let id = tokio::task::spawn_blocking(move || app2.tickets.issue(&ticket, ttl))
        .await
        .map_err(store_error)?
        .map_err(store_error)?;
    metrics::counter!("spout_tickets_issued_total").increment(1);
    Ok(json_response(
        StatusCode::CREATED,
        &serde_json::json!({ "ticket": id, "path": path, "expires_in": ttl.as_secs() }),
    ))
}

/// Consumes `?ticket=` for `route`: the principal it stands for, or 401.
pub async fn redeem(app: &Arc<App>, id: &str, route: &str) -> Result<Ticket, ApiError> {
    let app2 = app.clone();
    let id = id.to_owned();
    let ticket = tokio::task::spawn_blocking(move || app2.tickets.take(&id, now_ms()))
        .await
        .map_err(store_error)?
        .map_err(store_error)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_ticket",
                "the ticket is unknown, expired or already used",
            )
        })?;
    if ticket.route != route {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the ticket opens {}, not {route}", ticket.route),
        ));
    }
    metrics::counter!("spout_tickets_redeemed_total").increment(1);
    Ok(ticket)
}
