//! Resuming with Last-Event-ID: replay then live with no gap or duplicate,
//! reset frames past retention, and the JSON polling fallback.

use crate::support;

use serde_json::json;
use std::time::Duration;
use support::*;

#[tokio::test]
async fn header_and_query_resume_then_continue_live() {
    let server = Server::start(|_| {}).await;
    for i in 1..=5 {
        server.publish(json!({"topic":"t","data":i})).await;
    }
    server.publish(json!({"topic":"other","data":"x"})).await;

    let mut by_header = server
        .sse("/events?topic=t", &[("last-event-id", "2")])
        .await;
    let mut by_query = server.sse("/events?topic=t&lastEventId=2", &[]).await;
    // The header wins over the query parameter.
    let mut both = server
        .sse("/events?topic=t&lastEventId=0", &[("last-event-id", "4")])
        .await;
    for s in [&mut by_header, &mut by_query, &mut both] {
        s.connected().await;
    }
    server.publish(json!({"topic":"t","data":"live"})).await;
    assert_eq!(ids(&by_header.events(4).await), [3, 4, 5, 7]);
    assert_eq!(ids(&by_query.events(4).await), [3, 4, 5, 7]);
    let got = both.events(2).await;
    assert_eq!(ids(&got), [5, 7]);
    assert_eq!(got[1].data, "live");
    server.stop().await;
}

