//! The runnable examples in examples/notifications, examples/dashboard and
//! examples/logs: each config passes `spout check` as shipped; each runs
//! here from a copy of its directory (so nothing is written into the
//! repository) on the real server, observed over HTTP, SSE and — for the
//! two pages — Debian's headless Chromium driven by playwright-core
//! (tests/browser/examples.mjs). Screenshots are kept in
//! `target/test-artifacts/` (notifications.png, dashboard.png).
//!
//! The browser tests install what they need when missing (`apt-get install
//! chromium`, `npm ci` in tests/browser); with `CI=true` a missing browser
//! or node fails them, elsewhere they are skipped with a note.

use crate::browser::{browser_dir, tools};
use crate::support;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use spout::app::App;
use spout::config::Config;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Largest batch frame the dashboard may send uncompressed: gzip's
/// `min_bytes` is 256, and the host sends a frame plain when its envelope
/// (base64 plus ~55 bytes) would not be smaller, which happens up to a few
/// hundred bytes (two ticks, ~270 bytes, were seen plain).
const PLAIN_MAX: usize = 512;

/// The secret the notifications example's README states for development.
const DEMO_SECRET: &str = "spout-notifications-demo-secret-0123456789";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn example(name: &str) -> PathBuf {
    repo().join("examples").join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Copies `examples/NAME` (without its `data/` or `app.log` from a local
/// run) into `into/NAME`.
fn copy_example(name: &str, into: &Path) -> PathBuf {
    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let file_name = entry.file_name();
            if file_name == "data" || file_name == "app.log" || file_name == "node_modules" {
                continue;
            }
            let target = to.join(&file_name);
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
    let dir = into.join(name);
    copy_dir(&example(name), &dir);
    dir
}

/// A copy of the notifications or dashboard example beside a copy of the
/// shared client (`[[static]] dir = "../client"` resolves as in the repo),
/// with `${SPOUT_JWT_SECRET}` written out (the in-process server reads
/// the environment of the whole test process, which tests must not change).
fn copy_page_example(name: &str, into: &Path) -> PathBuf {
    copy_example("client", into);
    let dir = copy_example(name, into);
    let file = dir.join("config.toml");
    let text = read(&file).replace("\"${SPOUT_JWT_SECRET}\"", &format!("\"{DEMO_SECRET}\""));
    std::fs::write(&file, text).unwrap();
    dir
}

/// Runs `spout check` on an example's own config file.
fn check_example(name: &str, env: &[(&str, &str)]) -> String {
    let file = example(name).join("config.toml");
    let out = Command::new(bin())
        .arg("check")
        .arg(&file)
        .env("SPOUT_LOG", "warn")
        .env("SPOUT_PLUGIN_CACHE", plugin_cache())
        .env_remove("SPOUT_JWT_SECRET")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(": ok ("), "{stdout}");
    stdout
}

/// The README's one command, exactly as a reader would type it.
fn assert_readme_runs(name: &str, command: &str) {
    let readme = read(&example(name).join("README.md"));
    assert!(
        readme.contains(command),
        "examples/{name}/README.md should show `{command}`"
    );
}

// ---------------------------------------------------------------------------
// The server from an example's config, in this process, on an address of
// our choosing: stopped and started again on the same port and data dir,
// as a restarted process would be.

struct Hub {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<Result<(), spout::server::ServerError>>>,
}

impl Hub {
    /// Opens the log and pipeline of `dir/config.toml` (its `data/`), not
    /// serving yet.
    async fn open(dir: &Path) -> Arc<App> {
        let mut cfg = Config::load(&dir.join("config.toml")).unwrap_or_else(|e| panic!("{e}"));
        cfg.server.shutdown_grace = Duration::from_secs(2);
        cfg.plugin_cache = Some(plugin_cache());
        // The previous server on this dir may still be releasing sled's lock.
        let deadline = Instant::now() + WAIT;
        loop {
            match App::open(cfg.clone()) {
                Ok(app) => return app,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("retrying open: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot open the log: {e}"),
            }
        }
    }

    /// Serves `app` on `addr` (port 0: a free one).
    async fn serve(app: Arc<App>, addr: SocketAddr) -> Hub {
        let deadline = Instant::now() + WAIT;
        let listener = loop {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_reuseaddr(true).unwrap();
            match socket.bind(addr).and_then(|()| socket.listen(1024)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("retrying bind {addr}: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot bind {addr}: {e}"),
            }
        };
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let join = tokio::spawn(spout::server::run(listener, app.clone(), async move {
            let _ = rx.await;
        }));
        Hub {
            addr,
            stop: Some(tx),
            join: Some(join),
        }
    }

    async fn start(dir: &Path, addr: SocketAddr) -> Hub {
        Hub::serve(Hub::open(dir).await, addr).await
    }

    /// Graceful shutdown: streams get `event: shutdown`, the log is closed.
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(join) = self.join.take() {
            tokio::time::timeout(WAIT, join)
                .await
                .expect("server did not stop in time")
                .unwrap()
                .unwrap();
        }
    }
}

