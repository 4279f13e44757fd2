//! The WebAssembly plugin host: compile once, pre-instantiate, pool instances,
//! and run every call under a deadline and a memory limit.
//!
//! A plugin is a wasm32-wasip2 component exporting one world of `plugins/wit`.
//! Loading checks its imports against what the worlds grant (Spout's `log`,
//! `clock`, `kv`; WASI cli/io/clocks/random, and filesystem/sockets with
//! nothing to reach, for language runtimes that import them) and finds
//! which world it exports. A call that traps, runs past its deadline, exceeds
//! its memory or returns malformed data fails alone: the instance is dropped,
//! the next call gets a fresh one, and the failure is logged and counted.
//!
//! This crate owns running plugins and nothing else: it may import
//! `spout-proto` (events) and `spout-log` (the key-value stores plugins
//! write through the `kv` import), never HTTP (hyper) or the server; the
//! build script builds and embeds the stock plugins.

#![warn(missing_docs)]

pub(crate) use spout_proto::event;

pub mod bindings;
mod builtin;
mod cache;
pub mod guard;
pub mod host;
pub mod typed;
pub mod wire;

use bindings::types::{
    Connection, Denial, Encoded, EventBatch as Batch, Principal, Request, Subscription,
};
use host::HostState;
use metrics::{Counter, Histogram};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Engine, Store};

pub use builtin::BUILTIN;
pub use typed::{
    AuthPlugin, BatchPlugin, CompressPlugin, FilterPlugin, SourcePlugin, TransformPlugin, Typed,
};

/// Largest memory limit a plugin may ask for (the pool reserves this much
/// address space per slot: 256 slots × 64 MiB = 16 GiB of address space,
/// none of it memory until used).
pub const MAX_MEMORY: u64 = 64 << 20;
/// Default memory limit per instance.
pub const DEFAULT_MEMORY: u64 = 16 << 20;
/// Default time limit per call.
pub const DEFAULT_TIME: Duration = Duration::from_millis(50);
/// Default calls of one plugin running at once.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Default calls of one plugin waiting for a turn; past it calls fail at once.
pub const DEFAULT_QUEUE: usize = 64;
/// Threads the plugin pool may run at once (every plugin's calls from
/// request handlers, never the threads log reads use).
const POOL_THREADS: usize = 512;
/// Budget for starting an instance (instantiate, `describe`, `init`).
pub const INIT_TIME: Duration = Duration::from_secs(2);
/// Instances kept per plugin (more are created under contention, then dropped).
const POOL_KEEP: usize = 8;
/// Concurrent instances the engine's pool allows in all (kept and in use).
const POOL_SLOTS: u32 = 256;
/// An instance whose memory grew past this fraction (3/4) of its limit
/// after start-up is not reused.
const RETIRE_AT: (usize, usize) = (3, 4);

/// Import namespaces a plugin may use. Everything else (outbound HTTP, any
/// other interface) is refused at load time. The filesystem and socket
/// interfaces are granted because language runtimes (CPython, the JS
/// engine's libc) import them at start-up, but every instance gets them
/// empty (`host::HostState::new`): no preopened directory, no environment,
/// no address a socket may bind or reach, no name lookup.
const ALLOWED_IMPORTS: &[&str] = &[
    "spout:plugin/",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:sockets/",
];

/// What a plugin does; each kind is one WIT world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Authenticates requests (`authenticate`, `on-disconnect`).
    Auth,
    /// Chooses events per subscription key (`keep`).
    Filter,
    /// Rewrites events before they are stored (`apply`).
    Transform,
    /// Merges a window of events (`merge`).
    Batch,
    /// Encodes event data (`encode`).
    Compress,
    /// Produces events (`poll`, `on-input`).
    Source,
}

impl Kind {
    /// The world name, as in config errors and `/stats`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Auth => "auth",
            Kind::Filter => "filter",
            Kind::Transform => "transform",
            Kind::Batch => "batch",
            Kind::Compress => "compress",
            Kind::Source => "source",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read plugin file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `builtin:NAME` names no embedded plugin.
    #[error("no built-in plugin `{0}` (built in: {list})", list = builtin::names())]
    UnknownBuiltin(String),
    /// The bytes are not a valid component for this engine.
    #[error("not a valid WebAssembly component: {0:#}")]
    Compile(wasmtime::Error),
    /// The component imports something no world grants.
    #[error("imports `{0}`, which plugins may not use (allowed: spout:plugin/*, wasi:cli, wasi:io, wasi:clocks, wasi:random, and wasi:filesystem and wasi:sockets with nothing to reach)")]
    ForbiddenImport(String),
    /// The component exports none of the plugin worlds.
    #[error(
        "exports none of the plugin worlds (auth, filter, transform, batch, compress, source)"
    )]
    NoWorld,
    /// Linking or instantiating failed.
    #[error("cannot instantiate: {0:#}")]
    Instantiate(wasmtime::Error),
    /// `init` refused the config (or failed).
    #[error("init rejected its config: {0}")]
    Init(String),
    /// The engine could not be set up.
    #[error("cannot set up the plugin engine: {0:#}")]
    Engine(wasmtime::Error),
    /// The plugin key-value store could not be opened.
    #[error("cannot open the plugin's key-value store: {0}")]
    Kv(String),
}

