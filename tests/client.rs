//! The browser client, `examples/client/spout.js`, run in Node against the
//! real server: `tests/client/node.mjs` drives one `Spout` and prints what it
//! sees as JSON lines; these tests publish at the right moments and check
//! that every event arrives exactly once, in order, whatever happens to the
//! connection (batch frames, gzip envelopes, a server restart, long polling,
//! a fallback to polling, a replaced connection). `tests/client/unit.mjs`
//! checks what needs no server (parser, EventSource transport, backoff).
//!
//! Node.js 20 or newer must be on PATH: without it the tests are skipped,
//! or fail when `CI=true`.

use crate::support;

use serde_json::{json, Value};
use spout::config::Config;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;
use support::*;
use tokio::sync::mpsc;

/// The longest any single wait for the client may take.
const LIMIT: Duration = Duration::from_secs(10);

/// The stock `batch` and `gzip` plugins (as in tests/shaping.rs), a quick
/// `retry:` and two routes: batched + compressed, and compressed only.
const SHAPED: &str = r#"
[server]
retry = "100ms"

[plugins.b]
use = "builtin:batch"

[plugins.gz]
use = "builtin:gzip"
config = { min_bytes = 256 }

[[stream]]
path = "/events"
batch = { plugin = "b", window = "150ms", max = 100 }
compress = { plugin = "gz" }

[[stream]]
path = "/plain"
compress = { plugin = "gz" }
"#;

/// Warms the shared compiled-plugin cache once (concurrent tests would each
/// compile the plugins otherwise).
fn warm() {
    static WARM: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    WARM.get_or_init(|| {
        let (ok, stderr) = check(SHAPED);
        assert!(ok, "{stderr}");
    });
}

async fn start_shaped() -> Server {
    tokio::task::spawn_blocking(warm).await.unwrap();
    Server::start_toml(SHAPED).await
}

/// Starts a server again on a stopped [`Server::start_toml`] server's
/// directory: the same config file and the same log, on a new port.
async fn restart(dir: &Path) -> Server {
    let file = dir.join("config.toml");
    Server::start_in(dir, |c| {
        *c = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
        c.server.shutdown_grace = Duration::from_secs(2);
        c.log.path = dir.join("data");
        c.plugin_cache = Some(plugin_cache());
    })
    .await
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/client")
}

/// Whether Node.js >= 20 is on PATH; a missing one fails the test under
/// `CI=true` and skips it otherwise.
fn node() -> bool {
    let version = Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let major = version
        .as_deref()
        .and_then(|v| v.strip_prefix('v')?.split('.').next()?.parse::<u32>().ok());
    if major.is_some_and(|m| m >= 20) {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "Node.js >= 20 is required for the client tests (found {version:?})"
    );
    eprintln!("skipping the client test: Node.js >= 20 is not on PATH (found {version:?})");
    false
}

/// `tests/client/node.mjs` running one client; killed when dropped.
struct NodeClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<Value>,
    /// Every line printed so far.
    seen: Vec<Value>,
}

impl NodeClient {
    fn spawn(base: &str, config: Value) -> NodeClient {
        let mut child = Command::new("node")
            .arg(scripts().join("node.mjs"))
            .arg(base)
            .arg(config.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&line).unwrap_or_else(|_| json!({ "stdout": line }));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        NodeClient {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn transcript(&self) -> String {
        self.seen.iter().map(|v| format!("{v}\n")).collect()
    }

    /// Reads lines until one matches.
    async fn until(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(v)) => {
                    self.seen.push(v.clone());
                    if matches(&v) {
                        return v;
                    }
                }
                Ok(None) => panic!(
                    "node exited before {what}; it printed:\n{}",
                    self.transcript()
                ),
                Err(_) => panic!(
                    "no {what} within {LIMIT:?}; node printed:\n{}",
                    self.transcript()
                ),
            }
        }
    }

    async fn ready(&mut self) -> Value {
        self.until("ready", |v| v["ready"] == true).await
    }

    /// Waits until `n` events were delivered in all.
    async fn events(&mut self, n: usize) -> Vec<Value> {
        while delivered(&self.seen).len() < n {
            self.until(&format!("event #{n}"), |v| v.get("event").is_some())
                .await;
        }
        delivered(&self.seen)
    }

    /// Closes stdin: the client closes and prints `done`. Returns it and
    /// every line printed.
    async fn finish(mut self) -> (Value, Vec<Value>) {
        drop(self.stdin.take());
        let done = self.until("done", |v| v.get("done").is_some()).await;
        let deadline = std::time::Instant::now() + LIMIT;
        while self.child.try_wait().unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "node did not exit");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (done["done"].clone(), std::mem::take(&mut self.seen))
    }
}

