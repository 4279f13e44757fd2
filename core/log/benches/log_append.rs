//! Log append throughput in events/s: `fsync = "batch"` and `"always"`, with
//! one publisher and with 16 concurrent publishers (one event per append call,
//! so 16 publishers exercise group commit: they share flushes).
//!
//! Also replay: scanning the log and rendering frames (`log_replay`).
//!
//! Run: `cargo bench -p spout-log --bench log_append`
//! Target (DESIGN.md): ≥ 100,000 appended events/s with `batch`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use spout_log::EventLog;
use spout_proto::config::{Fsync, LogConfig};
use spout_proto::event::{Data, Event, NewEvent};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn event() -> NewEvent {
    NewEvent {
        topic: "bench".into(),
        kind: None,
        data: Data::Json(Bytes::from(format!("{{\"v\":\"{}\"}}", "x".repeat(92)))),
        to: None,
        key: None,
        extra: None,
    }
}

/// A log in a fresh directory under the target dir (a real disk, so fsync is
/// real), with a fan-out sink that does nothing.
fn open(fsync: Fsync) -> (tempfile::TempDir, EventLog) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cfg = LogConfig {
        path: dir.path().to_path_buf(),
        fsync,
        ..LogConfig::default()
    };
    let log = EventLog::open(&cfg, Arc::new(|_: &[Arc<Event>]| {})).unwrap();
    (dir, log)
}

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("log_append");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.warm_up_time(Duration::from_secs(1));
    for (fsync, per_iter) in [(Fsync::Batch, 4000u64), (Fsync::Always, 400)] {
        for publishers in [1u64, 16] {
            let (_dir, log) = open(fsync);
            group.throughput(Throughput::Elements(per_iter));
            let id = BenchmarkId::new(
                format!("{fsync:?}").to_lowercase(),
                format!("{publishers}_publishers"),
            );
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let log = log.clone();
                        total += rt.block_on(async move {
                            let start = Instant::now();
                            let tasks: Vec<_> = (0..publishers)
                                .map(|_| {
                                    let log = log.clone();
                                    tokio::spawn(async move {
                                        for _ in 0..per_iter / publishers {
                                            log.append(vec![event()]).await.unwrap();
                                        }
                                    })
                                })
                                .collect();
                            for t in tasks {
                                t.await.unwrap();
                            }
                            start.elapsed()
                        });
                    }
                    total
                })
            });
            log.close().unwrap();
        }
    }
    // One request carrying 100 events: the publish API's array/NDJSON path.
    let (_dir, log) = open(Fsync::Batch);
    group.throughput(Throughput::Elements(100));
    group.bench_function("batch/1_publisher_100_per_request", |b| {
        b.iter(|| {
            rt.block_on(log.append((0..100).map(|_| event()).collect()))
                .unwrap()
        })
    });
    log.close().unwrap();
    group.finish();
}

/// Replay: scanning the log and rendering SSE frames, as a resuming stream does.
fn replay(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_dir, log) = open(Fsync::Never);
    const N: u64 = 100_000;
    for _ in 0..N / 1000 {
        rt.block_on(log.append((0..1000).map(|_| event()).collect()))
            .unwrap();
    }
    let mut group = c.benchmark_group("log_replay");
    group.sample_size(10);
    group.throughput(Throughput::Elements(N));
    group.bench_function("scan_and_frame_100k", |b| {
        let mut frames = bytes::BytesMut::with_capacity(1 << 20);
        b.iter(|| {
            let mut n = 0u64;
            log.scan(0, N, usize::MAX, |id, view| {
                spout_proto::sse::put_event(&mut frames, id, view.kind, view.data_ref().unwrap());
                if frames.len() > (1 << 20) {
                    frames.clear();
                }
                n += 1;
                Ok(true)
            })
            .unwrap();
            assert_eq!(n, N);
        })
    });
    group.finish();
    log.close().unwrap();
}

criterion_group!(benches, append, replay);
criterion_main!(benches);
