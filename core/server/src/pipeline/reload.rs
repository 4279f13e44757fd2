//! Hot reload: when `config.toml` or a plugin file changes (or on SIGHUP),
//! build the complete new pipeline off to the side and swap it in whole.
//!
//! If anything fails the old pipeline keeps serving and the error is logged
//! and shown in `/stats`. After a swap, open connections stay open: their
//! filter groups take the new filters, and each is re-checked against its
//! route's new auth; one the new pipeline would refuse gets `event: revoked`.

use super::auth::{authenticate, check_topics};
use super::source::Sources;
use super::Pipeline;
use crate::config::Config;
use crate::event::now_ms;
use crate::filter::Groups;
use crate::hub::Hub;
use crate::plugin::Runtime;
use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Quiet time after a file event before reloading (editors write in steps).
const DEBOUNCE: Duration = Duration::from_millis(150);

/// The outcome of the last reload attempt, for `/stats`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadStatus {
    /// Reload attempts so far.
    pub attempts: u64,
    /// Whether the last attempt succeeded.
    pub ok: Option<bool>,
    /// Why it failed.
    pub error: Option<String>,
    /// When it happened (ms since the epoch).
    pub at_ms: Option<u64>,
    /// Connections closed with `revoked` by the last successful reload.
    pub revoked: usize,
}

/// What a reload needs, handed to it (it never sees the app): the config it
/// started from, the plugin engine, the running pipeline and its filter
/// groups, the hub (to re-check open connections) and the source drivers.
#[derive(Clone)]
pub struct Reloader {
    /// The config the server started with (file, data directory, cache).
    pub config: Arc<Config>,
    /// Loads the new pipeline's plugins.
    pub runtime: Arc<Runtime>,
    /// The running pipeline; a reload swaps it whole.
    pub pipeline: Arc<ArcSwap<Pipeline>>,
    /// Live filter groups: they take the new filters.
    pub groups: Arc<Groups>,
    /// Open connections are re-checked against the new auth.
    pub hub: Hub,
    /// Restarted with the new pipeline's sources.
    pub sources: Sources,
    /// The outcome of the last reload, for `/stats`.
    pub status: Arc<Mutex<ReloadStatus>>,
}

/// Reloads the pipeline from the config file now (blocking: compiles
/// plugins). Returns the new generation, or the error that kept the old one.
pub fn reload(app: &Reloader) -> Result<u64, String> {
    let file = app.config.origin.file.clone();
    let result = Config::load(&file)
        .map_err(|e| e.to_string())
        .and_then(|mut config| {
            // The data directory (and so the plugin cache) is fixed at start.
            config.log.path = app.config.log.path.clone();
            config.plugin_cache = app.config.plugin_cache.clone();
            let generation = app.pipeline.load().generation + 1;
            Pipeline::build(&config, &app.runtime, generation).map_err(|e| e.to_string())
        });
    let mut status = app.status.lock().unwrap_or_else(|e| e.into_inner());
    status.attempts += 1;
    status.at_ms = Some(now_ms());
    match result {
        Ok(pipeline) => {
            let pipeline = Arc::new(pipeline);
            app.pipeline.store(pipeline.clone());
            let revoked = reevaluate(app, &pipeline);
            let generation = pipeline.generation;
            tracing::info!(
                generation,
                revoked,
                plugins = pipeline.plugins.len(),
                "pipeline reloaded"
            );
            metrics::counter!("spout_pipeline_reloads_total", "result" => "ok").increment(1);
            *status = ReloadStatus {
                attempts: status.attempts,
                ok: Some(true),
                error: None,
                at_ms: status.at_ms,
                revoked,
            };
            Ok(generation)
        }
        Err(error) => {
            tracing::error!(%error, "pipeline reload failed; the previous pipeline keeps serving");
            metrics::counter!("spout_pipeline_reloads_total", "result" => "error").increment(1);
            status.ok = Some(false);
            status.error = Some(error.clone());
            Err(error)
        }
    }
}