/// Why a call failed. The instance is discarded after any of these.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The call ran past its deadline.
    #[error("plugin `{plugin}` exceeded its {limit:?} time limit")]
    Timeout {
        /// Plugin name.
        plugin: Arc<str>,
        /// The limit.
        limit: Duration,
    },
    /// The instance tried to grow past its memory limit.
    #[error("plugin `{plugin}` exceeded its memory limit of {limit} bytes")]
    Memory {
        /// Plugin name.
        plugin: Arc<str>,
        /// The limit.
        limit: u64,
    },
    /// The guest trapped (panic, unreachable, bad access).
    #[error("plugin `{plugin}` trapped: {detail}")]
    Trap {
        /// Plugin name.
        plugin: Arc<str>,
        /// Trap description.
        detail: String,
    },
    /// The guest returned data that does not hold together.
    #[error("plugin `{plugin}` returned malformed data: {detail}")]
    Malformed {
        /// Plugin name.
        plugin: Arc<str>,
        /// What was wrong.
        detail: String,
    },
    /// No instance could be created.
    #[error("plugin `{plugin}` could not be instantiated: {detail}")]
    Instantiate {
        /// Plugin name.
        plugin: Arc<str>,
        /// Why.
        detail: String,
    },
    /// All its call slots and its queue were taken: refused at once.
    #[error(
        "plugin `{plugin}` is busy: {concurrency} calls running and its queue of {queue} full"
    )]
    Busy {
        /// Plugin name.
        plugin: Arc<str>,
        /// Its concurrency limit.
        concurrency: usize,
        /// Its queue length.
        queue: usize,
    },
    /// It failed too often in a row; calls fail at once for a cool-down.
    #[error(
        "plugin `{plugin}` failed {} calls in a row; its calls are refused for {:?}",
        guard::TRIP_AFTER,
        guard::COOLDOWN
    )]
    CircuitOpen {
        /// Plugin name.
        plugin: Arc<str>,
    },
}

impl CallError {
    /// Metric label for the kind of failure.
    pub fn label(&self) -> &'static str {
        match self {
            CallError::Timeout { .. } => "timeout",
            CallError::Memory { .. } => "memory",
            CallError::Trap { .. } => "trap",
            CallError::Malformed { .. } => "malformed",
            CallError::Instantiate { .. } => "instantiate",
            CallError::Busy { .. } => "busy",
            CallError::CircuitOpen { .. } => "circuit_open",
        }
    }

    /// Whether the plugin itself failed (what the circuit breaker counts),
    /// as opposed to the call being refused before it ran.
    fn is_failure(&self) -> bool {
        !matches!(self, CallError::Busy { .. } | CallError::CircuitOpen { .. })
    }
}

/// Per-plugin resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory per instance, in bytes.
    pub memory: u64,
    /// Wall time per call.
    pub time: Duration,
    /// Calls running at once.
    pub concurrency: usize,
    /// Calls waiting for a turn before further ones are refused.
    pub queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: DEFAULT_MEMORY,
            time: DEFAULT_TIME,
            concurrency: DEFAULT_CONCURRENCY,
            queue: DEFAULT_QUEUE,
        }
    }
}

/// Opens the key-value store of the plugin named by the argument.
pub type Stores = Arc<dyn Fn(&str) -> Result<spout_log::Store, LoadError> + Send + Sync>;

/// The engine shared by every plugin: compiler, epoch ticker, linker and
/// compiled-artifact cache.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache: cache::ArtifactCache,
    /// Opens the key-value store of a plugin by name.
    stores: Stores,
    stats: Arc<host::ServerStats>,
    stop: Arc<AtomicBool>,
    /// The threads request handlers' plugin calls run on: apart from the
    /// blocking threads log reads use, so a plugin that holds its threads
    /// never holds up a replay or a poll.
    pool: Option<tokio::runtime::Runtime>,
}

