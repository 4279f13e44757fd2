//! Stream shaping end to end with the stock plugins: `batch` windows
//! (window-bound, max-bound, debounce, resume from a batch frame's id) and
//! `gzip` envelopes (only for subscribers that opt in, round-tripped here).

use crate::support;

use serde_json::{json, Value};
use support::*;

const PLUGINS: &str = r#"
[plugins.b]
use = "builtin:batch"

[plugins.deb]
use = "builtin:batch"
config = { debounce_by = "key" }

[plugins.gz]
use = "builtin:gzip"
config = { min_bytes = 256 }
"#;

/// Warms the shared compiled-plugin cache once (concurrent tests would each
/// compile the plugins otherwise).
fn warm() {
    static WARM: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    WARM.get_or_init(|| {
        let (ok, stderr) = check(PLUGINS);
        assert!(ok, "{stderr}");
    });
}

async fn start(streams: &str) -> Server {
    warm();
    Server::start_toml(&format!("{PLUGINS}\n{streams}")).await
}

/// A server whose `/events` route has `shaping` (TOML lines), and one
/// subscriber to `topic` past its `connected` frame.
async fn start_subscribed(shaping: &str, topic: &str) -> (Server, Sse) {
    let server = start(&format!("[[stream]]\npath = \"/events\"\n{shaping}\n")).await;
    let mut sse = server.sse(&format!("/events?topic={topic}"), &[]).await;
    sse.connected().await;
    (server, sse)
}

fn batch_items(data: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(data)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("not a JSON array: {data}"))
}

#[tokio::test]
async fn a_window_becomes_one_batch_frame_with_the_last_id() {
    let (server, mut sse) = start_subscribed(
        "batch = { plugin = \"b\", window = \"300ms\", max = 50 }",
        "t",
    )
    .await;
    let ids = server
        .publish(json!([
            {"topic": "t", "data": {"n": 1}},
            {"topic": "t", "type": "alert", "data": "two"},
            {"topic": "t", "data": [3]},
        ]))
        .await;
    let e = sse.next().await;
    assert_eq!(e.kind, "batch");
    assert_eq!(e.last_id, ids[2].to_string());
    let got = batch_items(&e.data);
    assert_eq!(got.len(), 3, "{}", e.data);
    for (item, id) in got.iter().zip(&ids) {
        assert_eq!(item["id"], *id);
        assert_eq!(item["topic"], "t");
        assert!(item["time"].as_u64().unwrap() > 0);
    }
    assert_eq!(got[0]["data"], json!({"n": 1}));
    assert!(got[0].get("type").is_none(), "message type is omitted");
    assert_eq!(got[1]["type"], "alert");
    assert_eq!(got[1]["data"], "two");
    assert_eq!(got[2]["data"], json!([3]));
    // Exactly one frame on the wire for the three events.
    let raw = String::from_utf8_lossy(&sse.raw).to_string();
    assert_eq!(raw.matches("event: batch").count(), 1, "{raw}");
    assert!(
        raw.contains(&format!("id: {}\nevent: batch\ndata: [", ids[2])),
        "{raw}"
    );
    let (_, stats) = server.get_json("/stats").await;
    assert_eq!(
        stats["pipeline"]["streams"][0]["batch"]["plugin"], "b",
        "{stats}"
    );
}

