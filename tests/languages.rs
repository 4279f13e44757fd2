//! Plugins written in JavaScript and Python (plugins/sdk-js, plugins/sdk-py):
//! built from the repository's lockfiles with the one command their READMEs
//! give, loaded by `use = "FILE.wasm"` exactly as a Rust component, and held
//! to the same sandbox. Each component (11–18 MB) is built once per run
//! (kept while its sources are unchanged) and compiled once into the shared
//! plugin cache; tests needing it wait for that. Node.js and Python 3 must
//! be present: with `CI=true` a missing one fails the test, elsewhere it is
//! skipped.

use crate::support::*;
use hyper::StatusCode;
use serde_json::{json, Value};
use spout::sse::parse::Received;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

#[derive(Clone, Copy, PartialEq)]
enum Lang {
    Js,
    Py,
}

/// The components the tests use: name, language, source (from the
/// repository root), and whether it is the custom-filter example (built in
/// place with the example README's command) or built into target/tmp.
const COMPONENTS: &[(&str, Lang, &str)] = &[
    (
        "js-only-mine",
        Lang::Js,
        "examples/custom-filter/js/only-mine.js",
    ),
    (
        "py-only-mine",
        Lang::Py,
        "examples/custom-filter/python/only_mine.py",
    ),
    ("js-escape", Lang::Js, "tests/plugins-js/escape.ts"),
    ("py-escape", Lang::Py, "tests/plugins-py/escape.py"),
    (
        "js-require-json",
        Lang::Js,
        "plugins/sdk-js/examples/require-json.js",
    ),
    (
        "js-bearer-auth",
        Lang::Js,
        "plugins/sdk-js/examples/bearer-auth.js",
    ),
    (
        "py-auth-tokens",
        Lang::Py,
        "plugins/sdk-py/examples/auth_tokens.py",
    ),
];

/// Each component of [`COMPONENTS`], once built and compiled this run;
/// tests needing one that is being built wait for it, others build theirs
/// meanwhile.
static BUILT: [OnceLock<Option<String>>; COMPONENTS.len()] =
    [const { OnceLock::new() }; COMPONENTS.len()];

/// The component `name` (a path to its .wasm), built and compiled into the
/// plugin cache; `None` when its language's toolchain is missing outside CI.
fn component(name: &'static str) -> Option<String> {
    let index = COMPONENTS
        .iter()
        .position(|(n, _, _)| *n == name)
        .unwrap_or_else(|| panic!("no component {name}"));
    BUILT[index]
        .get_or_init(|| {
            let path = build(name)?;
            // `spout check` compiles it into the shared cache (the slow part
            // in a debug build); servers started afterwards load it from
            // there. An auth plugin's `init` refuses the empty config: it
            // was compiled.
            let (ok, stderr) = check(&format!(
                "[plugins.p]\nuse = \"{path}\"\nlimits = {{ memory = \"64MiB\" }}\n"
            ));
            assert!(
                ok || stderr.contains("init rejected its config"),
                "{name} does not load: {stderr}"
            );
            Some(path)
        })
        .clone()
}

/// Whether the language's toolchain is here, with its SDK's packages
/// installed from the lockfile (once per run: two installs at once would
/// trip over each other); fails under CI when it cannot be had.
fn toolchain(lang: Lang) -> bool {
    static READY: [OnceLock<bool>; 2] = [OnceLock::new(), OnceLock::new()];
    *READY[lang as usize].get_or_init(|| install(lang))
}

fn install(lang: Lang) -> bool {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let (tool, install) = match lang {
        Lang::Js => ("node", "Node.js"),
        Lang::Py => ("python3", "Python 3 with venv"),
    };
    let here = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !here {
        assert!(!ci, "{tool} is missing: CI must install {install}");
        eprintln!("skipping: {tool} is missing");
        return false;
    }
    let root = root();
    match lang {
        Lang::Js => {
            let sdk = root.join("plugins/sdk-js");
            if !sdk
                .join("node_modules/@bytecodealliance/componentize-js")
                .is_dir()
            {
                run(Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund"])
                    .current_dir(&sdk));
            }
        }
        // build.sh makes its venv (componentize-py from requirements.txt)
        // when missing; writing the bindings does just that.
        Lang::Py => {
            let bindings = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("languages/py-bindings");
            let _ = std::fs::remove_dir_all(&bindings);
            run(Command::new(root.join("plugins/sdk-py/build.sh"))
                .arg("--bindings")
                .arg(&bindings)
                .args(["--world", "filter"])
                .current_dir(&root))
        }
    }
    true
}

