//! The stock `schema` transform end to end: JSON Schemas chosen by topic
//! selector or event type, declared in a config file, run by the real
//! server; invalid publishes are refused whole with 422 and the errors.

use crate::support;

use http::StatusCode;
use serde_json::{json, Value};
use support::*;

/// A config with the `schema` plugin `s` (its config given as TOML lines
/// below `[plugins.s.config]`) as the publish transform.
fn config(plugin_config: &str) -> String {
    format!(
        "[publish]\ntransforms = [\"s\"]\n\n[plugins.s]\nuse = \"builtin:schema\"\n\n[plugins.s.config]\n{plugin_config}\n"
    )
}

const ORDERS: &str = r#"
[[plugins.s.config.rules]]
topic = "orders/*"
schema = { type = "object", required = ["id"], properties = { id = { type = "string" }, amount = { type = "number", minimum = 0 } } }

[[plugins.s.config.rules]]
type = "created"
schema = { type = "object", required = ["by"] }

[[plugins.s.config.rules]]
topic = "users/**"
type = "deleted"
schema = { type = "object", required = ["reason"] }

[[plugins.s.config.rules]]
topic = "notes/*"
schema = '''
{ "type": "string", "maxLength": 5 }
'''

[[plugins.s.config.rules]]
topic = "bulk"
schema = { required = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"] }
"#;

/// Starts a server with the plugin, once its compiled form is in the shared
/// cache: on a cold cache, concurrent tests would each compile it.
async fn start(text: &str) -> Server {
    warm_cache();
    Server::start_toml(text).await
}

/// Compiles the plugin into the shared cache once (through `spout check`).
fn warm_cache() {
    static WARM: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    WARM.get_or_init(|| {
        let (ok, stderr) = check(&config(ORDERS));
        assert!(ok, "{stderr}");
    });
}

async fn publish(server: &Server, body: Value) -> (StatusCode, Value) {
    post(
        server.addr,
        "/publish",
        "application/json",
        body.to_string(),
    )
    .await
}

/// The `data` of every stored event on `topic`.
async fn stored(server: &Server, topic: &str) -> Vec<Value> {
    let (status, page) = server.get_json(&format!("/poll?topic={topic}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events in {page}"))
        .iter()
        .map(|e| e["data"].clone())
        .collect()
}

/// Asserts a 422 refusal by the transform whose detail holds every part.
fn assert_refused(status: StatusCode, body: &Value, parts: &[&str]) -> String {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "rejected_by_transform", "{body}");
    let detail = body["detail"].as_str().unwrap_or_default().to_owned();
    for p in parts {
        assert!(detail.contains(p), "missing {p:?} in {detail:?}");
    }
    detail
}

