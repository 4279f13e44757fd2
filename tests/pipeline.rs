//! The plugin pipeline end to end: real WASM components (stock and
//! misbehaving ones from `tests/plugins/`) declared in a config file, run by
//! the real server, observed over HTTP and SSE.

use crate::support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;
use std::time::Duration;
use support::*;

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

/// An HS256 JWT for `claims`.
fn jwt(claims: Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{header}.{payload}").as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{payload}.{sig}")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `GET path` with headers, answered as (status, JSON body).
async fn get_with(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let resp = request(addr, http::Method::GET, path, headers, bytes::Bytes::new()).await;
    let (status, _, body) = body_bytes(resp).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Waits briefly and checks nothing but heartbeats arrived.
async fn assert_quiet(sse: &mut Sse) {
    if let Ok(got) = tokio::time::timeout(Duration::from_millis(300), sse.next()).await {
        panic!("expected no event, got {got:?}");
    }
}

fn plugin_stat(stats: &Value, name: &str, field: &str) -> u64 {
    stats["pipeline"]["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no plugin {name} in {stats}"))[field]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn misbehaving_plugins_fail_their_own_calls_and_the_server_keeps_serving() {
    let config = format!(
        r#"
[plugins.spin]
use = "{spin}"
limits = {{ time = "20ms" }}

[plugins.bomb]
use = "{bomb}"
limits = {{ memory = "4MiB" }}

[plugins.trap]
use = "{trap}"

[plugins.garbage]
use = "{garbage}"

[plugins.lenient]
use = "{trap}"
on_error = "pass"

[[stream]]
path = "/spin"
filters = ["spin"]

[[stream]]
path = "/bomb"
filters = ["bomb"]

[[stream]]
path = "/trap"
filters = ["trap"]

[[stream]]
path = "/garbage"
filters = ["garbage"]

[[stream]]
path = "/lenient"
filters = ["lenient"]
"#,
        spin = test_wasm("spin"),
        bomb = test_wasm("bomb"),
        trap = test_wasm("trap"),
        garbage = test_wasm("garbage"),
    );
    let server = Server::start_toml(&config).await;
    let mut broken = Vec::new();
    for path in ["/spin", "/bomb", "/trap", "/garbage"] {
        let mut s = server.sse(&format!("{path}?topic=t"), &[]).await;
        s.connected().await;
        broken.push(s);
    }
    let mut lenient = server.sse("/lenient?topic=t", &[]).await;
    lenient.connected().await;
    let mut plain = server.sse("/events?topic=t", &[]).await;
    plain.connected().await;

    for round in 0..2u64 {
        server
            .publish(json!([{"topic": "t", "data": round}, {"topic": "t", "data": round + 10}]))
            .await;
        // Unfiltered and on_error = "pass" streams get every event.
        assert_eq!(
            plain.data(2).await,
            [round.to_string(), (round + 10).to_string()]
        );
        assert_eq!(
            lenient.data(2).await,
            [round.to_string(), (round + 10).to_string()]
        );
        // Each failing plugin failed this round's call (a fresh instance
        // every time). Waiting for it before the next publish keeps the
        // rounds apart: a lane that is still busy merges queued rounds into
        // one call, which would leave fewer calls than rounds.
        wait_stats(server.addr, |s| {
            ["spin", "bomb", "trap", "garbage"]
                .iter()
                .all(|p| plugin_stat(s, p, "calls") > round && plugin_stat(s, p, "errors") > round)
        })
        .await;
    }
    // Every failing call was counted, and the failing plugins' subscribers
    // got nothing (on_error = "drop").
    let stats = wait_stats(server.addr, |s| {
        ["spin", "bomb", "trap", "garbage"]
            .iter()
            .all(|p| plugin_stat(s, p, "errors") >= 2)
    })
    .await;
    assert!(plugin_stat(&stats, "lenient", "errors") >= 2);
    for s in &mut broken {
        assert_quiet(s).await;
    }
    let metrics = metrics_text(server.addr).await;
    for (plugin, kind) in [
        ("spin", "timeout"),
        ("bomb", "memory"),
        ("trap", "trap"),
        ("garbage", "malformed"),
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("spout_plugin_errors_total")
                    && l.contains(&format!("plugin=\"{plugin}\""))
                    && l.contains(&format!("kind=\"{kind}\""))),
            "no {plugin}/{kind} error metric in:\n{metrics}"
        );
    }
    assert!(metrics.contains("spout_plugin_calls_total"));
    assert!(metrics.contains("spout_plugin_call_seconds"));
    // Still serving.
    let (status, _) = server.get_json("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    server.publish(json!({"topic": "t", "data": "after"})).await;
    assert_eq!(plain.data(1).await, ["after"]);
    server.stop().await;
}