impl Runtime {
    /// Sets up the engine. `cache_dir` keeps compiled plugins between runs;
    /// `stores` opens each plugin's key-value store (the log's stores: a
    /// sled tree, or Redis in cluster mode).
    pub fn new(cache_dir: PathBuf, stores: Stores) -> Result<Runtime, LoadError> {
        let mut cfg = wasmtime::Config::new();
        cfg.wasm_component_model(true)
            .concurrency_support(false)
            .epoch_interruption(true)
            .max_wasm_stack(512 * 1024)
            .memory_reservation(MAX_MEMORY)
            .memory_guard_size(64 * 1024)
            .memory_reservation_for_growth(0)
            .parallel_compilation(true);
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        // Rust plugins are one or two core instances; componentize-py links
        // CPython from ~40 (one per shared library), componentize-js 3.
        pool.total_component_instances(POOL_SLOTS)
            .total_core_instances(POOL_SLOTS * 16)
            .total_memories(POOL_SLOTS)
            .total_tables(POOL_SLOTS * 4)
            .max_memory_size(MAX_MEMORY as usize)
            .max_memories_per_component(2)
            .max_core_instances_per_component(64)
            .max_tables_per_component(8);
        cfg.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg).map_err(LoadError::Engine)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(LoadError::Engine)?;
        bindings::base::Base::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(LoadError::Engine)?;
        bindings::source::spout::plugin::stats::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(LoadError::Engine)?;
        let stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(&engine, stop.clone());
        let pool = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(POOL_THREADS)
            .thread_name("spout-plugin")
            .enable_all()
            .build()
            .map_err(|e| LoadError::Engine(wasmtime::Error::msg(e.to_string())))?;
        Ok(Runtime {
            pool: Some(pool),
            cache: cache::ArtifactCache::new(cache_dir),
            engine,
            linker,
            stores,
            stats: Arc::default(),
            stop,
        })
    }

    /// The figures source plugins read through the `stats` import.
    pub fn stats(&self) -> &Arc<host::ServerStats> {
        &self.stats
    }

    /// Loads plugin `name` from `source` (`builtin:NAME` or a file path,
    /// relative to `base_dir`), finds its kind and initialises one instance
    /// with `config` (JSON).
    pub fn load(
        &self,
        name: &str,
        source: &str,
        base_dir: &Path,
        config: String,
        limits: Limits,
    ) -> Result<Arc<Plugin>, LoadError> {
        let started = Instant::now();
        let bytes: std::borrow::Cow<'static, [u8]> = match source.strip_prefix("builtin:") {
            Some(b) => builtin::get(b)
                .ok_or_else(|| LoadError::UnknownBuiltin(b.to_owned()))?
                .into(),
            None => {
                let path = base_dir.join(source);
                std::fs::read(&path)
                    .map_err(|source| LoadError::Read { path, source })?
                    .into()
            }
        };
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (
                &bytes[..],
                &config,
                limits.memory,
                limits.time,
                limits.concurrency,
                limits.queue,
            )
                .hash(&mut h);
            h.finish()
        };
        let component = self.cache.component(&self.engine, &bytes)?;
        check_imports(&self.engine, &component)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(LoadError::Instantiate)?;
        let world = World::detect(pre)?;
        let name: Arc<str> = Arc::from(name);
        let kv = (self.stores)(&name)?;
        let labels = [("plugin", name.to_string())];
        let threads = match &self.pool {
            Some(p) => p.handle().clone(),
            None => {
                return Err(LoadError::Engine(wasmtime::Error::msg(
                    "the plugin pool is shut down",
                )))
            }
        };
        let plugin = Plugin {
            gate: guard::Gate::new(limits.concurrency, limits.queue),
            breaker: guard::Breaker::default(),
            threads,
            busy_count: AtomicU64::new(0),
            retired_count: AtomicU64::new(0),
            kind: world.kind(),
            world,
            config,
            limits,
            engine: self.engine.clone(),
            kv,
            stats: self.stats.clone(),
            pool: Mutex::new(Vec::new()),
            calls: metrics::counter!("spout_plugin_calls_total", &labels),
            latency: metrics::histogram!("spout_plugin_call_seconds", &labels),
            call_count: AtomicU64::new(0),
            error_count: AtomicU64::new(0),
            describe: String::new(),
            fingerprint,
            name,
        };
        let (first, describe) = plugin.instantiate().map_err(|e| match e {
            InitFailure::Init(msg) => LoadError::Init(msg),
            InitFailure::Call(err) => LoadError::Init(err.to_string()),
        })?;
        let plugin = Plugin { describe, ..plugin };
        plugin.release(first);
        tracing::debug!(plugin = %plugin.name, kind = %plugin.kind, elapsed = ?started.elapsed(), "plugin loaded");
        Ok(Arc::new(plugin))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Dropping a runtime may happen inside another one (the server's).
        if let Some(pool) = self.pool.take() {
            pool.shutdown_background();
        }
    }
}

/// One thread advances the engine's epoch every millisecond; a call's
/// deadline is a number of ticks.
fn spawn_epoch_ticker(engine: &Engine, stop: Arc<AtomicBool>) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("spout-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        });
    if let Err(err) = spawned {
        tracing::error!(error = %err, "cannot start the plugin epoch ticker; plugin time limits are not enforced");
    }
}

