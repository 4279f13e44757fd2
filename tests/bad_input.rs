//! Every kind of bad input gets a 4xx with a JSON `{"error","detail"}` body,
//! and nothing reaches the log.

use crate::support;

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
    let json = "application/json";
    let ndjson = "application/x-ndjson";
    let big = json!({"topic":"a","data":"x".repeat(1025)}).to_string();
    let huge = "y".repeat(65 * 1024);
    let bad = StatusCode::BAD_REQUEST;
    let too_large = StatusCode::PAYLOAD_TOO_LARGE;
    let media = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    let cases: &[(&str, &str, StatusCode, &str)] = &[
        (json, "{\"topic\":", bad, "invalid_json"),
        (json, r#"{"data":1}"#, bad, "missing_topic"),
        (
            json,
            r#"{"topic":"has space","data":1}"#,
            bad,
            "invalid_topic",
        ),
        (json, r#"{"topic":"a/*","data":1}"#, bad, "invalid_topic"),
        (
            json,
            r#"{"topic":"a","tpye":"x","data":1}"#,
            bad,
            "invalid_json",
        ),
        (
            json,
            r#"{"topic":"a","type":"x\ny","data":1}"#,
            bad,
            "invalid_field",
        ),
        (json, "[]", bad, "empty_body"),
        // One bad event rejects the whole batch.
        (
            json,
            r#"[{"topic":"ok","data":1},{"topic":"","data":2}]"#,
            bad,
            "invalid_topic",
        ),
        (json, &big, too_large, "event_too_large"),
        (json, &huge, too_large, "body_too_large"),
        ("text/plain", "hi", media, "unsupported_media_type"),
        (
            "",
            r#"{"topic":"a","data":1}"#,
            media,
            "unsupported_media_type",
        ),
        (
            ndjson,
            "{\"topic\":\"a\",\"data\":1}\nnot json\n",
            bad,
            "invalid_json",
        ),
    ];
    for (content_type, body, status, code) in cases {
        let headers: &[(&str, &str)] = if content_type.is_empty() {
            &[]
        } else {
            &[("content-type", content_type)]
        };
        expect_error(
            a,
            Method::POST,
            "/publish",
            headers,
            body.to_string(),
            *status,
            code,
        )
        .await;
    }

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

/// method, path, request headers, expected status, expected error code.
type Case<'a> = (
    Method,
    &'a str,
    &'a [(&'a str, &'a str)],
    StatusCode,
    &'a str,
);

#[tokio::test]
async fn subscribe_and_poll_rejections() {
    let server = Server::start(|c| c.server.limits.max_topics = 3).await;
    let a = server.addr;
    let bad = StatusCode::BAD_REQUEST;
    let cases: &[Case] = &[
        (Method::GET, "/events", &[], bad, "missing_topic"),
        (Method::GET, "/events?topic=a*b", &[], bad, "invalid_topic"),
        (
            Method::GET,
            "/events?topic=%C3%A9",
            &[],
            bad,
            "invalid_topic",
        ),
        (
            Method::GET,
            "/events?topic=a&topic=b&topic=c&topic=d",
            &[],
            bad,
            "too_many_topics",
        ),
        // Counted as given: repeats of one topic count too (the OpenAPI
        // document's maxItems; schemathesis found repeats accepted).
        (
            Method::GET,
            "/poll?topic=a&topic=a&topic=a&topic=a",
            &[],
            bad,
            "too_many_topics",
        ),
        (
            Method::GET,
            "/events?topic=a",
            &[("last-event-id", "abc")],
            bad,
            "invalid_last_event_id",
        ),
        (
            Method::GET,
            "/events?topic=a&lastEventId=-1",
            &[],
            bad,
            "invalid_last_event_id",
        ),
        (
            Method::GET,
            "/poll?topic=a&after=x",
            &[],
            bad,
            "invalid_after",
        ),
        (
            Method::GET,
            "/poll?topic=a&limit=0",
            &[],
            bad,
            "invalid_limit",
        ),
        (Method::GET, "/poll", &[], bad, "missing_topic"),
        (
            Method::GET,
            "/nowhere",
            &[],
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::DELETE,
            "/publish",
            &[],
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::GET,
            "/publish",
            &[],
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (method, path, headers, status, code) in cases {
        expect_error(a, method.clone(), path, headers, "", *status, code).await;
    }
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
