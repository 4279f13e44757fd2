//! The same filter in Rust, JavaScript and Python (examples/custom-filter and
//! its `js/` and `python/` twins), and auth plugins in the three languages,
//! in one run:
//!
//! - `keep/{rust,js,py}/N`: one `keep` call on batches of 1, 16 and 256
//!   events of ~100-byte JSON data (half of them the subscriber's).
//!   Criterion's time is per call; its events/s gives the per-event cost.
//! - `instantiate_from_cache/{lang}`: `Runtime::load` (describe + init on a
//!   fresh instance) of the component from a warm artifact cache, as a
//!   restart does; `first_call/{lang}`: that load plus the first `keep`.
//! - after criterion: `authenticate` p50/p99 over 2,000 calls for
//!   builtin:auth-apikey (Rust), the JS bearer-auth and the Python
//!   auth-tokens examples, printed.
//!
//! The JS and Python components are the ones `cargo test --test integration
//! -- languages::` builds (the examples' own build commands); a missing one
//! is skipped with a note. Run: `cargo bench -p spout-plugin --bench languages`
//! Targets: ≤ 20 µs per event on 256-event batches; restart from cache
//! ≤ 50 ms for a 10 MB component; auth ≤ 1 ms p99.

mod common;

use common::kv;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use spout_plugin::bindings::types::{Request, Subscription};
use spout_plugin::wire::BatchBuilder;
use spout_plugin::{AuthPlugin, FilterPlugin, Limits, Plugin, Runtime};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The three filters: (language, component path), those that exist.
fn filters() -> Vec<(&'static str, String)> {
    let root = root();
    [
        (
            "rust",
            PathBuf::from(format!("{}/only_mine.wasm", env!("SPOUT_TEST_WASM_DIR"))),
        ),
        ("js", root.join("examples/custom-filter/js/only-mine.wasm")),
        (
            "py",
            root.join("examples/custom-filter/python/only-mine.wasm"),
        ),
    ]
    .into_iter()
    .filter_map(|(lang, path)| present(lang, path))
    .collect()
}

