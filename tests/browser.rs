//! The built-in console (`GET /`) in Debian's headless Chromium, driven by
//! playwright-core from npm: it shows connections, the event rate, loaded
//! plugins and the last 20 events. The screenshot is kept as a test
//! artifact in `target/test-artifacts/console.png`.
//!
//! The test installs what it needs when missing (`apt-get install chromium`,
//! `npm ci` in tests/browser); with `CI=true` a missing browser fails.

use crate::support;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::*;

/// Where the Node side of the browser tests lives (package.json, scripts).
pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
}

/// Node, Chromium and playwright-core, installed if missing; `None` (skip)
/// only outside CI when they cannot be had.
pub fn tools() -> Option<PathBuf> {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        assert!(!ci, "node is missing: CI must install Node.js");
        eprintln!("skipping the browser test: node is missing");
        return None;
    }
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    if !chromium.exists() {
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", "chromium"])
            .status();
    }
    let dir = browser_dir();
    if !dir.join("node_modules/playwright-core").is_dir() {
        let _ = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status();
    }
    let ready = chromium.exists() && dir.join("node_modules/playwright-core").is_dir();
    if !ready {
        assert!(
            !ci,
            "chromium or playwright-core is missing and could not be installed"
        );
        eprintln!("skipping the browser test: chromium or playwright-core is missing");
        return None;
    }
    Some(chromium)
}

#[tokio::test]
async fn the_console_shows_connections_rate_plugins_and_the_last_20_events() {
    let Some(chromium) = tokio::task::spawn_blocking(tools).await.unwrap() else {
        return;
    };
    let config = "[plugins.match]\nuse = \"builtin:filter-match\"\n\n[[stream]]\npath = \"/match\"\nfilters = [\"match\"]\n";
    let server = Server::start_toml(config).await;
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("console.png");
    let _ = std::fs::remove_file(&shot);
    let mut child = Command::new("node")
        .arg(browser_dir().join("console.mjs"))
        .arg(format!("http://{}/", server.addr))
        .arg(&shot)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs (Node.js 20 is on the machine)");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        (line, stdout)
    });
    let Ok(joined) = tokio::time::timeout(std::time::Duration::from_secs(60), ready).await else {
        // Kill the browser so the reader sees EOF and the test can end.
        let _ = child.kill();
        panic!("the page never went live");
    };
    let (line, mut stdout) = joined.unwrap();
    assert_eq!(line.trim(), "READY");

    let batch: Vec<Value> = (1..=25)
        .map(|i| json!({ "topic": format!("t/{i}"), "data": { "n": i } }))
        .collect();
    server.publish(Value::Array(batch)).await;
    writeln!(stdin, "go").unwrap();
    drop(stdin);
    let out = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        stdout.read_line(&mut rest).unwrap();
        (rest, child.wait().unwrap())
    });
    let (json_line, status) = out.await.unwrap();
    assert!(status.success(), "{json_line}");
    let page: Value = serde_json::from_str(json_line.trim()).unwrap();
    assert!(page["connections"].as_u64().unwrap() >= 1, "{page}");
    assert!(
        page["rate"].as_str().unwrap().parse::<f64>().is_ok(),
        "{page}"
    );
    assert_eq!(page["last"], "25");
    let rows = page["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 20);
    // Newest first: ids 25 down to 6, with their data.
    for (row, id) in rows.iter().zip((6..=25).rev()) {
        assert_eq!(row[0], id.to_string());
        assert_eq!(row[2], format!("{{\"n\":{id}}}"));
    }
    assert_eq!(page["plugins"][0][0], "match");
    assert_eq!(page["plugins"][0][1], "filter");
    assert!(shot.exists(), "the screenshot is kept");
    server.stop().await;
}
