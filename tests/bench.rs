//! `spout bench` works: a scaled-down run against the real server and the
//! raw baseline delivers every event. Counts only — timings are for
//! benchmarks, not tests.

use crate::support;

use spout::bench::{run, BenchArgs};
use std::time::Duration;
use support::*;

/// A scaled-down run against `url`, with the raw baseline.
pub(crate) fn args(url: String) -> BenchArgs {
    BenchArgs {
        url,
        also: Vec::new(),
        subscribers: 300,
        path: "/events".into(),
        query: String::new(),
        idle: 0,
        idle_topic: "idle/{i}".into(),
        topics: 5,
        rate: 200,
        size: 100,
        duration: Duration::from_secs(2),
        publishers: 2,
        ramp: Duration::ZERO,
        source_addrs: 2,
        pid: Some(std::process::id()),
        baseline: true,
        json: false,
        quiet: true,
        via: spout::bench::broker::Via::Http,
        broker: None,
        publish_only: false,
        nchan: false,
        storm: 0,
        behind: 1000,
        storm_after: Duration::from_millis(500),
        storm_ramp: Duration::from_millis(200),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_delivers_every_event_to_every_subscriber() {
    let server = Server::start(|_| {}).await;
    let report = run(args(format!("http://{}", server.addr))).await.unwrap();
    let table = report.table();
    for r in [&report.hub, report.baseline.as_ref().unwrap()] {
        assert_eq!((r.connected, r.failed, r.errors), (300, 0, 0), "{table}");
        assert!(r.published >= 300, "{table}");
        // 300 subscribers over 5 topics: every event reaches 60 of them.
        assert_eq!(r.expected, r.published * 60, "{table}");
        assert_eq!(r.delivered, r.expected, "{table}");
        assert!(r.latency_ms.max > 0.0, "{table}");
    }
    assert!(report.hub_vs_raw.is_some());
    assert!(table.contains("spout / raw"));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["hub"]["label"], "spout");
    server.stop().await;
}

/// The reconnect storm, scaled down: streams resuming 500 events back
/// during the load each get every one of them, and the live subscribers
/// still get every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_storm_replays_every_missed_event_to_every_stream() {
    let server = Server::start(|_| {}).await;
    let mut a = args(format!("http://{}", server.addr));
    a.baseline = false;
    a.subscribers = 100;
    a.storm = 400;
    a.behind = 500;
    let report = run(a).await.unwrap();
    let table = report.table();
    let r = &report.hub;
    assert_eq!((r.connected, r.failed, r.errors), (100, 0, 0), "{table}");
    assert_eq!(r.delivered, r.expected, "{table}");
    let s = r.storm.as_ref().expect("a storm report");
    assert_eq!((s.connected, s.failed), (400, 0), "{table}");
    assert_eq!((s.replayed, s.expected), (200_000, 200_000), "{table}");
    assert_eq!(s.caught_up, 400, "{table}");
    assert!(s.all_caught_up_seconds.is_some(), "{table}");
    assert!(
        table.contains("storm: 400 streams 500 events behind"),
        "{table}"
    );
    assert!(s.rss_peak_kib.is_some(), "{table}");
    // The live subscribers kept receiving while it lasted, and were timed.
    assert!(s.live_during_ms.max > 0.0, "{table}");
    assert!(table.contains("storm: live latency during it"), "{table}");
    server.stop().await;
}

/// The many-distinct-subscriptions scenario, scaled down: idle streams on
/// patterns of their own (`users/{i}/**`) and measured ones with a filter
/// key each (`{i}` in `--query`); every event still reaches every measured
/// subscriber once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_with_idle_pattern_subscribers_delivers_every_event() {
    let server = Server::start(|_| {}).await;
    let mut a = args(format!("http://{}", server.addr));
    a.subscribers = 20;
    a.topics = 1;
    a.idle = 200;
    a.idle_topic = "users/{i}/**".into();
    a.query = "where=n:ne:{i}".into();
    a.path = "/events".into();
    a.baseline = false;
    let report = run(a).await.unwrap();
    let table = report.table();
    let r = &report.hub;
    assert_eq!((r.connected, r.failed, r.errors), (20, 0, 0), "{table}");
    assert_eq!(r.delivered, r.expected, "{table}");
    assert_eq!(r.expected, r.published * 20, "{table}");
    server.stop().await;
}