/// Builds `name` unless its output is newer than everything it is built
/// from; returns the output's path.
fn build(name: &'static str) -> Option<String> {
    let &(_, lang, source) = COMPONENTS
        .iter()
        .find(|(n, _, _)| *n == name)
        .unwrap_or_else(|| panic!("no component {name}"));
    if !toolchain(lang) {
        return None;
    }
    let root = root();
    let out = match name {
        "js-only-mine" => root.join("examples/custom-filter/js/only-mine.wasm"),
        "py-only-mine" => root.join("examples/custom-filter/python/only-mine.wasm"),
        _ => {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("languages");
            std::fs::create_dir_all(&dir).unwrap();
            dir.join(format!("{name}.wasm"))
        }
    };
    let inputs: &[&str] = match lang {
        Lang::Js => &[
            "plugins/sdk-js/index.js",
            "plugins/sdk-js/prelude.js",
            "plugins/sdk-js/build.mjs",
            "plugins/sdk-js/package-lock.json",
            "plugins/wit/spout.wit",
        ],
        Lang::Py => &[
            "plugins/sdk-py/spout_sdk.py",
            "plugins/sdk-py/build.sh",
            "plugins/sdk-py/requirements.txt",
            "plugins/wit/spout.wit",
        ],
    };
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let newest = inputs
        .iter()
        .chain([&source])
        .filter_map(|p| modified(&root.join(p)))
        .max()
        .unwrap_or(SystemTime::now());
    if modified(&out).is_some_and(|built| built > newest) {
        return Some(out.display().to_string());
    }
    match name {
        // The example README's commands, as a user runs them.
        "js-only-mine" => {
            let dir = root.join("examples/custom-filter/js");
            run(Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir));
            run(Command::new("npm").args(["run", "build"]).current_dir(&dir));
        }
        "py-only-mine" => run(Command::new(root.join("plugins/sdk-py/build.sh"))
            .arg(source)
            .current_dir(&root)),
        _ if lang == Lang::Js => run(Command::new("node")
            .arg("plugins/sdk-js/build.mjs")
            .arg(source)
            .arg("-o")
            .arg(&out)
            .current_dir(&root)),
        _ => run(Command::new(root.join("plugins/sdk-py/build.sh"))
            .arg(source)
            .arg("-o")
            .arg(&out)
            .current_dir(&root)),
    }
    assert!(
        out.is_file(),
        "{name}: the build wrote no {}",
        out.display()
    );
    Some(out.display().to_string())
}

/// Runs a build step; its failure fails the test with its output.
fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The frames a subscriber received: (id, event type, data).
fn frames(events: &[Received]) -> Vec<(String, String, String)> {
    events
        .iter()
        .map(|e| (e.last_id.clone(), e.kind.clone(), e.data.clone()))
        .collect()
}

/// A plugin declaration: the stock examples' 32 MiB, and a time limit roomy
/// enough for a debug build on a loaded machine.
fn plugin(name: &str, file: &str) -> String {
    format!(
        "[plugins.{name}]\nuse = \"{file}\"\nlimits = {{ memory = \"32MiB\", time = \"1s\" }}\n"
    )
}

/// The Rust custom filter (examples/custom-filter), as built for the tests.
fn rust_only_mine() -> String {
    format!("{}/only_mine.wasm", env!("SPOUT_TEST_WASM_DIR"))
}

/// A config with `?user=` allowed and, per (name, component), a plugin
/// `name` and a route `/name` filtered by it.
fn filter_routes(plugins: &[(&str, &String)]) -> String {
    let mut config = String::from("[server]\ninsecure_user_param = true\n\n");
    for (name, file) in plugins {
        config += &plugin(name, file);
        config += &format!("\n[[stream]]\npath = \"/{name}\"\nfilters = [\"{name}\"]\n\n");
    }
    config
}

