//! Topic patterns, several topics per stream, and events addressed to a user.

mod support;

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
