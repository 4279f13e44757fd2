//! What a plugin instance can reach: its store data and the host imports
//! (`log`, `clock`, `kv`), plus WASI with an empty context.

use super::bindings::base::spout::plugin::{clock, kv, log, types};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Largest key-value entry a plugin may store.
const MAX_KV_VALUE: usize = 64 * 1024;

/// Where a plugin's key-value entries live: a sled tree beside the log, or
/// (cluster mode) Redis keys `PREFIX:kv:PLUGIN:KEY`, shared by every node.
#[derive(Clone)]
pub enum Kv {
    /// Node-local, in the log's sled database.
    Local(sled::Tree),
    /// Cluster-wide, in Redis.
    Shared {
        /// The cluster's Redis side.
        log: Arc<crate::log::streams::RedisLog>,
        /// `PREFIX:kv:PLUGIN:`.
        prefix: String,
    },
}

impl Kv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        match self {
            Kv::Local(t) => t
                .get(key.as_bytes())
                .map(|v| v.map(|v| v.to_vec()))
                .map_err(|e| e.to_string()),
            Kv::Shared { log, prefix } => log
                .kv_get(&format!("{prefix}{key}"))
                .map_err(|e| e.to_string()),
        }
    }

    fn set(&self, key: &str, value: Vec<u8>) -> Result<(), String> {
        match self {
            Kv::Local(t) => t
                .insert(key.as_bytes(), value)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Kv::Shared { log, prefix } => log
                .kv_set(&format!("{prefix}{key}"), Some(&value))
                .map_err(|e| e.to_string()),
        }
    }

    fn delete(&self, key: &str) -> Result<(), String> {
        match self {
            Kv::Local(t) => t
                .remove(key.as_bytes())
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Kv::Shared { log, prefix } => log
                .kv_set(&format!("{prefix}{key}"), None)
                .map_err(|e| e.to_string()),
        }
    }
}

/// Per-instance state of a plugin's store.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory and instance limits enforced by wasmtime.
    pub limits: StoreLimits,
    plugin: Arc<str>,
    kv: Kv,
    started: Instant,
}

impl HostState {
    /// A fresh state: no files, no environment, no sockets; output to `tracing`.
    pub fn new(plugin: Arc<str>, kv: Kv, memory: usize) -> HostState {
        let wasi = WasiCtxBuilder::new()
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
            limits: StoreLimitsBuilder::new()
                .memory_size(memory)
                .instances(64)
                .tables(64)
                .memories(4)
                .trap_on_grow_failure(true)
                .build(),
            plugin,
            kv,
            started: Instant::now(),
        }
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

impl kv::Host for HostState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.kv.get(&key).unwrap_or_else(|err| {
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
        self.kv.set(&key, value)
    }

    fn delete(&mut self, key: String) -> Result<(), String> {
        self.kv.delete(&key)
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
