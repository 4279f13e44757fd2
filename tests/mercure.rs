//! Spout as a Mercure hub: Mercure publishers (form POST + JWT) and
//! subscribers (topic selectors, URI templates, private updates, resume,
//! cookie auth, subscription events) against the real server, and a
//! Mercure client library from PyPI talking to it.

use crate::support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;

/// Mercure's own development key.
const KEY: &str = "!ChangeThisMercureHubJWTSecretKey!";

fn jwt(claims: Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(format!("{header}.{payload}").as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{payload}.{sig}")
}

fn publisher(topics: &[&str]) -> String {
    jwt(json!({ "mercure": { "publish": topics } }))
}

fn subscriber(topics: &[&str]) -> String {
    jwt(json!({ "mercure": { "subscribe": topics, "payload": { "user": "ann" } } }))
}

fn config(anonymous: bool, subscriptions: bool) -> String {
    format!(
        r#"
[plugins.mercure-jwt]
use = "builtin:auth-jwt"
config = {{ secret = "{KEY}", mercure = true }}

[mercure]
auth = "mercure-jwt"
anonymous = {anonymous}
subscriptions = {subscriptions}
cors_origins = ["https://app.example"]
publish_origins = ["https://app.example"]
"#
    )
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `/.well-known/mercure?topic=…&topic=…` plus extra query text.
fn hub_url(topics: &[&str], extra: &str) -> String {
    let q: Vec<String> = topics.iter().map(|t| format!("topic={}", enc(t))).collect();
    format!("/.well-known/mercure?{}{extra}", q.join("&"))
}

/// Publishes a form; returns (status, body text).
async fn publish_form(
    addr: SocketAddr,
    token: Option<&str>,
    form: &[(&str, &str)],
) -> (StatusCode, String) {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    let resp = request(addr, Method::POST, "/.well-known/mercure", &headers, body).await;
    let (status, _, bytes) = body_bytes(resp).await;
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn publish_ok(addr: SocketAddr, form: &[(&str, &str)]) -> String {
    let (status, id) = publish_form(addr, Some(&publisher(&["*"])), form).await;
    assert_eq!(status, StatusCode::OK, "{id}");
    id
}

/// The next `n` events, skipping the subscription's own heartbeat comments.
async fn next_events(sse: &mut Sse, n: usize) -> Vec<(String, String, String)> {
    sse.events(n)
        .await
        .into_iter()
        .map(|e| (e.last_id, e.kind, e.data))
        .collect()
}

#[tokio::test]
async fn form_publish_reaches_template_and_exact_subscribers_only_where_they_match() {
    let server = Server::start_toml(&config(true, false)).await;
    let addr = server.addr;
    let mut books = server
        .sse(&hub_url(&["https://example.com/books/{id}"], ""), &[])
        .await;
    assert_eq!(books.status, StatusCode::OK);
    assert_eq!(books.headers["content-type"], "text/event-stream");
    assert_eq!(books.headers["last-event-id"], "earliest");
    let mut authors = server
        .sse(&hub_url(&["https://example.com/authors/1"], ""), &[])
        .await;
    let mut all = server.sse(&hub_url(&["*"], ""), &[]).await;
    // A native subscriber of the same topic sees public Mercure updates.
    let mut native = server
        .sse("/events?topic=https://example.com/books/1", &[])
        .await;
    native.connected().await;

    let id1 = publish_ok(
        addr,
        &[
            ("topic", "https://example.com/books/1"),
            ("data", "{\"title\":\"Dune\"}"),
            ("type", "book"),
        ],
    )
    .await;
    // Not matched by the books template: one more path segment.
    publish_ok(
        addr,
        &[
            ("topic", "https://example.com/books/1/reviews"),
            ("data", "r"),
        ],
    )
    .await;
    let id3 = publish_ok(
        addr,
        &[
            ("topic", "https://example.com/authors/1"),
            ("topic", "https://example.com/books/2"),
            ("data", "line1\nline2"),
            ("id", "urn:uuid:custom-3"),
            ("retry", "2500"),
        ],
    )
    .await;
    assert_eq!(id3, "urn:uuid:custom-3");

    assert_eq!(
        next_events(&mut books, 2).await,
        [
            (id1.clone(), "book".into(), "{\"title\":\"Dune\"}".into()),
            (id3.clone(), "message".into(), "line1\nline2".into()),
        ]
    );
    books
        .raw_until("id: urn:uuid:custom-3\nretry: 2500\ndata: line1\ndata: line2\n\n")
        .await;
    assert_eq!(next_events(&mut authors, 1).await[0].0, id3);
    assert_eq!(next_events(&mut all, 3).await.len(), 3);
    assert_eq!(native.events(1).await[0].data, "{\"title\":\"Dune\"}");

    // The last-event-id header names the newest update at subscription time.
    let late = server.sse(&hub_url(&["*"], ""), &[]).await;
    assert_eq!(late.headers["last-event-id"], "urn:uuid:custom-3");
    server.stop().await;
}

#[tokio::test]
async fn private_updates_reach_only_subscribers_whose_token_covers_a_topic() {
    let server = Server::start_toml(&config(true, false)).await;
    let addr = server.addr;
    let topic = "https://example.com/users/ann/inbox";
    let allowed = subscriber(&["https://example.com/users/ann/{box}"]);
    let other = subscriber(&["https://example.com/users/bob/{box}"]);
    let mut ann = server
        .sse(
            &hub_url(&[topic], ""),
            &[("authorization", &format!("Bearer {allowed}"))],
        )
        .await;
    assert_eq!(ann.status, StatusCode::OK);
    // The same token in the mercureAuthorization cookie works too.
    let cookie = format!("theme=dark; mercureAuthorization={allowed}");
    let mut ann_cookie = server
        .sse(&hub_url(&["*"], ""), &[("cookie", &cookie)])
        .await;
    assert_eq!(ann_cookie.status, StatusCode::OK);
    let mut bob = server
        .sse(
            &hub_url(&[topic], ""),
            &[("authorization", &format!("Bearer {other}"))],
        )
        .await;
    let mut anonymous = server.sse(&hub_url(&[topic], ""), &[]).await;
    let mut native = server.sse(&format!("/events?topic={topic}"), &[]).await;
    native.connected().await;

    publish_ok(
        addr,
        &[("topic", topic), ("data", "secret"), ("private", "on")],
    )
    .await;
    publish_ok(addr, &[("topic", topic), ("data", "public")]).await;

    let data = |v: Vec<(String, String, String)>| v.into_iter().map(|e| e.2).collect::<Vec<_>>();
    assert_eq!(data(next_events(&mut ann, 2).await), ["secret", "public"]);
    assert_eq!(
        data(next_events(&mut ann_cookie, 2).await),
        ["secret", "public"]
    );
    // Everyone else gets the public update first: the private one never came.
    assert_eq!(data(next_events(&mut bob, 1).await), ["public"]);
    assert_eq!(data(next_events(&mut anonymous, 1).await), ["public"]);
    assert_eq!(native.data(1).await, ["public"]);

    // Replay honours privacy too.
    let mut late = server
        .sse(&hub_url(&[topic], "&lastEventID=earliest"), &[])
        .await;
    assert_eq!(data(next_events(&mut late, 1).await), ["public"]);
    let mut late_ann = server
        .sse(
            &hub_url(&[topic], "&lastEventID=earliest"),
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(
        data(next_events(&mut late_ann, 2).await),
        ["secret", "public"]
    );

    // A token that fails verification is refused, not treated as anonymous.
    let forged = format!("{}x", &allowed[..allowed.len() - 1]);
    let bad = server
        .sse(
            &hub_url(&[topic], ""),
            &[("cookie", &format!("mercureAuthorization={forged}"))],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn resume_with_last_event_id_header_query_and_earliest() {
    let server = Server::start_toml(&config(true, false)).await;
    let addr = server.addr;
    let t = "https://example.com/feed";
    let a = publish_ok(addr, &[("topic", t), ("data", "a")]).await;
    let b = publish_ok(addr, &[("topic", t), ("data", "b"), ("id", "urn:x:b")]).await;
    let c = publish_ok(addr, &[("topic", t), ("data", "c")]).await;
    assert_eq!(b, "urn:x:b");
    let data = |v: Vec<(String, String, String)>| v.into_iter().map(|e| e.2).collect::<Vec<_>>();

    let mut s = server
        .sse(&hub_url(&[t], ""), &[("last-event-id", &a)])
        .await;
    assert_eq!(s.headers["last-event-id"], c.as_str());
    assert_eq!(data(next_events(&mut s, 2).await), ["b", "c"]);
    let mut s = server
        .sse(&hub_url(&[t], "&lastEventID=urn%3Ax%3Ab"), &[])
        .await;
    assert_eq!(
        next_events(&mut s, 1).await[0],
        (c.clone(), "message".into(), "c".into())
    );
    let mut s = server
        .sse(&hub_url(&[t], "&lastEventID=earliest"), &[])
        .await;
    assert_eq!(data(next_events(&mut s, 3).await), ["a", "b", "c"]);
    // The header wins over the query parameter, as in Mercure.
    let mut s = server
        .sse(
            &hub_url(&[t], &format!("&lastEventID={a}")),
            &[("last-event-id", "urn:x:b")],
        )
        .await;
    // Live after the replay: nothing repeated, nothing missed.
    let d = publish_ok(addr, &[("topic", t), ("data", "d")]).await;
    assert_eq!(
        next_events(&mut s, 2).await,
        [
            (c, "message".into(), "c".into()),
            (d, "message".into(), "d".into())
        ]
    );
    // A publisher id used again with the same update is idempotent; with
    // another update it is a conflict, never a silent drop.
    let again = publish_ok(addr, &[("topic", t), ("data", "b"), ("id", "urn:x:b")]).await;
    assert_eq!(again, "urn:x:b");
    for other in [
        &[("topic", t), ("data", "b2"), ("id", "urn:x:b")][..],
        &[
            ("topic", "https://example.com/other"),
            ("data", "b"),
            ("id", "urn:x:b"),
        ][..],
    ] {
        let (status, body) = publish_form(addr, Some(&publisher(&["*"])), other).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "id_conflict", "{body}");
        assert!(v["detail"].as_str().unwrap().contains("urn:x:b"), "{body}");
    }
    let mut s = server
        .sse(&hub_url(&[t], "&lastEventID=earliest"), &[])
        .await;
    assert_eq!(data(next_events(&mut s, 4).await), ["a", "b", "c", "d"]);
    server.stop().await;
}

#[tokio::test]
async fn publishers_need_a_token_covering_every_topic() {
    let server = Server::start_toml(&config(false, false)).await;
    let addr = server.addr;
    let form = [("topic", "https://example.com/books/1"), ("data", "x")];
    let (status, body) = publish_form(addr, None, &form).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "unauthorized"
    );
    let books_only = publisher(&["https://example.com/books/{id}"]);
    let (status, _) = publish_form(addr, Some(&books_only), &form).await;
    assert_eq!(status, StatusCode::OK);
    let two = [
        ("topic", "https://example.com/books/1"),
        ("topic", "https://example.com/authors/1"),
        ("data", "x"),
    ];
    let (status, body) = publish_form(addr, Some(&books_only), &two).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("authors/1"), "{body}");
    // A subscriber token grants no publishing.
    let (status, _) = publish_form(addr, Some(&subscriber(&["*"])), &form).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = publish_form(addr, Some(&publisher(&["*"])), &[("data", "x")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "missing_topic"
    );
    // A browser origin outside publish_origins is refused.
    let resp = request(
        addr,
        Method::POST,
        "/.well-known/mercure",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", &format!("Bearer {}", publisher(&["*"]))),
            ("origin", "https://evil.example"),
        ],
        "topic=a&data=x",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // JSON is not a Mercure update.
    let resp = request(
        addr,
        Method::POST,
        "/.well-known/mercure",
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {}", publisher(&["*"]))),
        ],
        "{}",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Anonymous subscribers are off in this config.
    let s = server.sse(&hub_url(&["*"], ""), &[]).await;
    assert_eq!(s.status, StatusCode::UNAUTHORIZED);
    // CORS for the allowed origin, with credentials (cookies).
    let resp = request(
        addr,
        Method::OPTIONS,
        "/.well-known/mercure",
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "GET"),
        ],
        "",
    )
    .await;
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(resp.headers()["access-control-allow-credentials"], "true");
    server.stop().await;
}

#[tokio::test]
async fn subscription_events_and_the_subscriptions_api() {
    let server = Server::start_toml(&config(true, true)).await;
    let watcher = subscriber(&["/.well-known/mercure/subscriptions{/topic}{/subscriber}"]);
    let auth = format!("Bearer {watcher}");
    let mut watch = server
        .sse(
            &hub_url(
                &["/.well-known/mercure/subscriptions{/topic}{/subscriber}"],
                "",
            ),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(watch.status, StatusCode::OK);
    let topic = "https://example.com/books/1";
    let token = subscriber(&[topic]);
    let mut reader = server
        .sse(
            &hub_url(&[topic], ""),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
    // The watcher's own subscription is announced first, then the reader's.
    let mut doc = Value::Null;
    for e in watch.events(2).await {
        doc = serde_json::from_str(&e.data).unwrap();
    }
    assert_eq!(doc["type"], "Subscription");
    assert_eq!(doc["topic"], topic);
    assert_eq!(doc["active"], true);
    assert_eq!(doc["payload"]["user"], "ann");
    assert_eq!(doc["@context"], "https://mercure.rocks/");
    let sub_id = doc["subscriber"].as_str().unwrap().to_owned();
    assert!(sub_id.starts_with("urn:uuid:"), "{sub_id}");

    let (status, _, body) = body_bytes(
        request(
            server.addr,
            Method::GET,
            "/.well-known/mercure/subscriptions",
            &[("authorization", &auth)],
            "",
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let list: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["type"], "Subscriptions");
    let subs = list["subscriptions"].as_array().unwrap();
    assert!(
        subs.iter()
            .any(|s| s["subscriber"] == sub_id.as_str() && s["topic"] == topic),
        "{list}"
    );
    let one = doc["id"].as_str().unwrap().to_owned();
    let (status, _, body) = body_bytes(
        request(
            server.addr,
            Method::GET,
            &one,
            &[("authorization", &auth)],
            "",
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["subscriber"],
        sub_id.as_str()
    );
    // Without a token covering the API: 401 / 403.
    let resp = request(
        server.addr,
        Method::GET,
        "/.well-known/mercure/subscriptions",
        &[],
        "",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = request(
        server.addr,
        Method::GET,
        "/.well-known/mercure/subscriptions",
        &[("authorization", &format!("Bearer {token}"))],
        "",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // The reader leaves: an inactive event follows.
    reader.raw_until(":").await;
    drop(reader);
    let e = tokio::time::timeout(Duration::from_secs(10), watch.events(1))
        .await
        .unwrap();
    let gone: Value = serde_json::from_str(&e[0].data).unwrap();
    assert_eq!(gone["subscriber"], sub_id.as_str());
    assert_eq!(gone["active"], false);
    server.stop().await;
}

#[tokio::test]
async fn without_a_mercure_section_the_hub_is_not_there() {
    let server = Server::start(|_| {}).await;
    let (status, body) = server.get_json("/.well-known/mercure?topic=*").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
    server.stop().await;
}

/// Installs pymercure (and what it needs: requests, sseclient-py) from PyPI
/// into `target/pydeps` once; returns that directory.
fn python_deps() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pydeps");
    if dir.join("pymercure").is_dir() && dir.join("sseclient.py").exists() {
        return dir;
    }
    let pip = |args: &[&str]| {
        let out = std::process::Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
            ])
            .arg(&dir)
            .args(args)
            .output()
            .expect("python3 runs (the test needs CPython 3 with pip)");
        assert!(
            out.status.success(),
            "pip install {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // pymercure's own requirements include grequests/gevent for its async
    // publisher, which this test does not use.
    pip(&["--no-deps", "pymercure==0.0.1.0"]);
    pip(&["requests==2.34.2", "sseclient-py==1.9.0"]);
    dir
}

#[tokio::test]
async fn the_pymercure_client_library_publishes_and_subscribes() {
    let deps = tokio::task::spawn_blocking(python_deps).await.unwrap();
    let server = Server::start_toml(&config(true, false)).await;
    let hub = format!("http://{}/.well-known/mercure", server.addr);
    let token = publisher(&["https://example.com/books/{id}"]);
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/mercure_client.py");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .arg(deps)
            .arg(hub)
            .arg(token)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    let second = report["ids"][1].as_str().unwrap().to_owned();
    assert_eq!(report["ids"][0], "urn:py:1");
    assert_eq!(
        report["got"],
        json!([
            { "id": "urn:py:1", "type": "book", "data": "{\"title\": \"Dune\"}" },
            { "id": second, "type": "message", "data": "plain text" },
        ])
    );
    server.stop().await;
}

#[tokio::test]
async fn the_example_hub_works_with_the_token_its_readme_shows() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/mercure");
    let text = std::fs::read_to_string(format!("{dir}/config.toml")).unwrap();
    let readme = std::fs::read_to_string(format!("{dir}/README.md")).unwrap();
    let token = readme
        .lines()
        .find_map(|l| l.strip_prefix("TOKEN="))
        .expect("README shows a TOKEN= line");
    let server = Server::start_toml(&text).await;
    let mut s = server
        .sse(&hub_url(&["https://example.com/books/{id}"], ""), &[])
        .await;
    assert_eq!(
        s.status,
        StatusCode::OK,
        "anonymous subscribers are allowed"
    );
    let form = [
        ("topic", "https://example.com/books/1"),
        ("data", "{\"title\":\"Dune\"}"),
    ];
    let (status, id) = publish_form(server.addr, Some(token), &form).await;
    assert_eq!(status, StatusCode::OK, "{id}");
    assert_eq!(next_events(&mut s, 1).await[0].0, id);
    let (_, _, metrics) =
        body_bytes(request(server.addr, Method::GET, "/metrics", &[], "").await).await;
    let metrics = String::from_utf8_lossy(&metrics);
    // The recorder is process-wide and other tests run beside this one:
    // check the series exist with a count, not their exact values.
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing: {metrics}"))
    };
    assert!(value("spout_mercure_updates_total") >= 1.0);
    // The gauge is set by whichever test's hub changed last: that it is
    // exported is this server's business (`value` panics when it is
    // missing); its own count is in /stats.
    value("spout_mercure_subscribers");
    let (_, stats) = server.get_json("/stats").await;
    assert_eq!(stats["mercure_subscribers"], 1);
    server.stop().await;
}

#[tokio::test]
async fn publish_transforms_apply_to_mercure_updates_too() {
    // One ingest path: a `redact` transform in `[publish]` masks the field
    // in a Mercure update as in a `/publish` body, before anything is stored.
    let toml = format!(
        r#"{}
[plugins.redact]
use = "builtin:redact"
config = {{ fields = ["card"] }}

[publish]
transforms = ["redact"]
"#,
        config(true, false)
    );
    let server = Server::start_toml(&toml).await;
    let addr = server.addr;
    let t = "https://example.com/orders/1";
    let mut s = server.sse(&hub_url(&[t], ""), &[]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let id = publish_ok(
        addr,
        &[
            ("topic", t),
            ("data", r#"{"card":"4111 1111","total":5}"#),
            ("id", "urn:o:1"),
        ],
    )
    .await;
    assert_eq!(id, "urn:o:1", "the publisher's id survives the transform");
    let got = next_events(&mut s, 1).await;
    assert_eq!(got[0].0, "urn:o:1");
    let data: Value = serde_json::from_str(&got[0].2).unwrap();
    assert_eq!(data, json!({"card":"***","total":5}), "{}", got[0].2);
    // What is stored (replayed) is the redacted update too.
    let mut replay = server
        .sse(&hub_url(&[t], "&lastEventID=earliest"), &[])
        .await;
    let stored: Value = serde_json::from_str(&next_events(&mut replay, 1).await[0].2).unwrap();
    assert_eq!(stored["card"], "***");
    server.stop().await;
}