#[test]
fn invalid_pipelines_are_config_errors_naming_file_line_key_and_plugin() {
    let tmp = tempfile::tempdir().unwrap();
    let http = component_importing(tmp.path(), "wasi:http/outgoing-handler@0.2.0");
    let cases: Vec<(String, &[&str])> = vec![
        (
            format!("[plugins.web]\nuse = \"{http}\"\n"),
            &[
                "config.toml:2:",
                "plugins.web.use",
                "plugin `web`",
                "imports `wasi:http/outgoing-handler@0.2.0`",
            ],
        ),
        (
            "[[stream]]\npath = \"/events\"\nauth = \"nope\"\n".into(),
            &["config.toml:3:", "stream[0].auth", "no plugin named `nope`"],
        ),
        (
            "[plugins.m]\nuse = \"builtin:filter-match\"\n\n[[stream]]\npath = \"/events\"\nauth = \"m\"\n".into(),
            &["config.toml:6:", "stream[0].auth", "plugin `m` is a filter plugin", "auth plugin"],
        ),
        (
            "[plugins.m]\nuse = \"builtin:filter-match\"\nconfig = { where = [\"level:bogus:1\"] }\n".into(),
            &["config.toml:2:", "plugins.m", "init rejected its config", "unknown op `bogus`"],
        ),
        (
            "[plugins.gone]\nuse = \"missing/plugin.wasm\"\n".into(),
            &["config.toml:2:", "plugins.gone.use", "cannot read plugin file", "missing/plugin.wasm"],
        ),
        (
            "[plugins.x]\nuse = \"builtin:nothing\"\n".into(),
            &["config.toml:2:", "no built-in plugin `nothing`", "filter-match"],
        ),
    ];
    for (config, expected) in cases {
        let (ok, stderr) = check(&config);
        assert!(!ok, "check passed for:\n{config}");
        for e in expected {
            assert!(stderr.contains(e), "missing {e:?} in: {stderr}");
        }
    }
    let (ok, stderr) = check("[plugins.m]\nuse = \"builtin:filter-match\"\n\n[[stream]]\npath = \"/events\"\nfilters = [\"m\"]\n");
    assert!(ok, "{stderr}");

    // Secrets from the environment: `${NAME}` values are expanded before init.
    let jwt = "[plugins.jwt]\nuse = \"builtin:auth-jwt\"\nconfig = { secret = \"${SPOUT_TEST_SECRET}\" }\n";
    let (ok, stderr) = check(jwt);
    assert!(!ok);
    assert!(
        stderr.contains("plugins.jwt.config.secret") && stderr.contains("SPOUT_TEST_SECRET"),
        "{stderr}"
    );
    let (ok, stderr) = check_env(jwt, &[("SPOUT_TEST_SECRET", SECRET)]);
    assert!(ok, "{stderr}");
}

fn jwt_config() -> String {
    format!(
        r#"
[plugins.jwt]
use = "builtin:auth-jwt"
config = {{ secret = "{SECRET}", audience = "spout" }}

[[stream]]
path = "/events"
auth = "jwt"
"#
    )
}

