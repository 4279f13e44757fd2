//! Event sources end to end with the stock plugins: a tailed file (lines
//! appended, rotated, truncated, and across a restart — each once, in
//! order), a GitHub webhook (HMAC checked), the ticker, and `redact` as a
//! source transform. Also `[[static]]` files and `/poll?wait=` long polls.

use crate::support;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use support::*;

const PLUGINS: &str = r#"
[plugins.applog]
use = "builtin:lines"
config = { topic = "logs", json = true, route_by = "service" }

[plugins.redact]
use = "builtin:redact"
config = { fields = ["password", "user.email"] }

[plugins.gh]
use = "builtin:github-webhook"
config = { secret = "${GH_TEST_SECRET}" }

[plugins.tick]
use = "builtin:ticker"
config = { topic = "ops/ticker" }
"#;

/// Warms the shared compiled-plugin cache once.
fn warm() {
    static WARM: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    WARM.get_or_init(|| {
        let (ok, stderr) = check_env(PLUGINS, &[("GH_TEST_SECRET", "x")]);
        assert!(ok, "{stderr}");
    });
}

fn set_secret() {
    // SAFETY: every test of this module sets the same value before the
    // server reads it; nothing else reads this variable.
    unsafe { std::env::set_var("GH_TEST_SECRET", "It's a Secret to Everybody") };
}

async fn start(extra: &str) -> Server {
    warm();
    set_secret();
    Server::start_toml(&format!("{PLUGINS}\n{extra}")).await
}

/// Restarts a `start_toml` server from its own config file and data dir.
async fn restart(server: Server) -> (Server, tempfile::TempDir) {
    let tmp = server.stop().await.expect("start_toml keeps its dir");
    let mut cfg = spout::config::Config::load(&tmp.path().join("config.toml")).unwrap();
    cfg.log.path = tmp.path().join("data");
    cfg.plugin_cache = Some(plugin_cache());
    cfg.server.shutdown_grace = Duration::from_secs(2);
    let server = Server::start_in(tmp.path(), move |c| *c = cfg).await;
    (server, tmp)
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
}

