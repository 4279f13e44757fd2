//! The operator API (`/api`): off unless `[api]` names an auth plugin;
//! topics, presence with join/leave frames, disconnect with bans (403 and
//! the 204 that stops an EventSource), erasure that survives restarts and
//! never frees an id, the event browser, info; and all of it across two
//! nodes of a cluster on the real Redis.

use crate::support;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;

const KEY: (&str, &str) = ("x-api-key", "secret");

/// A config with the API on (key `secret`, and a read-only key `viewer`)
/// and a presence route `/room` beside the plain `/events`.
fn api_config(extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
insecure_user_param = true
heartbeat = "5s"

[plugins.ops]
use = "builtin:auth-apikey"
config = {{ keys = [
  {{ key = "secret", user = "ops", topics = ["**"], publish = true }},
  {{ key = "viewer", user = "viewer", topics = ["**"] }},
] }}

[api]
auth = "ops"

[[stream]]
path = "/events"

[[stream]]
path = "/room"
presence = true
{extra}
"#
    )
}

async fn call(addr: SocketAddr, method: Method, path: &str, body: &str) -> (StatusCode, Value) {
    let resp = request(
        addr,
        method,
        path,
        &[KEY, ("content-type", "application/json")],
        body.to_owned(),
    )
    .await;
    let (status, _, bytes) = body_bytes(resp).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Waits for a stream's `connected` frame; its connection id.
async fn connection_id(s: &mut Sse) -> String {
    s.connected().await["connection"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn api_get(addr: SocketAddr, path: &str) -> Value {
    let (status, v) = call(addr, Method::GET, path, "").await;
    assert_eq!(status, StatusCode::OK, "{path}: {v}");
    v
}

/// Waits until `check` holds on `GET path` (API key sent).
async fn wait_api(addr: SocketAddr, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = api_get(addr, path).await;
        if check(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never matched: {v}"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test]
async fn the_api_is_off_without_its_section_and_every_call_is_authorized() {
    let plain = Server::start(|_| {}).await;
    let (status, v) = get_json(plain.addr, "/api/info").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["error"], "api_disabled", "{v}");
    plain.stop().await;

    let server = Server::start_toml(&api_config("")).await;
    let (status, v) = get_json(server.addr, "/api/info").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("API key"), "{v}");
    // A read-only key reads, but may not act.
    let resp = request(
        server.addr,
        Method::GET,
        "/api/info",
        &[("x-api-key", "viewer")],
        Bytes::new(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = request(
        server.addr,
        Method::DELETE,
        "/api/history?topic=t",
        &[("x-api-key", "viewer")],
        Bytes::new(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let (status, v) = call(server.addr, Method::POST, "/api/info", "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{v}");
    let (status, v) = call(server.addr, Method::GET, "/api/nothing", "").await;
    assert_eq!(
        (status, v["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    for (path, body, code) in [
        ("/api/disconnect", "{}", "invalid_body"),
        (
            "/api/disconnect",
            r#"{"user":"a","connection":"b"}"#,
            "invalid_body",
        ),
        (
            "/api/disconnect",
            r#"{"user":"a","ban":"forever"}"#,
            "invalid_ban",
        ),
        (
            "/api/disconnect",
            r#"{"connection":"c","ban":"1m"}"#,
            "invalid_body",
        ),
        ("/api/disconnect", "not json", "invalid_body"),
    ] {
        let (status, v) = call(server.addr, Method::POST, path, body).await;
        assert_eq!(
            (status, v["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{body}: {v}"
        );
    }
    for path in [
        "/api/history",
        "/api/history?topic=a&user=b",
        "/api/history?topic=a/**/b",
    ] {
        let (status, v) = call(server.addr, Method::DELETE, path, "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {v}");
    }
    let (status, v) = call(server.addr, Method::GET, "/api/topics?limit=0", "").await;
    assert_eq!(
        (status, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_limit"))
    );
    let info = api_get(server.addr, "/api/info").await;
    assert_eq!(info["mode"], "single");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["pipeline"]["generation"], 1);
    server.stop().await;
}

#[tokio::test]
async fn presence_lists_streams_and_announces_join_and_leave_on_presence_routes() {
    let server = Server::start_toml(&api_config("")).await;
    let addr = server.addr;
    let mut bob = server.sse("/room?topic=chat&user=bob", &[]).await;
    let bob_id = connection_id(&mut bob).await;
    let mut plain = server.sse("/events?topic=chat&user=carol", &[]).await;
    plain.connected().await;
    let mut alice = server.sse("/room?topic=chat&user=alice", &[]).await;
    let alice_id = connection_id(&mut alice).await;

    // Bob hears Alice join: an id-less frame naming her.
    let join = bob.next().await;
    assert_eq!(join.kind, "join");
    assert_eq!(join.last_id, "", "presence frames carry no id");
    let data: Value = serde_json::from_str(&join.data).unwrap();
    assert_eq!(
        data,
        json!({"topic": "chat", "connection": alice_id, "user": "alice"})
    );

    // Presence lists the presence route's streams, oldest first; Carol's
    // plain route does not track presence.
    let p = api_get(addr, "/api/presence?topic=chat").await;
    let users: Vec<&str> = p["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["bob", "alice"], "{p}");
    assert_eq!(p["items"][0]["connection"], bob_id.as_str());
    assert_eq!(p["items"][0]["route"], "/room");
    assert_eq!(p["items"][0]["node"], "local");
    assert_eq!(p["complete"], true);
    let page = api_get(addr, "/api/presence?topic=chat&limit=1").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let next = page["next"].as_str().unwrap().to_owned();
    let rest = api_get(
        addr,
        &format!("/api/presence?topic=chat&limit=1&cursor={next}"),
    )
    .await;
    assert_eq!(rest["items"][0]["user"], "alice", "{rest}");
    assert_eq!(rest["next"], Value::Null);

    // Topics count every stream (plain route too) and distinct users.
    server.publish(json!({"topic": "chat", "data": "hi"})).await;
    let t = wait_api(addr, "/api/topics", |v| v["items"][0]["events"] == 1).await;
    assert_eq!(t["items"][0]["topic"], "chat");
    assert_eq!(t["items"][0]["subscribers"], 3);
    assert_eq!(t["items"][0]["users"], 3);
    assert_eq!(t["items"][0]["last_id"], 1);

    // Alice leaves: Bob hears it (after the event).
    drop(alice);
    assert_eq!(bob.events(1).await[0].data, "hi");
    let leave = bob.next().await;
    assert_eq!(leave.kind, "leave");
    assert_eq!(
        serde_json::from_str::<Value>(&leave.data).unwrap()["connection"],
        alice_id.as_str()
    );
    // Carol's plain stream got no presence frames.
    assert_eq!(plain.events(1).await[0].data, "hi");
    assert!(!String::from_utf8_lossy(&plain.raw).contains("event: join"));
    wait_api(addr, "/api/presence?topic=chat", |v| v["total"] == 1).await;
    server.stop().await;
}

#[tokio::test]
async fn disconnect_with_a_ban_revokes_refuses_and_survives_a_restart() {
    let server = Server::start_toml(&api_config("")).await;
    let addr = server.addr;
    let mut bob = server.sse("/events?topic=t&user=bob", &[]).await;
    bob.connected().await;
    let mut bob2 = server.sse("/room?topic=t&user=bob", &[]).await;
    bob2.connected().await;
    let mut alice = server.sse("/events?topic=t&user=alice", &[]).await;
    let alice_id = connection_id(&mut alice).await;

    let (status, v) = call(
        addr,
        Method::POST,
        "/api/disconnect",
        r#"{"user":"bob","reason":"spam","ban":"10m"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["disconnected"], 2);
    assert_eq!(v["ban"]["user"], "bob");
    for s in [&mut bob, &mut bob2] {
        let e = s.next().await;
        assert_eq!(e.kind, "revoked");
        assert_eq!(
            serde_json::from_str::<Value>(&e.data).unwrap()["reason"],
            "spam"
        );
        assert!(
            s.next_or_end().await.is_none(),
            "the stream ends after revoked"
        );
    }

    // While the ban lasts: an EventSource gets 204 (it stops retrying),
    // anything else 403 `banned`; /poll too.
    let resp = request(
        addr,
        Method::GET,
        "/events?topic=t&user=bob",
        &[("accept", "text/event-stream")],
        Bytes::new(),
    )
    .await;
    let (status, headers, body) = body_bytes(resp).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(body.is_empty());
    assert_eq!(headers["x-spout-refused"], "banned");
    let (status, v) = get_json(addr, "/events?topic=t&user=bob").await;
    assert_eq!(
        (status, v["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("banned")),
        "{v}"
    );
    assert!(v["detail"].as_str().unwrap().contains("spam"));
    let (status, v) = get_json(addr, "/poll?topic=t&user=bob").await;
    assert_eq!(
        (status, v["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("banned"))
    );
    // Others are untouched; a connection can be thrown out alone.
    let (_, v) = call(
        addr,
        Method::POST,
        "/api/disconnect",
        &json!({"connection": alice_id}).to_string(),
    )
    .await;
    assert_eq!(v["disconnected"], 1);
    assert_eq!(alice.next().await.kind, "revoked");
    let mut alice = server.sse("/events?topic=t&user=alice", &[]).await;
    assert_eq!(alice.status, StatusCode::OK);
    alice.connected().await;
    drop(alice);

    // The ban is kept across a restart.
    let dir = server.dir.clone();
    let config = std::fs::read_to_string(server.config_file()).unwrap();
    let tmp = server.stop().await;
    let mut cfg = spout::config::Config::parse(&config, &dir.join("config.toml")).unwrap();
    cfg.log.path = dir.join("data");
    cfg.plugin_cache = Some(plugin_cache());
    let server = Server::start_in(&dir.join("data"), |c| *c = cfg).await;
    let (status, v) = get_json(server.addr, "/events?topic=t&user=bob").await;
    assert_eq!(
        (status, v["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("banned")),
        "{v}"
    );
    let bans = api_get(server.addr, "/api/bans").await;
    assert_eq!(bans["bans"][0]["user"], "bob");
    let (status, v) = call(server.addr, Method::DELETE, "/api/bans?user=bob", "").await;
    assert_eq!(
        (status, &v["lifted"]),
        (StatusCode::OK, &json!(true)),
        "{v}"
    );
    let mut bob = server.sse("/events?topic=t&user=bob", &[]).await;
    assert_eq!(bob.status, StatusCode::OK);
    bob.connected().await;
    drop(bob);
    server.stop().await;
    drop(tmp);
}

#[tokio::test]
async fn erasure_removes_events_from_replay_poll_and_restart_and_never_frees_an_id() {
    let server = Server::start_toml(&api_config("")).await;
    let addr = server.addr;
    for i in 0..10 {
        server.publish(json!({"topic": "gone", "data": i})).await;
    }
    server.publish(json!({"topic": "kept", "data": "k1"})).await;
    server
        .publish(json!({"topic": "kept", "data": "secret", "to": "alice"}))
        .await;
    server
        .publish(json!({"topic": "gone/sub", "data": "x", "id": "k"}))
        .await;
    server.publish(json!({"topic": "kept", "data": "k2"})).await;

    // A stream resuming now leaves its read of the log to be shared with
    // streams resuming from the same id soon after: erasing must forget it.
    let mut early = Sse::open(
        addr,
        "/events?topic=kept&topic=gone",
        &[("last-event-id", "0")],
    )
    .await;
    let replayed = ids(&early.events(12).await);
    assert_eq!(replayed, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 14]);

    let (status, v) = call(addr, Method::DELETE, "/api/history?topic=gone/**", "").await;
    assert_eq!((status, &v["erased"]), (StatusCode::OK, &json!(1)), "{v}");
    let (_, v) = call(addr, Method::DELETE, "/api/history?topic=gone", "").await;
    assert_eq!(v["erased"], 10);
    let mut late = Sse::open(
        addr,
        "/events?topic=gone&topic=kept",
        &[("last-event-id", "0")],
    )
    .await;
    assert_eq!(
        ids(&late.events(2).await),
        [11, 14],
        "erased events replayed"
    );
    drop((early, late));
    let (_, v) = call(addr, Method::DELETE, "/api/history?user=alice", "").await;
    assert_eq!(v["erased"], 1);
    let (_, v) = call(addr, Method::DELETE, "/api/history?user=alice", "").await;
    assert_eq!(v["erased"], 0, "erasing again finds nothing");

    let check = |addr: SocketAddr| async move {
        assert!(poll_all(addr, "gone").await.is_empty());
        assert_eq!(
            poll_all(addr, "kept").await,
            [(11, "k1".to_string()), (14, "k2".to_string())]
        );
        // Replay from the start skips the erased ids.
        let mut s = Sse::open(
            addr,
            "/events?topic=kept&topic=gone&user=alice",
            &[("last-event-id", "0")],
        )
        .await;
        let got = s.events(2).await;
        assert_eq!(ids(&got), [11, 14]);
        let browse = api_get(addr, "/api/events?limit=50").await;
        let browsed: Vec<u64> = browse["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_u64().unwrap())
            .collect();
        assert_eq!(browsed, [14, 11]);
        assert_eq!(api_get(addr, "/api/info").await["log"]["events"], 2);
    };
    check(addr).await;

    // After a restart: still gone, counts right, and new ids continue.
    let dir = server.dir.clone();
    let config = std::fs::read_to_string(server.config_file()).unwrap();
    let tmp = server.stop().await;
    let mut cfg = spout::config::Config::parse(&config, &dir.join("config.toml")).unwrap();
    cfg.log.path = dir.join("data");
    cfg.plugin_cache = Some(plugin_cache());
    let server = Server::start_in(&dir.join("data"), |c| *c = cfg).await;
    check(server.addr).await;
    // The erased event's idempotency key is free again, with a new id.
    assert_eq!(
        server
            .publish(json!({"topic": "gone/sub", "data": "x", "id": "k"}))
            .await,
        [15]
    );
    assert_eq!(
        server.publish(json!({"topic": "kept", "data": "k3"})).await,
        [16]
    );
    server.stop().await;
    drop(tmp);
}

#[tokio::test]
async fn the_event_browser_pages_backwards_by_selector() {
    let server = Server::start_toml(&api_config("")).await;
    for i in 1..=30u64 {
        let topic = if i % 3 == 0 { "orders/eu" } else { "logs" };
        server
            .publish(json!({"topic": topic, "type": "t", "data": {"n": i}}))
            .await;
    }
    let first = api_get(server.addr, "/api/events?limit=10").await;
    let ids: Vec<u64> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (21..=30).rev().collect::<Vec<_>>());
    assert_eq!(first["items"][0]["topic"], "orders/eu");
    assert_eq!(first["items"][0]["type"], "t");
    assert_eq!(first["items"][0]["data"], json!({"n": 30}));
    let next = first["next"].as_u64().unwrap();
    let second = api_get(server.addr, &format!("/api/events?limit=10&before={next}")).await;
    assert_eq!(second["items"][0]["id"], 20);
    let orders = api_get(server.addr, "/api/events?limit=4&selector=orders/*").await;
    let ids: Vec<u64> = orders["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [30, 27, 24, 21]);
    let mut before = orders["next"].as_u64().unwrap();
    let mut all = ids;
    loop {
        let page = api_get(
            server.addr,
            &format!("/api/events?limit=4&selector=orders/*&before={before}"),
        )
        .await;
        all.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_u64().unwrap()),
        );
        match page["next"].as_u64() {
            Some(n) => before = n,
            None => break,
        }
    }
    assert_eq!(all, (1..=10).rev().map(|i| i * 3).collect::<Vec<_>>());
    server.stop().await;
}

/// Two nodes on one Redis: each answers for the whole cluster.
#[tokio::test]
async fn the_api_answers_for_every_node_of_a_cluster() {
    let prefix = crate::cluster::Prefix::new("api");
    let _ = crate::cluster::redis();
    let node = |name: &str| {
        api_config(&format!(
            "[cluster]\nbackend = \"redis\"\nurl = \"{}\"\nprefix = \"{}\"\nnode_id = \"{name}\"\n",
            crate::cluster::redis_url(),
            prefix.0
        ))
    };
    let a = Server::start_toml(&node("a")).await;
    let b = Server::start_toml(&node("b")).await;
    // Both nodes see each other before the test asks.
    for s in [&a, &b] {
        wait_stats(s.addr, |v| v["cluster"]["nodes"] == 2).await;
    }
    let mut on_a = a.sse("/room?topic=chat&user=alice", &[]).await;
    on_a.connected().await;
    let mut on_b = b.sse("/room?topic=chat&user=bob", &[]).await;
    let bob_id = connection_id(&mut on_b).await;

    // Alice, on a, hears Bob join on b.
    let join = on_a.next().await;
    assert_eq!(join.kind, "join");
    assert_eq!(
        serde_json::from_str::<Value>(&join.data).unwrap()["connection"],
        bob_id.as_str()
    );

    // Presence and topics asked on b list a's stream too.
    let p = wait_api(b.addr, "/api/presence?topic=chat", |v| v["total"] == 2).await;
    let mut nodes: Vec<(&str, &str)> = p["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["user"].as_str().unwrap(), c["node"].as_str().unwrap()))
        .collect();
    nodes.sort();
    assert_eq!(nodes, [("alice", "a"), ("bob", "b")]);
    assert_eq!(p["complete"], true);
    let t = api_get(a.addr, "/api/topics?selector=chat").await;
    assert_eq!(t["items"][0]["subscribers"], 2, "{t}");
    let info = api_get(a.addr, "/api/info").await;
    assert_eq!(info["mode"], "cluster");
    assert_eq!(info["nodes"].as_array().unwrap().len(), 2, "{info}");
    assert_eq!(info["connections"], 2);

    // A disconnect asked on b closes the stream on a; the ban holds on a.
    let (status, v) = call(
        b.addr,
        Method::POST,
        "/api/disconnect",
        r#"{"user":"alice","reason":"bye","ban":"1m"}"#,
    )
    .await;
    assert_eq!(
        (status, &v["disconnected"]),
        (StatusCode::OK, &json!(1)),
        "{v}"
    );
    let e = on_a.next().await;
    assert_eq!(e.kind, "revoked");
    let (status, v) = get_json(a.addr, "/room?topic=chat&user=alice").await;
    assert_eq!(
        (status, v["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("banned")),
        "{v}"
    );
    // Bob hears Alice leave, across nodes (her join may have reached his
    // node after he subscribed: notices between nodes are asynchronous).
    let leave = loop {
        let e = on_b.next().await;
        if e.kind != "join" {
            break e;
        }
    };
    assert_eq!(leave.kind, "leave");
    assert_eq!(
        serde_json::from_str::<Value>(&leave.data).unwrap()["user"],
        "alice"
    );

    // An erase asked on a removes the events from b's /poll.
    a.publish(json!({"topic": "secret", "data": "1"})).await;
    b.publish(json!({"topic": "secret", "data": "2"})).await;
    b.publish(json!({"topic": "open", "data": "3"})).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while poll_all(b.addr, "secret").await.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, v) = call(a.addr, Method::DELETE, "/api/history?topic=secret", "").await;
    assert_eq!(v["erased"], 2, "{v}");
    assert!(poll_all(b.addr, "secret").await.is_empty());
    assert_eq!(poll_all(b.addr, "open").await.len(), 1);
    drop((on_a, on_b));
    a.stop().await;
    b.stop().await;
}

/// An erasure cut by SIGKILL at any moment leaves a log that opens, keeps
/// every acknowledged event it was not asked to erase, serves no damaged
/// or half-written event, and never hands an id out twice.
#[tokio::test]
async fn an_erasure_killed_midway_loses_nothing_else_and_reuses_no_id() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.toml");
    std::fs::write(&cfg, api_config("[log]\nfsync = \"always\"\n")).unwrap();
    let data = tmp.path().join("data");
    let mut kept: Vec<(u64, String)> = Vec::new();
    let mut dropped: HashMap<u64, String> = HashMap::new();
    let mut top = 0u64;
    for (trial, kill_after_ms) in [2u64, 15, 40].into_iter().enumerate() {
        let mut proc = spawn_binary(&cfg, &data);
        let addr = proc.addr;
        // 20 requests of 100: "keep" and "drop/N" interleaved in each block.
        for r in 0..20 {
            let body: Vec<Value> = (0..100)
                .map(|i| {
                    let n = trial * 10_000 + r * 100 + i;
                    let topic = if i % 2 == 0 {
                        "keep".to_string()
                    } else {
                        format!("drop/{}", i % 7)
                    };
                    json!({"topic": topic, "data": format!("{topic}:{n}")})
                })
                .collect();
            let v = try_publish(addr, Value::Array(body.clone()).to_string())
                .await
                .expect("publish");
            for (id, e) in v["ids"].as_array().unwrap().iter().zip(&body) {
                let id = id.as_u64().unwrap();
                assert!(id > top, "id {id} given again (top {top})");
                top = id;
                let text = e["data"].as_str().unwrap().to_owned();
                if e["topic"] == "keep" {
                    kept.push((id, text));
                } else {
                    dropped.insert(id, text);
                }
            }
        }
        // Erase the drop topics and kill the process while it may be at it.
        let erase = tokio::spawn(async move {
            let resp =
                tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                    .await;
            if let Ok(Ok(stream)) = resp {
                use tokio::io::AsyncWriteExt;
                let mut stream = stream;
                let _ = stream
                    .write_all(b"DELETE /api/history?topic=drop/* HTTP/1.1\r\nhost: x\r\nx-api-key: secret\r\n\r\n")
                    .await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
        proc.child.kill().unwrap();
        let _ = proc.child.wait();
        let _ = erase.await;

        // Restart: what is left is exact.
        let proc = spawn_binary(&cfg, &data);
        let keep = poll_all(proc.addr, "keep").await;
        assert_eq!(
            keep, kept,
            "trial {trial}: every acknowledged kept event, once, in order"
        );
        for t in 0..7 {
            for (id, text) in poll_all(proc.addr, &format!("drop/{t}")).await {
                assert_eq!(
                    dropped.get(&id),
                    Some(&text),
                    "trial {trial}: event {id} is what was published"
                );
            }
        }
        let mut proc = proc;
        proc.child.kill().unwrap();
        let _ = proc.child.wait();
    }
    // A last, uninterrupted erasure finishes the job; ids go on above all.
    let mut proc = spawn_binary(&cfg, &data);
    let (status, v) = call(proc.addr, Method::DELETE, "/api/history?topic=drop/*", "").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    for t in 0..7 {
        assert!(poll_all(proc.addr, &format!("drop/{t}")).await.is_empty());
    }
    assert_eq!(poll_all(proc.addr, "keep").await, kept);
    let info = api_get(proc.addr, "/api/info").await;
    assert_eq!(info["log"]["events"], kept.len() as u64, "{info}");
    let v = try_publish(
        proc.addr,
        json!({"topic": "keep", "data": "last"}).to_string(),
    )
    .await
    .unwrap();
    assert!(v["ids"][0].as_u64().unwrap() > top);
    proc.child.kill().unwrap();
    let _ = proc.child.wait();
}