impl Drop for NodeClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The delivered events among printed lines.
fn delivered(seen: &[Value]) -> Vec<Value> {
    seen.iter()
        .filter_map(|v| v.get("event").cloned())
        .collect()
}

/// Printed lines that have `key`, as that key's value.
fn lines<'a>(seen: &'a [Value], key: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    seen.iter().filter_map(move |v| v.get(key))
}

/// What the client makes of published data: text that parses as JSON is
/// parsed (the SSE rule), anything else is kept.
fn client_data(published: &Value) -> Value {
    match published {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| published.clone()),
        v => v.clone(),
    }
}

/// Asserts the client got exactly `want` (published bodies with their ids),
/// once each and in order; `topics` when the transport carries them.
fn assert_delivered(got: &[Value], want: &[(u64, Value)], topics: bool, transcript: &str) {
    let got_ids: Vec<u64> = got.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    let want_ids: Vec<u64> = want.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        got_ids, want_ids,
        "ids, once each and in order:\n{transcript}"
    );
    for (e, (id, body)) in got.iter().zip(want) {
        let kind = body.get("type").cloned().unwrap_or(json!("message"));
        assert_eq!(e["type"], kind, "type of {id}");
        assert_eq!(e["data"], client_data(&body["data"]), "data of {id}");
        if topics {
            assert_eq!(e["topic"], body["topic"], "topic of {id}");
            assert!(e["time"].as_u64().unwrap() > 0, "time of {id}");
        } else {
            assert_eq!(e["topic"], Value::Null, "plain SSE frames carry no topic");
        }
    }
}

/// Pairs published ids with their bodies, keeping those `keep` selects.
fn with_ids(ids: &[u64], bodies: &Value, keep: impl Fn(&Value) -> bool) -> Vec<(u64, Value)> {
    let bodies: Vec<Value> = match bodies {
        Value::Array(a) => a.clone(),
        one => vec![one.clone()],
    };
    assert_eq!(ids.len(), bodies.len());
    ids.iter()
        .copied()
        .zip(bodies)
        .filter(|(_, b)| keep(b))
        .collect()
}

