//! Admission limits: stream opens per client IP (429 + Retry-After), the
//! client IP behind trusted proxies only, and streams per user (refused, or
//! the oldest replaced).

use crate::support;

use http::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;
use support::*;

async fn status_of(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, Value) {
    let resp = request(addr, Method::GET, path, headers, "").await;
    let (status, headers, body) = body_bytes(resp).await;
    (
        status,
        headers,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn stream_opens_per_ip_are_limited_with_retry_after() {
    let server = Server::start(|c| {
        c.server.limits.per_ip_attempts = 3;
        c.server.limits.per_ip_window = Duration::from_secs(60);
    })
    .await;
    for _ in 0..3 {
        let (status, _, _) = status_of(server.addr, "/poll?topic=a", &[]).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, headers, body) = status_of(server.addr, "/poll?topic=a", &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"], "rate_limited");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // SSE opens count too; other routes do not.
    let (status, _, _) = status_of(server.addr, "/events?topic=a", &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, _, _) = status_of(server.addr, "/healthz", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let (_, stats) = server.get_json("/stats").await;
    assert_eq!(stats["limits"]["per_ip_rejected"], 2);
    server.stop().await;
}

#[tokio::test]
async fn forwarded_for_counts_only_from_a_trusted_proxy() {
    let server = Server::start(|c| {
        c.server.limits.per_ip_attempts = 1;
        c.server.limits.per_ip_window = Duration::from_secs(60);
        c.server.limits.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let a = [("x-forwarded-for", "203.0.113.1")];
    let b = [("x-forwarded-for", "203.0.113.2")];
    assert_eq!(
        status_of(server.addr, "/poll?topic=t", &a).await.0,
        StatusCode::OK
    );
    assert_eq!(
        status_of(server.addr, "/poll?topic=t", &a).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        status_of(server.addr, "/poll?topic=t", &b).await.0,
        StatusCode::OK
    );
    server.stop().await;

    // Without trust, the header is ignored: every request is the peer's.
    let server = Server::start(|c| {
        c.server.limits.per_ip_attempts = 1;
        c.server.limits.per_ip_window = Duration::from_secs(60);
    })
    .await;
    assert_eq!(
        status_of(server.addr, "/poll?topic=t", &a).await.0,
        StatusCode::OK
    );
    assert_eq!(
        status_of(server.addr, "/poll?topic=t", &b).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    server.stop().await;
}

#[tokio::test]
async fn a_user_over_its_limit_is_refused() {
    let server = Server::start(|c| {
        c.server.insecure_user_param = true;
        c.server.limits.per_user_connections = 2;
    })
    .await;
    let mut first = server.sse("/events?topic=t&user=ann", &[]).await;
    first.connected().await;
    let mut second = server.sse("/events?topic=t&user=ann", &[]).await;
    second.connected().await;
    let (status, _, body) = status_of(server.addr, "/events?topic=t&user=ann", &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"], "too_many_user_connections");
    let resp = request(server.addr, Method::GET, "/metrics", &[], "").await;
    let (_, _, text) = body_bytes(resp).await;
    assert!(
        String::from_utf8_lossy(&text).contains("spout_limit_rejections_total{limit=\"per_user\"}"),
        "the refusal is counted"
    );
    let mut bob = server.sse("/events?topic=t&user=bob", &[]).await;
    bob.connected().await;
    // When one of ann's streams closes, she may open another.
    drop(first);
    wait_stats(server.addr, |s| s["connections"] == 2).await;
    let mut again = server.sse("/events?topic=t&user=ann", &[]).await;
    again.connected().await;
    server.stop().await;
}

#[tokio::test]
async fn replace_oldest_ends_the_oldest_stream_with_replaced() {
    let server = Server::start(|c| {
        c.server.insecure_user_param = true;
        c.server.limits.per_user_connections = 1;
        c.server.limits.per_user_policy = spout::config::UserPolicy::ReplaceOldest;
    })
    .await;
    let mut old = server.sse("/events?topic=t&user=ann", &[]).await;
    old.connected().await;
    let mut new = server.sse("/events?topic=t&user=ann", &[]).await;
    new.connected().await;
    let e = old.next().await;
    assert_eq!(e.kind, "replaced");
    assert!(e.data.contains("newer connection"), "{}", e.data);
    assert!(
        old.next_or_end().await.is_none(),
        "the replaced stream ends"
    );
    server
        .publish(serde_json::json!({ "topic": "t", "data": "hi" }))
        .await;
    assert_eq!(new.data(1).await, ["hi"]);
    server.stop().await;
}
