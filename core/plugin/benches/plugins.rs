//! Plugin host costs with the stock `builtin:` plugins:
//!
//! - `filter_match`: one `keep` call on batches of 1, 16 and 256 events of
//!   100-byte JSON data, with a `where=severity:in:warn,error` subscription
//!   and with no conditions (the bare call overhead). Criterion's time is per
//!   call; divide by the batch size (or read the events/s) for per event.
//! - `instantiate_from_cache`: `Runtime::load` of filter-match on a fresh
//!   runtime whose cache directory already holds the compiled artifact (the
//!   runtime itself is built outside the measurement).
//! - `startup_five_plugins`: `Runtime::new` plus loading five plugins (three
//!   filter-match, auth-jwt, auth-apikey) from a warm cache, as a restart does.
//!   The key-value database is opened outside the measurement: the server
//!   reuses the event log's.
//!
//! Run: `cargo bench -p spout-plugin --bench plugins`
//! Targets: ≤ 1 µs per event per filter call (median); start-up ≤ 300 ms with
//! five plugins.

mod common;

use common::kv;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use spout_plugin::bindings::types::Subscription;
use spout_plugin::wire::BatchBuilder;
use spout_plugin::{FilterPlugin, Limits, Plugin, Runtime};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const SEVERITIES: [&str; 4] = ["info", "warn", "error", "debug"];

/// Event data: 100 bytes of JSON, severities cycling through
/// info, warn, error, debug (so the `where` filter keeps half).
fn data(i: usize) -> Vec<u8> {
    let severity = SEVERITIES[i % SEVERITIES.len()];
    let head = format!(r#"{{"severity":"{severity}","service":"api","n":{i},"msg":""#);
    let pad = 100 - head.len() - r#""}"#.len();
    let data = format!(r#"{head}{}"}}"#, "x".repeat(pad));
    assert_eq!(data.len(), 100, "{data}");
    data.into_bytes()
}

fn batch(n: usize) -> BatchBuilder {
    let mut b = BatchBuilder::default();
    for i in 0..n {
        b.push(
            i as u64 + 1,
            1_700_000_000_000,
            "logs/api",
            None,
            &data(i),
            None,
        );
    }
    b
}

fn sub(params: &[(&str, &str)]) -> Subscription {
    Subscription {
        user: "alice".into(),
        claims: "{}".into(),
        topics: vec!["logs/*".into()],
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn load(rt: &Runtime, dir: &Path, name: &str, source: &str, config: &str) -> Arc<Plugin> {
    rt.load(name, source, dir, config.to_owned(), Limits::default())
        .unwrap_or_else(|e| panic!("loading {name} ({source}): {e}"))
}

/// A cache directory under the target dir holding filter-match's compiled
/// artifact (and the auth plugins' ones), written by a throwaway runtime.
fn warm_cache() -> tempfile::TempDir {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let rt = Runtime::new(dir.path().join("cache"), kv()).unwrap();
    for (name, source, config) in FIVE {
        load(&rt, dir.path(), name, source, config);
    }
    dir
}

/// The five plugins of `startup_five_plugins`: (name, source, config).
const FIVE: [(&str, &str, &str); 5] = [
    ("errors", "builtin:filter-match", "{}"),
    (
        "api-only",
        "builtin:filter-match",
        r#"{"where":["service:eq:api"],"param":"q"}"#,
    ),
    (
        "jwt",
        "builtin:auth-jwt",
        r#"{"secret":"0123456789abcdef0123456789abcdef"}"#,
    ),
    (
        "apikey",
        "builtin:auth-apikey",
        r#"{"keys":[{"key":"k1","user":"alice","topics":["**"]}]}"#,
    ),
    ("has-n", "builtin:filter-match", r#"{"where":["n:exists"]}"#),
];

fn filter_match(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let rt = Runtime::new(dir.path().join("cache"), kv()).unwrap();
    let plugin = FilterPlugin::of(&load(&rt, dir.path(), "m", "builtin:filter-match", "{}"))
        .expect("filter-match is a filter");
    let mut group = c.benchmark_group("filter_match");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    for (label, sub) in [
        (
            "where_severity_in",
            sub(&[("where", "severity:in:warn,error")]),
        ),
        ("no_conditions", sub(&[])),
    ] {
        for n in [1usize, 16, 256] {
            let b = batch(n);
            // The answer is right before it is timed.
            let mask = plugin.keep(&sub, b.batch()).unwrap();
            let want: Vec<bool> = (0..n)
                .map(|i| sub.params.is_empty() || matches!(i % 4, 1 | 2))
                .collect();
            assert_eq!(mask, want, "{label}/{n}");
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::new(label, n), &b, |bench, b| {
                bench.iter(|| plugin.keep(&sub, b.batch()).unwrap())
            });
        }
    }
    group.finish();
    assert_eq!(plugin.errors(), 0);
}

fn instantiate_from_cache(c: &mut Criterion) {
    let dir = warm_cache();
    let cache = dir.path().join("cache");
    let db = kv();
    let mut group = c.benchmark_group("plugin_startup");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    group.bench_function("instantiate_from_cache", |b| {
        b.iter_batched(
            || Runtime::new(cache.clone(), db.clone()).unwrap(),
            |rt| {
                let p = load(&rt, dir.path(), "m", "builtin:filter-match", "{}");
                (rt, p)
            },
            // One runtime at a time: each reserves the pool's address space.
            BatchSize::PerIteration,
        )
    });
    group.bench_function("startup_five_plugins", |b| {
        b.iter_batched(
            || db.clone(),
            |db| {
                let rt = Runtime::new(cache.clone(), db).unwrap();
                let plugins: Vec<_> = FIVE
                    .iter()
                    .map(|(name, source, config)| load(&rt, dir.path(), name, source, config))
                    .collect();
                (rt, plugins)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, filter_match, instantiate_from_cache);
criterion_main!(benches);
