//! Hostile input: a thousand slowloris connections trickling their headers
//! do not stop normal subscribers and are cut off by `header_timeout`;
//! invalid UTF-8 and absurd topic counts get clear 4xx answers.

use crate::support;

use http::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections the slowloris test opens (bounded: one process, loopback).
const SLOW: usize = 1000;

#[tokio::test]
async fn a_thousand_trickling_clients_do_not_stop_real_subscribers() {
    let server = Server::start(|c| c.server.header_timeout = Duration::from_secs(2)).await;
    let addr = server.addr;
    // Each attacker sends a request line and then one header byte at a time.
    let mut attackers = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /events?topic=a HTTP/1.1\r\nx-slow: ")
            .await
            .unwrap();
        attackers.push(s);
    }
    let trickle = tokio::spawn(async move {
        for _ in 0..10 {
            for s in attackers.iter_mut() {
                let _ = s.write_all(b"z").await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        attackers
    });

    // Meanwhile a real client subscribes and gets events at once.
    let started = std::time::Instant::now();
    let mut real = server.sse("/events?topic=a", &[]).await;
    real.connected().await;
    server
        .publish(json!({ "topic": "a", "data": "through" }))
        .await;
    assert_eq!(real.data(1).await, ["through"]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // The attackers are all cut off by the header timeout: each reads EOF
    // (or a reset) instead of an SSE stream.
    let mut attackers = trickle.await.unwrap();
    let mut closed = 0;
    for s in attackers.iter_mut() {
        let mut buf = [0u8; 256];
        match tokio::time::timeout(WAIT, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(n)) => {
                // An error response before closing is fine; a stream is not.
                assert!(!String::from_utf8_lossy(&buf[..n]).contains("text/event-stream"));
                closed += 1;
            }
            Err(_) => {}
        }
    }
    assert_eq!(closed, SLOW, "every trickling connection was closed");
    let (_, stats) = server.get_json("/stats").await;
    assert_eq!(stats["connections"], 1, "{stats}");
    server.stop().await;
}

#[tokio::test]
async fn invalid_utf8_and_topic_floods_get_clear_errors() {
    let server = Server::start(|_| {}).await;
    let addr = server.addr;
    // Invalid UTF-8 in a topic (query) and in JSON data.
    let (status, body) = server.get_json("/events?topic=%FF%FE").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_topic");
    let mut raw = br#"{"topic":"a","data":""#.to_vec();
    raw.extend_from_slice(&[0xff, 0xfe]);
    raw.extend_from_slice(br#""}"#);
    let (status, body) = post(addr, "/publish", "application/json", raw).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_json");
    // Ten thousand topics in one subscription: the request head is over the
    // 8 KiB limit (431); in a poll URL that fits, over max_topics (400).
    let many: String = (0..10_000).map(|i| format!("topic=t{i}&")).collect();
    // (Raw bytes: an HTTP client library refuses to build such a URI.)
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!("GET /events?{many} HTTP/1.1\r\nhost: x\r\n\r\n");
    let _ = s.write_all(head.as_bytes()).await;
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let few: String = (0..101).map(|i| format!("topic=t{i}&")).collect();
    let (status, body) = server.get_json(&format!("/poll?{few}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "too_many_topics");
    // Ten thousand events on ten thousand topics in one publish are fine
    // (a batch), and are all stored.
    let batch: Vec<Value> = (0..10_000)
        .map(|i| json!({ "topic": format!("t/{i}"), "data": i }))
        .collect();
    let ids = server.publish(Value::Array(batch)).await;
    assert_eq!(ids.len(), 10_000);
    server.stop().await;
}

#[tokio::test]
async fn at_the_file_descriptor_limit_accept_failures_are_counted_not_flooded() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "").unwrap();
    // A process allowed 40 open files: a hundred clients exhaust it.
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 40 && exec '{}' serve --config '{}' --listen 127.0.0.1:0 --data-dir '{}'",
            bin(),
            cfg.display(),
            dir.path().join("data").display()
        ))
        .env("SPOUT_PLUGIN_CACHE", plugin_cache())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr: std::net::SocketAddr = loop {
        let line = rx.recv_timeout(WAIT).expect("no listening line");
        if let Some(i) = line.find("listening on http://") {
            break line[i + 20..].trim().parse().unwrap();
        }
    };
    let mut clients = Vec::new();
    for _ in 0..100 {
        clients.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(clients);
    // The metric counts every failure; the log has about a line a second.
    let metrics = loop {
        let text = metrics_text(addr).await;
        if text.contains("spout_accept_errors_total") {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let failures: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("spout_accept_errors_total "))
        .unwrap()
        .parse()
        .unwrap();
    let logged: Vec<String> = rx
        .try_iter()
        .filter(|l| l.contains("accept failed"))
        .collect();
    assert!(failures >= 10.0, "{failures} failures counted");
    assert!(!logged.is_empty());
    assert!(
        (logged.len() as f64) < failures / 4.0 && logged.len() <= 10,
        "{} log lines for {failures} failures",
        logged.len()
    );
    let _ = child.kill();
    let _ = child.wait();
}
