//! `POST /connections/{id}/topics`: change what an open stream receives,
//! `{"add": [...], "remove": [...]}`, authorized as the stream's own user.
//! Added topics apply to events committed from then on (no replay).

use super::publish::read_body;
use super::{json_response, query_pairs, ApiError, Body, Conn};
use crate::app::App;
use crate::pipeline::auth;
use crate::topic::Selector;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use std::sync::Arc;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// The connection id in `/connections/{id}/topics`, if the path is one.
pub fn connection_id(path: &str) -> Option<&str> {
    path.strip_prefix("/connections/")?
        .strip_suffix("/topics")
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

fn parse(list: &[String]) -> Result<Vec<Selector>, ApiError> {
    list.iter()
        .map(|t| {
            Selector::parse(t)
                .map_err(|e| ApiError::bad_request("invalid_topic", format!("topic {t:?}: {e}")))
        })
        .collect()
}

/// Applies a topic change to connection `id`.
pub async fn change<B>(
    app: &Arc<App>,
    conn: &Conn,
    req: Request<B>,
    id: &str,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_connection",
            format!("no open connection {id}"),
        )
    };
    let sub = app.hub.find(id).ok_or_else(not_found)?;
    if sub.admission.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "mercure_subscription",
            "a Mercure subscription changes topics by subscribing again",
        ));
    }
    if sub.filter.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "filtered_route",
            format!("route {} has filters, which are evaluated per subscription: reconnect with the new topics", sub.route),
        ));
    }
    let query = query_pairs(&req);
    let pipeline = app.pipeline.load_full();
    let route_auth = pipeline.route(&sub.route).and_then(|r| r.auth.clone());
    // Who is asking: the route's auth plugin, else `?user=` where allowed.
    let who = match &route_auth {
        Some(plugin) => {
            let preq = auth::plugin_request(&req, &query, conn.peer);
            Some(auth::authenticate_async(plugin, preq).await?.0)
        }
        None => None,
    };
    let asker = match &who {
        Some(w) => Some(w.user.clone()),
        None => super::user_param(app, &query)?,
    };
    if sub.user.as_deref() != asker.as_deref() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the connection's own user may change its topics",
        ));
    }
    let limits = &app.config.server.limits;
    let body = read_body(req, 64 * 1024, app.config.server.body_timeout).await?;
    let change: Change = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?;
    let (add, remove) = (parse(&change.add)?, parse(&change.remove)?);
    if let Some(w) = &who {
        auth::check_topics(w, &add, "subscribe to")?;
    }
    let mut next = sub.selectors();
    next.retain(|s| !remove.contains(s));
    for a in &add {
        if !next.contains(a) {
            next.push(a.clone());
        }
    }
    if next.is_empty() || next.len() > limits.max_topics {
        return Err(ApiError::bad_request(
            "invalid_topics",
            format!(
                "a connection keeps 1..={} topics; this change leaves {}",
                limits.max_topics,
                next.len()
            ),
        ));
    }
    let now = app.hub.change_topics(&sub, &add, &remove);
    let topics: Vec<&str> = now.iter().map(Selector::as_str).collect();
    tracing::debug!(connection = id, ?topics, "topics changed");
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "connection": id, "topics": topics }),
    ))
}