fn check_imports(engine: &Engine, component: &Component) -> Result<(), LoadError> {
    for (name, _) in component.component_type().imports(engine) {
        if !ALLOWED_IMPORTS.iter().any(|p| name.starts_with(p)) {
            return Err(LoadError::ForbiddenImport(name.to_owned()));
        }
    }
    Ok(())
}

/// The pre-instantiated component, typed by the world it exports.
enum World {
    Auth(bindings::auth::AuthPre<HostState>),
    Filter(bindings::filter::FilterPre<HostState>),
    Transform(bindings::transform::TransformPre<HostState>),
    Batch(bindings::batch::BatchPre<HostState>),
    Compress(bindings::compress::CompressPre<HostState>),
    Source(bindings::source::SourcePre<HostState>),
}

impl World {
    fn detect(pre: InstancePre<HostState>) -> Result<World, LoadError> {
        if let Ok(p) = bindings::auth::AuthPre::new(pre.clone()) {
            return Ok(World::Auth(p));
        }
        if let Ok(p) = bindings::filter::FilterPre::new(pre.clone()) {
            return Ok(World::Filter(p));
        }
        if let Ok(p) = bindings::transform::TransformPre::new(pre.clone()) {
            return Ok(World::Transform(p));
        }
        if let Ok(p) = bindings::batch::BatchPre::new(pre.clone()) {
            return Ok(World::Batch(p));
        }
        if let Ok(p) = bindings::compress::CompressPre::new(pre.clone()) {
            return Ok(World::Compress(p));
        }
        if let Ok(p) = bindings::source::SourcePre::new(pre) {
            return Ok(World::Source(p));
        }
        Err(LoadError::NoWorld)
    }

    fn kind(&self) -> Kind {
        match self {
            World::Auth(_) => Kind::Auth,
            World::Filter(_) => Kind::Filter,
            World::Transform(_) => Kind::Transform,
            World::Batch(_) => Kind::Batch,
            World::Compress(_) => Kind::Compress,
            World::Source(_) => Kind::Source,
        }
    }
}

/// A live instance's typed exports.
enum Exports {
    Auth(bindings::auth::Auth),
    Filter(bindings::filter::Filter),
    Transform(bindings::transform::Transform),
    Batch(bindings::batch::Batch),
    Compress(bindings::compress::Compress),
    Source(bindings::source::Source),
}

/// One instance with its own store.
struct Instance {
    store: Store<HostState>,
    exports: Exports,
    /// Its largest memory once `init` had run.
    started_at: usize,
}

enum InitFailure {
    Init(String),
    Call(CallError),
}