#[tokio::test]
async fn max_closes_a_window_early_and_resume_from_a_batch_id_loses_nothing() {
    let (server, mut sse) = start_subscribed(
        "batch = { plugin = \"b\", window = \"400ms\", max = 2 }",
        "t",
    )
    .await;
    let ids = server
        .publish(json!([
            {"topic": "t", "data": 1}, {"topic": "t", "data": 2},
            {"topic": "t", "data": 3}, {"topic": "t", "data": 4},
            {"topic": "t", "data": 5},
        ]))
        .await;
    // Two full windows at once, the fifth event after its window.
    let frames = sse.events(3).await;
    let sizes: Vec<usize> = frames.iter().map(|e| batch_items(&e.data).len()).collect();
    assert_eq!(sizes, vec![2, 2, 1]);
    let frame_ids: Vec<String> = frames.iter().map(|e| e.last_id.clone()).collect();
    assert_eq!(
        frame_ids,
        vec![ids[1].to_string(), ids[3].to_string(), ids[4].to_string()]
    );
    let delivered: Vec<u64> = frames
        .iter()
        .flat_map(|e| batch_items(&e.data))
        .map(|i| i["id"].as_u64().unwrap())
        .collect();
    assert_eq!(delivered, ids);

    // The client saw the frame with the second batch's id, then went away;
    // more events are published; it resumes from that id.
    drop(sse);
    let later = server
        .publish(json!([{"topic": "t", "data": 6}, {"topic": "t", "data": 7}]))
        .await;
    let resume = ids[3].to_string();
    let mut again = server
        .sse("/events?topic=t", &[("last-event-id", &resume)])
        .await;
    again.connected().await;
    let mut replayed = Vec::new();
    while replayed.len() < 3 {
        let e = again.next().await;
        assert_eq!(e.kind, "batch");
        replayed.extend(
            batch_items(&e.data)
                .iter()
                .map(|i| i["id"].as_u64().unwrap()),
        );
    }
    assert_eq!(replayed, vec![ids[4], later[0], later[1]]);
}

#[tokio::test]
async fn debounce_keeps_the_latest_event_per_key_in_a_window() {
    let (server, mut sse) =
        start_subscribed("batch = { plugin = \"deb\", window = \"300ms\" }", "gauges").await;
    let ids = server
        .publish(json!([
            {"topic": "gauges", "data": {"key": "cpu", "v": 1}},
            {"topic": "gauges", "data": {"key": "mem", "v": 2}},
            {"topic": "gauges", "data": {"key": "cpu", "v": 3}},
            {"topic": "gauges", "data": {"v": 4}},
        ]))
        .await;
    let e = sse.next().await;
    assert_eq!(e.kind, "batch");
    assert_eq!(e.last_id, ids[3].to_string());
    let got: Vec<Value> = batch_items(&e.data)
        .into_iter()
        .map(|i| i["data"].clone())
        .collect();
    assert_eq!(
        got,
        vec![
            json!({"key": "mem", "v": 2}),
            json!({"key": "cpu", "v": 3}),
            json!({"v": 4}),
        ]
    );
}

