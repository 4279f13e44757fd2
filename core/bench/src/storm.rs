//! `spout bench --storm N`: a reconnect storm, as after a deploy. Before the
//! load starts, `--behind` events are published to a topic of their own
//! (`bench/storm`); during the load, `N` streams connect to that topic within
//! `--storm-ramp`, each with the `Last-Event-ID` just before those events, so
//! every one of them replays all of them while the live subscribers keep
//! receiving the load. The report gives how long the streams took to catch
//! up, the replayed frames per second, the live subscribers' latency while
//! the storm lasted, and (with `--pid`) the server's peak memory.

use super::client::{connect, publish, Dechunk};
use super::report::{rss_kb, Latency};
use super::BenchArgs;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// The topic the storm's streams replay.
pub const TOPIC: &str = "bench/storm";
/// Events per request when filling the topic.
const FILL_BATCH: u64 = 1000;
/// How long the storm may take, past its ramp, before it is reported as is.
const STORM_LIMIT: Duration = Duration::from_secs(180);

/// What the storm measured.
#[derive(Debug, Clone, Serialize)]
pub struct StormRun {
    /// Streams asked for.
    pub streams: u64,
    /// Streams that got a `200` event stream.
    pub connected: u64,
    /// Streams that failed to connect or broke.
    pub failed: u64,
    /// Events each stream was behind.
    pub behind: u64,
    /// Replayed frames expected: streams × behind.
    pub expected: u64,
    /// Replayed frames received, all streams together.
    pub replayed: u64,
    /// Streams that received every event they were behind.
    pub caught_up: u64,
    /// From the first stream's connect to the last stream caught up,
    /// seconds (`None` if some never caught up).
    pub all_caught_up_seconds: Option<f64>,
    /// Replayed frames per second over that time (or the storm's whole
    /// time, if not all caught up).
    pub frames_per_second: f64,
    /// Per stream, connect → its last replayed frame, milliseconds.
    pub catch_up_ms: Latency,
    /// The live subscribers' publish→deliver latency while the storm
    /// lasted, milliseconds.
    pub live_during_ms: Latency,
    /// Server resident memory just before the storm, KiB (with `--pid`).
    pub rss_before_kib: Option<u64>,
    /// The most the server held during the storm, KiB (sampled every 50 ms).
    pub rss_peak_kib: Option<u64>,
}

/// The storm's counters, shared by its streams.
struct Counts {
    connected: AtomicU64,
    failed: AtomicU64,
    replayed: AtomicU64,
    caught_up: AtomicU64,
    /// Micros since the storm started when the latest stream caught up.
    last_caught_up_us: AtomicU64,
    hist: Mutex<Option<Histogram<u64>>>,
}

/// Publishes `behind` events to [`TOPIC`] on `addr`; returns the id just
/// before the first of them (the storm's `Last-Event-ID`).
pub async fn fill(addr: SocketAddr, behind: u64, size: usize) -> Result<u64, String> {
    let mut conn = connect(addr, None)
        .await
        .map_err(|e| format!("storm: cannot connect to {addr}: {e}"))?;
    let pad = "x".repeat(size);
    let mut first = None;
    let mut left = behind;
    while left > 0 {
        let n = left.min(FILL_BATCH);
        let events: Vec<serde_json::Value> = (0..n)
            .map(|_| serde_json::json!({"topic": TOPIC, "data": pad}))
            .collect();
        let (status, reply) = publish(&mut conn, addr, &events)
            .await
            .ok_or_else(|| format!("storm: publishing to {TOPIC} failed: connection lost"))?;
        if status != 200 {
            return Err(format!(
                "storm: publishing to {TOPIC} answered {status}: {}",
                String::from_utf8_lossy(&reply)
            ));
        }
        if first.is_none() {
            let ids: serde_json::Value = serde_json::from_slice(&reply)
                .map_err(|e| format!("storm: the publish answer is not JSON: {e}"))?;
            first = ids["ids"][0].as_u64();
        }
        left -= n;
    }
    first
        .map(|id| id.saturating_sub(1))
        .ok_or_else(|| "storm: the publish answer holds no ids".to_owned())
}

/// The storm's open streams, on a runtime of their own: the live
/// subscribers' reads must not queue behind theirs in this process, or the
/// live latency measured would be the load tool's.
pub struct Streams {
    runtime: tokio::runtime::Runtime,
}

impl Streams {
    /// Closes every stream.
    pub fn close(self) {
        self.runtime.shutdown_background();
    }
}