/// A loaded plugin: its pre-instantiated component and a pool of instances.
///
/// Calls are synchronous and may block (WASI's sync bindings drive a tokio
/// runtime): make them from blocking threads (`spawn_blocking`) or threads
/// outside the runtime, never from an async task.
pub struct Plugin {
    name: Arc<str>,
    kind: Kind,
    world: World,
    config: String,
    limits: Limits,
    describe: String,
    engine: Engine,
    kv: host::Kv,
    stats: Arc<host::ServerStats>,
    pool: Mutex<Vec<Instance>>,
    calls: Counter,
    latency: Histogram,
    call_count: AtomicU64,
    error_count: AtomicU64,
    /// Bounds its calls running at once and waiting.
    gate: guard::Gate,
    /// Fails its calls at once after too many failures in a row.
    breaker: guard::Breaker,
    /// Where [`Plugin::run`] sends calls.
    threads: tokio::runtime::Handle,
    /// Calls refused because it was busy or its circuit open.
    busy_count: AtomicU64,
    /// Instances retired because their memory grew near the limit.
    retired_count: AtomicU64,
    /// Hash of its component, config and limits (a reload keeps what uses
    /// an unchanged plugin running).
    fingerprint: u64,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// Hash of its component bytes, config and limits: equal for a plugin
    /// a reload loaded again unchanged.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The name it was declared under (`[plugins.NAME]`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which world it exports.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// What `describe()` returned at load.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Its limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.call_count.load(Ordering::Relaxed)
    }

    /// Calls that failed so far (refused ones included).
    pub fn errors(&self) -> u64 {
        self.error_count.load(Ordering::Relaxed)
    }

    /// Calls refused before they ran (busy, or the circuit open).
    pub fn refused(&self) -> u64 {
        self.busy_count.load(Ordering::Relaxed)
    }

    /// Instances replaced because their memory grew near the limit.
    pub fn retired(&self) -> u64 {
        self.retired_count.load(Ordering::Relaxed)
    }

    /// Whether its circuit is open now (calls fail at once).
    pub fn circuit_open(&self) -> bool {
        self.breaker.is_open(crate::event::now_ms())
    }

    /// Times its circuit opened since it was loaded.
    pub fn trips(&self) -> u64 {
        self.breaker.trips()
    }

    /// Calls running and waiting now.
    pub fn load(&self) -> (usize, usize) {
        self.gate.load()
    }

    /// Runs `f` with this plugin on the plugin pool (never on the threads
    /// log reads use) and awaits it. A call that would find the plugin's
    /// queue full is refused here, before it takes a thread.
    pub(crate) async fn run<R, F>(self: &Arc<Self>, f: F) -> Result<R, CallError>
    where
        R: Send + 'static,
        F: FnOnce(&Plugin) -> Result<R, CallError> + Send + 'static,
    {
        if !self.gate.has_room() {
            return Err(self.refuse(CallError::Busy {
                plugin: self.name.clone(),
                concurrency: self.limits.concurrency,
                queue: self.limits.queue,
            }));
        }
        let me = self.clone();
        match self.threads.spawn_blocking(move || f(&me)).await {
            Ok(r) => r,
            Err(e) => Err(CallError::Trap {
                plugin: self.name.clone(),
                detail: format!("the call's thread failed: {e}"),
            }),
        }
    }

    /// The plugin pool's handle, for work that calls several plugins in a
    /// row (stream shaping): it runs where plugin calls run, not where log
    /// reads do.
    pub fn pool(&self) -> &tokio::runtime::Handle {
        &self.threads
    }

    /// Counts and returns a refusal.
    fn refuse(&self, err: CallError) -> CallError {
        self.busy_count.fetch_add(1, Ordering::Relaxed);
        self.error_count.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("spout_plugin_errors_total", "plugin" => self.name.to_string(), "kind" => err.label()).increment(1);
        tracing::debug!(plugin = %self.name, error = %err, "plugin call refused");
        err
    }

    /// A fresh instance from the pre-instantiated component, initialised with
    /// the plugin's config; also returns its `describe()`.
    fn instantiate(&self) -> Result<(Instance, String), InitFailure> {
        let state = HostState::new(
            self.name.clone(),
            self.kv.clone(),
            self.limits.memory as usize,
            self.stats.clone(),
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        // Start-up (instantiate, describe, init) gets its own, wider budget:
        // it runs once per instance and may build tables, and the per-call
        // limit is wall time, which a loaded machine eats into.
        store.set_epoch_deadline(INIT_TIME.as_millis() as u64);
        let fail = |e: wasmtime::Error| {
            InitFailure::Call(match self.classify(e) {
                CallError::Timeout { plugin, .. } => CallError::Timeout {
                    plugin,
                    limit: INIT_TIME,
                },
                other => other,
            })
        };
        let exports = match &self.world {
            World::Auth(p) => p.instantiate(&mut store).map(Exports::Auth),
            World::Filter(p) => p.instantiate(&mut store).map(Exports::Filter),
            World::Transform(p) => p.instantiate(&mut store).map(Exports::Transform),
            World::Batch(p) => p.instantiate(&mut store).map(Exports::Batch),
            World::Compress(p) => p.instantiate(&mut store).map(Exports::Compress),
            World::Source(p) => p.instantiate(&mut store).map(Exports::Source),
        };
        let exports = match exports {
            Ok(e) => e,
            Err(e) => return Err(fail(e)),
        };
        macro_rules! lifecycle {
            ($call:ident $(, $arg:expr)?) => {
                match &exports {
                    Exports::Auth(x) => x.spout_plugin_lifecycle().$call(&mut store $(, $arg)?),
                    Exports::Filter(x) => x.spout_plugin_lifecycle().$call(&mut store $(, $arg)?),
                    Exports::Transform(x) => x.spout_plugin_lifecycle().$call(&mut store $(, $arg)?),
                    Exports::Batch(x) => x.spout_plugin_lifecycle().$call(&mut store $(, $arg)?),
                    Exports::Compress(x) => x.spout_plugin_lifecycle().$call(&mut store $(, $arg)?),
                    Exports::Source(x) => x.spout_plugin_lifecycle().$call(&mut store $(, $arg)?),
                }
            };
        }
        let describe = match lifecycle!(call_describe) {
            Ok(d) => d,
            Err(e) => return Err(fail(e)),
        };
        match lifecycle!(call_init, &self.config) {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => return Err(InitFailure::Init(msg)),
            Err(e) => return Err(fail(e)),
        }
        self.arm(&mut store);
        let started_at = store.data().limits.largest;
        Ok((
            Instance {
                store,
                exports,
                started_at,
            },
            describe,
        ))
    }

    fn arm(&self, store: &mut Store<HostState>) {
        let ticks = (self.limits.time.as_millis() as u64).max(1);
        store.set_epoch_deadline(ticks);
    }

    fn classify(&self, err: wasmtime::Error) -> CallError {
        let plugin = self.name.clone();
        if let Some(trap) = err.downcast_ref::<wasmtime::Trap>() {
            if *trap == wasmtime::Trap::Interrupt {
                return CallError::Timeout {
                    plugin,
                    limit: self.limits.time,
                };
            }
        }
        let detail = format!("{err:#}");
        if detail.contains("growing memory") || detail.contains("memory minimum size") {
            return CallError::Memory {
                plugin,
                limit: self.limits.memory,
            };
        }
        CallError::Trap { plugin, detail }
    }

    /// Returns an instance to the pool, unless its memory has grown past
    /// [`RETIRE_AT`] of the limit since start-up: a guest runtime that leaks
    /// a little per call (componentize-js does) is replaced by a fresh one
    /// before its next call would trap on the limit.
    fn release(&self, inst: Instance) {
        let largest = inst.store.data().limits.largest;
        let limit = self.limits.memory as usize;
        if largest > inst.started_at && largest > limit / RETIRE_AT.1 * RETIRE_AT.0 {
            self.retired_count.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("spout_plugin_retired_total", "plugin" => self.name.to_string())
                .increment(1);
            tracing::debug!(plugin = %self.name, memory = largest, limit, "instance retired: its memory grew near the limit");
            return;
        }
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_KEEP {
            pool.push(inst);
        }
    }

    /// Runs `f` on a pooled instance under the deadline; failures discard the
    /// instance, are logged and counted.
    fn call<R>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Instance) -> Result<R, CallError>,
    ) -> Result<R, CallError> {
        if self.breaker.is_open(crate::event::now_ms()) {
            return Err(self.refuse(CallError::CircuitOpen {
                plugin: self.name.clone(),
            }));
        }
        let Some(_turn) = self.gate.enter() else {
            return Err(self.refuse(CallError::Busy {
                plugin: self.name.clone(),
                concurrency: self.limits.concurrency,
                queue: self.limits.queue,
            }));
        };
        let started = Instant::now();
        self.calls.increment(1);
        self.call_count.fetch_add(1, Ordering::Relaxed);
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let inst = match pooled {
            Some(i) => Ok(i),
            None => self.instantiate().map(|(i, _)| i).map_err(|e| match e {
                InitFailure::Init(detail) => CallError::Instantiate {
                    plugin: self.name.clone(),
                    detail,
                },
                InitFailure::Call(err) => err,
            }),
        };
        let result = inst.and_then(|mut inst| {
            self.arm(&mut inst.store);
            // A panic on the host side of a call (a bug in a host import)
            // fails this call like a trap instead of unwinding into the server.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut inst)))
                .unwrap_or_else(|panic| {
                    let detail = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Err(CallError::Trap {
                        plugin: self.name.clone(),
                        detail: format!("host panic during the call: {detail}"),
                    })
                });
            if r.is_ok() {
                self.release(inst);
            }
            r
        });
        self.latency.record(started.elapsed().as_secs_f64());
        let failed = result.as_ref().err().filter(|e| e.is_failure());
        if self
            .breaker
            .record(failed.is_none(), crate::event::now_ms())
        {
            tracing::warn!(plugin = %self.name, failures = guard::TRIP_AFTER, cooldown = ?guard::COOLDOWN, "plugin keeps failing; its calls fail at once for the cool-down");
        }
        if let Err(err) = &result {
            self.error_count.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("spout_plugin_errors_total", "plugin" => self.name.to_string(), "kind" => err.label()).increment(1);
            tracing::warn!(plugin = %self.name, op, error = %err, "plugin call failed; instance replaced");
        }
        result
    }

    fn wasm<R>(&self, r: wasmtime::Result<R>) -> Result<R, CallError> {
        r.map_err(|e| self.classify(e))
    }

    fn malformed(&self, detail: impl std::fmt::Display) -> CallError {
        CallError::Malformed {
            plugin: self.name.clone(),
            detail: detail.to_string(),
        }
    }

    fn wrong_kind(&self, want: Kind) -> CallError {
        self.malformed(format!("is a {} plugin, not {want}", self.kind))
    }

    /// `auth`: who the request belongs to, or why it is refused.
    pub(crate) fn authenticate(
        &self,
        req: &Request,
    ) -> Result<Result<Principal, Denial>, CallError> {
        self.call("authenticate", |inst| {
            let Exports::Auth(x) = &inst.exports else {
                return Err(self.wrong_kind(Kind::Auth));
            };
            let r = x.call_authenticate(&mut inst.store, req);
            let r = self.wasm(r)?;
            if let Err(d) = &r {
                if !(400..=599).contains(&d.status) {
                    return Err(
                        self.malformed(format!("denial status {} is not 4xx/5xx", d.status))
                    );
                }
            }
            Ok(r)
        })
    }

    /// `auth`: tell the plugin a connection it authenticated has ended.
    pub(crate) fn on_disconnect(&self, conn: &Connection) -> Result<(), CallError> {
        self.call("on-disconnect", |inst| {
            let Exports::Auth(x) = &inst.exports else {
                return Err(self.wrong_kind(Kind::Auth));
            };
            let r = x.call_on_disconnect(&mut inst.store, conn);
            self.wasm(r)
        })
    }

    /// `filter`: which events of `events` a subscription keeps, as a mask.
    pub(crate) fn keep(&self, sub: &Subscription, events: &Batch) -> Result<Vec<bool>, CallError> {
        self.call("keep", |inst| {
            let Exports::Filter(x) = &inst.exports else {
                return Err(self.wrong_kind(Kind::Filter));
            };
            let r = x.call_keep(&mut inst.store, sub, events);
            let indices = self.wasm(r)?;
            wire::keep_mask(&indices, events.events.len()).map_err(|e| self.malformed(e))
        })
    }

    /// `transform`: the events to store instead of `events`.
    pub(crate) fn apply(
        &self,
        events: &Batch,
    ) -> Result<Result<Vec<wire::Returned>, Denial>, CallError> {
        self.call("apply", |inst| {
            let Exports::Transform(x) = &inst.exports else {
                return Err(self.wrong_kind(Kind::Transform));
            };
            let r = x.call_apply(&mut inst.store, events);
            match self.wasm(r)? {
                Ok(out) => wire::decode(&out).map(Ok).map_err(|e| self.malformed(e)),
                Err(d) => Ok(Err(d)),
            }
        })
    }

    /// `batch`: the frames to send for a window of events.
    pub(crate) fn merge(&self, events: &Batch) -> Result<Vec<wire::Returned>, CallError> {
        self.call("merge", |inst| {
            let Exports::Batch(x) = &inst.exports else {
                return Err(self.wrong_kind(Kind::Batch));
            };
            let r = x.call_merge(&mut inst.store, events);
            let out = self.wasm(r)?;
            wire::decode(&out).map_err(|e| self.malformed(e))
        })
    }

    /// `compress`: encoded data, or `None` to send it as it is.
    pub(crate) fn encode(&self, data: &[u8]) -> Result<Option<Encoded>, CallError> {
        self.call("encode", |inst| {
            let Exports::Compress(x) = &inst.exports else {
                return Err(self.wrong_kind(Kind::Compress));
            };
            let r = x.call_encode(&mut inst.store, data);
            self.wasm(r)
        })
    }

    /// `source`: events produced on the host's timer.
    pub(crate) fn poll(&self, now_ms: u64) -> Result<Vec<wire::Returned>, CallError> {
        self.call("poll", |inst| {
            let Exports::Source(x) = &inst.exports else {
                return Err(self.wrong_kind(Kind::Source));
            };
            let r = x.call_poll(&mut inst.store, now_ms);
            let out = self.wasm(r)?;
            wire::decode(&out).map_err(|e| self.malformed(e))
        })
    }

    /// `source`: events produced from host-read input (file lines, a webhook).
    pub(crate) fn on_input(
        &self,
        input: &[u8],
        meta: &[(String, String)],
    ) -> Result<Result<Vec<wire::Returned>, Denial>, CallError> {
        self.call("on-input", |inst| {
            let Exports::Source(x) = &inst.exports else {
                return Err(self.wrong_kind(Kind::Source));
            };
            let r = x.call_on_input(&mut inst.store, input, meta);
            match self.wasm(r)? {
                Ok(out) => wire::decode(&out).map(Ok).map_err(|e| self.malformed(e)),
                Err(d) => Ok(Err(d)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Data;

    fn runtime(dir: &Path) -> Runtime {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let stores: Stores = Arc::new(move |name| {
            db.open_tree(format!("plugin:{name}"))
                .map(spout_log::Store::Local)
                .map_err(|e| LoadError::Kv(e.to_string()))
        });
        Runtime::new(dir.join("cache"), stores).unwrap()
    }

    fn test_wasm(name: &str) -> String {
        format!("{}/test_{name}.wasm", env!("SPOUT_TEST_WASM_DIR"))
    }

    fn batch(n: u64) -> Batch {
        let mut b = wire::BatchBuilder::default();
        for id in 1..=n {
            let data = format!(
                r#"{{"severity":"{}"}}"#,
                if id % 2 == 0 { "error" } else { "info" }
            );
            b.push(id, 0, "logs", None, data.as_bytes(), None);
        }
        b.batch().clone()
    }

    fn sub(params: &[(&str, &str)]) -> Subscription {
        Subscription {
            user: String::new(),
            claims: "{}".into(),
            topics: vec!["logs".into()],
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn builtin_filter_keeps_matching_events() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path());
        let p = rt
            .load(
                "m",
                "builtin:filter-match",
                dir.path(),
                "{}".into(),
                Limits::default(),
            )
            .unwrap();
        assert_eq!(p.kind(), Kind::Filter);
        assert!(p.describe().contains("filter-match"));
        let mask = p
            .keep(&sub(&[("where", "severity:eq:error")]), &batch(4))
            .unwrap();
        assert_eq!(mask, vec![false, true, false, true]);
        // A second runtime on the same cache directory loads the artifact.
        let rt2 = runtime(dir.path());
        assert!(std::fs::read_dir(dir.path().join("cache")).unwrap().count() >= 1);
        rt2.load(
            "m",
            "builtin:filter-match",
            dir.path(),
            "{}".into(),
            Limits::default(),
        )
        .unwrap();
    }

    #[test]
    fn batch_compress_and_source_worlds_are_callable() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path());
        let load = |n: &str| {
            rt.load(n, &test_wasm(n), dir.path(), "{}".into(), Limits::default())
                .unwrap()
        };

        let merge = load("merge");
        assert_eq!(merge.kind(), Kind::Batch);
        let mut b = wire::BatchBuilder::default();
        b.push(4, 0, "t", None, b"1", None);
        b.push(5, 0, "t", None, b"{\"a\":2}", None);
        let out = merge.merge(b.batch()).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].id, 5, "the frame stands for the last event");
        assert_eq!(out[0].event.kind.as_deref(), Some("batch"));
        assert_eq!(
            out[0].event.data,
            Data::Json(bytes::Bytes::from_static(b"[1,{\"a\":2}]"))
        );

        let reverse = load("reverse");
        assert_eq!(reverse.kind(), Kind::Compress);
        assert!(reverse.encode(b"abc").unwrap().is_none());
        let enc = reverse.encode(b"hello").unwrap().unwrap();
        assert_eq!(
            (enc.encoding.as_str(), enc.data.as_slice()),
            ("reverse", &b"olleh"[..])
        );

        let tick = load("tick");
        assert_eq!(tick.kind(), Kind::Source);
        let polled = tick.poll(42).unwrap();
        assert_eq!(polled[0].event.topic, "ticks");
        assert_eq!(
            polled[0].event.data,
            Data::Json(bytes::Bytes::from_static(b"{\"at\":42}"))
        );
        let meta = vec![("topic".to_string(), "logs".to_string())];
        let lines = tick.on_input(b"one\n\ntwo\n", &meta).unwrap().unwrap();
        let texts: Vec<_> = lines.iter().map(|r| r.event.data.clone()).collect();
        assert_eq!(texts, [Data::Text("one".into()), Data::Text("two".into())]);
        assert_eq!(lines[1].event.topic, "logs");
        let denied = tick.on_input(b"  ", &meta).unwrap().unwrap_err();
        assert_eq!(
            (denied.status, denied.reason.as_str()),
            (400, "empty input")
        );
        // Handles are typed by kind: a source is no batch plugin.
        assert!(BatchPlugin::of(&tick).is_none());
        assert!(SourcePlugin::of(&tick).is_some());
        // Called through the wrong world anyway, it fails that call only.
        assert_eq!(tick.merge(b.batch()).unwrap_err().label(), "malformed");
    }

    #[test]
    fn misbehaving_plugins_fail_their_call_only() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path());
        let limits = Limits {
            memory: 4 << 20,
            time: Duration::from_millis(20),
            ..Limits::default()
        };
        let load = |n: &str| rt.load(n, &test_wasm(n), dir.path(), "{}".into(), limits);
        // A plugin that reads a file loads (language runtimes import the
        // filesystem) but finds nothing: no directory is preopened.
        let fs = load("fsread").unwrap();
        assert_eq!(fs.keep(&sub(&[]), &batch(3)).unwrap(), [false; 3]);
        assert_eq!(fs.errors(), 0);
        for (name, label) in [
            ("spin", "timeout"),
            ("bomb", "memory"),
            ("trap", "trap"),
            ("garbage", "malformed"),
        ] {
            let p = load(name).unwrap();
            for _ in 0..2 {
                let err = p.keep(&sub(&[]), &batch(3)).unwrap_err();
                assert_eq!(err.label(), label, "{name}: {err}");
            }
            assert_eq!(p.errors(), 2);
        }
    }

    #[test]
    fn an_instance_that_leaks_is_retired_before_its_calls_trap() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path());
        let limits = Limits {
            memory: 4 << 20,
            ..Limits::default()
        };
        let p = rt
            .load("leak", &test_wasm("leak"), dir.path(), "{}".into(), limits)
            .unwrap();
        // 64 KiB a call: ~40 calls reach the 4 MiB limit; 200 never trap.
        for call in 0..200 {
            let kept = p.keep(&sub(&[]), &batch(1));
            assert_eq!(kept.unwrap_or_else(|e| panic!("call {call}: {e}")), [true]);
        }
        assert_eq!(p.errors(), 0);
        assert!(p.retired() >= 4, "retired {}", p.retired());
        // A plugin whose memory does not grow is never retired.
        let f = rt
            .load("m", "builtin:filter-match", dir.path(), "{}".into(), limits)
            .unwrap();
        for _ in 0..200 {
            f.keep(&sub(&[]), &batch(4)).unwrap();
        }
        assert_eq!(f.retired(), 0);
    }
}
