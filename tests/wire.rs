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

/// Reads from a raw socket until `needle` has arrived (or fails after 10 s).
async fn read_until(sock: &mut tokio::net::TcpStream, got: &mut Vec<u8>, needle: &str) {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(got).contains(needle) {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, sock.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", String::from_utf8_lossy(got)))
            .unwrap();
        assert!(
            n > 0,
            "closed before {needle:?}: {:?}",
            String::from_utf8_lossy(got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn plain_http1_streams_are_exact_chunks_and_the_connection_lives_on_after_an_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(|_| {}).await;

    // An error on a stream route, then another request on the same connection.
    let mut sock = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    sock.write_all(b"GET /events HTTP/1.1\r\nhost: spout\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut sock, &mut got, "}").await;
    let text = String::from_utf8(std::mem::take(&mut got)).unwrap();
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    assert!(
        text.contains("content-type: application/json\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\ndate: "), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    assert!(
        text.contains(&format!("content-length: {}\r\n", body.len())),
        "{text}"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(body).unwrap()["error"],
        "missing_topic"
    );
    sock.write_all(b"GET /healthz HTTP/1.1\r\nhost: spout\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut sock, &mut got, "\r\n\r\n").await;
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200 OK\r\n"));
    got.clear();
    drop(sock);

    // A stream: chunked framing byte for byte, one chunk per event here.
    let mut sock = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    sock.write_all(
        b"GET /events?topic=chunks HTTP/1.1\r\nhost: spout\r\nconnection: keep-alive\r\n\r\n",
    )
    .await
    .unwrap();
    read_until(&mut sock, &mut got, "event: connected").await;
    read_until(&mut sock, &mut got, "]}\n\n\r\n").await;
    let text = String::from_utf8(std::mem::take(&mut got)).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\ncontent-type: text/event-stream"),
        "{head}"
    );
    assert!(head.contains("\r\ntransfer-encoding: chunked"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    let (size, prelude) = body.split_once("\r\n").unwrap();
    assert_eq!(usize::from_str_radix(size, 16).unwrap() + 2, prelude.len());
    assert!(prelude.starts_with("retry: 3000\n\nevent: connected\n"));
    server
        .publish(json!({"topic":"chunks","data":"hello"}))
        .await;
    read_until(&mut sock, &mut got, "hello\n\n\r\n").await;
    let frame = "id: 1\ndata: hello\n\n";
    assert_eq!(
        String::from_utf8_lossy(&got),
        format!("{:x}\r\n{frame}\r\n", frame.len())
    );
    got.clear();

    // The client leaving is noticed while the stream is idle.
    wait_stats(server.addr, |s| s["connections"] == 1).await;
    drop(sock);
    wait_stats(server.addr, |s| s["connections"] == 0).await;

    // Shutdown: `event: shutdown`, then the last chunk, then close.
    let mut sock = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    sock.write_all(b"GET /events?topic=chunks HTTP/1.1\r\nhost: spout\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut sock, &mut got, "event: connected").await;
    server.stop().await;
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    let rest = String::from_utf8(rest).unwrap();
    assert!(rest.contains("event: shutdown\n"), "{rest}");
    assert!(rest.ends_with("\n\n\r\n0\r\n\r\n"), "{rest}");
}

#[tokio::test]
async fn split_heads_and_http_1_0_clients_get_their_streams() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start(|_| {}).await;

    // A head that arrives in two pieces is still one stream request.
    let mut split = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    split.write_all(b"GET /events?to").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    split
        .write_all(b"pic=halves HTTP/1.1\r\nhost: spout\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut split, &mut got, "event: connected").await;
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200 OK\r\n"));

    // HTTP/1.0 has no chunked encoding: the body is the bare SSE bytes,
    // ended by the connection's close (hyper answers these).
    let mut old = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    old.write_all(b"GET /events?topic=halves HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut got_old = Vec::new();
    read_until(&mut old, &mut got_old, "]}\n\n").await;
    server
        .publish(json!({"topic":"halves","data":"both"}))
        .await;
    read_until(&mut old, &mut got_old, "both\n\n").await;
    let text = String::from_utf8(got_old).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert_eq!(after_prelude(body.as_bytes()), "id: 1\ndata: both\n\n");
    read_until(&mut split, &mut got, "both\n\n\r\n").await;
    server.stop().await;
}
