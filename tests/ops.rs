//! Operations: health, readiness, stats, metrics, CORS, graceful shutdown, and
//! the command line (`spout check`, `spout serve`).

use crate::support;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::json;
use std::process::Command;
use std::time::Duration;
use support::*;

#[tokio::test]
async fn health_readiness_stats_and_metrics() {
    let server = Server::start(|c| c.server.insecure_user_param = true).await;
    assert_eq!(
        server.get_json("/healthz").await,
        (StatusCode::OK, json!({"status":"ok"}))
    );
    assert_eq!(
        server.get_json("/readyz").await,
        (StatusCode::OK, json!({"status":"ready"}))
    );
    let mut a = server.sse("/events?topic=m&user=u1", &[]).await;
    let mut b = server
        .sse("/events?topic=m/*&user=u2", &[("last-event-id", "0")])
        .await;
    a.connected().await;
    b.connected().await;
    server
        .publish(json!([{"topic":"m","data":1},{"topic":"m/x","data":2}]))
        .await;
    a.events(1).await;
    b.events(1).await;

    let (_, stats) = server.get_json("/stats").await;
    assert_eq!(stats["connections"], 2);
    assert_eq!(stats["peak_connections"], 2);
    assert_eq!(stats["users"], 2);
    assert_eq!(stats["topics"], 2);
    assert_eq!(stats["log"]["first_id"], 1);
    assert_eq!(stats["log"]["last_id"], 2);
    assert_eq!(stats["log"]["events"], 2);
    assert!(stats["log"]["bytes"].as_u64().unwrap() > 0);

    let (status, headers, page) =
        body_bytes(request(server.addr, Method::GET, "/", &[], Bytes::new()).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let page = String::from_utf8_lossy(&page);
    for url in [
        "/stats",
        "/metrics",
        "/api/topics",
        "/api/presence",
        "/api/events",
    ] {
        assert!(page.contains(url), "the console reads {url}");
    }
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "the console loads nothing from elsewhere"
    );

    let names = [
        "spout_connections ",
        "spout_connections_total ",
        "spout_events_published_total{topic=\"m\"}",
        "spout_events_delivered_total{topic=\"m/x\"}",
        "spout_events_replayed_total",
        "spout_log_append_seconds_bucket",
        "spout_log_events ",
        "spout_log_bytes ",
        "spout_log_last_id ",
    ];
    // The recorder is process-wide and other tests render it concurrently:
    // ask again briefly before calling a series missing.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, headers, body) =
            body_bytes(request(server.addr, Method::GET, "/metrics", &[], Bytes::new()).await)
                .await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        let text = String::from_utf8(body.to_vec()).unwrap();
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !text.contains(n))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing {missing:?} in\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn cors_follows_the_config() {
    let server = Server::start(|c| {
        c.server.cors.origins = vec!["http://app.test".into()];
        c.server.cors.credentials = true;
    })
    .await;
    let preflight = request(
        server.addr,
        Method::OPTIONS,
        "/publish",
        &[
            ("origin", "http://app.test"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ],
        Bytes::new(),
    )
    .await;
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "http://app.test");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert!(h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    assert_eq!(h["access-control-allow-headers"], "content-type");

    let sse = server
        .sse("/events?topic=c", &[("origin", "http://app.test")])
        .await;
    assert_eq!(
        sse.headers["access-control-allow-origin"],
        "http://app.test"
    );
    let other = server
        .sse("/events?topic=c", &[("origin", "http://evil.test")])
        .await;
    assert!(other.headers.get("access-control-allow-origin").is_none());
    server.stop().await;

    // Default: same-origin only, no CORS headers at all.
    let server = Server::start(|_| {}).await;
    let sse = server
        .sse("/events?topic=c", &[("origin", "http://app.test")])
        .await;
    assert!(sse.headers.get("access-control-allow-origin").is_none());
    server.stop().await;
}

#[tokio::test]
async fn shutdown_sends_a_final_frame_and_ends_streams() {
    let server = Server::start(|_| {}).await;
    let mut sse = server.sse("/events?topic=bye", &[]).await;
    sse.connected().await;
    server.publish(json!({"topic":"bye","data":"last"})).await;
    assert_eq!(sse.events(1).await[0].data, "last");
    let stopping = tokio::spawn(server.stop());
    let frame = sse.next().await;
    assert_eq!(frame.kind, "shutdown");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&frame.data).unwrap(),
        json!({"last_id": 1})
    );
    assert!(
        sse.next_or_end().await.is_none(),
        "stream ends after shutdown"
    );
    tokio::time::timeout(WAIT, stopping).await.unwrap().unwrap();
}

#[tokio::test]
async fn binary_logs_its_address_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "[server]\nshutdown_grace = \"2s\"\n").unwrap();
    let mut proc = spawn_binary(&cfg, &dir.path().join("data"));
    assert_ne!(proc.addr.port(), 0, "the real bound port is logged");
    let mut sse = Sse::open(proc.addr, "/events?topic=t", &[]).await;
    sse.connected().await;
    let status = Command::new("kill")
        .args(["-TERM", &proc.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(sse.next().await.kind, "shutdown");
    let deadline = std::time::Instant::now() + WAIT;
    let code = loop {
        if let Some(code) = proc.child.try_wait().unwrap() {
            break code;
        }
        assert!(std::time::Instant::now() < deadline, "did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        code.success(),
        "exit status {code}; log:\n{}",
        proc.stderr.lock().unwrap()
    );
}

#[test]
fn check_reports_file_line_column_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[server]\nlisten = \"127.0.0.1:9999\"\n").unwrap();
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"127.0.0.1:9999\"\n\n[log]\nfsync = \"sometimes\"\n",
    )
    .unwrap();
    for args in [vec!["check", "--config"], vec!["serve", "--config"]] {
        let out = Command::new(bin()).args(&args).arg(&bad).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{}:5:9:", bad.display())), "{err}");
        assert!(err.contains("`log.fsync`"), "{err}");
    }
    let out = Command::new(bin())
        .args(["check", "--config", "/nonexistent/spout.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/spout.toml"));
}

#[test]
fn the_root_config_is_valid() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config.toml");
    // The check loads the config's plugins; keep their compiled artifacts in
    // the tests' cache, not in the repository's data directory.
    let out = Command::new(bin())
        .args(["check", "--config", root])
        .env("SPOUT_PLUGIN_CACHE", plugin_cache())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `/favicon.ico` is Spout's icon, not a 404 on every page a browser opens.
#[tokio::test]
async fn favicon_is_an_icon() {
    let server = Server::start(|_| {}).await;
    let resp = request(server.addr, http::Method::GET, "/favicon.ico", &[], "").await;
    let (status, headers, body) = body_bytes(resp).await;
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(headers["content-type"], "image/png");
    assert!(body.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    server.stop().await;
}
