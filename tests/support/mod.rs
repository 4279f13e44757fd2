//! Test support: start the real server (in process on 127.0.0.1:0, or the
//! real binary as a child process), speak HTTP to it, and read SSE streams
//! exactly as a browser's `EventSource` would (plus the raw bytes).
#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use spout::app::App;
use spout::config::{Config, Fsync};
use spout::sse::parse::{Parser, Received};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(15);

/// A config for tests: ephemeral port, the given data dir, quick heartbeats.
pub fn config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.server.heartbeat = Duration::from_secs(5);
    c.server.shutdown_grace = Duration::from_secs(2);
    c.log.path = dir.to_path_buf();
    c.log.fsync = Fsync::Batch;
    c.plugin_cache = Some(plugin_cache());
    c
}

/// One compiled-plugin cache for every test (and test run): each plugin is
/// compiled once, not once per server.
pub fn plugin_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")
}

/// The real server, running in this process.
pub struct Server {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<Result<(), spout::server::ServerError>>>,
}

impl Server {
    /// Starts a server on a fresh temporary data dir.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Server::start_in(tmp.path(), tweak).await;
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on `dir` (which may hold a previous run's log).
    pub async fn start_in(dir: &Path, tweak: impl FnOnce(&mut Config)) -> Server {
        let mut cfg = config(dir);
        tweak(&mut cfg);
        Server::launch(dir, cfg).await
    }

    /// Starts a server from config text written to `config.toml` in a fresh
    /// temporary directory (so hot reload can watch it); the log goes to
    /// `data/` beside it.
    pub async fn start_toml(text: &str) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("config.toml");
        std::fs::write(&file, text).unwrap();
        let mut cfg = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
        cfg.server.shutdown_grace = Duration::from_secs(2);
        cfg.log.path = tmp.path().join("data");
        cfg.plugin_cache = Some(plugin_cache());
        let mut s = Server::launch(tmp.path(), cfg).await;
        s._tmp = Some(tmp);
        s
    }

    /// The config file of a server started with [`Server::start_toml`].
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    async fn launch(dir: &Path, cfg: Config) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A previous server on this dir may still be releasing sled's file lock
        // (a blocking read finishing); production restarts are new processes.
        let deadline = std::time::Instant::now() + WAIT;
        let app = loop {
            match App::open(cfg.clone()) {
                Ok(app) => break app,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("retrying open: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot open the log: {e}"),
            }
        };
        let (tx, rx) = oneshot::channel::<()>();
        let join = tokio::spawn(spout::server::run(listener, app.clone(), async move {
            let _ = rx.await;
        }));
        Server {
            addr,
            app,
            dir: dir.to_path_buf(),
            _tmp: None,
            stop: Some(tx),
            join: Some(join),
        }
    }

    /// Shuts the server down gracefully and waits until the log is closed.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        self.shutdown().await;
        self._tmp.take()
    }

    async fn shutdown(&mut self) {
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

    /// Publishes one JSON body; returns the ids.
    pub async fn publish(&self, body: Value) -> Vec<u64> {
        let (status, json) =
            post(self.addr, "/publish", "application/json", body.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        json["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect()
    }

    /// Opens an SSE stream at `path` with extra request headers.
    pub async fn sse(&self, path: &str, headers: &[(&str, &str)]) -> Sse {
        Sse::open(self.addr, path, headers).await
    }

    /// `GET path` as JSON.
    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        get_json(self.addr, path).await
    }
}

/// Sends one request on a fresh HTTP/1.1 connection.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> hyper::Response<Incoming> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into())).unwrap();
    tokio::time::timeout(WAIT, send.send_request(req))
        .await
        .expect("response timed out")
        .unwrap()
}

/// Reads a whole response body.
pub async fn body_bytes(resp: hyper::Response<Incoming>) -> (StatusCode, HeaderMap, Bytes) {
    let (parts, body) = resp.into_parts();
    let bytes = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("body timed out")
        .unwrap()
        .to_bytes();
    (parts.status, parts.headers, bytes)
}