/// Every event in the log on `topic` (`/poll`), as (type, data JSON).
async fn logged(server: &Server, topic: &str) -> Vec<Value> {
    let (status, page) = server
        .get_json(&format!("/poll?topic={topic}&after=0&limit=1000"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["events"].as_array().unwrap().clone()
}

async fn wait_logged(server: &Server, topic: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let got = logged(server, topic).await;
        if got.len() >= n || std::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn field(events: &[Value], name: &str) -> Vec<Value> {
    events.iter().map(|e| e["data"][name].clone()).collect()
}

#[tokio::test]
async fn a_tailed_file_is_followed_through_rotation_truncation_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    // Written before start-up: not sent (the tail starts at the end).
    append(&log, "{\"n\":0}\n");
    let server = start(&format!(
        "[[source]]\nplugin = \"applog\"\ntail = {:?}\ntransforms = [\"redact\"]\n",
        log.display().to_string()
    ))
    .await;
    let mut sse = server.sse("/events?topic=logs/**&topic=logs", &[]).await;
    sse.connected().await;
    // Let the driver take its starting position before writing.
    tokio::time::sleep(Duration::from_millis(700)).await;

    append(
        &log,
        "{\"n\":1,\"password\":\"hunter2\",\"user\":{\"email\":\"a@b.c\",\"name\":\"ann\"}}\n",
    );
    // A line written in two parts is one line.
    append(&log, "{\"n\":2,\"service\":\"api\"");
    tokio::time::sleep(Duration::from_millis(600)).await;
    append(&log, "}\nplain text line\n");
    let got = sse.events(3).await;
    let first: Value = serde_json::from_str(&got[0].data).unwrap();
    assert_eq!(first["password"], "***", "redacted before it was stored");
    assert_eq!(first["user"], json!({"email": "***", "name": "ann"}));
    assert_eq!(got[0].kind, "line");
    assert_eq!(serde_json::from_str::<Value>(&got[1].data).unwrap()["n"], 2);
    assert_eq!(got[2].data, r#"{"line":"plain text line"}"#);

    // Rotation: one more line to the old file, renamed away, a new file.
    append(&log, "{\"n\":3}\n");
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    append(&log, "{\"n\":4}\n{\"n\":5}\n");
    let got = sse.events(3).await;
    let ns: Vec<Value> = got
        .iter()
        .map(|e| serde_json::from_str::<Value>(&e.data).unwrap()["n"].clone())
        .collect();
    assert_eq!(ns, vec![json!(3), json!(4), json!(5)]);

    // Truncation (copytruncate-style): read again from the start.
    std::fs::write(&log, "").unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    append(&log, "{\"n\":6}\n");
    let got = sse.events(1).await;
    assert_eq!(serde_json::from_str::<Value>(&got[0].data).unwrap()["n"], 6);
    drop(sse);

    // Restart: a line written while Spout is down is sent once, nothing twice.
    let (server, _tmp) = restart(server).await;
    append(&log, "{\"n\":7}\n");
    let all = wait_logged(&server, "logs/**&topic=logs", 8).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let all_again = logged(&server, "logs/**&topic=logs").await;
    assert_eq!(all.len(), all_again.len(), "no late duplicates");
    let ns = field(&all_again, "n");
    assert_eq!(
        ns,
        vec![
            json!(1),
            json!(2),
            Value::Null,
            json!(3),
            json!(4),
            json!(5),
            json!(6),
            json!(7)
        ],
        "{all_again:?}"
    );
    assert_eq!(
        all_again[1]["topic"], "logs/api",
        "routed by the service field"
    );
    let (_, stats) = server.get_json("/stats").await;
    assert!(stats["pipeline"]["sources"][0]["tail"]
        .as_str()
        .unwrap()
        .ends_with("app.log"));
}

fn sign(body: &[u8], secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

async fn hook(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (StatusCode, Value) {
    let resp = request(
        server.addr,
        Method::POST,
        path,
        headers,
        Bytes::copy_from_slice(body),
    )
    .await;
    let (status, _, bytes) = body_bytes(resp).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_github_webhook_publishes_only_with_a_valid_signature() {
    let server = start("[[source]]\nplugin = \"gh\"\nwebhook = \"github\"\n").await;
    let mut sse = server.sse("/events?topic=github/**", &[]).await;
    sse.connected().await;
    let body = br#"{"ref":"refs/heads/main","repository":{"full_name":"acme/shop"},"pusher":{"name":"ann"}}"#;
    let good = sign(body, "It's a Secret to Everybody");

    let bad = sign(body, "wrong secret");
    for headers in [
        vec![
            ("x-github-event", "push"),
            ("x-hub-signature-256", bad.as_str()),
        ],
        vec![("x-github-event", "push")],
        vec![
            ("x-github-event", "push"),
            ("x-hub-signature-256", "sha256=zz"),
        ],
    ] {
        let (status, err) = hook(&server, "/hooks/github", &headers, body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");
        assert_eq!(err["error"], "rejected_by_source");
    }
    // A body changed after signing fails too.
    let mut tampered = body.to_vec();
    tampered[10] = b'X';
    let (status, _) = hook(
        &server,
        "/hooks/github",
        &[("x-github-event", "push"), ("x-hub-signature-256", &good)],
        &tampered,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        logged(&server, "github/**").await.is_empty(),
        "nothing published"
    );

    let (status, ok) = hook(
        &server,
        "/hooks/github",
        &[
            ("x-github-event", "push"),
            ("x-hub-signature-256", &good),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ok}");
    assert_eq!(ok["ids"].as_array().unwrap().len(), 1);
    let e = sse.next().await;
    assert_eq!(e.kind, "push");
    assert_eq!(e.last_id, ok["ids"][0].to_string());
    let data: Value = serde_json::from_str(&e.data).unwrap();
    assert_eq!(data["pusher"]["name"], "ann");
    assert_eq!(logged(&server, "github/acme/shop").await.len(), 1);

    let (status, _) = hook(&server, "/hooks/nope", &[], body).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let resp = request(server.addr, Method::GET, "/hooks/github", &[], Bytes::new()).await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn the_ticker_reports_server_figures() {
    let server = start("[[source]]\nplugin = \"tick\"\nevery = \"200ms\"\n").await;
    let mut sse = server.sse("/events?topic=ops/ticker", &[]).await;
    sse.connected().await;
    // The figures are sampled every second: within a few ticks this
    // subscriber is counted.
    let mut seen = Vec::new();
    for _ in 0..25 {
        let e = sse.next().await;
        assert_eq!(e.kind, "tick");
        let d: Value = serde_json::from_str(&e.data).unwrap();
        assert!(d["time"].as_u64().unwrap() > 1_600_000_000_000, "{d}");
        assert!(
            d["uptime_ms"].is_u64() && d["events_per_second"].is_number(),
            "{d}"
        );
        seen.push(d);
        if seen.last().unwrap()["connections"].as_u64() >= Some(1)
            && seen.last().unwrap()["events_total"].as_u64() >= Some(1)
        {
            break;
        }
    }
    let last = seen.last().unwrap();
    assert!(last["connections"].as_u64() >= Some(1), "{seen:?}");
    assert!(last["events_total"].as_u64() >= Some(1), "{seen:?}");
}

#[tokio::test]
async fn static_files_with_types_and_no_way_out() {
    warm();
    let tmp = tempfile::tempdir().unwrap();
    let public = tmp.path().join("public");
    std::fs::create_dir_all(public.join("js")).unwrap();
    std::fs::write(public.join("index.html"), "<h1>hi</h1>").unwrap();
    std::fs::write(public.join("js/app.mjs"), "export const x = 1;").unwrap();
    std::fs::write(public.join(".env"), "SECRET=1").unwrap();
    std::fs::write(tmp.path().join("secret.txt"), "do not serve").unwrap();
    let text = "[server]\nconsole = false\n\n[[static]]\npath = \"/app\"\ndir = \"public\"\n\n[[static]]\npath = \"/\"\ndir = \"public\"\n";
    std::fs::write(tmp.path().join("config.toml"), text).unwrap();
    let mut cfg = spout::config::Config::load(&tmp.path().join("config.toml")).unwrap();
    cfg.log.path = tmp.path().join("data");
    let server = Server::start_in(tmp.path(), move |c| *c = cfg).await;

    let addr = server.addr;
    let get = |path: &'static str| async move {
        body_bytes(request(addr, Method::GET, path, &[], Bytes::new()).await).await
    };
    let (status, headers, body) = get("/app/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(&body[..], b"<h1>hi</h1>");
    let (status, headers, _) = get("/app").await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(headers["location"], "/app/");
    let (status, headers, body) = get("/app/js/app.mjs").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(&body[..], b"export const x = 1;");
    // The console is off: `/` is the static route.
    let (status, _, body) = get("/").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"<h1>hi</h1>"[..]));
    for bad in [
        "/app/../secret.txt",
        "/app/%2e%2e/secret.txt",
        "/app/%2E%2E%2Fsecret.txt",
        "/app/js/..%2f..%2fsecret.txt",
        "/app/.env",
        "/app/%2eenv",
        "/app/..%5csecret.txt",
        "/app/nope.html",
        "/../secret.txt",
    ] {
        let (status, headers, body) = get(bad).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}");
        assert_eq!(headers["content-type"], "application/json", "{bad}");
        assert!(!String::from_utf8_lossy(&body).contains("do not serve"));
    }
    let (status, _, _) = body_bytes(
        request(
            server.addr,
            Method::POST,
            "/app/index.html",
            &[],
            Bytes::new(),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    // Spout's own routes still answer.
    let (status, _) = server.get_json("/stats").await;
    assert_eq!(status, StatusCode::OK);

    // A static route may not shadow the console or a missing directory.
    let (ok, stderr) = check("[[static]]\npath = \"/\"\ndir = \".\"\n");
    assert!(!ok && stderr.contains("static[0].path"), "{stderr}");
    let (ok, stderr) = check("[[static]]\npath = \"/x\"\ndir = \"no-such-dir\"\n");
    assert!(!ok && stderr.contains("static[0].dir"), "{stderr}");
}

#[tokio::test]
async fn a_long_poll_answers_when_an_event_arrives() {
    let server = Server::start(|_| {}).await;
    let first = server.publish(json!({"topic": "t", "data": 1})).await[0];
    let addr = server.addr;
    let waiting = tokio::spawn(async move {
        get_json(addr, &format!("/poll?topic=t&after={first}&wait=10")).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the poll waits for new events");
    let id = server.publish(json!({"topic": "t", "data": 2})).await[0];
    let (status, page) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["events"][0]["id"], id);
    assert_eq!(page["next"], id);
    // Without `wait` it answers at once, and `wait` is bounded.
    let (_, page) = server.get_json(&format!("/poll?topic=t&after={id}")).await;
    assert_eq!(page["events"], json!([]));
    let (status, err) = server.get_json("/poll?topic=t&wait=31").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_wait");
}

#[tokio::test]
async fn a_poll_past_the_head_gets_a_reset_and_long_polls_end_at_shutdown() {
    let server = Server::start(|_| {}).await;
    let id = server.publish(json!({"topic": "t", "data": 1})).await[0];
    let (status, page) = server
        .get_json(&format!("/poll?topic=t&after={}&wait=10", id + 100))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["reset"]["requested"], id + 100, "{page}");
    assert_eq!(page["next"], id);

    let addr = server.addr;
    let waiting =
        tokio::spawn(
            async move { get_json(addr, &format!("/poll?topic=t&after={id}&wait=30")).await },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    server.stop().await;
    let (status, page) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["events"], json!([]));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered at shutdown, not at its deadline"
    );
}