/// Runs the storm: `args.storm` streams over `args.storm_ramp`, each from
/// `last_id`, until all caught up or the limit; `storming` is true while it
/// lasts. The streams stay open until `stop` or [`Streams::close`].
pub async fn run(
    args: BenchArgs,
    nodes: Vec<SocketAddr>,
    from: Vec<Option<IpAddr>>,
    last_id: u64,
    storming: Arc<std::sync::atomic::AtomicBool>,
    stop: CancellationToken,
) -> Result<(StormRun, Streams), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("storm")
        .enable_all()
        .build()
        .map_err(|e| format!("storm: cannot start its runtime: {e}"))?;
    let counts = Arc::new(Counts {
        connected: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        replayed: AtomicU64::new(0),
        caught_up: AtomicU64::new(0),
        last_caught_up_us: AtomicU64::new(0),
        hist: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3).ok()),
    });
    let rss_before = args.pid.and_then(rss_kb);
    let mut rss_peak = rss_before;
    let started = Instant::now();
    storming.store(true, Ordering::Relaxed);
    let n = args.storm;
    for i in 0..n {
        let counts = counts.clone();
        let delay = args.storm_ramp.mul_f64(i as f64 / n as f64);
        let addr = nodes[i % nodes.len()];
        let source = from[i % from.len()];
        let (stop, behind) = (stop.clone(), args.behind);
        runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            stream(&counts, addr, source, last_id, behind, started, stop).await;
        });
    }
    let limit = started + args.storm_ramp + STORM_LIMIT;
    let mut last_status = Instant::now();
    loop {
        let done = counts.caught_up.load(Ordering::Relaxed) + counts.failed.load(Ordering::Relaxed);
        if done >= n as u64 || Instant::now() >= limit || stop.is_cancelled() {
            break;
        }
        if let Some(rss) = args.pid.and_then(rss_kb) {
            rss_peak = Some(rss_peak.map_or(rss, |p| p.max(rss)));
        }
        if !args.quiet && last_status.elapsed() >= Duration::from_secs(1) {
            eprint!(
                "\rstorm: connected {}/{n} failed {} | caught up {} | replayed {}   ",
                counts.connected.load(Ordering::Relaxed),
                counts.failed.load(Ordering::Relaxed),
                counts.caught_up.load(Ordering::Relaxed),
                counts.replayed.load(Ordering::Relaxed),
            );
            last_status = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    storming.store(false, Ordering::Relaxed);
    let storm_time = started.elapsed();
    let caught_up = counts.caught_up.load(Ordering::Relaxed);
    let all = (caught_up == n as u64)
        .then(|| counts.last_caught_up_us.load(Ordering::Relaxed) as f64 / 1e6);
    let replayed = counts.replayed.load(Ordering::Relaxed);
    let catch_up_ms = counts
        .hist
        .lock()
        .ok()
        .map(|h| Latency::of(h.as_ref()))
        .unwrap_or_default();
    let run = StormRun {
        streams: n as u64,
        connected: counts.connected.load(Ordering::Relaxed),
        failed: counts.failed.load(Ordering::Relaxed),
        behind: args.behind,
        expected: n as u64 * args.behind,
        replayed,
        caught_up,
        all_caught_up_seconds: all,
        frames_per_second: replayed as f64 / all.unwrap_or(storm_time.as_secs_f64()).max(1e-9),
        catch_up_ms,
        live_during_ms: Latency::default(),
        rss_before_kib: rss_before,
        rss_peak_kib: rss_peak,
    };
    Ok((run, Streams { runtime }))
}

/// One reconnecting stream: counts the frames it replays and times its
/// catch-up, then stays open until `stop`.
async fn stream(
    counts: &Counts,
    addr: SocketAddr,
    source: Option<IpAddr>,
    last_id: u64,
    behind: u64,
    storm_start: Instant,
    stop: CancellationToken,
) {
    let fail = || {
        counts.failed.fetch_add(1, Ordering::Relaxed);
    };
    let began = Instant::now();
    let Ok(mut conn) = connect(addr, source).await else {
        return fail();
    };
    let req = format!(
        "GET /events?topic={TOPIC} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\nlast-event-id: {last_id}\r\n\r\n"
    );
    if conn.write_all(req.as_bytes()).await.is_err() {
        return fail();
    }
    let mut buf = vec![0u8; 16 * 1024];
    let mut head = Vec::new();
    let (chunked, rest) = loop {
        let n = match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return fail(),
            Ok(n) => n,
        };
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = memchr::memmem::find(&head, b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
            if !text.starts_with("http/1.1 200") {
                return fail();
            }
            break (
                text.contains("transfer-encoding: chunked"),
                head.split_off(end + 4),
            );
        }
    };
    counts.connected.fetch_add(1, Ordering::Relaxed);
    let mut decoder = Dechunk::new(chunked);
    let mut sse = Vec::new();
    let mut fresh = frames(&mut decoder, &mut sse, &rest);
    let mut seen = 0;
    let mut done = false;
    loop {
        if fresh > 0 {
            counts.replayed.fetch_add(fresh, Ordering::Relaxed);
            seen += fresh;
        }
        if !done && seen >= behind {
            done = true;
            let took = began.elapsed().as_micros() as u64;
            if let Some(h) = counts.hist.lock().ok().as_mut().and_then(|h| h.as_mut()) {
                h.saturating_record(took.max(1));
            }
            counts
                .last_caught_up_us
                .fetch_max(storm_start.elapsed().as_micros() as u64, Ordering::Relaxed);
            counts.caught_up.fetch_add(1, Ordering::Relaxed);
        }
        let n = tokio::select! {
            () = stop.cancelled() => break,
            r = conn.read(&mut buf) => match r {
                Ok(n) if n > 0 => n,
                _ => {
                    if !done {
                        fail();
                    }
                    break;
                }
            },
        };
        fresh = frames(&mut decoder, &mut sse, &buf[..n]);
    }
}

/// Feeds `bytes` to the decoder and returns how many event frames (those
/// with an `id:`) it completed; partial frames stay in `sse`.
fn frames(decoder: &mut Dechunk, sse: &mut Vec<u8>, bytes: &[u8]) -> u64 {
    decoder.feed(bytes, sse);
    let mut consumed = 0;
    let mut count = 0;
    while let Some(end) = memchr::memmem::find(&sse[consumed..], b"\n\n") {
        if sse[consumed..].starts_with(b"id:") {
            count += 1;
        }
        consumed += end + 2;
    }
    sse.drain(..consumed);
    count
}