/// `POST path` with a content type; the response parsed as JSON.
pub async fn post(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: impl Into<Bytes>,
) -> (StatusCode, Value) {
    let resp = request(
        addr,
        Method::POST,
        path,
        &[("content-type", content_type)],
        body,
    )
    .await;
    let (status, headers, bytes) = body_bytes(resp).await;
    assert_eq!(headers["content-type"], "application/json", "{status}");
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// `GET /metrics`: the Prometheus text.
pub async fn metrics_text(addr: SocketAddr) -> String {
    let resp = request(addr, Method::GET, "/metrics", &[], Bytes::new()).await;
    let (_, _, body) = body_bytes(resp).await;
    String::from_utf8(body.to_vec()).unwrap()
}

/// The value of an unlabelled metric in Prometheus text (0 when absent).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// `GET path`; the response parsed as JSON.
pub async fn get_json(addr: SocketAddr, path: &str) -> (StatusCode, Value) {
    let (status, _, bytes) =
        body_bytes(request(addr, Method::GET, path, &[], Bytes::new()).await).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// An open SSE stream: raw bytes as received and events as parsed.
pub struct Sse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: Incoming,
    parser: Parser,
    pending: VecDeque<Received>,
    /// Every byte received so far.
    pub raw: Vec<u8>,
    pub ended: bool,
}

impl Sse {
    /// Opens `GET path` over HTTP/1.1.
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Sse {
        let resp = request(addr, Method::GET, path, headers, Bytes::new()).await;
        Sse::from_response(resp)
    }

    /// Wraps a streaming response.
    pub fn from_response(resp: hyper::Response<Incoming>) -> Sse {
        let (parts, body) = resp.into_parts();
        Sse {
            status: parts.status,
            headers: parts.headers,
            body,
            parser: Parser::default(),
            pending: VecDeque::new(),
            raw: Vec::new(),
            ended: false,
        }
    }

    /// Reads one more chunk; false at the end of the stream.
    async fn read_chunk(&mut self) -> bool {
        let frame = tokio::time::timeout(WAIT, self.body.frame())
            .await
            .expect("timed out waiting for SSE data");
        match frame {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    self.raw.extend_from_slice(&data);
                    let text = std::str::from_utf8(&data).expect("SSE chunk split inside UTF-8");
                    self.pending.extend(self.parser.feed(text));
                }
                true
            }
            _ => {
                self.ended = true;
                false
            }
        }
    }

    /// The next dispatched event (control frames included).
    pub async fn next(&mut self) -> Received {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return e;
            }
            assert!(
                self.read_chunk().await,
                "stream ended; got so far: {}",
                String::from_utf8_lossy(&self.raw)
            );
        }
    }

    /// The next event, or `None` if the stream ends first.
    pub async fn next_or_end(&mut self) -> Option<Received> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if !self.read_chunk().await {
                return None;
            }
        }
    }

    /// The next `n` events whose type is not a control frame.
    pub async fn events(&mut self, n: usize) -> Vec<Received> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let e = self.next().await;
            if !is_control(&e.kind) {
                out.push(e);
            }
        }
        out
    }

    /// The data of the next `n` non-control events.
    pub async fn data(&mut self, n: usize) -> Vec<String> {
        self.events(n).await.into_iter().map(|e| e.data).collect()
    }

    /// Reads until the raw bytes contain `needle`.
    pub async fn raw_until(&mut self, needle: &str) {
        while !String::from_utf8_lossy(&self.raw).contains(needle) {
            assert!(self.read_chunk().await, "stream ended before {needle:?}");
        }
    }

    /// Waits for the `connected` frame and returns its JSON.
    pub async fn connected(&mut self) -> Value {
        let e = self.next().await;
        assert_eq!(e.kind, "connected");
        serde_json::from_str(&e.data).unwrap()
    }

    /// Reads until one more heartbeat comment has arrived.
    pub async fn next_heartbeat(&mut self) {
        let seen = self.heartbeats();
        while self.heartbeats() == seen {
            assert!(self.read_chunk().await, "stream ended before a heartbeat");
        }
    }

    /// Heartbeat comments seen so far.
    pub fn heartbeats(&self) -> usize {
        self.parser.comments
    }
}

/// Control frames the server sends besides events.
pub fn is_control(kind: &str) -> bool {
    matches!(
        kind,
        "connected" | "reset" | "shutdown" | "overflow" | "revoked" | "replaced" | "join" | "leave"
    )
}

/// The ids of received events, as numbers.
pub fn ids(events: &[Received]) -> Vec<u64> {
    events.iter().map(|e| e.last_id.parse().unwrap()).collect()
}

/// Polls until `check` holds on the server's `/stats`, or fails after [`WAIT`].
pub async fn wait_stats(addr: SocketAddr, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, stats) = get_json(addr, "/stats").await;
        if check(&stats) {
            return stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stats never matched: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens an HTTP/2 (h2c prior knowledge) connection.
pub async fn h2(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

/// The real `spout` binary running as a child process.
pub struct SpoutProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr: Arc<std::sync::Mutex<String>>,
}

/// Path of the built `spout` binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_spout")
}

