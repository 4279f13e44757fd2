//! `spout bench --publish-only`: publish ingest alone. `--publishers`
//! kept-alive HTTP/1.1 connections each send one event per request, back
//! to back, for `--duration`, with no subscribers; the report gives
//! publishes/s and the publish round trip. `--nchan` speaks Nchan's
//! publisher protocol instead (`POST /pub?id=bench-T`, the payload as the
//! body), so the same load measures an nginx + Nchan hub in the same session.

use super::client::{connect, round_trip};
use super::report::Run;
use super::BenchArgs;
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What one publisher connection did.
struct Counts {
    ok: u64,
    errors: u64,
    hist: Option<Histogram<u64>>,
}

/// Runs the publish-only load against `addr` and reports it as `label`.
pub async fn measure(args: &BenchArgs, addr: SocketAddr, label: &str) -> Run {
    let started = Instant::now();
    let stop_at = started + args.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..args.publishers {
        let (publishers, topics, size, nchan) =
            (args.publishers, args.topics, args.size, args.nchan);
        tasks.spawn(async move {
            let mut counts = Counts {
                ok: 0,
                errors: 0,
                hist: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok(),
            };
            let pad = "x".repeat(size);
            let mut conn = None;
            let mut seq = p;
            while Instant::now() < stop_at {
                let topic = seq % topics;
                seq += publishers;
                let (head, body) = if nchan {
                    (
                        format!(
                            "POST /pub?id=bench-{topic} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
                            pad.len()
                        ),
                        pad.clone().into_bytes(),
                    )
                } else {
                    let body = serde_json::json!({"topic": format!("bench/{topic}"), "data": pad})
                        .to_string()
                        .into_bytes();
                    (
                        format!(
                            "POST /publish HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        ),
                        body,
                    )
                };
                if conn.is_none() {
                    conn = connect(addr, None).await.ok();
                }
                let Some(stream) = conn.as_mut() else {
                    counts.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let sent = Instant::now();
                match round_trip(stream, &head, &body).await {
                    Some(status) if (200..300).contains(&status) => {
                        counts.ok += 1;
                        if let Some(h) = counts.hist.as_mut() {
                            h.saturating_record(sent.elapsed().as_micros() as u64);
                        }
                    }
                    Some(_) => counts.errors += 1,
                    None => {
                        counts.errors += 1;
                        conn = None;
                    }
                }
            }
            counts
        });
    }
    let (mut ok, mut errors) = (0, 0);
    let mut merged = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok();
    while let Some(done) = tasks.join_next().await {
        let Ok(c) = done else { continue };
        ok += c.ok;
        errors += c.errors;
        if let (Some(m), Some(h)) = (merged.as_mut(), c.hist.as_ref()) {
            let _ = m.add(h);
        }
    }
    let elapsed = started.elapsed();
    // Memory per connection means nothing here (64 publishers, no streams).
    Run::new(
        label,
        args.publishers as u64,
        0,
        ok,
        0,
        0,
        errors,
        elapsed,
        elapsed,
        merged.as_ref(),
        None,
        None,
    )
}