/// A filter whose guest leaks memory on every event (as componentize-js
/// does) is retired before it reaches its limit: its route delivers every
/// event with no plugin error, and `/stats` and `/metrics` count the
/// retirements.
#[tokio::test]
async fn a_leaking_filter_is_retired_before_it_traps_and_the_retirements_are_counted() {
    let config = format!(
        r#"
[plugins.leak]
use = "{leak}"
limits = {{ memory = "8MiB" }}

[[stream]]
path = "/leak"
filters = ["leak"]
"#,
        leak = test_wasm("leak"),
    );
    let server = Server::start_toml(&config).await;
    let mut s = server.sse("/leak?topic=t", &[]).await;
    s.connected().await;
    // 40 calls of 8 events, one at a time (a call per batch): 64 KiB
    // forgotten per event is 20 MiB in all, 2.5 times the limit.
    for round in 0..40 {
        let batch: Vec<Value> = (0..8)
            .map(|i| json!({"topic": "t", "data": round * 8 + i}))
            .collect();
        server.publish(Value::Array(batch)).await;
        let want: Vec<String> = (0..8).map(|i| (round * 8 + i).to_string()).collect();
        assert_eq!(s.data(8).await, want, "round {round}");
    }
    let (_, stats) = server.get_json("/stats").await;
    assert_eq!(plugin_stat(&stats, "leak", "errors"), 0, "{stats}");
    let retired = plugin_stat(&stats, "leak", "retired");
    assert!(retired >= 2, "retired {retired}: {stats}");
    let metrics = metrics_text(server.addr).await;
    let counted = metrics
        .lines()
        .find(|l| l.starts_with("spout_plugin_retired_total") && l.contains("plugin=\"leak\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(counted, Some(retired), "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn jwt_auth_end_to_end() {
    let server = Server::start_toml(&jwt_config()).await;
    let addr = server.addr;
    let good =
        jwt(json!({"sub": "alice", "topics": ["orders/*"], "aud": "spout", "exp": now() + 600}));

    // Valid token in the header: streams, and private events reach alice.
    let bearer = format!("Bearer {good}");
    let mut s = server
        .sse("/events?topic=orders/1", &[("authorization", &bearer)])
        .await;
    s.connected().await;
    server
        .publish(json!([
            {"topic": "orders/1", "data": "for alice", "to": "alice"},
            {"topic": "orders/1", "data": "for bob", "to": "bob"},
            {"topic": "orders/1", "data": "for all"}
        ]))
        .await;
    assert_eq!(s.data(2).await, ["for alice", "for all"]);

    // In a cookie and in the query.
    let cookie = format!("theme=dark; spout_token={good}");
    let mut c = server
        .sse("/events?topic=orders/2", &[("cookie", &cookie)])
        .await;
    c.connected().await;
    let mut q = server
        .sse(&format!("/events?topic=orders/2&token={good}"), &[])
        .await;
    q.connected().await;
    server
        .publish(json!({"topic": "orders/2", "data": "x"}))
        .await;
    assert_eq!(c.data(1).await, ["x"]);
    assert_eq!(q.data(1).await, ["x"]);

    // Refusals, each a JSON error.
    let expired =
        jwt(json!({"sub": "alice", "topics": ["orders/*"], "aud": "spout", "exp": now() - 60}));
    let wrong_aud =
        jwt(json!({"sub": "alice", "topics": ["orders/*"], "aud": "other", "exp": now() + 600}));
    for (token, status, detail) in [
        (None, StatusCode::UNAUTHORIZED, "missing token"),
        (Some(expired), StatusCode::UNAUTHORIZED, "expired"),
        (Some(wrong_aud), StatusCode::UNAUTHORIZED, "audience"),
        (
            Some(format!("{good}x")),
            StatusCode::UNAUTHORIZED,
            "signature",
        ),
    ] {
        let header = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = header
            .iter()
            .map(|h| ("authorization", h.as_str()))
            .collect();
        let (got, body) = get_with(addr, "/events?topic=orders/1", &headers).await;
        assert_eq!(got, status, "{body}");
        assert_eq!(body["error"], "unauthorized", "{body}");
        assert!(body["detail"].as_str().unwrap().contains(detail), "{body}");
    }
    let (got, body) = get_with(addr, "/events?topic=news", &[("authorization", &bearer)]).await;
    assert_eq!(got, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "forbidden");
    assert!(body["detail"].as_str().unwrap().contains("news"), "{body}");
    // /poll follows the /events route's auth.
    let (got, _) = get_with(addr, "/poll?topic=orders/1", &[]).await;
    assert_eq!(got, StatusCode::UNAUTHORIZED);
    let (got, page) = get_with(addr, "/poll?topic=orders/1", &[("authorization", &bearer)]).await;
    assert_eq!(got, StatusCode::OK);
    let data: Vec<&Value> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["data"])
        .collect();
    assert_eq!(data, [&json!("for alice"), &json!("for all")]);
    server.stop().await;
}

#[tokio::test]
async fn publishers_authenticate_and_publish_only_within_their_topics() {
    let config = r#"
[plugins.keys]
use = "builtin:auth-apikey"
config = { keys = [
  { key = "pub-key", user = "svc", topics = ["orders/**"], publish = true },
  { key = "sub-key", user = "ann", topics = ["orders/**"] },
] }

[publish]
auth = "keys"
"#;
    let server = Server::start_toml(config).await;
    let post = |key: Option<&'static str>, topic: &'static str| {
        let addr = server.addr;
        async move {
            let mut headers = vec![("content-type", "application/json")];
            if let Some(k) = key {
                headers.push(("x-api-key", k));
            }
            let body = json!({"topic": topic, "data": 1}).to_string();
            let resp = request(addr, http::Method::POST, "/publish", &headers, body).await;
            let (status, _, body) = body_bytes(resp).await;
            (status, serde_json::from_slice::<Value>(&body).unwrap())
        }
    };
    let (s, body) = post(Some("pub-key"), "orders/1").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["ids"], json!([1]));
    let (s, body) = post(None, "orders/1").await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (s, body) = post(Some("sub-key"), "orders/1").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let (s, body) = post(Some("pub-key"), "billing/1").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("billing/1"));
    // Nothing refused was stored.
    let (_, page) = server.get_json("/poll?topic=**").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_filter_runs_once_per_batch_per_subscription_key_not_per_connection() {
    let config = r#"
[plugins.match]
use = "builtin:filter-match"

[[stream]]
path = "/events"
filters = ["match"]
"#;
    let server = Server::start_toml(config).await;
    const PER_KEY: usize = 500;
    let mut errors = Vec::new();
    let mut infos = Vec::new();
    for i in 0..2 * PER_KEY {
        let (level, list) = if i % 2 == 0 {
            ("error", &mut errors)
        } else {
            ("info", &mut infos)
        };
        let mut s = server
            .sse(
                &format!("/events?topic=logs&where=severity:eq:{level}"),
                &[],
            )
            .await;
        s.connected().await;
        list.push(s);
    }
    // (serde_json sorts the keys of the bodies this test publishes.)
    let stats = wait_stats(server.addr, |s| s["connections"] == 2 * PER_KEY).await;
    assert_eq!(stats["pipeline"]["filter_groups"], 2);
    let before = plugin_stat(&stats, "match", "calls");
    // One request is one commit is one batch for the hub.
    server
        .publish(json!([
            {"topic": "logs", "data": {"severity": "error", "n": 1}},
            {"topic": "logs", "data": {"severity": "info", "n": 2}},
            {"topic": "logs", "data": {"severity": "error", "n": 3}},
            {"topic": "logs", "data": {"severity": "debug", "n": 4}}
        ]))
        .await;
    for s in &mut errors {
        let got = s.data(2).await;
        assert_eq!(
            got,
            [
                r#"{"n":1,"severity":"error"}"#,
                r#"{"n":3,"severity":"error"}"#
            ]
        );
    }
    for s in &mut infos {
        assert_eq!(s.data(1).await, [r#"{"n":2,"severity":"info"}"#]);
    }
    let (_, stats) = server.get_json("/stats").await;
    assert_eq!(
        plugin_stat(&stats, "match", "calls") - before,
        2,
        "one call per key"
    );
    server.stop().await;
}

#[tokio::test]
async fn custom_filter_example_sees_the_subscriber() {
    let file = format!("{}/only_mine.wasm", env!("SPOUT_TEST_WASM_DIR"));
    let config = format!(
        "[server]\ninsecure_user_param = true\n\n[plugins.mine]\nuse = \"{file}\"\n\n[[stream]]\npath = \"/events\"\nfilters = [\"mine\"]\n"
    );
    let server = Server::start_toml(&config).await;
    let mut ann = server.sse("/events?topic=docs&user=ann", &[]).await;
    let mut bob = server.sse("/events?topic=docs&user=bob", &[]).await;
    ann.connected().await;
    bob.connected().await;
    server
        .publish(json!([
            {"topic": "docs", "data": {"owner": "ann", "n": 1}},
            {"topic": "docs", "data": {"owner": "bob", "n": 2}},
            {"topic": "docs", "data": {"public": true, "n": 3}}
        ]))
        .await;
    assert_eq!(
        ann.data(2).await,
        [r#"{"n":1,"owner":"ann"}"#, r#"{"n":3,"public":true}"#]
    );
    assert_eq!(
        bob.data(2).await,
        [r#"{"n":2,"owner":"bob"}"#, r#"{"n":3,"public":true}"#]
    );
    // Replay runs the same filter over the log.
    let mut late = server
        .sse("/events?topic=docs&user=bob", &[("last-event-id", "0")])
        .await;
    late.connected().await;
    assert_eq!(
        late.data(2).await,
        [r#"{"n":2,"owner":"bob"}"#, r#"{"n":3,"public":true}"#]
    );
    server.stop().await;
}

#[test]
fn the_custom_filter_example_config_is_valid() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/custom-filter/config.toml"
    ))
    .unwrap();
    let built = "target/wasm32-wasip2/release/only_mine.wasm";
    assert!(text.contains(built), "the README's build output path");
    let file = format!("{}/only_mine.wasm", env!("SPOUT_TEST_WASM_DIR"));
    let (ok, stderr) = check(&text.replace(built, &file));
    assert!(ok, "{stderr}");
}

#[tokio::test]
async fn replacing_a_plugin_file_reloads_it_for_open_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let plugin = tmp.path().join("mine.wasm");
    std::fs::copy(
        format!("{}/only_mine.wasm", env!("SPOUT_TEST_WASM_DIR")),
        &plugin,
    )
    .unwrap();
    let config = "[server]\ninsecure_user_param = true\n\n[plugins.mine]\nuse = \"mine.wasm\"\n\n[[stream]]\npath = \"/events\"\nfilters = [\"mine\"]\n";
    std::fs::write(tmp.path().join("config.toml"), config).unwrap();
    let mut cfg = spout::config::Config::load(&tmp.path().join("config.toml")).unwrap();
    cfg.log.path = tmp.path().join("data");
    cfg.plugin_cache = Some(plugin_cache());
    let server = Server::start_in(tmp.path(), move |c| *c = cfg).await;
    let mut ann = server.sse("/events?topic=docs&user=ann", &[]).await;
    ann.connected().await;
    server
        .publish(json!([{"topic": "docs", "data": {"owner": "bob"}}, {"topic": "docs", "data": {"owner": "ann"}}]))
        .await;
    assert_eq!(ann.data(1).await, [r#"{"owner":"ann"}"#]);

    // A rebuild replaces the file (written aside, renamed over it, as
    // editors and some build tools do): the pipeline reloads with the new
    // component and Ann's open connection runs it.
    let aside = tmp.path().join("mine.wasm.new");
    std::fs::copy(test_wasm("trap"), &aside).unwrap();
    std::fs::rename(&aside, &plugin).unwrap();
    let stats = wait_stats(server.addr, |s| s["pipeline"]["generation"] == 2).await;
    let describe = |stats: &Value| {
        stats["pipeline"]["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "mine")
            .unwrap()["describe"]["name"]
            .clone()
    };
    assert_eq!(describe(&stats), "trap", "{stats}");
    server
        .publish(json!({"topic": "docs", "data": {"owner": "ann"}}))
        .await;
    let stats = wait_stats(server.addr, |s| plugin_stat(s, "mine", "errors") >= 1).await;
    assert_eq!(describe(&stats), "trap");
    server.stop().await;
}

fn filter_config(condition: &str) -> String {
    format!(
        r#"
[plugins.match]
use = "builtin:filter-match"
config = {{ where = ["{condition}"] }}

[[stream]]
path = "/events"
filters = ["match"]
"#
    )
}

#[tokio::test]
async fn hot_reload_changes_filters_for_open_connections_and_keeps_the_old_pipeline_on_error() {
    let server = Server::start_toml(&filter_config("severity:eq:error")).await;
    let mut s = server.sse("/events?topic=logs", &[]).await;
    s.connected().await;
    server
        .publish(json!([{"topic": "logs", "data": {"severity": "info"}}, {"topic": "logs", "data": {"severity": "error"}}]))
        .await;
    assert_eq!(s.data(1).await, [r#"{"severity":"error"}"#]);

    std::fs::write(server.config_file(), filter_config("severity:eq:warn")).unwrap();
    wait_stats(server.addr, |s| s["pipeline"]["generation"] == 2).await;
    server
        .publish(json!([{"topic": "logs", "data": {"severity": "error"}}, {"topic": "logs", "data": {"severity": "warn"}}]))
        .await;
    assert_eq!(
        s.data(1).await,
        [r#"{"severity":"warn"}"#],
        "same connection, new filter"
    );

    // An invalid edit: reported, and the previous pipeline keeps serving.
    std::fs::write(
        server.config_file(),
        "[[stream]]\npath = \"/events\"\nfilters = [\"nope\"]\n",
    )
    .unwrap();
    let stats = wait_stats(server.addr, |s| s["pipeline"]["last_reload"]["ok"] == false).await;
    assert!(
        stats["pipeline"]["last_reload"]["error"]
            .as_str()
            .unwrap()
            .contains("nope"),
        "{stats}"
    );
    assert_eq!(stats["pipeline"]["generation"], 2);
    server
        .publish(json!([{"topic": "logs", "data": {"severity": "error"}}, {"topic": "logs", "data": {"severity": "warn", "n": 2}}]))
        .await;
    assert_eq!(s.data(1).await, [r#"{"n":2,"severity":"warn"}"#]);
    server.stop().await;
}

fn apikey_config(key: &str) -> String {
    format!(
        r#"
[plugins.keys]
use = "builtin:auth-apikey"
config = {{ keys = [{{ key = "{key}", user = "ann", topics = ["**"] }}] }}

[[stream]]
path = "/events"
auth = "keys"
"#
    )
}

#[tokio::test]
async fn reload_revokes_connections_the_new_auth_refuses() {
    let server = Server::start_toml(&apikey_config("old-key")).await;
    let mut s = server.sse("/events?topic=a&apikey=old-key", &[]).await;
    s.connected().await;
    std::fs::write(server.config_file(), apikey_config("new-key")).unwrap();
    let e = s.next().await;
    assert_eq!(e.kind, "revoked");
    assert!(e.data.contains("unknown API key"), "{}", e.data);
    assert!(s.next_or_end().await.is_none(), "stream ends after revoked");
    let stats = wait_stats(server.addr, |s| s["connections"] == 0).await;
    assert_eq!(stats["pipeline"]["last_reload"]["revoked"], 1);
    let mut again = server.sse("/events?topic=a&apikey=new-key", &[]).await;
    again.connected().await;
    server.stop().await;
}

#[tokio::test]
async fn auth_plugins_hear_disconnects_and_keep_state_in_their_store() {
    let config = format!(
        "[plugins.gate]\nuse = \"{}\"\nconfig = {{ max_disconnects = 1 }}\n\n[[stream]]\npath = \"/events\"\nauth = \"gate\"\n",
        test_wasm("gate")
    );
    let server = Server::start_toml(&config).await;
    // A trapping auth call fails closed: 503, and the next call works.
    let (status, body) = get_with(server.addr, "/events?topic=a&crash=1", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "auth_unavailable");
    assert!(
        body["detail"].as_str().unwrap().contains("trapped"),
        "{body}"
    );
    let mut s = server.sse("/events?topic=a", &[]).await;
    s.connected().await;
    drop(s);
    // The plugin's on-disconnect counted the departure in its kv store; its
    // authenticate now refuses.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = get_with(server.addr, "/poll?topic=a", &[]).await;
        if status == StatusCode::FORBIDDEN {
            assert_eq!(body["detail"], "1 disconnects seen");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "disconnect never seen: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn publish_transforms_rewrite_events_before_the_log() {
    let config = format!(
        "[plugins.audit]\nuse = \"{}\"\n\n[publish]\ntransforms = [\"audit\"]\n",
        test_wasm("audit")
    );
    let server = Server::start_toml(&config).await;
    let mut s = server.sse("/events?topic=**", &[]).await;
    s.connected().await;
    let ids = server
        .publish(json!([
            {"topic": "orders/1", "data": {"n": 1}},
            {"topic": "orders/1", "type": "secret", "data": {"n": 2}}
        ]))
        .await;
    assert_eq!(
        ids,
        [1, 2],
        "one event became two, the secret one was dropped"
    );
    let got = s.events(2).await;
    assert_eq!(
        (got[0].kind.as_str(), got[0].data.as_str()),
        ("message", r#"{"n":1}"#)
    );
    assert_eq!(
        (got[1].kind.as_str(), got[1].data.as_str()),
        ("audit", r#"{"n":1}"#)
    );
    let (_, page) = server.get_json("/poll?topic=audit/**").await;
    assert_eq!(page["events"][0]["topic"], "audit/orders/1");
    assert!(!String::from_utf8_lossy(&s.raw).contains("secret"));

    // A transform may refuse the whole request: nothing of it is stored.
    let (status, body) = post(
        server.addr,
        "/publish",
        "application/json",
        json!([
            {"topic": "orders/2", "data": "fine"},
            {"topic": "orders/2", "type": "forbidden", "data": "no"}
        ])
        .to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"], "rejected_by_transform");
    assert_eq!(
        body["detail"],
        "events of type forbidden are refused (orders/2)"
    );
    let (_, page) = server.get_json("/poll?topic=orders/2").await;
    assert_eq!(page["events"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn interval_sources_publish_what_poll_returns() {
    let config = format!(
        "[plugins.tick]\nuse = \"{}\"\n\n[[source]]\nplugin = \"tick\"\nevery = \"50ms\"\n",
        test_wasm("tick")
    );
    let server = Server::start_toml(&config).await;
    let mut s = server.sse("/events?topic=ticks", &[]).await;
    s.connected().await;
    let got = s.events(2).await;
    assert!(
        got.iter()
            .all(|e| e.kind == "tick" && e.data.starts_with("{\"at\":")),
        "{got:?}"
    );
    let (_, stats) = server.get_json("/stats").await;
    assert_eq!(stats["pipeline"]["sources"][0]["plugin"], "tick");
    server.stop().await;
}

#[tokio::test]
async fn sighup_reloads_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, filter_config("severity:eq:error")).unwrap();
    let mut spout = spawn_binary(&file, &dir.path().join("data"));
    let (_, stats) = get_json(spout.addr, "/stats").await;
    assert_eq!(stats["pipeline"]["generation"], 1);
    // No file changed: only the signal can cause this reload.
    let status = std::process::Command::new("kill")
        .args(["-HUP", &spout.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let stats = wait_stats(spout.addr, |s| s["pipeline"]["generation"] == 2).await;
    assert_eq!(stats["pipeline"]["last_reload"]["attempts"], 1);
    assert_eq!(stats["pipeline"]["last_reload"]["ok"], true);
    assert!(spout.child.try_wait().unwrap().is_none(), "still serving");
    spout.child.kill().unwrap();
    let _ = spout.child.wait();
}

/// Runs the system `openssl` with `args` in `dir`, feeding `input`.
fn openssl(dir: &std::path::Path, args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl is needed to make RS256 test keys");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?} failed");
    out.stdout
}

#[tokio::test]
async fn jwt_auth_accepts_rs256_tokens_signed_by_the_configured_key() {
    let dir = tempfile::tempdir().unwrap();
    openssl(
        dir.path(),
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "key.pem",
        ],
        b"",
    );
    let public = openssl(dir.path(), &["pkey", "-in", "key.pem", "-pubout"], b"");
    let sign = |claims: Value| {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{payload}");
        let sig = openssl(
            dir.path(),
            &["dgst", "-sha256", "-sign", "key.pem"],
            input.as_bytes(),
        );
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    };
    let config = format!(
        "[plugins.jwt]\nuse = \"builtin:auth-jwt\"\nconfig = {{ algorithm = \"RS256\", public_key = '''\n{}''' }}\n\n[[stream]]\npath = \"/events\"\nauth = \"jwt\"\n",
        String::from_utf8(public).unwrap()
    );
    let server = Server::start_toml(&config).await;
    let good = sign(json!({"sub": "ann", "topics": ["a/*"], "exp": now() + 600}));
    let mut s = server
        .sse(&format!("/events?topic=a/1&token={good}"), &[])
        .await;
    s.connected().await;
    // An HS256 token made with any secret is refused: the key decides the algorithm.
    let forged = jwt(json!({"sub": "ann", "topics": ["a/*"], "exp": now() + 600}));
    let (status, body) = get_with(
        server.addr,
        &format!("/events?topic=a/1&token={forged}"),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn one_time_tickets_open_a_stream_once() {
    let server = Server::start_toml(&jwt_config()).await;
    let addr = server.addr;
    let token =
        jwt(json!({"sub": "alice", "topics": ["orders/*"], "aud": "spout", "exp": now() + 600}));
    let bearer = format!("Bearer {token}");
    let resp = request(
        addr,
        http::Method::POST,
        "/tickets",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    let (status, _, body) = body_bytes(resp).await;
    assert_eq!(status, StatusCode::CREATED);
    let body: Value = serde_json::from_slice(&body).unwrap();
    let ticket = body["ticket"].as_str().unwrap().to_owned();
    assert_eq!(ticket.len(), 64);
    assert_eq!(body["path"], "/events");
    assert_eq!(body["expires_in"], 30);

    // The ticket stands for alice: no header needed, her private events arrive.
    let mut s = server
        .sse(&format!("/events?topic=orders/1&ticket={ticket}"), &[])
        .await;
    assert_eq!(s.status, StatusCode::OK);
    s.connected().await;
    server
        .publish(json!([
            {"topic": "orders/1", "data": "for alice", "to": "alice"},
            {"topic": "orders/1", "data": "for bob", "to": "bob"}
        ]))
        .await;
    assert_eq!(s.data(1).await, ["for alice"]);

    // Used once: a second use, a made-up ticket and a topic outside the
    // principal's grant are refused.
    let (status, body) = server
        .get_json(&format!("/events?topic=orders/1&ticket={ticket}"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_ticket");
    let (status, _) = server
        .get_json(&format!("/events?topic=orders/1&ticket={}", "a".repeat(64)))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let resp = request(
        addr,
        http::Method::POST,
        "/tickets",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    let (_, _, body) = body_bytes(resp).await;
    let other = serde_json::from_slice::<Value>(&body).unwrap()["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = server
        .get_json(&format!("/events?topic=billing&ticket={other}"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // No credentials, no ticket.
    let resp = request(addr, http::Method::POST, "/tickets", &[], "").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn topic_changes_are_authorized_by_the_routes_auth_plugin() {
    let server = Server::start_toml(&jwt_config()).await;
    let addr = server.addr;
    let alice =
        jwt(json!({"sub": "alice", "topics": ["orders/*"], "aud": "spout", "exp": now() + 600}));
    let bob = jwt(json!({"sub": "bob", "topics": ["**"], "aud": "spout", "exp": now() + 600}));
    let mut s = server
        .sse(
            "/events?topic=orders/1",
            &[("authorization", &format!("Bearer {alice}"))],
        )
        .await;
    let id = s.connected().await["connection"]
        .as_str()
        .unwrap()
        .to_owned();
    let change = |token: String, body: Value| {
        let id = id.clone();
        async move {
            let auth = format!("Bearer {token}");
            let resp = request(
                addr,
                http::Method::POST,
                &format!("/connections/{id}/topics"),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                body.to_string(),
            )
            .await;
            resp.status()
        }
    };
    // Her own token: within her grant yes, outside it 403.
    assert_eq!(
        change(alice.clone(), json!({"add": ["orders/2"]})).await,
        StatusCode::OK
    );
    assert_eq!(
        change(alice.clone(), json!({"add": ["billing"]})).await,
        StatusCode::FORBIDDEN
    );
    // Someone else's valid token: 403.
    assert_eq!(
        change(bob, json!({"add": ["orders/3"]})).await,
        StatusCode::FORBIDDEN
    );
    server
        .publish(json!({"topic": "orders/2", "data": "added"}))
        .await;
    assert_eq!(s.data(1).await, ["added"]);
    server.stop().await;
}

/// A route whose filters fall behind (here 200 distinct filter keys, one
/// call each per batch, against events published one per request) filters
/// the batches queued meanwhile together: every subscriber still gets
/// exactly its events, in order, and the merged rounds are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_route_that_falls_behind_merges_queued_batches_in_order() {
    let server = Server::start_toml(
        "[plugins.match]\nuse = \"builtin:filter-match\"\n\n[[stream]]\npath = \"/events\"\nfilters = [\"match\"]\n",
    )
    .await;
    let keys = 200;
    let mut subs = Vec::new();
    for k in 0..keys {
        let mut s = server
            .sse(&format!("/events?topic=t&where=n:ne:{k}"), &[])
            .await;
        s.connected().await;
        subs.push(s);
    }
    let events = 60u64;
    for n in 0..events {
        server
            .publish(json!({"topic": "t", "data": {"n": n}}))
            .await;
    }
    for (k, s) in subs.iter_mut().enumerate().step_by(7) {
        let want: Vec<String> = (0..events)
            .filter(|n| *n != k as u64)
            .map(|n| format!("{{\"n\":{n}}}"))
            .collect();
        let got = s.data(want.len()).await;
        assert_eq!(got, want, "subscriber {k}");
    }
    let metrics = metrics_text(server.addr).await;
    let merged: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("spout_filter_rounds_coalesced_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(merged > 0, "no merged rounds:\n{metrics}");
    server.stop().await;
}