/// `POST /publish` as `token`'s holder; (status, JSON answer).
async fn publish_as(addr: SocketAddr, token: &str, body: &Value) -> (StatusCode, Value) {
    let auth = format!("Bearer {token}");
    let resp = request(
        addr,
        Method::POST,
        "/publish",
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        body.to_string(),
    )
    .await;
    let (status, _, bytes) = body_bytes(resp).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// `POST /publish` on a hub without publish auth; the ids.
async fn publish_open(addr: SocketAddr, body: Value) -> Vec<u64> {
    let (status, answer) = post(addr, "/publish", "application/json", body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

/// `POST /publish` handed to the server's request handler directly, while
/// it is not listening: what a backend publishes while the hub is down for
/// its subscribers (and up again for its publishers) a moment before them.
async fn publish_unlistened(app: &Arc<App>, token: &str, body: &Value) -> Vec<u64> {
    let req = Request::builder()
        .method(Method::POST)
        .uri("/publish")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let conn = spout::http::Conn {
        peer: "127.0.0.1:1".parse().unwrap(),
        kill: tokio_util::sync::CancellationToken::new(),
    };
    let resp = spout::http::handle(app.clone(), conn, req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

/// A token from the example's own script (bash + openssl), signed with the
/// demo secret: `mint-token.sh alice` or `mint-token.sh --publisher`.
fn mint(arg: &str) -> String {
    let out = Command::new("bash")
        .arg(example("notifications").join("mint-token.sh"))
        .arg(arg)
        .env("SPOUT_JWT_SECRET", DEMO_SECRET)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "mint-token.sh {arg}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "{token}");
    token
}

/// Reads the next non-control event, or `None` when nothing more arrives
/// within `quiet`.
async fn next_within(sse: &mut Sse, quiet: Duration) -> Option<spout::sse::parse::Received> {
    let deadline = tokio::time::Instant::now() + quiet;
    loop {
        match tokio::time::timeout_at(deadline, sse.next_or_end()).await {
            Ok(Some(e)) if is_control(&e.kind) => continue,
            Ok(Some(e)) => return Some(e),
            Ok(None) | Err(_) => return None,
        }
    }
}

// ---------------------------------------------------------------------------
// spout check

#[test]
fn notifications_config_passes_check_with_the_secret_from_the_environment() {
    check_example("notifications", &[("SPOUT_JWT_SECRET", DEMO_SECRET)]);
    assert_readme_runs(
        "notifications",
        "cargo run --release -- serve --config examples/notifications/config.toml",
    );
    // Without the secret the config names what is missing.
    let out = Command::new(bin())
        .arg("check")
        .arg(example("notifications").join("config.toml"))
        .env("SPOUT_LOG", "warn")
        .env("SPOUT_PLUGIN_CACHE", plugin_cache())
        .env_remove("SPOUT_JWT_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SPOUT_JWT_SECRET"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The README states the secret the script signs with by default.
    let readme = read(&example("notifications").join("README.md"));
    assert!(readme.contains(DEMO_SECRET));
    assert!(read(&example("notifications").join("mint-token.sh")).contains(DEMO_SECRET));
}

#[test]
fn dashboard_config_passes_check() {
    check_example("dashboard", &[]);
    assert_readme_runs(
        "dashboard",
        "cargo run --release -- serve --config examples/dashboard/config.toml",
    );
}

#[test]
fn logs_config_passes_check() {
    check_example("logs", &[]);
    assert_readme_runs(
        "logs",
        "cargo run --release -- serve --config examples/logs/config.toml",
    );
}

// ---------------------------------------------------------------------------
// logs: app.log → lines (json) → redact → the log → /events?topic=logs

fn append(file: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(file)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.flush().unwrap();
}

#[tokio::test]
async fn logs_are_tailed_redacted_and_streamed_in_order_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_example("logs", tmp.path());
    let app_log = dir.join("app.log");
    let hub = Hub::start(&dir, "127.0.0.1:0".parse().unwrap()).await;
    let mut sse = Sse::open(hub.addr, "/events?topic=logs", &[]).await;
    assert_eq!(sse.status, StatusCode::OK);
    sse.connected().await;

    // Three lines in one write, then a line split across two writes (the
    // tail keeps the partial line until its end arrives), then one more.
    append(
        &app_log,
        concat!(
            r#"{"level":"info","msg":"login","user":{"name":"ada","email":"ada@example.com"},"password":"hunter2"}"#,
            "\n",
            r#"{"level":"error","msg":"card declined","user":{"name":"bob","email":"bob@example.com"},"amount":12.50}"#,
            "\n",
            "plain text, not JSON\n",
        ),
    );
    append(&app_log, r#"{"level":"warn","msg":"slow login","pass"#);
    tokio::time::sleep(Duration::from_millis(700)).await;
    append(&app_log, "word\":\"p4ss\",\"ms\":1200}\n\n");
    append(
        &app_log,
        r#"{"msg":"no level","user":{"email":"eve@example.com","roles":["admin"]},"password":null}"#,
    );
    append(&app_log, "\n");

    let got = sse.events(5).await;
    let kinds: Vec<&str> = got.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["info", "error", "line", "warn", "line"]);
    let data: Vec<Value> = got
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert_eq!(
        data,
        [
            json!({"level":"info","msg":"login","user":{"name":"ada","email":"***"},"password":"***"}),
            json!({"level":"error","msg":"card declined","user":{"name":"bob","email":"***"},"amount":12.50}),
            json!({"line":"plain text, not JSON"}),
            json!({"level":"warn","msg":"slow login","password":"***","ms":1200}),
            json!({"msg":"no level","user":{"email":"***","roles":["admin"]},"password":"***"}),
        ]
    );
    // Untouched members keep their spelling (12.50, not 12.5).
    assert!(got[1].data.contains(r#""amount":12.50"#), "{}", got[1].data);
    let ids = ids(&got);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(
        next_within(&mut sse, Duration::from_millis(1200)).await,
        None
    );
    let raw = String::from_utf8_lossy(&sse.raw).into_owned();
    for secret in ["hunter2", "p4ss", "@example.com"] {
        assert!(
            !raw.contains(secret),
            "{secret} reached a subscriber: {raw}"
        );
    }

    // What is stored is masked too: replay and /poll never see a secret.
    let (status, page) = get_json(hub.addr, "/poll?topic=logs&after=0").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["events"].as_array().unwrap().len(), 5, "{page}");
    assert!(!page.to_string().contains("@example.com"), "{page}");
    // A subscriber narrowed with filter-match, replaying from the start.
    let mut errors = Sse::open(
        hub.addr,
        "/events?topic=logs&where=level:in:warn,error&lastEventId=0",
        &[],
    )
    .await;
    errors.connected().await;
    let narrowed = errors.events(2).await;
    assert_eq!(support::ids(&narrowed), [ids[1], ids[3]]);
    drop(errors);

    // Restarted, the tail goes on where it stopped: no line again, none lost.
    drop(sse);
    hub.stop().await;
    append(
        &app_log,
        "{\"level\":\"info\",\"msg\":\"while down\",\"password\":\"x\"}\n",
    );
    let hub = Hub::start(&dir, "127.0.0.1:0".parse().unwrap()).await;
    let mut sse = Sse::open(
        hub.addr,
        &format!("/events?topic=logs&lastEventId={}", ids[4]),
        &[],
    )
    .await;
    sse.connected().await;
    append(&app_log, "{\"level\":\"info\",\"msg\":\"after\"}\n");
    let more = sse.data(2).await;
    assert_eq!(
        more,
        [
            r#"{"level":"info","msg":"while down","password":"***"}"#,
            r#"{"level":"info","msg":"after"}"#,
        ]
    );
    assert_eq!(
        next_within(&mut sse, Duration::from_millis(1000)).await,
        None
    );
    drop(sse);
    hub.stop().await;
}

// ---------------------------------------------------------------------------
// notifications over HTTP: who receives what, who may publish

#[tokio::test]
async fn notifications_reach_only_their_user_and_user_tokens_cannot_publish() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_page_example("notifications", tmp.path());
    let hub = Hub::start(&dir, "127.0.0.1:0".parse().unwrap()).await;
    let (alice, bob, backend) =
        tokio::task::spawn_blocking(|| (mint("alice"), mint("bob"), mint("--publisher")))
            .await
            .unwrap();

    let mut a = Sse::open(
        hub.addr,
        &format!("/events?topic=notifications&token={alice}"),
        &[],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    a.connected().await;
    let bearer = format!("Bearer {bob}");
    let mut b = Sse::open(
        hub.addr,
        "/events?topic=notifications",
        &[("authorization", &bearer)],
    )
    .await;
    b.connected().await;

    let (status, answer) = publish_as(
        hub.addr,
        &backend,
        &json!([
            {"topic": "notifications", "type": "notification", "to": "alice", "data": {"title": "for alice"}},
            {"topic": "notifications", "type": "notification", "to": "bob", "data": {"title": "for bob"}},
            {"topic": "notifications", "type": "notification", "data": {"title": "for everyone"}},
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        a.data(2).await,
        [r#"{"title":"for alice"}"#, r#"{"title":"for everyone"}"#]
    );
    assert_eq!(
        b.data(2).await,
        [r#"{"title":"for bob"}"#, r#"{"title":"for everyone"}"#]
    );

    // A user's token is for reading: publishing with it is refused (its
    // audience is not the publishers'), as is publishing without a token.
    let body = json!({"topic": "notifications", "to": "bob", "data": {"title": "spoofed"}});
    let (status, answer) = publish_as(hub.addr, &alice, &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert!(
        answer["detail"].as_str().unwrap().contains("audience"),
        "{answer}"
    );
    let (status, _) = post(hub.addr, "/publish", "application/json", body.to_string()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // No token, another topic: refused before anything streams.
    let (status, _) = get_json(hub.addr, "/events?topic=notifications").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = get_json(hub.addr, &format!("/events?topic=other&token={alice}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The page and the shared client are served beside the streams.
    let (status, _, page) =
        body_bytes(request(hub.addr, Method::GET, "/app/", &[], Bytes::new()).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&page).contains("/client/spout.js"));
    let (status, _, _) =
        body_bytes(request(hub.addr, Method::GET, "/client/spout.js", &[], Bytes::new()).await)
            .await;
    assert_eq!(status, StatusCode::OK);
    drop((a, b));
    hub.stop().await;
}

// ---------------------------------------------------------------------------
// dashboard over HTTP: ticks arrive as gzipped batch frames

/// The items of a batch frame's data, gunzipped when it is an envelope;
/// whether it was.
fn batch_items_of(data: &str) -> (Vec<Value>, bool) {
    if data.starts_with("{\"compressed\":true") {
        (serde_json::from_str(&gunzip_envelope(data)).unwrap(), true)
    } else {
        (serde_json::from_str(data).unwrap(), false)
    }
}

#[tokio::test]
async fn dashboard_stream_batches_ticks_and_activity_and_gzips_big_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_page_example("dashboard", tmp.path());
    let hub = Hub::start(&dir, "127.0.0.1:0".parse().unwrap()).await;
    let query = "/events?topic=spout/ticker&topic=activity";
    let mut gz = Sse::open(hub.addr, &format!("{query}&accept-encoding=gzip"), &[]).await;
    gz.connected().await;
    let mut plain = Sse::open(hub.addr, query, &[]).await;
    plain.connected().await;

    // Ticks come once a second, a window holds one or two: a lone tick is
    // under min_bytes and sent as it is, two are gzipped unless the envelope
    // would not be smaller.
    let e = gz.events(1).await.remove(0);
    assert_eq!(e.kind, "batch");
    let (items, compressed) = batch_items_of(&e.data);
    assert!((1..=2).contains(&items.len()), "{items:?}");
    // Plain: under min_bytes (256), or so small that the gzip envelope
    // (base64 plus ~55 bytes) would not be smaller.
    assert!(compressed || e.data.len() < PLAIN_MAX, "{}", e.data);
    let tick = &items[0];
    assert_eq!(tick["topic"], "spout/ticker");
    assert_eq!(tick["type"], "tick");
    for key in ["time", "connections", "events_total", "uptime_ms"] {
        assert!(tick["data"][key].is_u64(), "{key}: {tick}");
    }
    assert!(tick["data"]["events_per_second"].is_number(), "{tick}");
    assert_eq!(e.last_id, items.last().unwrap()["id"].to_string());

    // A burst: frames of at most 50, gzipped (they are big), every event
    // once and in order, ticks in between.
    let burst: Vec<Value> = (0..120)
        .map(|i| json!({"topic": "activity", "data": {"i": i, "note": "a burst from the test"}}))
        .collect();
    let ids = publish_open(hub.addr, Value::Array(burst)).await;
    for (sse, gzipped) in [(&mut gz, true), (&mut plain, false)] {
        let mut got = Vec::new();
        let mut frames = 0;
        while got.len() < 120 {
            let e = sse.events(1).await.remove(0);
            assert_eq!(e.kind, "batch");
            let (items, compressed) = batch_items_of(&e.data);
            assert!(items.len() <= 50, "{}", items.len());
            assert_eq!(e.last_id, items.last().unwrap()["id"].to_string());
            let activity: Vec<&Value> = items.iter().filter(|i| i["topic"] == "activity").collect();
            if !activity.is_empty() {
                frames += 1;
                assert_eq!(compressed, gzipped, "{}", e.data.len());
            }
            if !compressed {
                // What is not compressed is small, or not asked for.
                assert!(!gzipped || e.data.len() < PLAIN_MAX, "{}", e.data);
            }
            got.extend(activity.into_iter().map(|i| i["id"].as_u64().unwrap()));
        }
        assert_eq!(got, ids, "each event once, in order");
        assert!((3..=4).contains(&frames), "{frames} frames");
    }
    assert!(!String::from_utf8_lossy(&plain.raw).contains("compressed"));
    // On the wire, the envelopes were much smaller than the JSON.
    assert!(
        gz.raw.len() * 2 < plain.raw.len(),
        "{} vs {}",
        gz.raw.len(),
        plain.raw.len()
    );
    drop((gz, plain));
    hub.stop().await;
}

// ---------------------------------------------------------------------------
// The pages in Chromium (tests/browser/examples.mjs)

fn screenshot(name: &str) -> PathBuf {
    let artifacts = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join(name);
    let _ = std::fs::remove_file(&shot);
    shot
}

/// `node examples.mjs MODE URL SCREENSHOT`, spoken to in lines.
struct Page {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Page {
    fn open(chromium: &Path, mode: &str, url: &str, shot: &Path) -> Page {
        let mut child = Command::new("node")
            .arg(browser_dir().join("examples.mjs"))
            .args([mode, url])
            .arg(shot)
            .env("CHROMIUM", chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Page {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    /// The page's next report; fails on its `{"error"}` or after 45 s.
    async fn next(&mut self, step: &str) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(45), self.lines.recv())
            .await
            .unwrap_or_else(|_| panic!("no `{step}` report from the page in 45 s"))
            .unwrap_or_else(|| panic!("the page driver ended before `{step}`"));
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON from node: {line}"));
        assert!(
            v.get("error").is_none(),
            "page driver failed at `{step}`: {}",
            v["error"]
        );
        assert_eq!(v["step"], step, "{v}");
        v
    }

    fn tell(&mut self, line: impl std::fmt::Display) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    async fn finish(mut self) {
        drop(self.stdin.take());
        let status = tokio::task::spawn_blocking(move || self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "node exited with {status}");
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // A failed test must not leave the browser running.
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn titles(state: &Value) -> Vec<String> {
    state["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["title"].as_str().unwrap().to_owned())
        .collect()
}

fn notification(to: &str, title: &str) -> Value {
    json!({"topic": "notifications", "type": "notification", "to": to,
           "data": {"title": title, "body": format!("for {to}")}})
}

#[tokio::test]
async fn notifications_page_shows_alices_toasts_and_count_and_resumes_across_a_restart() {
    let Some(chromium) = tokio::task::spawn_blocking(tools).await.unwrap() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_page_example("notifications", tmp.path());
    let hub = Hub::start(&dir, "127.0.0.1:0".parse().unwrap()).await;
    let addr = hub.addr;
    let (alice, backend) = tokio::task::spawn_blocking(|| (mint("alice"), mint("--publisher")))
        .await
        .unwrap();
    let shot = screenshot("notifications.png");
    let mut page = Page::open(
        &chromium,
        "notifications",
        &format!("http://{addr}/app/?token={alice}"),
        &shot,
    );
    let open = page.next("open").await;
    assert_eq!(open["items"], json!([]), "{open}");
    assert_eq!(open["unread"], 0, "{open}");
    assert_eq!(open["transport"], "eventsource", "{open}");

    // Three for alice, one for bob between them.
    let (status, answer) = publish_as(
        addr,
        &backend,
        &json!([
            notification("alice", "a1 invoice paid"),
            notification("bob", "b1 not for alice"),
            notification("alice", "a2 new comment"),
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = publish_as(addr, &backend, &notification("alice", "a3 mention")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    page.tell(3);
    let got = page.next("received").await;
    // Newest first.
    assert_eq!(
        titles(&got),
        ["a3 mention", "a2 new comment", "a1 invoice paid"],
        "{got}"
    );
    assert_eq!(got["unread"], 3, "{got}");
    assert_eq!(got["toastsShown"], 3, "{got}");
    assert_eq!(
        got["toasts"],
        json!(["a1 invoice paid", "a2 new comment", "a3 mention"]),
        "{got}"
    );
    assert!(
        !got.to_string().contains("b1"),
        "bob's notification reached alice: {got}"
    );
    let read = page.next("marked read").await;
    assert_eq!(read["unread"], 0, "{read}");
    assert!(read["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["unread"] == false));

    // Restart: stop the server (the page gets `event: shutdown`) ...
    hub.stop().await;
    page.tell("stopped");
    let down = page.next("down").await;
    assert_ne!(down["status"], "open", "{down}");
    // ... the backend publishes while the page cannot connect (the new
    // server has the log open but is not listening yet) ...
    let app = Hub::open(&dir).await;
    let missed = publish_unlistened(
        &app,
        &backend,
        &json!([
            notification("alice", "a4 while down"),
            notification("bob", "b2 while down"),
            notification("alice", "a5 while down"),
        ]),
    )
    .await;
    assert_eq!(missed.len(), 3);
    // ... and it serves again on the same address and data dir.
    let hub = Hub::serve(app, addr).await;
    assert_eq!(hub.addr, addr);
    page.tell(5);
    let back = page.next("back").await;
    assert_eq!(
        titles(&back),
        [
            "a5 while down",
            "a4 while down",
            "a3 mention",
            "a2 new comment",
            "a1 invoice paid"
        ],
        "{back}"
    );
    // Live again.
    for title in ["a6 live", "a7 live"] {
        let (status, answer) = publish_as(addr, &backend, &notification("alice", title)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let (status, _) = publish_as(addr, &backend, &notification("bob", "b3 live")).await;
    assert_eq!(status, StatusCode::OK);
    page.tell(7);
    let fin = page.next("final").await;
    let want = [
        "a7 live",
        "a6 live",
        "a5 while down",
        "a4 while down",
        "a3 mention",
        "a2 new comment",
        "a1 invoice paid",
    ];
    // Each missed one exactly once: as many items as were published to her.
    assert_eq!(titles(&fin), want, "{fin}");
    let ids: Vec<u64> = fin["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_u64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    assert!(
        ids.contains(&missed[0]) && ids.contains(&missed[2]),
        "{ids:?} {missed:?}"
    );
    assert_eq!(fin["unread"], 4, "{fin}");
    assert_eq!(fin["toastsShown"], 7, "{fin}");
    assert!(
        !fin["toasts"].to_string().contains("\"b"),
        "bob's reached alice: {fin}"
    );
    let statuses: Vec<&str> = fin["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(statuses.first(), Some(&"connecting"), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&"open"), "{statuses:?}");
    assert!(
        statuses.windows(2).any(|w| w == ["open", "connecting"]),
        "{statuses:?}"
    );
    assert!(!statuses.contains(&"polling"), "{statuses:?}");
    assert_eq!(fin["problem"], "", "{fin}");

    // A reload lists the history again: the same seven, read marks kept,
    // nothing toasted.
    let reloaded = page.next("reloaded").await;
    assert_eq!(titles(&reloaded), want, "{reloaded}");
    assert_eq!(reloaded["unread"], 4, "{reloaded}");
    assert_eq!(reloaded["toastsShown"], 0, "{reloaded}");
    assert_eq!(reloaded["problems"], json!([]), "{reloaded}");
    page.finish().await;
    assert!(shot.exists(), "the screenshot is kept");
    hub.stop().await;
}

#[tokio::test]
async fn dashboard_page_charts_the_ticker_from_gzipped_batch_frames() {
    let Some(chromium) = tokio::task::spawn_blocking(tools).await.unwrap() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_page_example("dashboard", tmp.path());
    let hub = Hub::start(&dir, "127.0.0.1:0".parse().unwrap()).await;
    let shot = screenshot("dashboard.png");
    let mut page = Page::open(
        &chromium,
        "dashboard",
        &format!("http://{}/app/", hub.addr),
        &shot,
    );
    let live = page.next("live").await;
    assert_eq!(live["transport"], "eventsource", "{live}");
    assert!(live["ticks"].as_u64().unwrap() >= 1, "{live}");

    // A burst on `activity`: all of it arrives, events/s climbs on the page.
    let burst: Vec<Value> = (0..600)
        .map(|i| json!({"topic": "activity", "type": "demo", "data": {"i": i}}))
        .collect();
    publish_open(hub.addr, Value::Array(burst)).await;
    page.tell(600);
    let later = page.next("later").await;
    let first_ticks = later["first"]["ticks"].as_u64().unwrap();
    let ticks = later["ticks"].as_u64().unwrap();
    assert!(ticks >= first_ticks + 3, "{later}");
    assert_eq!(later["activity"], 600, "each event once: {later}");
    let feed = later["feed"].as_array().unwrap();
    assert_eq!(feed.len(), 12, "{later}");
    assert_eq!(feed[0], r#"demo {"i":599}"#, "{later}");
    assert!(later["epsPeak"].as_f64().unwrap() >= 20.0, "{later}");
    let number = |key: &str| later[key].as_str().unwrap().parse::<f64>().unwrap();
    assert!(number("connections") >= 1.0, "{later}");
    assert!(number("eventsTotal") >= 600.0, "{later}");
    assert_ne!(later["uptime"], "–", "{later}");
    // Both charts hold a sample per tick and drew them.
    for chart in ["eps", "connections"] {
        assert_eq!(later["samples"][chart].as_u64().unwrap(), ticks, "{later}");
        assert!(later["inked"][chart].as_u64().unwrap() > 1000, "{later}");
    }
    // On the wire (what EventSource received): batch frames only; the burst
    // in frames of at most 50, gzipped; only frames under min_bytes (a lone
    // tick) plain. The page counted about as many frames.
    let wire = &later["wire"];
    assert_eq!(wire["types"], json!(["connected", "batch"]), "{later}");
    let gzipped = wire["gzip"].as_u64().unwrap();
    assert!(gzipped >= 12, "{later}");
    let plain = wire["plainBatchBytes"].as_array().unwrap();
    assert_eq!(
        gzipped + plain.len() as u64,
        wire["batch"].as_u64().unwrap(),
        "{later}"
    );
    assert!(
        plain.iter().all(|n| n.as_u64().unwrap() < PLAIN_MAX as u64),
        "{later}"
    );
    let frames = later["frames"].as_u64().unwrap();
    assert!(
        (12..100).contains(&frames),
        "600 events in {frames} frames: {later}"
    );
    assert_eq!(later["problems"], json!([]), "{later}");
    page.finish().await;
    assert!(shot.exists(), "the screenshot is kept");
    hub.stop().await;
}

// ---------------------------------------------------------------------------
// outbox: an order and its outbox row in one transaction → one SSE event

/// `psql` on the test database with `search_path` set to `schema`.
fn psql(schema: &str, args: &[&str]) {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
        ])
        .args(args)
        .env("PGOPTIONS", format!("-c search_path={schema}"))
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn outbox_example_relays_an_order_committed_with_its_event() {
    assert_readme_runs(
        "outbox",
        "cargo run --release -- serve --config examples/outbox/config.toml",
    );
    if !crate::relays::need("postgres") {
        return;
    }
    // The example's tables in a schema of their own, on the shared database.
    let schema = format!("spouttest_outbox_{}", std::process::id());
    psql(
        "public",
        &[
            "-c",
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"),
        ],
    );
    let dir_tmp = tempfile::tempdir().unwrap();
    let dir = copy_example("outbox", dir_tmp.path());
    psql(&schema, &["-f", dir.join("schema.sql").to_str().unwrap()]);
    // SAFETY: only this test reads DATABASE_URL, and it sets it first.
    unsafe {
        std::env::set_var(
            "DATABASE_URL",
            format!("host=127.0.0.1 user=postgres dbname=test options='-c search_path={schema}'"),
        )
    };
    let hub = Hub::start(&dir, "127.0.0.1:0".parse().unwrap()).await;
    let mut sse = Sse::open(hub.addr, "/events?topic=orders/**", &[]).await;
    sse.connected().await;
    psql(&schema, &["-f", dir.join("order.sql").to_str().unwrap()]);
    let got = sse.events(1).await;
    assert_eq!(got[0].kind, "order.created");
    assert_eq!(got[0].data, r#"{"id":1,"total":42.50,"customer":"ada"}"#);
    // The README shows exactly this frame.
    let readme = read(&example("outbox").join("README.md"));
    assert!(
        readme.contains(&format!("event: order.created\ndata: {}", got[0].data)),
        "README shows the frame"
    );
    // The row is gone once its event is stored: nothing is sent twice.
    assert_eq!(
        next_within(&mut sse, Duration::from_millis(1500)).await,
        None
    );
    psql("public", &["-c", &format!("DROP SCHEMA {schema} CASCADE")]);
}