/// Starts `spout serve --config FILE --listen 127.0.0.1:0 --data-dir DIR` and
/// waits for its `listening on http://ADDR` line.
pub fn spawn_binary(config_file: &Path, data_dir: &Path) -> SpoutProcess {
    let mut child = Command::new(bin())
        .args(["serve", "--config"])
        .arg(config_file)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("SPOUT_LOG", "info")
        .env("SPOUT_PLUGIN_CACHE", plugin_cache())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on http://") {
                    if let Some(tx) = tx.take() {
                        let _ =
                            tx.send(line[i + "listening on http://".len()..].trim().to_string());
                    }
                }
                log.lock().unwrap().push_str(&line);
                log.lock().unwrap().push('\n');
            }
        });
    }
    let addr = rx
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("no listening line; stderr: {}", log.lock().unwrap()));
    SpoutProcess {
        child,
        addr: addr.parse().unwrap(),
        stderr: log,
    }
}

/// A test plugin built by core/build.rs from `tests/plugins/NAME`.
pub fn test_wasm(name: &str) -> String {
    format!("{}/test_{name}.wasm", env!("SPOUT_TEST_WASM_DIR"))
}

/// Writes into `dir` a component importing only `import` (an empty instance),
/// returning its path: a plugin asking for an interface, nothing else.
pub fn component_importing(dir: &std::path::Path, import: &str) -> String {
    use wasm_encoder::{ComponentImportSection, ComponentTypeRef, ComponentTypeSection};
    let mut types = ComponentTypeSection::new();
    types.instance(&wasm_encoder::InstanceType::new());
    let mut imports = ComponentImportSection::new();
    imports.import(import, ComponentTypeRef::Instance(0));
    let mut component = wasm_encoder::Component::new();
    component.section(&types).section(&imports);
    let file = dir.join("imports.wasm");
    std::fs::write(&file, component.finish()).unwrap();
    file.display().to_string()
}

/// Runs `spout check` on `config` and returns (success, stderr).
pub fn check(config: &str) -> (bool, String) {
    check_env(config, &[])
}

/// [`check`] with extra environment variables.
pub fn check_env(config: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, config).unwrap();
    let out = Command::new(bin())
        .arg("check")
        .arg(&file)
        .env("SPOUT_LOG", "warn")
        .env("SPOUT_PLUGIN_CACHE", plugin_cache())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The data inside a gzip envelope (`{"compressed":true,"encoding":"gzip",
/// "payload":"<base64>"}`), decompressed.
pub fn gunzip_envelope(data: &str) -> String {
    use base64::Engine as _;
    use std::io::Read as _;
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["compressed"], true, "{data}");
    assert_eq!(v["encoding"], "gzip", "{data}");
    let gz = base64::engine::general_purpose::STANDARD
        .decode(v["payload"].as_str().unwrap())
        .unwrap();
    let mut out = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut out)
        .unwrap();
    out
}

/// Every stored event of `topic`, `(id, data as text)` (JSON data as JSON
/// text), read page by page
/// through `/poll`.
pub async fn poll_all(addr: SocketAddr, topic: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let (_, page) = get_json(
            addr,
            &format!("/poll?topic={topic}&after={after}&limit=1000"),
        )
        .await;
        for e in page["events"].as_array().unwrap() {
            out.push((
                e["id"].as_u64().unwrap(),
                // Text as is; JSON data as JSON text.
                e["data"]
                    .as_str()
                    .map_or_else(|| e["data"].to_string(), str::to_owned),
            ));
        }
        let next = page["next"].as_u64().unwrap();
        if next == after {
            return out;
        }
        after = next;
    }
}

/// `POST /publish` of `body` on a fresh connection to a server that may be
/// killed at any moment: the answer's JSON, or `None` once the server is
/// gone (or refused the request).
pub async fn try_publish(addr: SocketAddr, body: String) -> Option<Value> {
    let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = Request::post("/publish")
        .header("host", "x")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .ok()?;
    let resp = send.send_request(req).await.ok()?;
    if resp.status() != 200 {
        return None;
    }
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

/// A TCP proxy in front of a service (Redis, a broker) that a test can cut
/// and restore, to take the service away from one server while the rest of
/// the machine keeps it.
pub struct Proxy {
    pub addr: SocketAddr,
    open: Arc<std::sync::atomic::AtomicBool>,
    cut: Arc<std::sync::Mutex<tokio_util::sync::CancellationToken>>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let cut = Arc::new(std::sync::Mutex::new(
            tokio_util::sync::CancellationToken::new(),
        ));
        let (o, c) = (open.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !o.load(std::sync::atomic::Ordering::Acquire) {
                    continue; // dropped: connection refused in effect
                }
                let token = c.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut out) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                    }
                });
            }
        });
        Proxy { addr, open, cut }
    }

    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::Release);
        let mut t = self.cut.lock().unwrap();
        t.cancel();
        *t = tokio_util::sync::CancellationToken::new();
    }

    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::Release);
    }
}
