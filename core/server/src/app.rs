//! The running application's shared state: config, log, hub, plugins,
//! pipeline and metrics.

use crate::config::{Config, ConfigError};
use crate::filter::Groups;
use crate::hub::Hub;
use crate::log::{EventLog, LogError, Sink};
use crate::pipeline::reload::ReloadStatus;
use crate::pipeline::Pipeline;
use crate::plugin::{LoadError, Runtime};
use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Why the app could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The log could not be opened.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The plugin engine could not be set up.
    #[error(transparent)]
    Plugins(#[from] LoadError),
    /// The pipeline in the config is invalid.
    #[error(transparent)]
    Pipeline(#[from] ConfigError),
}

/// Everything a request handler needs, shared by all connections.
pub struct App {
    /// The configuration the server was started with (the pipeline part may
    /// since have been reloaded: see [`App::pipeline`]).
    pub config: Arc<Config>,
    /// The durable log (source of truth).
    pub log: EventLog,
    /// Catch-up reads of the log, bounded and shared between streams.
    pub replay: crate::replay::Replay,
    /// The fan-out hub the log feeds.
    pub hub: Hub,
    /// The plugin engine.
    pub runtime: Arc<Runtime>,
    /// The current pipeline; hot reload swaps it whole.
    pub pipeline: Arc<ArcSwap<Pipeline>>,
    /// Shared filter groups, one per subscription key.
    pub groups: Arc<Groups>,
    /// Outcome of the last reload, for `/stats`.
    pub reload: Arc<Mutex<ReloadStatus>>,
    /// The one ingest path (publish, Mercure, sources, webhooks).
    pub ingest: crate::pipeline::ingest::Ingest,
    /// The source drivers (restarted on reload).
    pub sources: crate::pipeline::source::Sources,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// When the app was opened, for `/stats`.
    pub started: Instant,
    /// One-time tickets (`POST /tickets`).
    pub tickets: crate::tickets::TicketStore,
    /// Per-IP admission limits and the client-IP rule.
    pub limits: crate::limits::Limits,
    /// Cluster mode: the nodes and connections seen in Redis.
    pub cluster: Option<Arc<crate::cluster::Presence>>,
    /// Stops background tasks tied to the app (cluster presence).
    pub stop: tokio_util::sync::CancellationToken,
    /// Users an operator banned for a while (`POST /api/disconnect`).
    pub bans: crate::bans::Bans,
    /// Set when shutdown begins; `/readyz` turns 503.
    shutting_down: AtomicBool,
}

impl App {
    /// Opens the log in `config.log.path`, wires it to a new hub, and loads
    /// the plugins and pipeline the config declares.
    pub fn open(config: Config) -> Result<Arc<App>, OpenError> {
        let metrics = crate::metrics::install();
        let limits = &config.server.limits;
        let hub = Hub::new(limits.max_connections, config.hub.queue).with_user_limit(
            crate::limits::PerUser {
                max: limits.per_user_connections,
                policy: limits.per_user_policy,
            },
        );
        let limits = crate::limits::Limits::new(limits);
        let sink: Sink = {
            let hub = hub.clone();
            Arc::new(move |events| hub.fan_out(events))
        };
        let log = EventLog::open_with(&config.log, config.cluster.as_ref(), sink)?;
        let stores: crate::plugin::Stores = {
            let log = log.clone();
            Arc::new(move |name| {
                log.store(&format!("plugin:{name}"), &format!("kv:{name}:"))
                    .map_err(|e| LoadError::Kv(e.to_string()))
            })
        };
        let runtime = Runtime::new(config.plugin_cache_dir(), stores)?;
        let started = Instant::now();
        let pipeline = Pipeline::build(&config, &runtime, 1)?;
        if !pipeline.plugins.is_empty() {
            tracing::info!(plugins = pipeline.plugins.len(), elapsed = ?started.elapsed(), "pipeline ready");
        }
        let tickets = crate::tickets::TicketStore::new(log.store("tickets", "ticket:")?);
        let bans = crate::bans::Bans::load(log.store("bans", "ban:")?);
        let ingest = crate::pipeline::ingest::Ingest::new(
            log.clone(),
            config.server.limits.max_event_bytes.as_u64() as usize,
        );
        let sources = crate::pipeline::source::Sources::new(
            ingest.clone(),
            hub.clone(),
            runtime.stats().clone(),
            log.local_tree("tails").ok(),
            config.log.path.clone(),
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let cluster = log
            .redis()
            .map(|r| crate::cluster::start(r.clone(), hub.clone(), stop.clone()));
        let app = Arc::new(App {
            bans,
            config: Arc::new(config),
            replay: crate::replay::Replay::new(log.clone()),
            log,
            hub,
            runtime: Arc::new(runtime),
            pipeline: Arc::new(ArcSwap::from_pointee(pipeline)),
            groups: Arc::new(Groups::default()),
            reload: Arc::new(Mutex::new(ReloadStatus::default())),
            ingest,
            sources,
            metrics,
            started: Instant::now(),
            limits,
            tickets,
            cluster,
            stop,
            shutting_down: AtomicBool::new(false),
        });
        crate::operate::wire_cluster(&app);
        Ok(app)
    }

    /// What hot reload needs (see [`crate::pipeline::reload`]).
    pub fn reloader(&self) -> crate::pipeline::reload::Reloader {
        crate::pipeline::reload::Reloader {
            config: self.config.clone(),
            runtime: self.runtime.clone(),
            pipeline: self.pipeline.clone(),
            groups: self.groups.clone(),
            hub: self.hub.clone(),
            sources: self.sources.clone(),
            status: self.reload.clone(),
        }
    }

    /// Whether the server should receive traffic.
    pub fn is_ready(&self) -> bool {
        !self.shutting_down.load(Ordering::Acquire) && self.log.is_ready()
    }

    /// Whether shutdown has begun (long polls answer at once).
    pub fn is_closing(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Marks the start of shutdown.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.stop.cancel();
    }
}
