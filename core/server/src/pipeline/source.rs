//! Drives source plugins: a timer calls `poll`, a tailed file's new lines
//! and a webhook's bodies go to `on-input` (the webhook's HTTP side is
//! `http::hooks`). What a plugin returns is checked, passed through the
//! source's transforms and appended to the log like a publisher's events.

pub mod tail;

use super::ingest::{Ingest, IngestError, Producer};
use super::{Driver, SourceRoute};
use crate::event::{now_ms, NewEvent};
use crate::hub::Hub;
use crate::plugin::host::ServerStats;
use crate::plugin::wire::Returned;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What source drivers need, handed to them (they never see the app): the
/// ingest path, the hub and the figures of the plugins' `stats` import,
/// and where file-tail positions are kept.
#[derive(Clone)]
pub struct Sources {
    /// Where their events go.
    pub ingest: Ingest,
    /// Sampled for the `stats` import.
    pub hub: Hub,
    /// The figures the `stats` import reads.
    pub stats: Arc<ServerStats>,
    /// The node-local tree of file-tail positions.
    pub positions: Option<sled::Tree>,
    /// The data directory (tail states are kept per directory and path).
    pub data_dir: PathBuf,
    /// Stops the running drivers.
    running: Arc<Mutex<CancellationToken>>,
}

impl Sources {
    /// Source drivers feeding `ingest`; none runs until [`Sources::restart`].
    pub fn new(
        ingest: Ingest,
        hub: Hub,
        stats: Arc<ServerStats>,
        positions: Option<sled::Tree>,
        data_dir: PathBuf,
    ) -> Sources {
        Sources {
            ingest,
            hub,
            stats,
            positions,
            data_dir,
            running: Arc::new(Mutex::new(CancellationToken::new())),
        }
    }

    /// Stops the running source drivers and starts those of `pipeline`.
    pub fn restart(&self, pipeline: &super::Pipeline) {
        let stop = CancellationToken::new();
        for src in &pipeline.sources {
            match &src.driver {
                Driver::Every(every) => {
                    tokio::spawn(drive_timer(self.clone(), src.clone(), *every, stop.clone()));
                }
                Driver::Tail { path, from_start } => {
                    tail::spawn(
                        self.clone(),
                        src.clone(),
                        path.clone(),
                        *from_start,
                        stop.clone(),
                    );
                }
                // Served by `POST /hooks/NAME` with the current pipeline.
                Driver::Webhook(_) => {}
            }
        }
        if !pipeline.sources.is_empty() {
            tokio::spawn(sample_stats(
                self.hub.clone(),
                self.stats.clone(),
                stop.clone(),
            ));
        }
        let mut current = self.running.lock().unwrap_or_else(|e| e.into_inner());
        current.cancel();
        *current = stop;
    }

    /// Stops every running driver (shutdown).
    pub fn stop(&self) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cancel();
    }
}

/// Keeps the figures of the plugins' `stats` import current.
async fn sample_stats(hub: Hub, stats: Arc<ServerStats>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let h = hub.stats();
        stats.sample(h.connections as u64, h.events);
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
    }
}

async fn drive_timer(sources: Sources, src: SourceRoute, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let polled = src.plugin.run(|p| p.poll(now_ms())).await;
        // Failed calls are logged and counted by the plugin host.
        let Ok(returned) = polled else { continue };
        if let Err(error) = ingest(&sources.ingest, &src, returned).await {
            tracing::warn!(plugin = src.plugin.name(), %error, "source events not stored");
        }
    }
}

/// Checks a source's events, runs its transforms and appends them to the
/// log; returns their ids. An invalid event fails the whole input, so a
/// webhook caller or the log line learns why.
pub async fn ingest(
    ingest: &Ingest,
    src: &SourceRoute,
    returned: Vec<Returned>,
) -> Result<Vec<u64>, IngestError> {
    let events: Vec<NewEvent> = returned.into_iter().map(|r| r.event).collect();
    ingest
        .ingest(Producer::Source(&src.plugin), events, &src.transforms)
        .await
}
