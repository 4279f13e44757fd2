//! Every kind of bad input gets a 4xx with a JSON `{"error","detail"}` body,
//! and nothing reaches the log.

mod support;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn expect_error(
    addr: std::net::SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
    status: StatusCode,
    code: &str,
) {
    let (got, h, bytes) =
        body_bytes(request(addr, method.clone(), path, headers, body).await).await;
    assert_eq!(
        got,
        status,
        "{method} {path}: {}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(h["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["error"], code, "{v}");
    assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
}

#[tokio::test]
async fn publish_rejections() {
    let server = Server::start(|c| {
        c.server.limits.max_event_bytes = bytesize::ByteSize::kib(1);
        c.server.limits.max_body_bytes = bytesize::ByteSize::kib(64);
    })
    .await;
    let a = server.addr;
    let json_ct: &[(&str, &str)] = &[("content-type", "application/json")];
    let bad = StatusCode::BAD_REQUEST;
    expect_error(
        a,
        Method::POST,
        "/publish",
        json_ct,
        "{\"topic\":",
        bad,
        "invalid_json",
    )
    .await;
    expect_error(
        a,
        Method::POST,
        "/publish",
        json_ct,
        r#"{"data":1}"#,
        bad,
        "missing_topic",
    )
    .await;
    expect_error(
        a,
        Method::POST,
        "/publish",
        json_ct,
        r#"{"topic":"has space","data":1}"#,
        bad,
        "invalid_topic",
    )
    .await;
    expect_error(
        a,
        Method::POST,
        "/publish",
        json_ct,
        r#"{"topic":"a/*","data":1}"#,
        bad,
        "invalid_topic",
    )
    .await;
    expect_error(
        a,
        Method::POST,
        "/publish",
        json_ct,
        r#"{"topic":"a","tpye":"x","data":1}"#,
        bad,
        "invalid_json",
    )
    .await;
    expect_error(
        a,
        Method::POST,
        "/publish",
        json_ct,
        r#"{"topic":"a","type":"x\ny","data":1}"#,
        bad,
        "invalid_field",
    )
    .await;
    expect_error(
        a,
        Method::POST,
        "/publish",
        json_ct,
        "[]",
        bad,
        "empty_body",
    )
    .await;
    // One bad event rejects the whole batch.
    expect_error(
        a,
        Method::POST,
        "/publish",
        json_ct,
        r#"[{"topic":"ok","data":1},{"topic":"","data":2}]"#,
        bad,
        "invalid_topic",
    )
    .await;
    let big = json!({"topic":"a","data":"x".repeat(1025)}).to_string();
    expect_error(
        a,
        Method::POST,
        "/publish",
        json_ct,
        big,
        StatusCode::PAYLOAD_TOO_LARGE,
        "event_too_large",
    )
    .await;
    let huge = "y".repeat(65 * 1024);
    expect_error(
        a,
        Method::POST,
        "/publish",
        json_ct,
        huge,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    )
    .await;
    expect_error(
        a,
        Method::POST,
        "/publish",
        &[("content-type", "text/plain")],
        "hi",
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    expect_error(
        a,
        Method::POST,
        "/publish",
        &[],
        r#"{"topic":"a","data":1}"#,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    expect_error(
        a,
        Method::POST,
        "/publish",
        &[("content-type", "application/x-ndjson")],
        "{\"topic\":\"a\",\"data\":1}\nnot json\n",
        bad,
        "invalid_json",
    )
    .await;

    let (_, stats) = server.get_json("/stats").await;
    assert_eq!(stats["log"]["events"], 0, "nothing was written");
    assert_eq!(stats["log"]["last_id"], 0);
    let (_, _, metrics) =
        body_bytes(request(a, Method::GET, "/metrics", &[], Bytes::new()).await).await;
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    assert!(
        metrics.contains("spout_http_errors_total{error=\"invalid_json\"}"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn subscribe_and_poll_rejections() {
    let server = Server::start(|c| c.server.limits.max_topics = 3).await;
    let a = server.addr;
    let bad = StatusCode::BAD_REQUEST;
    expect_error(a, Method::GET, "/events", &[], "", bad, "missing_topic").await;
    expect_error(
        a,
        Method::GET,
        "/events?topic=a*b",
        &[],
        "",
        bad,
        "invalid_topic",
    )
    .await;
    expect_error(
        a,
        Method::GET,
        "/events?topic=%C3%A9",
        &[],
        "",
        bad,
        "invalid_topic",
    )
    .await;
    expect_error(
        a,
        Method::GET,
        "/events?topic=a&topic=b&topic=c&topic=d",
        &[],
        "",
        bad,
        "too_many_topics",
    )
    .await;
    expect_error(
        a,
        Method::GET,
        "/events?topic=a",
        &[("last-event-id", "abc")],
        "",
        bad,
        "invalid_last_event_id",
    )
    .await;
    expect_error(
        a,
        Method::GET,
        "/events?topic=a&lastEventId=-1",
        &[],
        "",
        bad,
        "invalid_last_event_id",
    )
    .await;
    expect_error(
        a,
        Method::GET,
        "/poll?topic=a&after=x",
        &[],
        "",
        bad,
        "invalid_after",
    )
    .await;
    expect_error(
        a,
        Method::GET,
        "/poll?topic=a&limit=0",
        &[],
        "",
        bad,
        "invalid_limit",
    )
    .await;
    expect_error(a, Method::GET, "/poll", &[], "", bad, "missing_topic").await;
    expect_error(
        a,
        Method::GET,
        "/nowhere",
        &[],
        "",
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        a,
        Method::DELETE,
        "/publish",
        &[],
        "",
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    expect_error(
        a,
        Method::GET,
        "/publish",
        &[],
        "",
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn connections_past_the_limit_get_503() {
    let server = Server::start(|c| c.server.limits.max_connections = 2).await;
    let mut one = server.sse("/events?topic=a", &[]).await;
    let mut two = server.sse("/events?topic=a", &[]).await;
    one.connected().await;
    two.connected().await;
    expect_error(
        server.addr,
        Method::GET,
        "/events?topic=a",
        &[],
        "",
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_connections",
    )
    .await;
    drop(one);
    wait_stats(server.addr, |s| s["connections"] == 1).await;
    let mut three = server.sse("/events?topic=a", &[]).await;
    three.connected().await;
    server.stop().await;
}

#[tokio::test]
async fn stalled_bodies_and_headers_are_cut_off() {
    let server = Server::start(|c| {
        c.server.body_timeout = Duration::from_millis(200);
        c.server.header_timeout = Duration::from_millis(200);
    })
    .await;
    // A publish body that stops halfway: 408 with a JSON error.
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"POST /publish HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"topic\":")
        .await
        .unwrap();
    let mut resp = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut resp))
        .await
        .unwrap()
        .ok();
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(resp.contains("\"error\":\"body_timeout\""), "{resp}");

    // Headers that never finish: the connection is closed.
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("slow headers were not cut off");
    assert!(
        n.is_err() || buf.is_empty() || buf.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    let (_, stats) = server.get_json("/stats").await;
    assert_eq!(stats["log"]["events"], 0);
    server.stop().await;
}