/// The auth plugins: (language, source, config).
fn auths() -> Vec<(&'static str, String, &'static str)> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("languages");
    let mut out = vec![(
        "rust",
        "builtin:auth-apikey".to_string(),
        r#"{"keys":[{"key":"0123456789abcdef","user":"ann","topics":["**"]}]}"#,
    )];
    if let Some((_, p)) = present("js", dir.join("js-bearer-auth.wasm")) {
        out.push((
            "js",
            p,
            r#"{"tokens":[{"token":"0123456789abcdef","user":"ann","topics":["**"]}]}"#,
        ));
    }
    if let Some((_, p)) = present("py", dir.join("py-auth-tokens.wasm")) {
        out.push(("py", p, r#"{"tokens":{"0123456789abcdef":"ann"}}"#));
    }
    out
}

fn present(lang: &'static str, path: PathBuf) -> Option<(&'static str, String)> {
    if path.is_file() {
        Some((lang, path.display().to_string()))
    } else {
        eprintln!(
            "skipping {lang}: {} is missing (`cargo test --test integration -- languages::` builds it)",
            path.display()
        );
        None
    }
}

/// Roomy limits: the JS and Python runtimes need ~10–13 MiB to start.
fn limits() -> Limits {
    Limits {
        memory: 64 << 20,
        time: Duration::from_secs(1),
        ..Limits::default()
    }
}

/// `n` events of ~100 bytes of JSON, every other one Ann's.
fn batch(n: usize) -> BatchBuilder {
    let mut b = BatchBuilder::default();
    for i in 0..n {
        let owner = if i % 2 == 0 { "ann" } else { "bob" };
        let head = format!(r#"{{"owner":"{owner}","n":{i},"msg":""#);
        let data = format!(r#"{head}{}"}}"#, "x".repeat(100 - head.len() - 2));
        b.push(
            i as u64 + 1,
            1_700_000_000_000,
            "docs",
            None,
            data.as_bytes(),
            None,
        );
    }
    b
}

fn ann() -> Subscription {
    Subscription {
        user: "ann".into(),
        claims: "{}".into(),
        topics: vec!["docs".into()],
        params: vec![("topic".into(), "docs".into())],
    }
}

fn load(rt: &Runtime, name: &str, source: &str, config: &str) -> Arc<Plugin> {
    rt.load(name, source, &root(), config.to_owned(), limits())
        .unwrap_or_else(|e| panic!("loading {name} ({source}): {e}"))
}

fn keep(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let rt = Runtime::new(dir.path().join("cache"), kv()).unwrap();
    let sub = ann();
    let mut group = c.benchmark_group("keep");
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    for (lang, file) in filters() {
        let plugin = FilterPlugin::of(&load(&rt, lang, &file, "{}")).expect("a filter");
        for n in [1usize, 16, 256] {
            let b = batch(n);
            let mask = plugin.keep(&sub, b.batch()).unwrap();
            let want: Vec<bool> = (0..n).map(|i| i % 2 == 0).collect();
            assert_eq!(mask, want, "{lang}/{n}");
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::new(lang, n), &b, |bench, b| {
                bench.iter(|| plugin.keep(&sub, b.batch()).unwrap())
            });
        }
        assert_eq!(plugin.errors(), 0, "{lang}");
        eprintln!("{lang}: {} instances retired", plugin.retired());
    }
    group.finish();
}

fn startup(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cache = dir.path().join("cache");
    let db = kv();
    let filters = filters();
    {
        // Compiles each component into the cache (not measured).
        let rt = Runtime::new(cache.clone(), db.clone()).unwrap();
        for (lang, file) in &filters {
            load(&rt, lang, file, "{}");
        }
    }
    let mut group = c.benchmark_group("plugin_startup");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.warm_up_time(Duration::from_secs(1));
    let b1 = batch(1);
    for (lang, file) in &filters {
        group.bench_function(BenchmarkId::new("instantiate_from_cache", lang), |b| {
            b.iter_batched(
                || Runtime::new(cache.clone(), db.clone()).unwrap(),
                |rt| {
                    let p = load(&rt, lang, file, "{}");
                    (rt, p)
                },
                BatchSize::PerIteration,
            )
        });
        group.bench_function(BenchmarkId::new("first_call", lang), |b| {
            b.iter_batched(
                || Runtime::new(cache.clone(), db.clone()).unwrap(),
                |rt| {
                    let p = FilterPlugin::of(&load(&rt, lang, file, "{}")).expect("a filter");
                    assert_eq!(p.keep(&ann(), b1.batch()).unwrap(), [true]);
                    (rt, p)
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

/// Auth latency percentiles (criterion reports means and medians only).
fn auth_p99(_: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let rt = Runtime::new(dir.path().join("cache"), kv()).unwrap();
    let req = Request {
        method: "GET".into(),
        path: "/events".into(),
        query: vec![("topic".into(), "docs".into())],
        headers: vec![
            ("authorization".into(), "Bearer 0123456789abcdef".into()),
            ("x-api-key".into(), "0123456789abcdef".into()),
            ("accept".into(), "text/event-stream".into()),
        ],
        remote_addr: "127.0.0.1:50000".into(),
    };
    for (lang, source, config) in auths() {
        let plugin = AuthPlugin::of(&load(&rt, lang, &source, config)).expect("an auth plugin");
        let mut took = Vec::with_capacity(2_000);
        for i in 0..2_200 {
            let started = Instant::now();
            let principal = plugin.authenticate(&req).unwrap().expect("accepted");
            if i >= 200 {
                took.push(started.elapsed());
            }
            assert_eq!(principal.user, "ann", "{lang}");
        }
        took.sort();
        let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
        println!(
            "auth/{lang:<4} {} calls: p50 {:?}  p99 {:?}  max {:?}",
            took.len(),
            at(0.50),
            at(0.99),
            took[took.len() - 1]
        );
    }
}

criterion_group!(benches, keep, startup, auth_p99);
criterion_main!(benches);
