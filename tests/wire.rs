//! Exact bytes on the SSE wire: prelude, framing of every payload shape,
//! headers, heartbeats, batches, HTTP/2.

use crate::support;

use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::json;
use std::time::Duration;
use support::*;

fn after_prelude(raw: &[u8]) -> String {
    let text = String::from_utf8(raw.to_vec()).unwrap();
    let start = text.find("\n\n").unwrap() + 2; // retry
    let start = start + text[start..].find("\n\n").unwrap() + 2; // connected
    text[start..].to_string()
}

#[tokio::test]
async fn prelude_headers_and_exact_event_bytes() {
    let server = Server::start(|_| {}).await;
    let mut sse = server.sse("/events?topic=orders", &[]).await;
    assert_eq!(sse.status, StatusCode::OK);
    assert_eq!(sse.headers["content-type"], "text/event-stream");
    assert_eq!(sse.headers["cache-control"], "no-cache");
    assert_eq!(sse.headers["x-accel-buffering"], "no");

    let connected = sse.connected().await;
    let conn_id = connected["connection"].as_str().unwrap().to_string();
    assert!(!conn_id.is_empty());
    let prelude = String::from_utf8(sse.raw.clone()).unwrap();
    assert_eq!(
        prelude,
        format!("retry: 3000\n\nevent: connected\ndata: {{\"connection\":\"{conn_id}\",\"last_id\":0,\"topics\":[\"orders\"]}}\n\n")
    );

    let cases = [
        (
            json!({"topic":"orders","type":"created","data":{"id":7}}),
            "id: 1\nevent: created\ndata: {\"id\":7}\n\n",
        ),
        (
            json!({"topic":"orders","data":"one line"}),
            "id: 2\ndata: one line\n\n",
        ),
        (
            json!({"topic":"orders","data":"a\nb\r\nc\rd"}),
            "id: 3\ndata: a\ndata: b\ndata: c\ndata: d\n\n",
        ),
        (
            json!({"topic":"orders","data":"ends with newline\n"}),
            "id: 4\ndata: ends with newline\ndata: \n\n",
        ),
        (json!({"topic":"orders","data":""}), "id: 5\ndata: \n\n"),
        (
            json!({"topic":"orders","type":"ünï","data":"日本語 ✓ 🚀"}),
            "id: 6\nevent: ünï\ndata: 日本語 ✓ 🚀\n\n",
        ),
        (
            json!({"topic":"orders","data":[1, {"nested": "x y", "n": null}, true]}),
            "id: 7\ndata: [1,{\"n\":null,\"nested\":\"x y\"},true]\n\n",
        ),
    ];
    let mut expected = String::new();
    for (body, wire) in &cases {
        server.publish(body.clone()).await;
        expected.push_str(wire);
    }
    sse.raw_until("id: 7\n").await;
    sse.raw_until("true]\n\n").await;
    assert_eq!(after_prelude(&sse.raw), expected);
    server.stop().await;
}

#[tokio::test]
async fn pretty_json_is_sent_compact_and_exact() {
    let server = Server::start(|_| {}).await;
    let mut sse = server.sse("/events?topic=t", &[]).await;
    sse.connected().await;
    // Sent as raw text so key order, spacing and number spelling are the publisher's.
    let body = "{\"topic\":\"t\",\"data\":{\n  \"b\": 1.50,\n  \"a\": \"x\\ny\",\n  \"big\": 123456789012345678901234567890\n}}";
    let (status, _) = post(server.addr, "/publish", "application/json", body).await;
    assert_eq!(status, StatusCode::OK);
    let e = sse.next().await;
    assert_eq!(
        e.data,
        "{\"b\":1.50,\"a\":\"x\\ny\",\"big\":123456789012345678901234567890}"
    );
    server.stop().await;
}

#[tokio::test]
async fn arrays_and_ndjson_publish_in_order_with_consecutive_ids() {
    let server = Server::start(|_| {}).await;
    let mut sse = server.sse("/events?topic=a&topic=b", &[]).await;
    sse.connected().await;
    let published = server
        .publish(json!([{"topic":"a","data":1},{"topic":"b","data":2},{"topic":"a","data":3}]))
        .await;
    assert_eq!(published, [1, 2, 3]);
    let (status, body) = post(
        server.addr,
        "/publish",
        "application/x-ndjson",
        "{\"topic\":\"b\",\"data\":4}\n{\"topic\":\"a\",\"data\":5}\n",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"ids":[4,5]}));
    let got = sse.events(5).await;
    assert_eq!(ids(&got), [1, 2, 3, 4, 5]);
    assert_eq!(
        got.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
        ["1", "2", "3", "4", "5"]
    );
    server.stop().await;
}

#[tokio::test]
async fn heartbeats_arrive_at_the_configured_interval() {
    let server = Server::start(|c| c.server.heartbeat = Duration::from_millis(100)).await;
    let mut sse = server.sse("/events?topic=quiet", &[]).await;
    sse.connected().await;
    sse.raw_until(":\n\n:\n\n").await;
    assert!(after_prelude(&sse.raw).starts_with(":\n\n"));
    assert!(sse.heartbeats() >= 2);
    server.stop().await;
}

#[tokio::test]
async fn http2_prior_knowledge_streams_events() {
    let server = Server::start(|_| {}).await;
    let mut send = h2(server.addr).await;
    let mut streams = Vec::new();
    for topic in ["x", "y", "x"] {
        let req = Request::builder()
            .method(Method::GET)
            .uri(format!("http://{}/events?topic={topic}", server.addr))
            .body(Full::default())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let mut sse = Sse::from_response(resp);
        assert_eq!(sse.status, StatusCode::OK);
        sse.connected().await;
        streams.push(sse);
    }
    server.publish(json!({"topic":"x","data":"over h2"})).await;
    server.publish(json!({"topic":"y","data":"y only"})).await;
    assert_eq!(streams[0].next().await.data, "over h2");
    assert_eq!(streams[1].next().await.data, "y only");
    assert_eq!(streams[2].next().await.data, "over h2");
    server.stop().await;
}