#[tokio::test]
async fn fetch_transport_unwraps_batches_decodes_gzip_and_delivers_each_event_once() {
    if !node() {
        return;
    }
    let server = start_shaped().await;
    let base = format!("http://{}", server.addr);
    let topics = json!(["t", "orders/*"]);
    let mut batched = NodeClient::spawn(
        &base,
        json!({ "path": "/events", "options": { "topics": topics } }),
    );
    let mut plain = NodeClient::spawn(
        &base,
        json!({ "path": "/plain", "options": { "topics": topics } }),
    );
    for client in [&mut batched, &mut plain] {
        let ready = client.ready().await;
        assert_eq!(ready["transport"], "fetch", "Node has no EventSource");
    }

    let big =
        json!({ "rows": (0..100).map(|i| json!({ "i": i, "name": "row" })).collect::<Vec<_>>() });
    let log = "a line of log text\nanother line, a little longer\n".repeat(20);
    let first = json!([
        { "topic": "t", "data": { "n": 1 } },
        { "topic": "orders/eu", "type": "order", "data": { "sku": "a", "qty": 2 } },
        { "topic": "other", "data": "not subscribed" },
        { "topic": "t", "type": "log", "data": "line one\nline two\n\nline four" },
        { "topic": "t", "data": "h\u{e9}llo \u{2713} \u{1d11e}" },
        { "topic": "t", "data": "42" },
        { "topic": "t", "data": big },
        { "topic": "t", "type": "log", "data": log },
    ]);
    let ids = server.publish(first.clone()).await;
    let subscribed = |b: &Value| b["topic"] != "other";
    let mut want = with_ids(&ids, &first, subscribed);
    for client in [&mut batched, &mut plain] {
        client.events(want.len()).await;
    }
    // A later window holding one small event: a batch of one, not compressed.
    let second = json!({ "topic": "orders/us", "type": "order", "data": { "sku": "b" } });
    let ids = server.publish(second.clone()).await;
    want.extend(with_ids(&ids, &second, subscribed));
    for client in [&mut batched, &mut plain] {
        client.events(want.len()).await;
    }
    // Nothing more (no duplicate) arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (done, seen) = batched.finish().await;
    let transcript: String = seen.iter().map(|v| format!("{v}\n")).collect();
    assert_delivered(&delivered(&seen), &want, true, &transcript);
    assert_eq!(done["lastEventId"], want.last().unwrap().0);
    let wire = &done["wire"];
    // The first window compressed as one frame, the second plain.
    assert_eq!(wire["batch"], 2, "{transcript}");
    assert_eq!(wire["compressed"], 1, "{transcript}");

    let (done, seen) = plain.finish().await;
    let transcript: String = seen.iter().map(|v| format!("{v}\n")).collect();
    assert_delivered(&delivered(&seen), &want, false, &transcript);
    let wire = &done["wire"];
    assert_eq!(wire["batch"], 0, "{transcript}");
    // The big JSON and the long text, each its own envelope.
    assert_eq!(wire["compressed"], 2, "{transcript}");
    server.stop().await;
}

#[tokio::test]
async fn after_a_restart_the_client_reconnects_with_backoff_and_resumes_exactly_once() {
    if !node() {
        return;
    }
    let server = start_shaped().await;
    // The client re-reads the server's URL before every request: the
    // restarted server listens on another port.
    let url_dir = tempfile::tempdir().unwrap();
    let url_file = url_dir.path().join("url");
    std::fs::write(&url_file, format!("http://{}", server.addr)).unwrap();
    let (initial, max) = (100u64, 800u64);
    let mut client = NodeClient::spawn(
        &format!("http://{}", server.addr),
        json!({
            "urlFile": url_file,
            "options": {
                "topics": ["t"],
                "transport": "fetch",
                "backoff": { "initial": initial, "max": max },
                "healthyAfter": 300,
            },
        }),
    );
    client.ready().await;
    let before = json!([
        { "topic": "t", "data": { "n": 1 } },
        { "topic": "t", "type": "log", "data": "two" },
        { "topic": "t", "data": { "n": 3 } },
    ]);
    let ids = server.publish(before.clone()).await;
    let mut want = with_ids(&ids, &before, |_| true);
    let resume_from = ids[2];
    client.events(3).await;

    let old_addr = server.addr;
    let tmp = server.stop().await.expect("start_toml keeps its directory");
    client
        .until("the shutdown frame", |v| v["control"] == "shutdown")
        .await;
    // At least two attempts fail against the stopped server.
    let mut failed = 0;
    while failed < 2 {
        let r = client
            .until("a failed reconnect", |v| v.get("retry").is_some())
            .await;
        if r["retry"]["reason"] != "shutdown" {
            failed += 1;
        }
    }

    let server = restart(tmp.path()).await;
    // Published before the client finds the new server: replayed to it.
    let missed = json!([
        { "topic": "t", "data": { "n": 4 } },
        { "topic": "t", "data": "five" },
    ]);
    let ids = server.publish(missed.clone()).await;
    want.extend(with_ids(&ids, &missed, |_| true));
    std::fs::write(&url_file, format!("http://{}", server.addr)).unwrap();
    client.events(5).await;
    let live = json!({ "topic": "t", "type": "done", "data": { "n": 6 } });
    let ids = server.publish(live.clone()).await;
    want.extend(with_ids(&ids, &live, |_| true));
    client.events(6).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (done, seen) = client.finish().await;
    let transcript: String = seen.iter().map(|v| format!("{v}\n")).collect();
    assert_delivered(&delivered(&seen), &want, true, &transcript);
    assert_eq!(done["lastEventId"], want.last().unwrap().0);

    // Backoff: attempt 0 right after the healthy connection's shutdown,
    // then one more per failure; caps double from the base (the server's
    // `retry: 100`, equal to `initial` here) up to `max`, full jitter below.
    let retries: Vec<&Value> = lines(&seen, "retry").collect();
    assert!(retries.len() >= 3, "{transcript}");
    assert_eq!(retries[0]["reason"], "shutdown", "{transcript}");
    for (i, r) in retries.iter().enumerate() {
        let attempt = r["attempt"].as_u64().unwrap();
        assert_eq!(attempt, i as u64, "{transcript}");
        let cap = r["cap"].as_u64().unwrap();
        assert_eq!(cap, max.min(initial << attempt), "{transcript}");
        assert!(r["delay"].as_u64().unwrap() < cap, "{transcript}");
    }
    assert!(
        retries[1..]
            .iter()
            .any(|r| r["error"].as_str().unwrap_or("").contains("ECONNREFUSED")),
        "the stopped server refused connections:\n{transcript}"
    );
    // Each attempt waited its delay; every reconnect resumed from the last
    // delivered id; the last one reached the new server.
    let requests: Vec<&Value> = lines(&seen, "request").collect();
    assert_eq!(requests.len(), retries.len() + 1, "{transcript}");
    assert_eq!(requests[0]["lastEventId"], Value::Null);
    assert_eq!(requests[0]["host"], old_addr.to_string());
    let retry_times = seen.iter().filter(|v| v.get("retry").is_some());
    for (r, req) in retry_times.zip(&requests[1..]) {
        let due = r["t"].as_u64().unwrap() + r["retry"]["delay"].as_u64().unwrap();
        assert!(req["t"].as_u64().unwrap() + 2 >= due, "{r} then {req}");
        assert_eq!(req["lastEventId"], resume_from.to_string(), "{transcript}");
    }
    assert_eq!(requests.last().unwrap()["host"], server.addr.to_string());
    let statuses: Vec<&str> = lines(&seen, "status").filter_map(Value::as_str).collect();
    assert_eq!(
        statuses,
        ["connecting", "open", "connecting", "open", "closed"],
        "{transcript}"
    );
    server.stop().await;
    drop(tmp);
}

