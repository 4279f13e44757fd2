//! The load: SSE subscribers that count frames and time them, and
//! publishers that send timestamped events at a fixed rate.
//!
//! Payloads are text `"<micros> xxxx…"`, so a subscriber only has to find
//! `data: ` and read digits; micros are since this process's start, so
//! publish and receive times share one clock.

use super::baseline;
use super::broker::{Feed, Via};
use super::report::{rss_kb, Latency, Run};
use super::storm;
use super::BenchArgs;
use bytes::Bytes;
use hdrhistogram::Histogram;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

/// Where the load goes.
pub enum Target<'a> {
    /// A hub speaking Spout's HTTP API: one node, or several of a cluster
    /// (connections and publishers spread round-robin).
    Http(&'a [SocketAddr]),
    /// The built-in raw writer (events handed over in process).
    Raw(&'a baseline::Server),
}

/// Latency histograms are sharded so subscribers rarely contend.
const SHARDS: usize = 16;
/// Latency samples a subscriber buffers before recording them.
const FLUSH_EVERY: usize = 256;

struct Shared {
    start: Instant,
    connected: AtomicU64,
    failed: AtomicU64,
    /// Idle subscribers connected, and those that failed.
    idle: AtomicU64,
    idle_failed: AtomicU64,
    delivered: AtomicU64,
    errors: AtomicU64,
    /// Connected subscribers per topic.
    per_topic: Vec<AtomicU64>,
    /// Events published per topic.
    published: Vec<AtomicU64>,
    hist: Vec<Mutex<Histogram<u64>>>,
    /// True while a reconnect storm lasts (`--storm`).
    storming: Arc<AtomicBool>,
    /// Latency samples taken while it lasts.
    storm_hist: Vec<Mutex<Histogram<u64>>>,
    stop: CancellationToken,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Moves `samples` into shard `shard` of `hists` (`hist`, or
    /// `storm_hist` for samples taken while a storm lasted).
    fn record(hists: &[Mutex<Histogram<u64>>], shard: usize, samples: &mut Vec<u64>) {
        let Some(h) = hists.get(shard % SHARDS).filter(|_| !samples.is_empty()) else {
            return;
        };
        let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
        for s in samples.drain(..) {
            h.saturating_record(s);
        }
    }

    fn published_total(&self) -> u64 {
        self.published
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .sum()
    }

    fn expected(&self) -> u64 {
        self.published
            .iter()
            .zip(&self.per_topic)
            .map(|(p, s)| p.load(Ordering::Relaxed) * s.load(Ordering::Relaxed))
            .sum()
    }
}

/// Runs one measurement: connect, publish for the duration, drain, report.
pub async fn measure(
    args: &BenchArgs,
    target: Target<'_>,
    from: &[Option<IpAddr>],
    label: &str,
) -> Run {
    let hist = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map(Mutex::new);
    let shared = Arc::new(Shared {
        start: Instant::now(),
        connected: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        idle: AtomicU64::new(0),
        idle_failed: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        per_topic: (0..args.topics).map(|_| AtomicU64::new(0)).collect(),
        published: (0..args.topics).map(|_| AtomicU64::new(0)).collect(),
        hist: (0..SHARDS).filter_map(|_| hist().ok()).collect(),
        storming: Arc::new(AtomicBool::new(false)),
        storm_hist: (0..SHARDS).filter_map(|_| hist().ok()).collect(),
        stop: CancellationToken::new(),
    });
    let nodes: Vec<SocketAddr> = match &target {
        Target::Http(a) => a.to_vec(),
        Target::Raw(s) => vec![s.addr],
    };
    let node = |i: usize| nodes[i % nodes.len()];
    let rss_idle = args.pid.and_then(rss_kb);

    // Idle subscribers first, each on a selector of its own.
    let mut subs = tokio::task::JoinSet::new();
    for i in 0..args.idle {
        let shared = shared.clone();
        let source = from[i % from.len()];
        let topic = args.idle_topic.replace("{i}", &i.to_string());
        let target = format!("{}?topic={}", args.path, encode(&topic));
        let addr = node(i);
        subs.spawn(async move { idle(shared, addr, source, &target).await });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while shared.idle.load(Ordering::Relaxed) + shared.idle_failed.load(Ordering::Relaxed)
        < args.idle as u64
        && Instant::now() < deadline
    {
        if !args.quiet {
            eprint!(
                "\r{label}: idle subscribers {}/{}   ",
                shared.idle.load(Ordering::Relaxed),
                args.idle
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if args.idle > 0 && !args.quiet {
        eprintln!(
            "\n{label}: {} idle subscribers connected, {} failed",
            shared.idle.load(Ordering::Relaxed),
            shared.idle_failed.load(Ordering::Relaxed)
        );
    }

    // Connect.
    let n = args.subscribers;
    for i in 0..n {
        let shared = shared.clone();
        let topic = i % args.topics;
        let delay = args.ramp.mul_f64(i as f64 / n as f64);
        let source = from[i % from.len()];
        let query = if args.query.is_empty() {
            String::new()
        } else {
            format!("&{}", args.query.replace("{i}", &i.to_string()))
        };
        let target = format!("{}?topic=bench/{topic}{query}", args.path);
        let addr = node(i);
        subs.spawn(async move {
            tokio::time::sleep(delay).await;
            subscriber(shared, addr, source, topic, &target, i).await;
        });
    }
    let deadline = Instant::now() + args.ramp + Duration::from_secs(30);
    while shared.connected.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed)
        < n as u64
        && Instant::now() < deadline
    {
        status(args, label, &shared, "connecting");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_connected = args.pid.and_then(rss_kb);

    // The storm's topic is filled before the load, its streams connect
    // during it.
    let storm = match (&target, args.storm) {
        (Target::Http(_), 1..) => match storm::fill(node(0), args.behind, args.size).await {
            Ok(last_id) => {
                let (args, nodes, from) = (args.clone(), nodes.clone(), from.to_vec());
                let (storming, stop) = (shared.storming.clone(), shared.stop.clone());
                Some(tokio::spawn(async move {
                    tokio::time::sleep(args.storm_after).await;
                    storm::run(args, nodes, from, last_id, storming, stop).await
                }))
            }
            Err(e) => {
                eprintln!("\n{e}");
                shared.errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        },
        _ => None,
    };

    // Publish.
    let started = Instant::now();
    let mut pubs = tokio::task::JoinSet::new();
    let rate = args.rate as f64 / args.publishers as f64;
    for p in 0..args.publishers {
        let shared = shared.clone();
        let (size, topics, duration) = (args.size, args.topics, args.duration);
        let raw = match &target {
            Target::Raw(s) => Some(s.sender()),
            Target::Http(_) => None,
        };
        let via = match &target {
            Target::Http(_) if args.via != Via::Http => Some((
                args.via,
                args.broker
                    .clone()
                    .unwrap_or_else(|| args.via.default_url().to_owned()),
            )),
            _ => None,
        };
        let addr = node(p);
        pubs.spawn(async move {
            publisher(shared, addr, raw, via, p, rate, size, topics, duration).await;
        });
    }
    let mut last = Instant::now();
    while !pubs.is_empty() {
        tokio::select! {
            _ = pubs.join_next() => {}
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        if last.elapsed() >= Duration::from_secs(1) {
            status(args, label, &shared, "publishing");
            last = Instant::now();
        }
    }
    let publish_time = started.elapsed();
    // A storm that outlasts the load ends on its own limit.
    let storm = match storm {
        Some(task) => match task.await {
            Ok(Ok(storm)) => Some(storm),
            Ok(Err(e)) => {
                eprintln!("\n{e}");
                shared.errors.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(_) => None,
        },
        None => None,
    };
    // Drain: wait for what is in flight (bounded).
    let drain_until = Instant::now() + Duration::from_secs(5);
    while shared.delivered.load(Ordering::Relaxed) < shared.expected()
        && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    shared.stop.cancel();
    while subs.join_next().await.is_some() {}
    let storm = storm.map(|(mut run, streams)| {
        run.live_during_ms = Latency::of(merge(&shared.storm_hist).as_ref());
        streams.close();
        run
    });
    if !args.quiet {
        eprintln!();
    }

    let merged = merge(&shared.hist);
    let mut run = Run::new(
        label,
        shared.connected.load(Ordering::Relaxed),
        shared.failed.load(Ordering::Relaxed),
        shared.published_total(),
        shared.expected(),
        shared.delivered.load(Ordering::Relaxed),
        shared.errors.load(Ordering::Relaxed),
        publish_time,
        elapsed,
        merged.as_ref(),
        rss_idle,
        rss_connected,
    );
    run.storm = storm;
    run
}

/// The shards of a sharded histogram, added up.
fn merge(shards: &[Mutex<Histogram<u64>>]) -> Option<Histogram<u64>> {
    let mut merged = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok();
    for h in shards {
        if let (Some(m), Ok(h)) = (merged.as_mut(), h.lock()) {
            let _ = m.add(&*h);
        }
    }
    merged
}

fn status(args: &BenchArgs, label: &str, s: &Shared, phase: &str) {
    if args.quiet {
        return;
    }
    eprint!(
        "\r{label}: {phase} | connected {}/{} failed {} | published {} | delivered {} | errors {}   ",
        s.connected.load(Ordering::Relaxed),
        args.subscribers,
        s.failed.load(Ordering::Relaxed),
        s.published_total(),
        s.delivered.load(Ordering::Relaxed),
        s.errors.load(Ordering::Relaxed),
    );
}

pub(crate) async fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Percent-encodes what a selector may hold that a query may not.
fn encode(s: &str) -> String {
    s.replace('%', "%25")
        .replace('&', "%26")
        .replace('#', "%23")
        .replace(' ', "%20")
}

/// One idle SSE connection: reads and discards until the run ends.
async fn idle(shared: Arc<Shared>, addr: SocketAddr, source: Option<IpAddr>, target: &str) {
    let Ok(mut stream) = connect(addr, source).await else {
        shared.idle_failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let req = format!("GET {target} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\r\n");
    if stream.write_all(req.as_bytes()).await.is_err() {
        shared.idle_failed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut buf = vec![0u8; 1024];
    let mut counted = false;
    loop {
        tokio::select! {
            () = shared.stop.cancelled() => break,
            r = stream.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !counted {
                        counted = true;
                        if buf[..n].starts_with(b"HTTP/1.1 200") {
                            shared.idle.fetch_add(1, Ordering::Relaxed);
                        } else {
                            shared.idle_failed.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            },
        }
    }
}

/// One SSE connection: counts and times every event frame it receives.
async fn subscriber(
    shared: Arc<Shared>,
    addr: SocketAddr,
    source: Option<IpAddr>,
    topic: usize,
    target: &str,
    i: usize,
) {
    let fail = |shared: &Shared| {
        shared.failed.fetch_add(1, Ordering::Relaxed);
    };
    let Ok(mut stream) = connect(addr, source).await else {
        return fail(&shared);
    };
    let req = format!("GET {target} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\r\n");
    if stream.write_all(req.as_bytes()).await.is_err() {
        return fail(&shared);
    }
    let mut buf = vec![0u8; 8192];
    let mut head = Vec::new();
    // Response head.
    let (chunked, rest) = loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return fail(&shared),
            Ok(n) => n,
        };
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = memchr::memmem::find(&head, b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
            if !text.starts_with("http/1.1 200") {
                return fail(&shared);
            }
            break (
                text.contains("transfer-encoding: chunked"),
                head.split_off(end + 4),
            );
        }
    };
    shared.connected.fetch_add(1, Ordering::Relaxed);
    shared.per_topic[topic].fetch_add(1, Ordering::Relaxed);
    let mut decoder = Dechunk::new(chunked);
    let mut sse = Vec::new();
    let mut samples = Vec::with_capacity(FLUSH_EVERY);
    let mut count = 0u64;
    let mut during = Vec::new();
    let mut feed = |bytes: &[u8], sse: &mut Vec<u8>, samples: &mut Vec<u64>, count: &mut u64| {
        decoder.feed(bytes, sse);
        let now = shared.now_us();
        let storming = shared.storming.load(Ordering::Relaxed);
        let mut consumed = 0;
        while let Some(end) = memchr::memmem::find(&sse[consumed..], b"\n\n") {
            let frame = &sse[consumed..consumed + end];
            if let Some(t) = timestamp(frame) {
                let sample = now.saturating_sub(t).max(1);
                samples.push(sample);
                if storming {
                    during.push(sample);
                }
                *count += 1;
            }
            consumed += end + 2;
        }
        sse.drain(..consumed);
        if samples.len() >= FLUSH_EVERY {
            Shared::record(&shared.hist, i, samples);
            Shared::record(&shared.storm_hist, i, &mut during);
        }
    };
    feed(&rest, &mut sse, &mut samples, &mut count);
    loop {
        let n = tokio::select! {
            () = shared.stop.cancelled() => break,
            r = stream.read(&mut buf) => match r {
                Ok(0) => break,
                Ok(n) => n,
                Err(_) => {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            },
        };
        feed(&buf[..n], &mut sse, &mut samples, &mut count);
        shared
            .delivered
            .fetch_add(std::mem::take(&mut count), Ordering::Relaxed);
    }
    shared.delivered.fetch_add(count, Ordering::Relaxed);
    Shared::record(&shared.hist, i, &mut samples);
    Shared::record(&shared.storm_hist, i, &mut during);
}

/// The publish time in a frame's `data: <micros> …` line, if it has one.
fn timestamp(frame: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(frame, b"data: ")? + 6;
    let digits = frame[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&frame[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// Incremental `Transfer-Encoding: chunked` decoder (pass-through when the
/// body is not chunked).
pub(crate) struct Dechunk {
    chunked: bool,
    /// Bytes left in the current chunk.
    left: usize,
    /// Partial size line.
    line: Vec<u8>,
    /// Skipping the CRLF after a chunk.
    skip: usize,
}

impl Dechunk {
    pub(crate) fn new(chunked: bool) -> Dechunk {
        Dechunk {
            chunked,
            left: 0,
            line: Vec::new(),
            skip: 0,
        }
    }

    pub(crate) fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        if !self.chunked {
            out.extend_from_slice(input);
            return;
        }
        while !input.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(input.len());
                self.skip -= n;
                input = &input[n..];
            } else if self.left > 0 {
                let n = self.left.min(input.len());
                out.extend_from_slice(&input[..n]);
                self.left -= n;
                input = &input[n..];
                if self.left == 0 {
                    self.skip = 2;
                }
            } else {
                match memchr::memchr(b'\n', input) {
                    Some(i) => {
                        self.line.extend_from_slice(&input[..i]);
                        input = &input[i + 1..];
                        let text = String::from_utf8_lossy(&self.line);
                        let size = text.trim().split(';').next().unwrap_or("");
                        self.left = usize::from_str_radix(size, 16).unwrap_or(0);
                        self.line.clear();
                    }
                    None => {
                        self.line.extend_from_slice(input);
                        input = &[];
                    }
                }
            }
        }
    }
}

/// One publisher: `rate` events per second for `duration`, round-robin over
/// the topics, several events per request when the rate needs it.
#[allow(clippy::too_many_arguments)]
async fn publisher(
    shared: Arc<Shared>,
    addr: SocketAddr,
    raw: Option<baseline::Sender>,
    via: Option<(Via, String)>,
    index: usize,
    rate: f64,
    size: usize,
    topics: usize,
    duration: Duration,
) {
    let mut conn = None;
    let mut feed = match &via {
        Some((kind, url)) => match Feed::connect(*kind, url, index).await {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("\n{e}");
                shared.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        },
        None => None,
    };
    // Message ids unique across runs too: a broker message id seen before
    // is a duplicate to the relay (or a conflict, with other content).
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let mut ids = (run << 8) + ((index as u64) << 56);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut seq = index;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let pad = "x".repeat(size);
    while started.elapsed() < duration {
        tick.tick().await;
        let due = (rate * started.elapsed().as_secs_f64()) as u64;
        let n = due.saturating_sub(sent).min(1000);
        if n == 0 {
            continue;
        }
        let now = shared.now_us();
        let mut batch = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let topic = seq % topics;
            seq += 1;
            let stamp = now.to_string();
            let body = format!("{stamp} {}", &pad[..size.saturating_sub(stamp.len() + 1)]);
            batch.push((topic, body));
        }
        let ok = match &raw {
            Some(tx) => {
                for (topic, body) in &batch {
                    tx.publish(*topic, Bytes::from(format!("data: {body}\n\n")));
                }
                true
            }
            None => match feed.as_mut() {
                Some(f) => f.send(&batch, &mut ids).await,
                None => post(&mut conn, addr, &batch).await,
            },
        };
        if ok {
            for (topic, _) in &batch {
                shared.published[*topic].fetch_add(1, Ordering::Relaxed);
            }
        } else {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            conn = None;
        }
        sent += n;
    }
}

/// `POST /publish` on a kept-alive connection; true on 200.
async fn post(conn: &mut Option<TcpStream>, addr: SocketAddr, batch: &[(usize, String)]) -> bool {
    let events: Vec<serde_json::Value> = batch
        .iter()
        .map(|(t, body)| serde_json::json!({"topic": format!("bench/{t}"), "data": body}))
        .collect();
    if conn.is_none() {
        *conn = connect(addr, None).await.ok();
    }
    let Some(stream) = conn.as_mut() else {
        return false;
    };
    matches!(publish(stream, addr, &events).await, Some((200, _)))
}

/// `POST /publish` of `events` (a JSON array) on a kept-alive connection;
/// the status and the answer's body, `None` if the connection failed.
pub(crate) async fn publish(
    stream: &mut TcpStream,
    addr: SocketAddr,
    events: &[serde_json::Value],
) -> Option<(u16, Vec<u8>)> {
    let body = serde_json::to_vec(events).unwrap_or_default();
    let head = format!(
        "POST /publish HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    round_trip_body(stream, &head, &body).await
}

/// Sends one request (`head` with its blank line, then `body`) on a
/// kept-alive connection and reads the whole response (head, then
/// `content-length` bytes); returns its status, `None` if the connection
/// failed.
pub(crate) async fn round_trip(stream: &mut TcpStream, head: &str, body: &[u8]) -> Option<u16> {
    round_trip_body(stream, head, body)
        .await
        .map(|(status, _)| status)
}

/// [`round_trip`], also returning the response body.
async fn round_trip_body(
    stream: &mut TcpStream,
    head: &str,
    body: &[u8],
) -> Option<(u16, Vec<u8>)> {
    if stream.write_all(head.as_bytes()).await.is_err() || stream.write_all(body).await.is_err() {
        return None;
    }
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                match stream.read(&mut chunk).await {
                    Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => return None,
                }
            }
            let status = head.get(9..12).and_then(|c| c.parse().ok())?;
            // The read buffer becomes the body: no copy.
            buf.truncate(end + 4 + len);
            buf.drain(..end + 4);
            return Some((status, buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks_across_reads_and_finds_timestamps() {
        let parts = ["id: 1\ndata: 123 xxxxxxx\n\n", ":\n\n\n"];
        let body: Vec<u8> = parts
            .iter()
            .flat_map(|p| format!("{:x}\r\n{p}\r\n", p.len()).into_bytes())
            .collect();
        for split in 0..body.len() {
            let mut d = Dechunk::new(true);
            let mut out = Vec::new();
            d.feed(&body[..split], &mut out);
            d.feed(&body[split..], &mut out);
            assert_eq!(
                out, b"id: 1\ndata: 123 xxxxxxx\n\n:\n\n\n",
                "split at {split}"
            );
        }
        assert_eq!(timestamp(b"id: 1\ndata: 123 xx"), Some(123));
        assert_eq!(timestamp(b"event: connected\ndata: {\"a\":1}"), None);
    }
}