#[tokio::test]
async fn valid_events_are_stored_and_an_invalid_one_refuses_the_whole_publish() {
    let server = start(&config(ORDERS)).await;

    // Valid: stored unchanged.
    let ids = server
        .publish(json!({"topic": "orders/1", "data": {"id": "a1", "amount": 5}}))
        .await;
    assert_eq!(ids.len(), 1);
    assert_eq!(
        stored(&server, "orders/1").await,
        [json!({"id": "a1", "amount": 5})]
    );

    // Invalid: 422 with every error, each at its instance path.
    let (status, body) = publish(
        &server,
        json!({"topic": "orders/2", "data": {"amount": -5}}),
    )
    .await;
    let detail = assert_refused(
        status,
        &body,
        &[
            "orders/2: ",
            "/amount: -5 is less than the minimum of 0",
            "\"id\" is a required property",
        ],
    );
    assert!(detail.contains("; "), "errors are joined: {detail}");
    assert_eq!(stored(&server, "orders/2").await, Vec::<Value>::new());

    // A mixed request stores nothing, not even its valid events.
    let (status, body) = publish(
        &server,
        json!([
            {"topic": "orders/3", "data": {"id": "ok"}},
            {"topic": "orders/3", "data": {"id": 7}},
            {"topic": "elsewhere", "data": "anything"}
        ]),
    )
    .await;
    assert_refused(
        status,
        &body,
        &["orders/3: /id: 7 is not of type \"string\""],
    );
    assert_eq!(stored(&server, "orders/3").await, Vec::<Value>::new());
    assert_eq!(stored(&server, "elsewhere").await, Vec::<Value>::new());

    // `*` is exactly one segment: orders/3/x has no rule and passes.
    server
        .publish(json!({"topic": "orders/3/x", "data": {"amount": -1}}))
        .await;
    assert_eq!(stored(&server, "orders/3/x").await, [json!({"amount": -1})]);

    // Text events are validated as JSON strings and stored as text.
    server
        .publish(json!({"topic": "notes/1", "data": "hi"}))
        .await;
    assert_eq!(stored(&server, "notes/1").await, [json!("hi")]);
    let (status, body) =
        publish(&server, json!({"topic": "notes/1", "data": "far too long"})).await;
    assert_refused(status, &body, &["notes/1: ", "is longer than 5 characters"]);
    let (status, body) = publish(&server, json!({"topic": "notes/1", "data": {"n": 1}})).await;
    assert_refused(status, &body, &["is not of type \"string\""]);
    assert_eq!(stored(&server, "notes/1").await, [json!("hi")]);

    // The reason is bounded: ten errors, then a count of the rest.
    let (status, body) = publish(&server, json!({"topic": "bulk", "data": {}})).await;
    let detail = assert_refused(status, &body, &["bulk: ", "; and 2 more"]);
    assert_eq!(
        detail.matches("is a required property").count(),
        10,
        "{detail}"
    );
    assert!(detail.len() < 600, "{detail}");
    server.stop().await;
}

#[tokio::test]
async fn type_rules_apply_to_events_of_that_type_and_every_matching_rule_applies() {
    let server = start(&config(ORDERS)).await;

    // A type-only rule applies on any topic; other types are not checked.
    let (status, body) = publish(
        &server,
        json!({"topic": "misc/1", "type": "created", "data": {"what": "x"}}),
    )
    .await;
    assert_refused(
        status,
        &body,
        &["misc/1: ", "\"by\" is a required property"],
    );
    server
        .publish(json!({"topic": "misc/1", "type": "created", "data": {"by": "ann"}}))
        .await;
    server
        .publish(json!({"topic": "misc/1", "type": "updated", "data": {"what": "x"}}))
        .await;
    server
        .publish(json!({"topic": "misc/1", "data": {"what": "y"}}))
        .await;
    assert_eq!(
        stored(&server, "misc/1").await,
        [
            json!({"by": "ann"}),
            json!({"what": "x"}),
            json!({"what": "y"})
        ]
    );

    // Topic and type rules both apply to a created order.
    let (status, body) = publish(
        &server,
        json!({"topic": "orders/9", "type": "created", "data": {"id": "o9"}}),
    )
    .await;
    let detail = assert_refused(status, &body, &["\"by\" is a required property"]);
    assert!(!detail.contains("\"id\""), "{detail}");
    let (status, body) = publish(
        &server,
        json!({"topic": "orders/9", "type": "created", "data": {"by": "ann"}}),
    )
    .await;
    assert_refused(status, &body, &["\"id\" is a required property"]);
    server
        .publish(json!({"topic": "orders/9", "type": "created", "data": {"id": "o9", "by": "ann"}}))
        .await;
    assert_eq!(
        stored(&server, "orders/9").await,
        [json!({"id": "o9", "by": "ann"})]
    );

    // A rule with topic and type needs both to match.
    let (status, body) = publish(
        &server,
        json!({"topic": "users/eu/1", "type": "deleted", "data": {}}),
    )
    .await;
    assert_refused(
        status,
        &body,
        &["users/eu/1: ", "\"reason\" is a required property"],
    );
    server
        .publish(json!({"topic": "users/eu/1", "type": "renamed", "data": {}}))
        .await;
    server
        .publish(json!({"topic": "accounts/1", "type": "deleted", "data": {}}))
        .await;
    assert_eq!(stored(&server, "users/eu/1").await, [json!({})]);
    assert_eq!(stored(&server, "accounts/1").await, [json!({})]);
    server.stop().await;
}

