//! Slow subscribers: they never hold up the publisher or other subscribers,
//! catch up from the log without loss, and are closed if they stop reading.

use crate::support;

use serde_json::json;
use std::time::Duration;
use support::*;
use tokio::io::AsyncWriteExt;

/// Enough data to fill a loopback socket's buffers several times over.
const EVENTS: usize = 3000;
const SIZE: usize = 4096;

async fn flood(server: &Server, topic: &str) {
    let payload = "x".repeat(SIZE);
    for chunk in 0..EVENTS / 100 {
        let batch: Vec<_> = (0..100)
            .map(|i| json!({"topic": topic, "data": format!("{}:{payload}", chunk * 100 + i)}))
            .collect();
        server.publish(serde_json::Value::Array(batch)).await;
    }
}

#[tokio::test]
async fn a_subscriber_that_never_reads_does_not_hold_up_a_fast_one() {
    let server = Server::start(|c| c.hub.queue = 16).await;
    // The stuck client: sends its request and never reads a byte.
    let mut stuck = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stuck
        .write_all(b"GET /events?topic=big HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    wait_stats(server.addr, |s| s["connections"] == 1).await;
    let mut fast = server.sse("/events?topic=big", &[]).await;
    fast.connected().await;

    let reader = tokio::spawn(async move {
        let got = fast.events(EVENTS).await;
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, e)| e.data.starts_with(&format!("{i}:"))),
            "in order"
        );
        ids(&got)
    });
    flood(&server, "big").await;
    let got = reader.await.unwrap();
    assert_eq!(got, (1..=EVENTS as u64).collect::<Vec<_>>());
    // The stuck subscriber really fell behind (its queue overflowed).
    assert!(
        metric(
            &metrics_text(server.addr).await,
            "spout_subscribers_lagged_total"
        ) >= 1.0
    );
    drop(stuck);
    server.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_catches_up_from_the_log() {
    let server = Server::start(|c| c.hub.queue = 8).await;
    let mut slow = server.sse("/events?topic=lag", &[]).await;
    slow.connected().await;
    // Not reading while the flood is published: the queue overflows.
    flood(&server, "lag").await;
    let got = slow.events(EVENTS).await;
    assert_eq!(
        ids(&got),
        (1..=EVENTS as u64).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, e)| e.data.starts_with(&format!("{i}:"))));
    let text = metrics_text(server.addr).await;
    assert!(
        metric(&text, "spout_events_replayed_total") >= 1.0,
        "caught up from the log"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_subscriber_stuck_past_the_bound_is_disconnected() {
    let server = Server::start(|c| {
        c.hub.queue = 4;
        c.hub.catchup_timeout = Duration::from_millis(100);
        c.server.heartbeat = Duration::from_millis(50);
    })
    .await;
    let mut stuck = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stuck
        .write_all(b"GET /events?topic=s HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    wait_stats(server.addr, |s| s["connections"] == 1).await;
    flood(&server, "s").await;
    // The server closes it rather than holding it (and its buffers) forever.
    wait_stats(server.addr, |s| s["connections"] == 0).await;
    let text = metrics_text(server.addr).await;
    assert!(metric(&text, "spout_subscribers_overflow_total") >= 1.0);
    drop(stuck);
    server.stop().await;
}

#[tokio::test]
async fn disconnected_clients_are_removed_at_once() {
    let server = Server::start(|_| {}).await;
    let mut streams = Vec::new();
    for i in 0..20 {
        let mut s = server.sse(&format!("/events?topic=t{}", i % 3), &[]).await;
        s.connected().await;
        streams.push(s);
    }
    let stats = wait_stats(server.addr, |s| s["connections"] == 20).await;
    assert_eq!(stats["topics"], 3);
    assert_eq!(stats["peak_connections"], 20);
    drop(streams);
    let stats = wait_stats(server.addr, |s| s["connections"] == 0).await;
    assert_eq!(stats["topics"], 0);
    server.stop().await;
}

#[tokio::test]
async fn a_reader_too_slow_to_catch_up_gets_overflow_and_loses_nothing_on_resume() {
    let server = Server::start(|c| {
        c.hub.queue = 4;
        c.hub.catchup_timeout = Duration::from_millis(50);
    })
    .await;
    let mut sse = server.sse("/events?topic=o", &[]).await;
    sse.connected().await;
    flood(&server, "o").await;
    // Read slowly: the stream cannot catch up within the bound.
    let mut got = Vec::new();
    let overflow = loop {
        let e = sse
            .next_or_end()
            .await
            .expect("stream ended without overflow");
        if e.kind == "overflow" {
            break e;
        }
        got.push(e);
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert!(got.len() < EVENTS, "it was closed before the end");
    assert_eq!(
        ids(&got),
        (1..=got.len() as u64).collect::<Vec<_>>(),
        "a gap-free prefix"
    );
    let info: serde_json::Value = serde_json::from_str(&overflow.data).unwrap();
    assert_eq!(info["last_id"], got.len() as u64);
    assert!(sse.next_or_end().await.is_none(), "closed after overflow");

    // Reconnecting with the last id delivers exactly the rest.
    let last = got.len().to_string();
    let mut again = server
        .sse("/events?topic=o", &[("last-event-id", last.as_str())])
        .await;
    again.connected().await;
    let rest = again.events(EVENTS - got.len()).await;
    assert_eq!(
        ids(&rest),
        (got.len() as u64 + 1..=EVENTS as u64).collect::<Vec<_>>()
    );
    server.stop().await;
}
