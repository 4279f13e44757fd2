//! What a plugin instance can reach: its store data and the host imports
//! (`log`, `clock`, `kv`, and `stats` for sources), plus WASI with an
//! empty context.

use super::bindings::base::spout::plugin::{clock, kv, log, types};
use super::bindings::source::spout::plugin::stats;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Largest key-value entry a plugin may store.
const MAX_KV_VALUE: usize = 64 * 1024;

/// Where a plugin's key-value entries live: a store beside the log (a sled
/// tree on one node, Redis keys `PREFIX:kv:PLUGIN:KEY` in cluster mode,
/// shared by every node; the log decides which).
pub type Kv = spout_log::Store;

/// Live server figures the `stats` import reports to source plugins; the
/// source driver samples them from the hub once a second.
#[derive(Debug)]
pub struct ServerStats {
    connections: AtomicU64,
    events_total: AtomicU64,
    /// `f64` bits of events per second over the last sample.
    rate: AtomicU64,
    started: Instant,
    last: std::sync::Mutex<(Instant, u64)>,
}

impl Default for ServerStats {
    fn default() -> Self {
        let now = Instant::now();
        ServerStats {
            connections: AtomicU64::new(0),
            events_total: AtomicU64::new(0),
            rate: AtomicU64::new(0f64.to_bits()),
            started: now,
            last: std::sync::Mutex::new((now, 0)),
        }
    }
}

impl ServerStats {
    /// Records the current counts and updates the rate since the last sample.
    pub fn sample(&self, connections: u64, events_total: u64) {
        self.connections.store(connections, Ordering::Relaxed);
        self.events_total.store(events_total, Ordering::Relaxed);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let secs = last.0.elapsed().as_secs_f64();
        if secs >= 0.5 {
            let rate = events_total.saturating_sub(last.1) as f64 / secs;
            self.rate.store(rate.to_bits(), Ordering::Relaxed);
            *last = (Instant::now(), events_total);
        }
    }

    fn snapshot(&self) -> stats::Snapshot {
        stats::Snapshot {
            connections: self.connections.load(Ordering::Relaxed),
            events_total: self.events_total.load(Ordering::Relaxed),
            events_per_second: f64::from_bits(self.rate.load(Ordering::Relaxed)),
            uptime_ms: self.started.elapsed().as_millis() as u64,
        }
    }
}

/// Per-instance state of a plugin's store.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory and instance limits enforced by wasmtime, and how large the
    /// instance's memory has grown.
    pub limits: Limiter,
    plugin: Arc<str>,
    kv: Kv,
    started: Instant,
    stats: Arc<ServerStats>,
}

impl HostState {
    /// A fresh state: no files, no environment, no sockets; output to `tracing`.
    /// The sandbox is spelt out rather than left to wasmtime-wasi's defaults:
    /// no preopened directory (every path fails), no environment or
    /// arguments, TCP, UDP and name lookup off and no socket address allowed.
    pub fn new(plugin: Arc<str>, kv: Kv, memory: usize, stats: Arc<ServerStats>) -> HostState {
        let wasi = WasiCtxBuilder::new()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .stdout(LogOutput {
                plugin: plugin.clone(),
                stream: "stdout",
            })
            .stderr(LogOutput {
                plugin: plugin.clone(),
                stream: "stderr",
            })
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limits: Limiter {
                inner: StoreLimitsBuilder::new()
                    .memory_size(memory)
                    .instances(64)
                    .tables(64)
                    .memories(4)
                    .trap_on_grow_failure(true)
                    .build(),
                largest: 0,
            },
            plugin,
            kv,
            started: Instant::now(),
            stats,
        }
    }
}

/// wasmtime's [`StoreLimits`], plus the largest linear memory it granted: the
/// pool retires an instance whose memory keeps growing (a guest runtime that
/// leaks per call) before the limit makes a call trap.
pub struct Limiter {
    inner: StoreLimits,
    /// Bytes of the largest memory granted so far (start-up included).
    pub largest: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allow = self.inner.memory_growing(current, desired, maximum)?;
        if allow {
            self.largest = self.largest.max(desired);
        }
        Ok(allow)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn write(&mut self, level: log::Level, message: String) {
        let plugin = &*self.plugin;
        match level {
            log::Level::Trace => tracing::trace!(plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

impl clock::Host for HostState {
    fn monotonic_ns(&mut self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    fn wall_ms(&mut self) -> u64 {
        crate::event::now_ms()
    }
}

impl stats::Host for HostState {
    fn current(&mut self) -> stats::Snapshot {
        self.stats.snapshot()
    }
}

impl kv::Host for HostState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.kv
            .get(key.as_bytes())
            .map_err(|e| e.to_string())
            .unwrap_or_else(|err| {
                tracing::warn!(plugin = &*self.plugin, error = %err, "plugin kv read failed");
                None
            })
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        if value.len() > MAX_KV_VALUE || key.len() > 1024 {
            return Err(format!(
                "kv entries are limited to 1 KiB keys and {MAX_KV_VALUE} byte values"
            ));
        }
        self.kv
            .set(key.as_bytes(), Some(&value))
            .map_err(|e| e.to_string())
    }

    fn delete(&mut self, key: String) -> Result<(), String> {
        self.kv.set(key.as_bytes(), None).map_err(|e| e.to_string())
    }
}

/// A plugin's stdout or stderr: each write becomes a `tracing` line.
#[derive(Clone)]
struct LogOutput {
    plugin: Arc<str>,
    stream: &'static str,
}

impl LogOutput {
    fn emit(&self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            tracing::info!(plugin = &*self.plugin, stream = self.stream, "{line}");
        }
    }
}

impl IsTerminal for LogOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for LogOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.emit(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LogOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.emit(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