#[tokio::test]
async fn js_and_python_twins_deliver_the_frames_the_rust_filter_does() {
    let (Some(js), Some(py)) = (component("js-only-mine"), component("py-only-mine")) else {
        return;
    };
    let rust = rust_only_mine();
    let server =
        Server::start_toml(&filter_routes(&[("rust", &rust), ("js", &js), ("py", &py)])).await;
    let langs = ["rust", "js", "py"];
    let mut ann = Vec::new();
    let mut bob = Vec::new();
    for lang in langs {
        let mut a = server
            .sse(&format!("/{lang}?topic=docs&user=ann"), &[])
            .await;
        let mut b = server
            .sse(&format!("/{lang}?topic=docs&user=bob"), &[])
            .await;
        a.connected().await;
        b.connected().await;
        ann.push(a);
        bob.push(b);
    }
    server
        .publish(json!([
            {"topic": "docs", "data": {"owner": "ann", "n": 1}},
            {"topic": "docs", "data": {"owner": "bob", "n": 2}},
            {"topic": "docs", "type": "note", "data": {"public": true, "n": 3}},
            {"topic": "docs", "data": {"owner": "carol", "n": 4}},
            {"topic": "docs", "data": "plain text, \"owner\":\"bob\" inside"},
            {"topic": "docs", "data": {"owner": "ann", "text": "ünïcödé ✓\nline two"}}
        ]))
        .await;
    // A batch of 256 in one call, half of it Ann's.
    let many: Vec<Value> = (0..256)
        .map(|n| json!({"topic": "docs", "data": {"owner": if n % 2 == 0 { "ann" } else { "bob" }, "n": n}}))
        .collect();
    server.publish(Value::Array(many)).await;

    let mut seen = Vec::new();
    for (a, b) in ann.iter_mut().zip(bob.iter_mut()) {
        seen.push((
            frames(&a.events(3 + 128).await),
            frames(&b.events(3 + 128).await),
        ));
    }
    let (rust_ann, rust_bob) = &seen[0];
    assert_eq!(
        rust_ann[..3]
            .iter()
            .map(|(_, kind, data)| (kind.as_str(), data.as_str()))
            .collect::<Vec<_>>(),
        [
            ("message", r#"{"n":1,"owner":"ann"}"#),
            ("note", r#"{"n":3,"public":true}"#),
            ("message", r#"{"owner":"ann","text":"ünïcödé ✓\nline two"}"#),
        ]
    );
    // A JSON string is sent as text: the substring check sees its quotes.
    assert_eq!(rust_bob[2].2, r#"plain text, "owner":"bob" inside"#);
    for (lang, got) in langs.iter().zip(&seen).skip(1) {
        assert_eq!(&got.0, rust_ann, "{lang}: Ann's frames differ from Rust's");
        assert_eq!(&got.1, rust_bob, "{lang}: Bob's frames differ from Rust's");
    }

    // Replay runs the same filters over the log.
    for lang in langs {
        let mut late = server
            .sse(
                &format!("/{lang}?topic=docs&user=bob"),
                &[("last-event-id", "0")],
            )
            .await;
        late.connected().await;
        assert_eq!(
            &frames(&late.events(3 + 128).await),
            rust_bob,
            "{lang}: replay"
        );
    }
    let stats = wait_stats(server.addr, |_| true).await;
    for p in stats["pipeline"]["plugins"].as_array().unwrap() {
        assert_eq!(p["errors"], 0, "{p}");
    }
    server.stop().await;
}

#[tokio::test]
async fn js_and_python_plugins_that_reach_outside_fail_their_own_call_and_are_counted() {
    let (Some(js), Some(py)) = (component("js-escape"), component("py-escape")) else {
        return;
    };
    let rust = rust_only_mine();
    let server = Server::start_toml(&filter_routes(&[
        ("jsesc", &js),
        ("pyesc", &py),
        ("rust", &rust),
    ]))
    .await;
    let mut rust_ann = server.sse("/rust?topic=t&user=ann", &[]).await;
    rust_ann.connected().await;
    // `try=none` is the control: the same plugin, reaching for nothing.
    let mut controls = Vec::new();
    let mut escapes = Vec::new();
    for (route, attempts) in [
        ("jsesc", &["net", "file"][..]),
        ("pyesc", &["file", "socket"][..]),
    ] {
        let mut s = server.sse(&format!("/{route}?topic=t&try=none"), &[]).await;
        s.connected().await;
        controls.push((route, s));
        for attempt in attempts {
            let mut s = server
                .sse(&format!("/{route}?topic=t&try={attempt}"), &[])
                .await;
            s.connected().await;
            escapes.push((route, *attempt, s));
        }
    }
    server
        .publish(json!([{"topic": "t", "data": {"owner": "ann", "n": 1}}]))
        .await;
    assert_eq!(rust_ann.data(1).await, [r#"{"n":1,"owner":"ann"}"#]);
    for (route, s) in &mut controls {
        assert_eq!(s.data(1).await, [r#"{"n":1,"owner":"ann"}"#], "{route}");
    }
    // Each attempt failed its own call (two per plugin), counted per plugin.
    let stats = wait_stats(server.addr, |s| {
        s["pipeline"]["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"] == "jsesc" || p["name"] == "pyesc")
            .all(|p| p["errors"].as_u64() >= Some(2))
    })
    .await;
    for p in stats["pipeline"]["plugins"].as_array().unwrap() {
        let expected = if p["name"] == "rust" { 0 } else { 2 };
        assert_eq!(p["errors"], expected, "{p}");
    }
    let (status, health) = server.get_json("/healthz").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    // Nothing reached the escaping subscriptions: their batch was dropped
    // (`on_error = "drop"`, the default), not delivered.
    server.stop().await;
    for (route, attempt, mut s) in escapes {
        while let Some(e) = s.next_or_end().await {
            assert!(is_control(&e.kind), "{route} try={attempt} delivered {e:?}");
        }
    }
}

#[test]
fn spout_check_loads_and_type_checks_js_and_python_components() {
    let (Some(filter), Some(py_auth), Some(js_auth)) = (
        component("js-only-mine"),
        component("py-auth-tokens"),
        component("js-bearer-auth"),
    ) else {
        return;
    };
    let good = format!(
        "{}\n{}config.tokens.s3cret-ann = \"ann\"\n\n[[stream]]\npath = \"/events\"\nauth = \"tokens\"\nfilters = [\"mine\"]\n",
        plugin("mine", &filter),
        plugin("tokens", &py_auth),
    );
    let (ok, stderr) = check(&good);
    assert!(ok, "{stderr}");
    let cases = [
        // A JavaScript auth component named as a filter.
        (
            format!(
                "{}config = {{ tokens = [{{ token = \"0123456789abcdef\", user = \"ann\" }}] }}\n\n[[stream]]\npath = \"/events\"\nfilters = [\"bearer\"]\n",
                plugin("bearer", &js_auth)
            ),
            &["config.toml:", "stream[0].filters", "plugin `bearer` is an auth plugin"][..],
        ),
        // A Python filter named as auth.
        (
            format!("{}\n[[stream]]\npath = \"/events\"\nauth = \"mine\"\n", plugin("mine", &filter)),
            &["stream[0].auth", "plugin `mine` is a filter plugin"][..],
        ),
        // The Python plugin's own config check, run by its `init`.
        (
            format!("{}config.tokens = {{}}\n", plugin("tokens", &py_auth)),
            &["config.toml:", "plugins.tokens", "init rejected its config", "`tokens` must map at least one token"][..],
        ),
    ];
    for (config, wanted) in cases {
        let (ok, stderr) = check(&config);
        assert!(!ok, "accepted:\n{config}");
        for w in wanted {
            assert!(
                stderr.contains(w),
                "`{w}` missing from:\n{stderr}\nfor:\n{config}"
            );
        }
    }
}

#[tokio::test]
async fn js_transform_and_auth_and_python_auth_work_over_http() {
    let (Some(transform), Some(js_auth), Some(py_auth)) = (
        component("js-require-json"),
        component("js-bearer-auth"),
        component("py-auth-tokens"),
    ) else {
        return;
    };
    let config = format!(
        "{}config = {{ source = \"api\" }}\n\n{}config = {{ tokens = [{{ token = \"ops-0123456789abcdef\", user = \"ops\", topics = [\"**\"], publish = true }}, {{ token = \"ann-0123456789abcdef\", user = \"ann\", topics = [\"docs/**\"] }}] }}\n\n{}config.tokens.s3cret-bob = {{ user = \"bob\", topics = [\"docs/bob\"] }}\n\n[publish]\nauth = \"bearer\"\ntransforms = [\"require-json\"]\n\n[[stream]]\npath = \"/js\"\nauth = \"bearer\"\n\n[[stream]]\npath = \"/py\"\nauth = \"tokens\"\n",
        plugin("require-json", &transform),
        plugin("bearer", &js_auth),
        plugin("tokens", &py_auth),
    );
    let server = Server::start_toml(&config).await;
    let addr = server.addr;
    let publish = |token: &'static str, body: Value| async move {
        let resp = request(
            addr,
            hyper::Method::POST,
            "/publish",
            &[
                ("content-type", "application/json"),
                ("authorization", token),
            ],
            body.to_string(),
        )
        .await;
        let (status, _, bytes) = body_bytes(resp).await;
        (status, serde_json::from_slice::<Value>(&bytes).unwrap())
    };
    let ops = "Bearer ops-0123456789abcdef";

    // JS auth: no token, an unknown one, a reader publishing.
    let (status, body) = publish("Bearer nope", json!({"topic": "docs/a", "data": {}})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["detail"], "unknown token", "{body}");
    let (status, body) = publish(
        "Bearer ann-0123456789abcdef",
        json!({"topic": "docs/a", "type": "x", "data": {}}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("ann may not publish"),
        "{body}"
    );

    // The JS transform refuses the whole publish, naming each bad event.
    let (status, body) = publish(
        ops,
        json!([
            {"topic": "docs/bob", "type": "x", "data": {"ok": 1}},
            {"topic": "docs/bob", "data": {"no": "type"}},
            {"topic": "docs/bob", "type": "x", "data": "not json"}
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("event #1: no `type`"), "{body}");
    assert!(detail.contains("event #2: data is not JSON"), "{body}");
    assert_eq!(
        get_json(addr, "/stats").await.1["log"]["events"],
        0,
        "a refused publish stored nothing"
    );

    // Accepted events carry what the transform added.
    let (status, body) = publish(
        ops,
        json!([
            {"topic": "docs/bob", "type": "x", "data": {"n": 1}},
            {"topic": "docs/ann", "type": "x", "data": {"n": 2}}
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Streams: each auth plugin decides who connects and what they reach.
    for (path, token) in [
        ("/js", ""),
        ("/js", "Bearer wrong"),
        ("/py", ""),
        ("/py", "Bearer wrong"),
    ] {
        let headers: &[(&str, &str)] = if token.is_empty() {
            &[]
        } else {
            &[("authorization", token)]
        };
        let resp = request(
            addr,
            hyper::Method::GET,
            &format!("{path}?topic=docs/**"),
            headers,
            bytes::Bytes::new(),
        )
        .await;
        let (status, _, body) = body_bytes(resp).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{path} {token}: {}",
            String::from_utf8_lossy(&body)
        );
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            body["error"].is_string() && body["detail"].is_string(),
            "{body}"
        );
    }
    let mut ann = server
        .sse(
            "/js?topic=docs/**",
            &[
                ("authorization", "Bearer ann-0123456789abcdef"),
                ("last-event-id", "0"),
            ],
        )
        .await;
    ann.connected().await;
    // Bob's token reaches docs/bob only.
    let resp = request(
        addr,
        hyper::Method::GET,
        "/py?topic=docs/**",
        &[("authorization", "Bearer s3cret-bob")],
        bytes::Bytes::new(),
    )
    .await;
    let (status, _, body) = body_bytes(resp).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let mut bob = server
        .sse(
            "/py?topic=docs/bob",
            &[
                ("authorization", "Bearer s3cret-bob"),
                ("last-event-id", "0"),
            ],
        )
        .await;
    bob.connected().await;
    let ann_got = ann.data(2).await;
    let bob_got = bob.data(1).await;
    for (got, n) in ann_got.iter().chain(&bob_got).zip([1, 2, 1]) {
        let data: Value = serde_json::from_str(got).unwrap();
        assert_eq!(data["n"], n, "{got}");
        assert_eq!(data["source"], "api", "{got}");
        assert!(
            data["received_at"].as_u64() > Some(1_700_000_000_000),
            "{got}"
        );
    }
    // docs/ann (n 2) never comes to Bob; his next frame is the one
    // published now.
    publish(
        ops,
        json!({"topic": "docs/bob", "type": "x", "data": {"n": 3}}),
    )
    .await;
    let next: Value = serde_json::from_str(&bob.data(1).await[0]).unwrap();
    assert_eq!(next["n"], 3);
    server.stop().await;
}
