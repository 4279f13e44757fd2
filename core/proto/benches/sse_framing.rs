//! SSE framing cost: rendering one event's frame (done once per event, shared
//! by every subscriber) and rendering replay batches into one buffer.
//!
//! Run: `cargo bench -p spout-proto --bench sse_framing`

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use spout_proto::event::{Data, DataRef};
use spout_proto::sse::{event_frame, put_event};
use std::hint::black_box;

fn payloads() -> Vec<(&'static str, Data)> {
    let json = format!("{{\"id\":7,\"name\":\"{}\"}}", "x".repeat(80));
    let mut multi = String::new();
    for i in 0..64 {
        multi.push_str(&"y".repeat(60));
        multi.push_str(if i % 2 == 0 { "\n" } else { "\r\n" });
    }
    vec![
        ("json_100B", Data::Json(Bytes::from(json))),
        ("text_100B", Data::Text("z".repeat(100))),
        ("text_4KiB_64_lines", Data::Text(multi)),
    ]
}

fn framing(c: &mut Criterion) {
    let mut group = c.benchmark_group("event_frame");
    for (name, data) in payloads() {
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &data, |b, data| {
            b.iter(|| event_frame(black_box(123_456), Some("created"), black_box(data), None))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("replay_render");
    let json = Data::Json(Bytes::from(format!("{{\"v\":\"{}\"}}", "x".repeat(90))));
    group.throughput(Throughput::Elements(100));
    group.bench_function("100_events_json_100B", |b| {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        b.iter(|| {
            buf.clear();
            for id in 0..100u64 {
                put_event(
                    &mut buf,
                    id,
                    None,
                    DataRef::Json(black_box(json_bytes(&json))),
                );
            }
            black_box(buf.len())
        })
    });
    group.finish();
}

fn json_bytes(d: &Data) -> &[u8] {
    match d {
        Data::Json(j) => j,
        Data::Text(t) => t.as_bytes(),
    }
}

criterion_group!(benches, framing);
criterion_main!(benches);
