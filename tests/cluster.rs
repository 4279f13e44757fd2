//! Cluster mode on the real Redis (127.0.0.1:6379, or `SPOUT_TEST_REDIS`):
//! several nodes in one test process share one history in Redis Streams.
//! Each test uses its own key prefix and deletes its keys at the end.

use crate::support;

use http::{Method, StatusCode};
use serde_json::{json, Value};
use spout::config::{ClusterBackend, ClusterConfig};
use std::net::SocketAddr;
use std::time::Duration;
use support::*;

pub(crate) fn redis_url() -> String {
    std::env::var("SPOUT_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A synchronous connection to the test Redis, starting the machine's Redis
/// (the command in the environment notes) if it is down.
pub(crate) fn redis() -> redis::Connection {
    let client = redis::Client::open(redis_url()).unwrap();
    if let Ok(c) = client.get_connection_with_timeout(Duration::from_secs(1)) {
        return c;
    }
    let _ = std::process::Command::new("redis-server")
        .args([
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            "6379",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--dir", "/tmp"])
        .status();
    for _ in 0..50 {
        if let Ok(c) = client.get_connection_with_timeout(Duration::from_secs(1)) {
            return c;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no Redis at {} (set SPOUT_TEST_REDIS)", redis_url());
}

/// Deletes every key of a test's prefix when dropped.
pub(crate) struct Prefix(pub(crate) String);

impl Prefix {
    pub(crate) fn new(test: &str) -> Prefix {
        Prefix(format!("spout-test-{}-{test}", std::process::id()))
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        let mut c = redis();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.0))
            .query(&mut c)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<u64, _> = redis::cmd("DEL").arg(&keys).query(&mut c);
        }
    }
}

/// Starts a node of the cluster `prefix` that reaches Redis at `url`.
async fn node(prefix: &Prefix, name: &str, url: &str) -> Server {
    let (prefix, name, url) = (prefix.0.clone(), name.to_owned(), url.to_owned());
    let server = Server::start(move |c| {
        c.server.heartbeat = Duration::from_millis(200);
        c.cluster = Some(ClusterConfig {
            backend: ClusterBackend::Redis,
            url,
            prefix,
            node_id: Some(name),
        });
    })
    .await;
    wait_ready(server.addr, StatusCode::OK).await;
    server
}

async fn wait_ready(addr: SocketAddr, want: StatusCode) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, _) = get_json(addr, "/readyz").await;
        if status == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {status}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn publish_on(addr: SocketAddr, body: Value) -> (StatusCode, Value) {
    post(addr, "/publish", "application/json", body.to_string()).await
}

async fn publish_n(addr: SocketAddr, from: usize, to: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for i in from..to {
        let (status, body) =
            publish_on(addr, json!({ "topic": "orders", "data": { "n": i } })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        ids.push(body["ids"][0].as_u64().unwrap());
    }
    ids
}

#[tokio::test]
async fn three_nodes_one_history_in_order() {
    let prefix = Prefix::new("three");
    let url = redis_url();
    let n1 = node(&prefix, "n1", &url).await;
    let n2 = node(&prefix, "n2", &url).await;
    let n3 = node(&prefix, "n3", &url).await;
    let mut s2 = n2.sse("/events?topic=orders", &[]).await;
    let mut s3 = n3.sse("/events?topic=orders", &[]).await;
    s2.connected().await;
    s3.connected().await;

    let mut ids = publish_n(n1.addr, 0, 10).await;
    // One request with several events is one atomic append.
    let (status, body) = publish_on(
        n1.addr,
        json!([{ "topic": "orders", "data": { "n": 10 } }, { "topic": "orders", "data": { "n": 11 } }]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    ids.extend(
        body["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap()),
    );
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let want: Vec<String> = (0..12).map(|i| format!("{{\"n\":{i}}}")).collect();
    for s in [&mut s2, &mut s3] {
        let got = s.events(12).await;
        assert_eq!(support::ids(&got), ids);
        assert_eq!(got.iter().map(|e| e.data.clone()).collect::<Vec<_>>(), want);
    }
    // An idempotency key is cluster-wide: a retry on another node gets the first id.
    let keyed = json!({ "topic": "orders", "data": 1, "id": "order-77" });
    let (_, a) = publish_on(n1.addr, keyed.clone()).await;
    let (_, b) = publish_on(n3.addr, keyed).await;
    assert_eq!(a["ids"], b["ids"]);
    // The same key with other content is a conflict on any node, and the
    // whole request stores nothing.
    let (status, body) = publish_on(
        n2.addr,
        json!([{ "topic": "orders", "data": "fine" }, { "topic": "orders", "data": 2, "id": "order-77" }]),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "id_conflict");
    let (_, page) = get_json(n1.addr, "/poll?topic=orders&after=0&limit=1000").await;
    assert!(
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["data"] != "fine"),
        "{page}"
    );
    // Presence: every node sees three nodes and the two subscribers.
    let stats = wait_stats(n1.addr, |s| {
        s["cluster"]["nodes"] == 3 && s["cluster"]["connections"] == 2
    })
    .await;
    assert_eq!(stats["cluster"]["node_id"], "n1");
    for n in [n1, n2, n3] {
        n.stop().await;
    }
}

#[tokio::test]
async fn a_client_resumes_on_another_node_with_its_last_event_id() {
    let prefix = Prefix::new("resume");
    let url = redis_url();
    let n1 = node(&prefix, "n1", &url).await;
    let n2 = node(&prefix, "n2", &url).await;
    let n3 = node(&prefix, "n3", &url).await;
    let mut s = n2.sse("/events?topic=orders", &[]).await;
    s.connected().await;
    let first = publish_n(n1.addr, 0, 3).await;
    let got = s.events(3).await;
    assert_eq!(support::ids(&got), first);
    let last = got[2].last_id.clone();
    drop(s);

    let missed = publish_n(n1.addr, 3, 8).await;
    let mut s = n3
        .sse("/events?topic=orders", &[("last-event-id", &last)])
        .await;
    s.connected().await;
    let live = publish_n(n1.addr, 8, 9).await;
    let got = s.events(6).await;
    let want: Vec<u64> = missed.iter().chain(&live).copied().collect();
    assert_eq!(support::ids(&got), want);
    // /poll on yet another node reads the same history.
    let (_, page) = n1
        .get_json(&format!("/poll?topic=orders&after={last}"))
        .await;
    let polled: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(polled, want);
    for n in [n1, n2, n3] {
        n.stop().await;
    }
}

#[tokio::test]
async fn losing_redis_fails_publishes_cleanly_and_loses_nothing() {
    let prefix = Prefix::new("outage");
    let url = redis_url();
    let upstream: SocketAddr = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|_| "127.0.0.1:6379".parse().unwrap());
    let proxy = Proxy::start(upstream).await;
    let n1 = node(&prefix, "n1", &format!("redis://{}", proxy.addr)).await;
    let n2 = node(&prefix, "n2", &url).await;
    let mut s1 = n1.sse("/events?topic=orders", &[]).await;
    s1.connected().await;
    let mut ids = publish_n(n1.addr, 0, 2).await;

    proxy.cut();
    wait_ready(n1.addr, StatusCode::SERVICE_UNAVAILABLE).await;
    let (status, body) = publish_on(n1.addr, json!({ "topic": "orders", "data": "lost?" })).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "storage_unavailable");
    // The rest of the cluster goes on; node 1's subscriber stays connected
    // (heartbeats) and gets these once node 1 is back.
    ids.extend(publish_n(n2.addr, 2, 5).await);
    // Two heartbeats while Redis is away: the stream is alive, not stalled.
    let beats = s1.heartbeats();
    s1.next_heartbeat().await;
    s1.next_heartbeat().await;
    assert!(s1.heartbeats() >= beats + 2 && !s1.ended);

    proxy.restore();
    wait_ready(n1.addr, StatusCode::OK).await;
    ids.extend(publish_n(n1.addr, 5, 7).await);
    let got = s1.events(7).await;
    assert_eq!(support::ids(&got), ids, "nothing lost, nothing twice");
    let data: Vec<String> = got.iter().map(|e| e.data.clone()).collect();
    assert!(!data.iter().any(|d| d.contains("lost?")), "{data:?}");

    // Killing the reader's connection inside Redis: it reconnects and
    // resumes from the last id it delivered.
    let mut c = redis();
    let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
    let reader = format!("name={}:reader:n1", prefix.0);
    let killed = clients
        .lines()
        .filter(|l| l.contains(&reader))
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(|id| {
            redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(id)
                .query::<u64>(&mut c)
                .unwrap_or(0)
        })
        .sum::<u64>();
    assert_eq!(killed, 1, "{clients}");
    let more = publish_n(n2.addr, 7, 10).await;
    let got = s1.events(3).await;
    assert_eq!(support::ids(&got), more);
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test]
async fn without_a_cluster_section_nothing_touches_redis() {
    let server = Server::start(|_| {}).await;
    let (_, stats) = server.get_json("/stats").await;
    assert_eq!(stats["cluster"], Value::Null);
    let resp = request(server.addr, Method::GET, "/readyz", &[], "").await;
    assert_eq!(resp.status(), StatusCode::OK);
    server.stop().await;
}

/// A cluster node whose `/events` is guarded by the `gate` test plugin
/// (admits until it has counted `max` disconnects in its kv store).
fn gate_node(prefix: &Prefix, node: &str, max: u32) -> String {
    format!(
        "[plugins.gate]\nuse = \"{}\"\nconfig = {{ max_disconnects = {max} }}\n\n[[stream]]\npath = \"/events\"\nauth = \"gate\"\n\n[cluster]\nbackend = \"redis\"\nurl = \"{}\"\nprefix = \"{}\"\nnode_id = \"{node}\"\n",
        test_wasm("gate"),
        redis_url(),
        prefix.0
    )
}

#[tokio::test]
async fn plugin_key_value_stores_are_cluster_wide() {
    let prefix = Prefix::new("kv");
    let n1 = Server::start_toml(&gate_node(&prefix, "n1", 1)).await;
    let n2 = Server::start_toml(&gate_node(&prefix, "n2", 1)).await;
    wait_ready(n1.addr, StatusCode::OK).await;
    wait_ready(n2.addr, StatusCode::OK).await;
    let mut s = n1.sse("/events?topic=a", &[]).await;
    assert_eq!(s.status, StatusCode::OK);
    s.connected().await;
    drop(s);
    // The disconnect is counted on node 1, into Redis...
    let key = format!("{}:kv:gate:disconnects", prefix.0);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query(&mut redis()).unwrap();
        if v.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 1 never counted the disconnect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and node 2's instance of the plugin reads the same store: refused.
    let resp = request(n2.addr, Method::GET, "/events?topic=a", &[], "").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let (_, _, body) = body_bytes(resp).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["detail"], "1 disconnects seen");
    n1.stop().await;
    n2.stop().await;
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_example_demo_moves_a_client_between_nodes() {
    let prefix = Prefix::new("demo");
    let _ = redis();
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/cluster");
    let mut configs = Vec::new();
    for name in ["node1.toml", "node2.toml"] {
        let text = std::fs::read_to_string(format!("{example}/{name}")).unwrap();
        let text = text
            .replace(
                "prefix = \"spout-example\"",
                &format!("prefix = \"{}\"", prefix.0),
            )
            .replace("redis://127.0.0.1:6379", &redis_url());
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        configs.push(path);
    }
    let out = std::process::Command::new("bash")
        .arg(format!("{example}/demo.sh"))
        .env("SPOUT", bin())
        .env("SPOUT_PLUGIN_CACHE", plugin_cache())
        .env("CONFIG1", &configs[0])
        .env("CONFIG2", &configs[1])
        .env("PORT1", free_port().to_string())
        .env("PORT2", free_port().to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("moved: received 3 missed events exactly once"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_ticket_issued_by_one_node_opens_a_stream_on_another_once() {
    let prefix = Prefix::new("tickets");
    let n1 = Server::start_toml(&gate_node(&prefix, "n1", 1000)).await;
    let n2 = Server::start_toml(&gate_node(&prefix, "n2", 1000)).await;
    wait_ready(n1.addr, StatusCode::OK).await;
    wait_ready(n2.addr, StatusCode::OK).await;
    let resp = request(n1.addr, Method::POST, "/tickets", &[], "").await;
    let (status, _, body) = body_bytes(resp).await;
    assert_eq!(status, StatusCode::CREATED);
    let ticket = serde_json::from_slice::<Value>(&body).unwrap()["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/events?topic=a&ticket={ticket}");
    let mut s = n2.sse(&path, &[]).await;
    assert_eq!(s.status, StatusCode::OK);
    s.connected().await;
    let resp = request(n1.addr, Method::GET, &path, &[], "").await;
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "a ticket works once, cluster-wide"
    );
    drop(s);
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test]
async fn filters_that_write_to_stdout_run_in_cluster_mode() {
    // The Redis reader hands events to the fan-out thread, and filters run
    // on their route's lane: a plugin writing to stdout (WASI drives a
    // runtime there) never runs on an async worker.
    let prefix = Prefix::new("stdout");
    let _keys = redis();
    let config = format!(
        r#"
[server]
heartbeat = "200ms"

[cluster]
backend = "redis"
url = "{url}"
prefix = "{prefix}"
node_id = "loud"

[plugins.shout]
use = "{shout}"

[[stream]]
path = "/loud"
filters = ["shout"]
"#,
        url = redis_url(),
        prefix = prefix.0,
        shout = test_wasm("shout"),
    );
    let server = Server::start_toml(&config).await;
    wait_ready(server.addr, StatusCode::OK).await;
    let mut sse = server.sse("/loud?topic=orders", &[]).await;
    sse.connected().await;
    let ids = publish_n(server.addr, 0, 5).await;
    let got = sse.events(5).await;
    assert_eq!(support::ids(&got), ids);
    let (status, _) = get_json(server.addr, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let stats = wait_stats(server.addr, |s| {
        s["pipeline"]["plugins"][0]["calls"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(stats["pipeline"]["plugins"][0]["errors"], 0, "{stats}");
    server.stop().await;
}

/// `spout bench --also`: subscribers and publishers spread over two nodes;
/// every event published on either reaches every subscriber on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_spread_over_two_nodes_delivers_every_event() {
    let prefix = Prefix::new("bench");
    let url = redis_url();
    let n1 = node(&prefix, "n1", &url).await;
    let n2 = node(&prefix, "n2", &url).await;
    let mut a = crate::bench::args(format!("http://{}", n1.addr));
    a.also = vec![format!("http://{}", n2.addr)];
    a.subscribers = 40;
    a.topics = 2;
    a.baseline = false;
    a.pid = None;
    a.source_addrs = 1;
    let report = spout::bench::run(a).await.unwrap();
    let table = report.table();
    let r = &report.hub;
    assert_eq!((r.connected, r.failed, r.errors), (40, 0, 0), "{table}");
    assert!(r.published >= 300, "{table}");
    // 40 subscribers over 2 topics: every event reaches 20 of them.
    assert_eq!(r.expected, r.published * 20, "{table}");
    assert_eq!(r.delivered, r.expected, "{table}");
    // Each node held half of the streams.
    for n in [&n1, &n2] {
        let (_, stats) = get_json(n.addr, "/stats").await;
        assert_eq!(stats["peak_connections"], 20, "{stats}");
    }
    n1.stop().await;
    n2.stop().await;
}