#[tokio::test]
async fn reconnecting_while_a_publisher_keeps_publishing_loses_nothing() {
    const TOTAL: u64 = 400;
    let server = Server::start(|_| {}).await;
    let addr = server.addr;
    let publisher = tokio::spawn(async move {
        for i in 1..=TOTAL {
            let (status, _) = post(
                addr,
                "/publish",
                "application/json",
                json!({"topic":"feed","data":i}).to_string(),
            )
            .await;
            assert!(status.is_success());
            if i % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let mut seen: Vec<u64> = Vec::new();
    let mut last: Option<u64> = None;
    // Reconnect every few events until everything has arrived.
    while seen.last().copied() != Some(TOTAL) {
        let header;
        let headers: Vec<(&str, &str)> = match last {
            Some(id) => {
                header = id.to_string();
                vec![("last-event-id", header.as_str())]
            }
            None => vec![("last-event-id", "0")],
        };
        let mut sse = Sse::open(addr, "/events?topic=feed", &headers).await;
        sse.connected().await;
        let want = 37.min((TOTAL - seen.len() as u64) as usize);
        let got = sse.events(want).await;
        for e in &got {
            let id: u64 = e.last_id.parse().unwrap();
            assert_eq!(e.data, id.to_string(), "payload matches id");
            seen.push(id);
        }
        last = seen.last().copied();
        drop(sse);
    }
    publisher.await.unwrap();
    assert_eq!(
        seen,
        (1..=TOTAL).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    server.stop().await;
}

#[tokio::test]
async fn resume_older_than_retention_sends_reset_first() {
    let server = Server::start(|c| {
        c.log.retention.max_events = Some(5);
        c.log.retention.interval = Duration::from_millis(20);
    })
    .await;
    for i in 1..=20 {
        server.publish(json!({"topic":"r","data":i})).await;
    }
    wait_stats(server.addr, |s| s["log"]["events"] == 5).await;
    let mut sse = server
        .sse("/events?topic=r", &[("last-event-id", "3")])
        .await;
    sse.connected().await;
    let reset = sse.next().await;
    assert_eq!(reset.kind, "reset");
    assert_eq!(reset.last_id, "", "control frames carry no id");
    let reset: serde_json::Value = serde_json::from_str(&reset.data).unwrap();
    assert_eq!(reset, json!({"requested": 3, "earliest": 16}));
    assert_eq!(ids(&sse.events(5).await), [16, 17, 18, 19, 20]);

    // Within retention: no reset, replay starts right after the id.
    let mut ok = server
        .sse("/events?topic=r", &[("last-event-id", "17")])
        .await;
    ok.connected().await;
    let first = ok.next().await;
    assert_eq!(
        (first.kind.as_str(), first.last_id.as_str()),
        ("message", "18")
    );

    // The poll fallback reports the same gap.
    let (_, page) = server.get_json("/poll?topic=r&after=3").await;
    assert_eq!(page["reset"], json!({"requested": 3, "earliest": 16}));
    assert_eq!(page["events"][0]["id"], 16);
    server.stop().await;
}

#[tokio::test]
async fn poll_pages_through_the_log() {
    let server = Server::start(|_| {}).await;
    for i in 1..=7 {
        let topic = if i % 2 == 0 { "even" } else { "odd" };
        server
            .publish(json!({"topic": topic, "type": "n", "data": {"n": i}}))
            .await;
    }
    let (_, page) = server.get_json("/poll?topic=odd&after=0&limit=2").await;
    assert_eq!(
        page,
        json!({"events":[
            {"id":1,"topic":"odd","type":"n","data":{"n":1},"time":page["events"][0]["time"]},
            {"id":3,"topic":"odd","type":"n","data":{"n":3},"time":page["events"][1]["time"]}
        ],"next":3})
    );
    let (_, page) = server.get_json("/poll?topic=odd&after=3&limit=2").await;
    assert_eq!(
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [5, 7]
    );
    assert_eq!(page["next"], 7);
    let (_, page) = server.get_json("/poll?topic=odd&after=7").await;
    assert_eq!(page, json!({"events": [], "next": 7}));
    server.stop().await;
}

/// A reconnect storm in small: streams resuming from the same id share one
/// read of the log, and still each gets exactly its own events — frames
/// addressed to one user (`to`) reach only that user, whoever's stream the
/// shared read was made for.
#[tokio::test]
async fn streams_resuming_from_one_id_share_a_read_and_each_gets_only_its_own_events() {
    let server = Server::start(|c| c.server.insecure_user_param = true).await;
    let mut expected: std::collections::HashMap<&str, Vec<(u64, String)>> = Default::default();
    for i in 0..60u64 {
        let to = ["", "ann", "bob"][i as usize % 3];
        let mut event = json!({"topic": "t", "data": format!("e{i}")});
        if !to.is_empty() {
            event["to"] = json!(to);
        }
        let id = server.publish(event).await[0];
        for user in ["", "ann", "bob"] {
            if to.is_empty() || to == user {
                expected
                    .entry(user)
                    .or_default()
                    .push((id, format!("e{i}")));
            }
        }
        // Another topic in between: skipped by every stream.
        server.publish(json!({"topic": "u", "data": "x"})).await;
    }
    let before = metric(
        &metrics_text(server.addr).await,
        "spout_replay_reads_shared_total",
    );
    // Opened together, as after a deploy; users in an order that makes the
    // first read one user's.
    let users: Vec<&str> = (0..24).map(|i| ["bob", "", "ann"][i % 3]).collect();
    let streams = futures_util::future::join_all(users.iter().map(|user| {
        let path = if user.is_empty() {
            "/events?topic=t".to_string()
        } else {
            format!("/events?topic=t&user={user}")
        };
        let addr = server.addr;
        async move { Sse::open(addr, &path, &[("last-event-id", "0")]).await }
    }))
    .await;
    let mut streams = streams;
    for (s, user) in streams.iter_mut().zip(&users) {
        s.connected().await;
        let want = &expected[user];
        let got: Vec<(u64, String)> = s
            .events(want.len())
            .await
            .into_iter()
            .map(|e| (e.last_id.parse().unwrap(), e.data))
            .collect();
        assert_eq!(&got, want, "user {user:?}");
    }
    // Nothing more: the next frame is a live event published now.
    let id = server.publish(json!({"topic": "t", "data": "live"})).await[0];
    for s in &mut streams {
        let next = s.next().await;
        assert_eq!((next.last_id, next.data), (id.to_string(), "live".into()));
    }
    let shared = metric(
        &metrics_text(server.addr).await,
        "spout_replay_reads_shared_total",
    ) - before;
    assert!(
        shared >= 1.0,
        "24 streams resuming from one id at once ran every read themselves"
    );
    server.stop().await;
}
