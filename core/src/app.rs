//! The running application's shared state: config, log, hub, metrics.

use crate::config::Config;
use crate::hub::Hub;
use crate::log::{EventLog, LogError, Sink};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Everything a request handler needs, shared by all connections.
pub struct App {
    /// The configuration the server was started with.
    pub config: Config,
    /// The durable log (source of truth).
    pub log: EventLog,
    /// The fan-out hub the log feeds.
    pub hub: Hub,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// When the app was opened, for `/stats`.
    pub started: Instant,
    /// Set when shutdown begins; `/readyz` turns 503.
    shutting_down: AtomicBool,
}

impl App {
    /// Opens the log in `config.log.path` and wires it to a new hub.
    pub fn open(config: Config) -> Result<Arc<App>, LogError> {
        let metrics = crate::metrics::install();
        let hub = Hub::new(config.server.limits.max_connections, config.hub.queue);
        let sink: Sink = {
            let hub = hub.clone();
            Arc::new(move |events| hub.fan_out(events))
        };
        let log = EventLog::open(&config.log, sink)?;
        Ok(Arc::new(App {
            config,
            log,
            hub,
            metrics,
            started: Instant::now(),
            shutting_down: AtomicBool::new(false),
        }))
    }

    /// Whether the server should receive traffic.
    pub fn is_ready(&self) -> bool {
        !self.shutting_down.load(Ordering::Acquire) && self.log.is_ready()
    }

    /// Marks the start of shutdown.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }
}