/// Applies a new pipeline to open connections; returns how many were revoked.
fn reevaluate(app: &Reloader, pipeline: &Pipeline) -> usize {
    for group in app.groups.live() {
        match pipeline.route(&group.route) {
            Some(r) => group.set_stages(r.filters.clone()),
            None => group.set_stages(Arc::from(Vec::new())),
        }
    }
    let mut revoked = 0;
    for sub in app.hub.subscribers() {
        if sub.admission.is_some() {
            // Mercure subscribers are not on a stream route: their token's
            // claims, checked when they connected, are their grant.
            continue;
        }
        let verdict = match pipeline.route(&sub.route) {
            None => Err(format!("route {} was removed", sub.route)),
            Some(route) => match (&route.auth, &sub.auth) {
                (None, _) => Ok(()),
                (Some(_), None) => Err(format!("route {} now requires authentication", sub.route)),
                (Some(plugin), Some(req)) => authenticate(plugin, req)
                    .and_then(|who| {
                        if sub.user.as_deref() != Some(who.user.as_str()) {
                            return Err(super::auth::AuthError::UserChanged);
                        }
                        check_topics(&who, &sub.selectors(), "subscribe to")
                    })
                    .map_err(|e| e.to_string()),
            },
        };
        if let Err(reason) = verdict {
            tracing::info!(connection = %sub.conn_id, %reason, "connection revoked by the reloaded pipeline");
            sub.revoke(reason);
            revoked += 1;
        }
    }
    revoked
}

/// Files a reload should follow: the config file and every plugin file it names.
fn watched_files(app: &Reloader) -> BTreeSet<PathBuf> {
    let mut files = BTreeSet::new();
    let file = &app.config.origin.file;
    files.insert(absolute(file));
    // Plugin files as the config on disk names them now.
    if let Ok(config) = Config::load(file) {
        let base = file.parent().unwrap_or(Path::new(""));
        for decl in config.plugins.values() {
            let source = decl.source.get_ref();
            if !source.starts_with("builtin:") {
                files.insert(absolute(&base.join(source)));
            }
        }
    }
    files
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// What [`watch`] listens to, set up before the server announces itself so
/// a SIGHUP right after `listening on` already reloads.
struct Watch {
    rx: mpsc::UnboundedReceiver<()>,
    files: Arc<std::sync::RwLock<BTreeSet<PathBuf>>>,
    watcher: Option<notify::RecommendedWatcher>,
    dirs: BTreeSet<PathBuf>,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl Watch {
    /// Watches the directories of `files` not watched yet (directories, not
    /// files: editors replace files by rename).
    fn add_dirs(&mut self, files: &BTreeSet<PathBuf>) {
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        for dir in files.iter().filter_map(|f| f.parent()) {
            if self.dirs.insert(dir.to_path_buf()) {
                if let Err(err) = w.watch(dir, RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %dir.display(), error = %err, "cannot watch directory");
                }
            }
        }
    }

    /// The next reason to reload: a (debounced) file change or SIGHUP.
    async fn next(&mut self) -> Option<()> {
        #[cfg(unix)]
        let sighup = async {
            match self.hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let sighup = std::future::pending::<Option<()>>();
        tokio::select! {
            changed = self.rx.recv() => {
                // Let a burst of writes settle, then reload once.
                tokio::time::sleep(DEBOUNCE).await;
                while self.rx.try_recv().is_ok() {}
                changed
            }
            signal = sighup => {
                tracing::info!("SIGHUP: reloading the pipeline");
                signal
            }
        }
    }
}

/// Watches the config and plugin files (and SIGHUP) and reloads on change,
/// until `stop` is cancelled. Does nothing for a config not read from a
/// file. The watches are set up when this is called; the returned future
/// serves them.
pub fn watch(
    app: Reloader,
    stop: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send {
    let armed = (!app.config.origin.file.as_os_str().is_empty()).then(|| arm(&app));
    async move {
        let Some(mut w) = armed else { return };
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                next = w.next() => if next.is_none() { break },
            }
            let app2 = app.clone();
            let done = tokio::task::spawn_blocking(move || reload(&app2)).await;
            if let Ok(Ok(_)) = done {
                app.sources.restart(&app.pipeline.load());
                let now = watched_files(&app);
                w.add_dirs(&now);
                *w.files.write().unwrap_or_else(|e| e.into_inner()) = now;
            }
        }
    }
}

fn arm(app: &Reloader) -> Watch {
    let (tx, rx) = mpsc::unbounded_channel::<()>();
    let files = Arc::new(std::sync::RwLock::new(watched_files(app)));
    let handler = {
        let files = files.clone();
        move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            if event.kind.is_access() {
                return;
            }
            let files = files.read().unwrap_or_else(|e| e.into_inner());
            if event.paths.iter().any(|p| files.contains(p)) {
                let _ = tx.send(());
            }
        }
    };
    let watcher = notify::recommended_watcher(handler)
        .map_err(|err| tracing::warn!(error = %err, "cannot watch the config for changes; reload with SIGHUP"))
        .ok();
    let mut w = Watch {
        rx,
        files,
        watcher,
        dirs: BTreeSet::new(),
        #[cfg(unix)]
        hup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|err| tracing::warn!(error = %err, "cannot listen for SIGHUP"))
            .ok(),
    };
    let initial = w.files.read().unwrap_or_else(|e| e.into_inner()).clone();
    w.add_dirs(&initial);
    w
}
