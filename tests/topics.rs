//! Topic patterns, several topics per stream, and events addressed to a user.

use crate::support;

use http::StatusCode;
use serde_json::json;
use support::*;

#[tokio::test]
async fn patterns_select_one_or_many_segments() {
    let server = Server::start(|_| {}).await;
    let mut one = server.sse("/events?topic=orders/*", &[]).await;
    let mut deep = server.sse("/events?topic=orders/**", &[]).await;
    let mut multi = server.sse("/events?topic=orders&topic=users/*", &[]).await;
    for s in [&mut one, &mut deep, &mut multi] {
        s.connected().await;
    }
    for topic in ["orders", "orders/1", "orders/1/items", "users/9", "other/1"] {
        server.publish(json!({"topic": topic, "data": topic})).await;
    }
    // A final event every stream sees marks the end of what each should get.
    server
        .publish(json!([{"topic":"orders/end","data":"end"},{"topic":"orders","data":"end"}]))
        .await;
    assert_eq!(one.data(2).await, ["orders/1", "end"]);
    assert_eq!(deep.data(3).await, ["orders/1", "orders/1/items", "end"]);
    assert_eq!(multi.data(3).await, ["orders", "users/9", "end"]);
    server.stop().await;
}

#[tokio::test]
async fn events_with_to_reach_only_that_users_connections() {
    let server = Server::start(|c| c.server.insecure_user_param = true).await;
    let mut alice = server.sse("/events?topic=inbox&user=alice", &[]).await;
    let mut alice2 = server.sse("/events?topic=inbox&user=alice", &[]).await;
    let mut bob = server.sse("/events?topic=inbox&user=bob", &[]).await;
    let mut anon = server.sse("/events?topic=inbox", &[]).await;
    for s in [&mut alice, &mut alice2, &mut bob, &mut anon] {
        s.connected().await;
    }
    server
        .publish(json!([
            {"topic":"inbox","to":"alice","data":"for alice"},
            {"topic":"inbox","to":"bob","data":"for bob"},
            {"topic":"inbox","data":"for all"}
        ]))
        .await;
    assert_eq!(alice.data(2).await, ["for alice", "for all"]);
    assert_eq!(alice2.data(2).await, ["for alice", "for all"]);
    assert_eq!(bob.data(2).await, ["for bob", "for all"]);
    assert_eq!(anon.events(1).await[0].data, "for all");
    let (_, stats) = server.get_json("/stats").await;
    assert_eq!(stats["users"], 2);
    assert_eq!(stats["connections"], 4);

    // Replay and poll apply the same rule.
    let mut late_bob = server
        .sse("/events?topic=inbox&user=bob", &[("last-event-id", "0")])
        .await;
    late_bob.connected().await;
    assert_eq!(late_bob.data(2).await, ["for bob", "for all"]);
    let (_, page) = server.get_json("/poll?topic=inbox&user=alice").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    let (_, page) = server.get_json("/poll?topic=inbox").await;
    assert_eq!(page["events"][0]["data"], "for all");
    server.stop().await;
}

#[tokio::test]
async fn user_param_is_refused_unless_enabled() {
    let server = Server::start(|_| {}).await;
    let (status, body) = server.get_json("/events?topic=inbox&user=alice").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "user_param_disabled");
    server.stop().await;
}

/// `POST /connections/{id}/topics` with a JSON body.
async fn change_topics(
    addr: std::net::SocketAddr,
    id: &str,
    body: serde_json::Value,
    extra: &str,
) -> (StatusCode, serde_json::Value) {
    let resp = request(
        addr,
        http::Method::POST,
        &format!("/connections/{id}/topics{extra}"),
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await;
    let (status, _, bytes) = body_bytes(resp).await;
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

#[tokio::test]
async fn an_open_stream_changes_topics_live() {
    let server = Server::start(|c| c.server.insecure_user_param = true).await;
    let mut s = server.sse("/events?topic=a&user=ann", &[]).await;
    let id = s.connected().await["connection"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = change_topics(
        server.addr,
        &id,
        serde_json::json!({ "add": ["b/*"], "remove": ["a"] }),
        "?user=ann",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["topics"], serde_json::json!(["b/*"]));
    server
        .publish(serde_json::json!([
            { "topic": "a", "data": "old topic" },
            { "topic": "b/1", "data": "new topic" }
        ]))
        .await;
    assert_eq!(s.data(1).await, ["new topic"]);

    // Another user, an unknown id, an empty result: refused.
    let (status, _) = change_topics(
        server.addr,
        &id,
        serde_json::json!({ "add": ["c"] }),
        "?user=bob",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = change_topics(
        server.addr,
        "nope-1-0",
        serde_json::json!({ "add": ["c"] }),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "unknown_connection");
    let (status, body) = change_topics(
        server.addr,
        &id,
        serde_json::json!({ "remove": ["b/*"] }),
        "?user=ann",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_topics");
    let (status, _) = change_topics(
        server.addr,
        &id,
        serde_json::json!({ "add": ["bad topic"] }),
        "?user=ann",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The stream still follows b/* only.
    server
        .publish(serde_json::json!({ "topic": "b/2", "data": "still here" }))
        .await;
    assert_eq!(s.data(1).await, ["still here"]);
    server.stop().await;
}