#[tokio::test]
async fn require_match_refuses_events_no_rule_covers() {
    let server = start(&config(&format!("require_match = true\n{ORDERS}"))).await;
    let (status, body) = publish(&server, json!({"topic": "misc", "data": {"x": 1}})).await;
    assert_refused(status, &body, &["no schema for topic misc"]);
    // One uncovered event refuses the request, covered ones included.
    let (status, body) = publish(
        &server,
        json!([
            {"topic": "orders/1", "data": {"id": "a"}},
            {"topic": "orders/1/x", "data": {"id": "b"}}
        ]),
    )
    .await;
    assert_refused(status, &body, &["no schema for topic orders/1/x"]);
    assert_eq!(stored(&server, "orders/1").await, Vec::<Value>::new());
    assert_eq!(stored(&server, "misc").await, Vec::<Value>::new());
    // Covered by topic or by type: stored.
    server
        .publish(json!({"topic": "orders/1", "data": {"id": "a"}}))
        .await;
    server
        .publish(json!({"topic": "misc", "type": "created", "data": {"by": "ann"}}))
        .await;
    assert_eq!(stored(&server, "orders/1").await, [json!({"id": "a"})]);
    assert_eq!(stored(&server, "misc").await, [json!({"by": "ann"})]);
    server.stop().await;
}

#[test]
fn a_bad_rule_is_a_config_error_and_the_server_does_not_start() {
    let cases: &[(&str, &[&str])] = &[
        (
            "[[plugins.s.config.rules]]\ntopic = \"orders/*\"\nschema = { type = \"object\" }\n\n[[plugins.s.config.rules]]\nschema = { type = 5 }\n",
            &["plugins.s", "init rejected its config", "rule 1: invalid schema"],
        ),
        (
            "[[plugins.s.config.rules]]\nschema = { type = \"object\", properties = { id = { minimum = \"zero\" } } }\n",
            &["rule 0: invalid schema at /properties/id/minimum"],
        ),
        (
            "[[plugins.s.config.rules]]\nschema = { \"$ref\" = \"https://example.com/other.json\" }\n",
            &["rule 0: invalid schema"],
        ),
        (
            "[[plugins.s.config.rules]]\nschema = '{ \"type\": '\n",
            &["rule 0: `schema` is a string but not JSON"],
        ),
        (
            "[[plugins.s.config.rules]]\ntopic = \"orders/**/x\"\nschema = {}\n",
            &["rule 0: topic \"orders/**/x\"", "wildcard"],
        ),
        (
            "[[plugins.s.config.rules]]\ntopic = \"a\"\n",
            &["missing field `schema`"],
        ),
        ("strict = true\n", &["unknown field `strict`"]),
    ];
    warm_cache();
    for (plugin_config, expected) in cases {
        let text = config(plugin_config);
        let (ok, stderr) = check(&text);
        assert!(!ok, "check passed for:\n{text}");
        for e in *expected {
            assert!(stderr.contains(e), "missing {e:?} in: {stderr}");
        }
    }

    // The server itself refuses to open with such a config.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, config(cases[0].0)).unwrap();
    let mut cfg = spout::config::Config::load(&file).unwrap();
    cfg.log.path = dir.path().join("data");
    cfg.plugin_cache = Some(plugin_cache());
    let err = match spout::app::App::open(cfg) {
        Ok(_) => panic!("the server opened with an invalid schema"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("rule 1: invalid schema"), "{err}");
}