#[tokio::test]
async fn gzip_envelopes_only_for_subscribers_that_ask_and_only_above_the_threshold() {
    let server = start(
        r#"
[[stream]]
path = "/events"
compress = { plugin = "gz" }
"#,
    )
    .await;
    let mut gz = server
        .sse("/events?topic=t&accept-encoding=gzip", &[])
        .await;
    let mut by_header = server
        .sse(
            "/events?topic=t",
            &[("x-spout-accept-encoding", "br, gzip")],
        )
        .await;
    let mut plain = server.sse("/events?topic=t", &[]).await;
    for s in [&mut gz, &mut by_header, &mut plain] {
        s.connected().await;
    }
    let big = json!({"rows": (0..200).map(|i| json!({"i": i, "name": "row"})).collect::<Vec<_>>()});
    let text = "line one\nline two ".repeat(40);
    let ids = server
        .publish(json!([
            {"topic": "t", "data": big},
            {"topic": "t", "data": {"small": true}},
            {"topic": "t", "type": "log", "data": text},
        ]))
        .await;
    for s in [&mut gz, &mut by_header] {
        let got = s.events(3).await;
        assert_eq!(support::ids(&got), ids);
        assert_eq!(
            serde_json::from_str::<Value>(&gunzip_envelope(&got[0].data)).unwrap(),
            big
        );
        assert!(
            got[0].data.len() < big.to_string().len() / 3,
            "compressed: {}",
            got[0].data.len()
        );
        // Below min_bytes: unchanged.
        assert_eq!(got[1].data, r#"{"small":true}"#);
        // Text data round-trips to the same text, type kept.
        assert_eq!(got[2].kind, "log");
        assert_eq!(gunzip_envelope(&got[2].data), text);
    }
    let got = plain.events(3).await;
    assert_eq!(serde_json::from_str::<Value>(&got[0].data).unwrap(), big);
    assert_eq!(got[2].data, text);
    assert!(!String::from_utf8_lossy(&plain.raw).contains("compressed"));
}

#[tokio::test]
async fn batch_then_gzip_compresses_the_batch_frame_and_replay_is_shaped_too() {
    let server = start(
        r#"
[[stream]]
path = "/events"
batch = { plugin = "b", window = "200ms", max = 100 }
compress = { plugin = "gz" }
"#,
    )
    .await;
    let events: Vec<Value> = (0..30)
        .map(|i| json!({"topic": "t", "data": {"i": i, "text": "some repeated payload text"}}))
        .collect();
    let ids = server.publish(Value::Array(events)).await;
    // A new subscriber replays the log: shaped the same way.
    let mut sse = server
        .sse("/events?topic=t&lastEventId=0&accept-encoding=gzip", &[])
        .await;
    sse.connected().await;
    let e = sse.next().await;
    assert_eq!(e.kind, "batch");
    assert_eq!(e.last_id, ids[29].to_string());
    let got = batch_items(&gunzip_envelope(&e.data));
    assert_eq!(got.len(), 30);
    assert_eq!(got[7]["data"]["i"], 7);
    assert_eq!(got[29]["id"], ids[29]);
}

#[tokio::test]
async fn a_batch_slot_must_name_a_batch_plugin() {
    warm();
    let (ok, stderr) = check(&format!(
        "{PLUGINS}\n[[stream]]\npath = \"/events\"\nbatch = {{ plugin = \"gz\", window = \"1s\" }}\n"
    ));
    assert!(!ok);
    assert!(stderr.contains("stream[0].batch.plugin"), "{stderr}");
    assert!(stderr.contains("compress plugin"), "{stderr}");
    let (ok, stderr) = check(&format!(
        "{PLUGINS}\n[[stream]]\npath = \"/events\"\nbatch = {{ plugin = \"b\", window = \"0s\" }}\n"
    ));
    assert!(!ok);
    assert!(stderr.contains("window"), "{stderr}");
}

#[tokio::test]
async fn shutdown_sends_the_open_window_before_saying_goodbye() {
    let (server, mut sse) = start_subscribed(
        "batch = { plugin = \"b\", window = \"1h\", max = 1000 }",
        "t",
    )
    .await;
    let ids = server
        .publish(json!([{"topic": "t", "data": 1}, {"topic": "t", "data": 2}]))
        .await;
    // Let the stream take both into its (hour-long) window.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let stopping = tokio::spawn(server.stop());
    let e = sse.next().await;
    assert_eq!(e.kind, "batch");
    assert_eq!(batch_items(&e.data).len(), 2);
    let bye = sse.next().await;
    assert_eq!(bye.kind, "shutdown");
    let bye: Value = serde_json::from_str(&bye.data).unwrap();
    assert_eq!(bye["last_id"], ids[1]);
    stopping.await.unwrap();
}

/// Calls the stock `gzip` instance `gz` has served so far.
async fn gz_calls(server: &Server) -> u64 {
    let (_, stats) = server.get_json("/stats").await;
    stats["pipeline"]["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "gz")
        .unwrap_or_else(|| panic!("no gz in {stats}"))["calls"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn a_route_encodes_each_event_once_for_all_its_subscribers() {
    let (server, mut first) =
        start_subscribed("compress = { plugin = \"gz\" }", "t&accept-encoding=gzip").await;
    let big = |i: u32| json!({"i": i, "rows": vec!["the same row of text"; 40]});
    let ids = server
        .publish(json!([{"topic": "t", "data": big(1)}, {"topic": "t", "data": big(2)}]))
        .await;
    let got = first.events(2).await;
    assert_eq!(support::ids(&got), ids);
    assert_eq!(gz_calls(&server).await, 2, "one call per event");
    // Three more subscribers replay the same events: served from the
    // route's envelopes, identical bytes, no further plugin calls.
    for _ in 0..3 {
        let mut late = server
            .sse("/events?topic=t&accept-encoding=gzip&lastEventId=0", &[])
            .await;
        late.connected().await;
        let again = late.events(2).await;
        assert_eq!(again, got);
        assert_eq!(
            serde_json::from_str::<Value>(&gunzip_envelope(&again[1].data)).unwrap(),
            big(2)
        );
    }
    assert_eq!(gz_calls(&server).await, 2, "still one call per event");
}