#[tokio::test]
async fn bench_rejects_bad_options() {
    let mut a = args("ftp://x".into());
    let err = run(a.clone()).await.unwrap_err();
    assert!(err.to_string().contains("http://HOST:PORT"), "{err}");
    a.url = "http://127.0.0.1:1".into();
    a.also = vec!["ftp://y".into()];
    let err = run(a.clone()).await.unwrap_err();
    assert!(err.to_string().contains("\"ftp://y\""), "{err}");
    a.also = vec!["http://127.0.0.1:2".into()];
    a.publish_only = true;
    let err = run(a.clone()).await.unwrap_err();
    assert!(err.to_string().contains("--also"), "{err}");
    a.also.clear();
    a.storm = 10;
    let err = run(a.clone()).await.unwrap_err();
    assert!(err.to_string().contains("--storm"), "{err}");
    a.publish_only = false;
    a.behind = 0;
    let err = run(a.clone()).await.unwrap_err();
    assert!(err.to_string().contains("--behind"), "{err}");
    a.storm = 0;
    a.size = 5;
    assert!(run(a).await.unwrap_err().to_string().contains("--size"));
}

/// `--via redis`: the bench publishes into the Redis stream the hub relays
/// (`docs/bench/sources.toml`'s names), and every event still reaches every
/// subscriber, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_via_a_broker_delivers_every_event() {
    if !crate::relays::need("redis") {
        return;
    }
    let group = format!("spout-test-{}", std::process::id());
    // The group starts at the stream's end: entries a bench run left in
    // `spout:bench` are not this test's.
    let mut c = redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("spout:bench")
        .arg(&group)
        .arg("$")
        .arg("MKSTREAM")
        .query(&mut c)
        .unwrap();
    let server = Server::start_toml(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[source]]\nredis = {{ url = \"redis://127.0.0.1:6379\", stream = \"spout:bench\", group = \"{group}\" }}\n"
    ))
    .await;
    wait_stats(server.addr, |s| {
        s["pipeline"]["sources"][0]["state"] == "connected"
    })
    .await;
    let mut a = args(format!("http://{}", server.addr));
    a.via = spout::bench::broker::Via::Redis;
    a.baseline = false;
    a.subscribers = 20;
    let report = run(a).await.unwrap();
    let table = report.table();
    let r = &report.hub;
    assert_eq!((r.connected, r.failed, r.errors), (20, 0, 0), "{table}");
    assert!(r.published >= 300, "{table}");
    assert_eq!(r.delivered, r.expected, "{table}");
    assert!(table.contains("via redis"), "{table}");
    server.stop().await;
    let _: Result<i64, _> = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg("spout:bench")
        .arg(&group)
        .query(&mut c);
    // The stream goes too unless a bench server's group still reads it.
    let groups: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg("spout:bench")
        .query(&mut c)
        .unwrap_or_default();
    if groups.is_empty() {
        let _: Result<i64, _> = redis::cmd("DEL").arg("spout:bench").query(&mut c);
    }
}

/// `--publish-only`: publishers only, one event per request; every
/// acknowledged publish is in the log. `--baseline` runs the same load
/// against the publish floor and reports the ratio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_publish_only_counts_acknowledged_publishes() {
    let server = Server::start(|_| {}).await;
    let mut a = args(format!("http://{}", server.addr));
    a.publish_only = true;
    a.subscribers = 0;
    a.baseline = true;
    a.publishers = 4;
    a.duration = Duration::from_millis(500);
    let report = run(a).await.unwrap();
    let table = report.table();
    let r = &report.hub;
    assert_eq!(r.errors, 0, "{table}");
    assert!(r.published > 0, "{table}");
    assert!(
        r.publishes_per_second > 0.0 && r.latency_ms.p50 > 0.0,
        "{table}"
    );
    assert_eq!(server.app.log.count(), r.published, "{table}");
    let floor = report.baseline.as_ref().expect("a floor run");
    assert_eq!(floor.label, "floor", "{table}");
    assert_eq!(floor.errors, 0, "{table}");
    assert!(floor.published > 0, "{table}");
    assert!(report.hub_vs_raw.is_some_and(|x| x > 0.0), "{table}");
    assert!(table.contains("spout / floor publishes/s: "), "{table}");
    server.stop().await;
}