#[tokio::test]
async fn the_poll_transport_long_polls_resumes_and_drops_duplicates() {
    if !node() {
        return;
    }
    let server = Server::start(|_| {}).await;
    let old = json!([
        { "topic": "t", "data": { "n": 1 } },
        { "topic": "t", "data": { "n": 2 } },
    ]);
    let ids = server.publish(old.clone()).await;
    // Resume after the first; every second request is rewound to after=0
    // (a stale cache), so the server serves events the client already has.
    let resume = ids[0];
    let mut want = with_ids(&ids[1..], &json!([old[1].clone()]), |_| true);
    let mut client = NodeClient::spawn(
        &format!("http://{}", server.addr),
        json!({
            "rewindPoll": true,
            "options": { "topics": ["t"], "transport": "poll", "pollWait": 3, "lastEventId": resume },
        }),
    );
    assert_eq!(client.ready().await["transport"], "poll");
    client.events(1).await;
    // The rewound request answers at once with duplicates; the next one is
    // held by the server until the publish below.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let live = json!([
        { "topic": "t", "type": "x", "data": "42" },
        { "topic": "elsewhere", "data": "not subscribed" },
        { "topic": "t", "data": "plain words" },
    ]);
    let ids = server.publish(live.clone()).await;
    want.extend(with_ids(&ids, &live, |b| b["topic"] == "t"));
    client.events(3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let last = json!({ "topic": "t", "data": { "n": 9 } });
    let ids = server.publish(last.clone()).await;
    want.extend(with_ids(&ids, &last, |_| true));
    client.events(4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (done, seen) = client.finish().await;
    let transcript: String = seen.iter().map(|v| format!("{v}\n")).collect();
    assert_delivered(&delivered(&seen), &want, true, &transcript);
    assert_eq!(done["transport"], "poll");
    let requests: Vec<&Value> = lines(&seen, "request").collect();
    assert_eq!(requests[0]["query"]["after"], json!([resume.to_string()]));
    for (i, r) in requests.iter().enumerate() {
        assert_eq!(r["path"], "/poll", "{transcript}");
        // The first poll answers at once, then long polls.
        let wait = if i == 0 { "0" } else { "3" };
        assert_eq!(r["query"]["wait"], json!([wait]), "{transcript}");
        assert_eq!(r["query"]["topic"], json!(["t"]), "{transcript}");
    }
    // No busy loop: a handful of requests in ~2.5 s.
    assert!(requests.len() <= 8, "{transcript}");
    let responses: Vec<&Value> = lines(&seen, "response").collect();
    assert!(
        responses
            .iter()
            .filter(|r| r["rewound"] == true)
            .all(|r| r["events"].as_u64().unwrap() >= 2),
        "rewound polls served events already delivered:\n{transcript}"
    );
    assert!(responses.iter().filter(|r| r["rewound"] == true).count() >= 2);
    assert!(
        responses
            .iter()
            .any(|r| r["rewound"] == false && r["ms"].as_u64().unwrap() >= 900),
        "the server held a long poll until an event arrived:\n{transcript}"
    );
    let statuses: Vec<&str> = lines(&seen, "status").filter_map(Value::as_str).collect();
    assert_eq!(
        statuses,
        ["connecting", "polling", "closed"],
        "{transcript}"
    );
    server.stop().await;
}

#[tokio::test]
async fn auto_falls_back_to_long_polling_after_consecutive_failures() {
    if !node() {
        return;
    }
    let server = Server::start(|_| {}).await;
    let mut client = NodeClient::spawn(
        &format!("http://{}", server.addr),
        json!({
            "path": "/missing",
            "options": {
                "topics": ["t"],
                "pollAfterFailures": 2,
                "pollWait": 1,
                "backoff": { "initial": 20, "max": 50 },
            },
        }),
    );
    assert_eq!(client.ready().await["transport"], "poll");
    let body = json!({ "topic": "t", "type": "note", "data": { "fallback": true } });
    let ids = server.publish(body.clone()).await;
    client.events(1).await;
    let (_, seen) = client.finish().await;
    let transcript: String = seen.iter().map(|v| format!("{v}\n")).collect();
    assert_delivered(
        &delivered(&seen),
        &with_ids(&ids, &body, |_| true),
        true,
        &transcript,
    );
    let retries: Vec<&Value> = lines(&seen, "retry").collect();
    assert_eq!(retries.len(), 2, "{transcript}");
    for (i, r) in retries.iter().enumerate() {
        assert_eq!(r["reason"], "http");
        assert_eq!(r["transport"], "fetch");
        assert_eq!(r["status"], 404);
        assert_eq!(r["error"], "not_found", "the server's JSON error code");
        assert_eq!(r["failures"], i + 1);
    }
    let paths: Vec<&str> = lines(&seen, "request")
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        &paths[..3],
        ["/missing", "/missing", "/poll"],
        "{transcript}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_replaced_connection_closes_and_is_not_reopened() {
    if !node() {
        return;
    }
    let server = Server::start_toml(
        "[server]\ninsecure_user_param = true\n\n[server.limits]\nper_user_connections = 1\nper_user_policy = \"replace_oldest\"\n",
    )
    .await;
    let mut client = NodeClient::spawn(
        &format!("http://{}", server.addr),
        json!({
            "options": {
                "topics": ["t"],
                "params": { "user": "alice" },
                "backoff": { "initial": 20, "max": 50 },
            },
        }),
    );
    client.ready().await;
    client
        .until("connected", |v| v["control"] == "connected")
        .await;
    // Alice opens another stream: the client's is replaced.
    let mut newer = server.sse("/events?topic=t&user=alice", &[]).await;
    newer.connected().await;
    let replaced = client
        .until("the replaced frame", |v| v["control"] == "replaced")
        .await;
    assert!(
        replaced["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("alice"),
        "{replaced}"
    );
    client
        .until("status closed", |v| v["status"] == "closed")
        .await;
    // It stays closed: the newer stream keeps its place and gets the event.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let ids = server
        .publish(json!({ "topic": "t", "data": "for the newer stream" }))
        .await;
    let got = newer.events(1).await;
    assert_eq!(got[0].last_id, ids[0].to_string());
    let (done, seen) = client.finish().await;
    let transcript: String = seen.iter().map(|v| format!("{v}\n")).collect();
    assert_eq!(lines(&seen, "request").count(), 1, "{transcript}");
    assert_eq!(lines(&seen, "retry").count(), 0, "{transcript}");
    assert!(delivered(&seen).is_empty(), "{transcript}");
    assert_eq!(done["status"], "closed");
    server.stop().await;
}

#[tokio::test]
async fn client_logic_without_a_server_parser_eventsource_and_backoff() {
    if !node() {
        return;
    }
    let mut child = Command::new("node")
        .arg(scripts().join("unit.mjs"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let mut pipe = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut pipe, &mut text).unwrap();
        text
    });
    let deadline = std::time::Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("unit.mjs did not finish within {LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stdout = reader.join().unwrap();
    assert!(status.success(), "{stdout}");
    assert!(!stdout.contains("not ok"), "{stdout}");
    assert!(stdout.contains("\n1..9"), "{stdout}");
}

/// spout.js loads as an ES module even where Node does not detect module
/// syntax by itself (before 20.19, or with detection off): its folder's
/// package.json says `"type": "module"`.
#[test]
fn spout_js_imports_as_an_es_module_without_syntax_detection() {
    let client = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/client/spout.js")
        .canonicalize()
        .unwrap();
    let script = format!(
        "import({:?}).then(m => console.log(typeof m.Spout, typeof m.SseParser)).catch(e => {{ console.error(e.message); process.exit(1); }})",
        format!("file://{}", client.display())
    );
    let out = Command::new("node")
        .args([
            "--no-experimental-detect-module",
            "--input-type=module",
            "-e",
            &script,
        ])
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "function function"
    );
}

/// A banned user's client stops: a fetch stream answered `204` and a long
/// poll answered `403 banned` end in `revoked` and `closed`, one request
/// each, never retried.
#[tokio::test]
async fn a_banned_client_stops_on_204_and_on_banned() {
    if !node() {
        return;
    }
    let server = Server::start_toml(
        r#"
[server]
insecure_user_param = true
[plugins.ops]
use = "builtin:auth-apikey"
config = { keys = [{ key = "k", user = "ops", topics = ["**"], publish = true }] }
[api]
auth = "ops"
"#,
    )
    .await;
    let resp = request(
        server.addr,
        http::Method::POST,
        "/api/disconnect",
        &[("x-api-key", "k")],
        r#"{"user":"mallory","reason":"abuse","ban":"5m"}"#,
    )
    .await;
    assert_eq!(resp.status(), http::StatusCode::OK);
    for transport in ["fetch", "poll"] {
        let mut client = NodeClient::spawn(
            &format!("http://{}", server.addr),
            json!({
                "options": {
                    "topics": ["t"],
                    "transport": transport,
                    "params": { "user": "mallory" },
                    "backoff": { "initial": 20, "max": 50 },
                },
            }),
        );
        let revoked = client
            .until("the revoked event", |v| v["control"] == "revoked")
            .await;
        client
            .until("status closed", |v| v["status"] == "closed")
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (_, seen) = client.finish().await;
        let transcript: String = seen.iter().map(|v| format!("{v}\n")).collect();
        assert_eq!(
            lines(&seen, "request").count(),
            1,
            "{transport}: {transcript}"
        );
        assert_eq!(
            lines(&seen, "retry").count(),
            0,
            "{transport}: {transcript}"
        );
        if transport == "poll" {
            assert!(revoked.to_string().contains("abuse"), "{revoked}");
        } else {
            assert_eq!(revoked["data"]["status"], 204, "{revoked}");
        }
    }
    server.stop().await;
}
