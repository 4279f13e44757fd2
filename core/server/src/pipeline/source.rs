//! Drives sources: a timer calls a plugin's `poll`, a tailed file's new
//! lines and a webhook's bodies go to `on-input` (the webhook's HTTP side is
//! `http::hooks`), and brokers are relayed (`relay`, one module per
//! protocol). What arrives is checked, passed through the source's
//! transforms and appended to the log like a publisher's events. A reload
//! restarts only the sources whose declaration or plugins changed.

pub mod amqp;
pub mod broker;
pub mod mqtt;
pub mod nats;
pub mod postgres;
pub mod relay;
pub mod status;
pub mod streams;
pub mod tail;

use super::brokers::{BrokerKind, BrokerRoute};
use super::ingest::{Ingest, IngestError, Producer};
use super::{Driver, SourceRoute};
use crate::event::{now_ms, NewEvent};
use crate::hub::Hub;
use crate::plugin::host::ServerStats;
use crate::plugin::wire::Returned;
use status::SourceStatus;
use std::collections::HashMap;
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
    /// The running drivers, by declaration fingerprint.
    running: Arc<Mutex<HashMap<u64, Running>>>,
    /// Stops the `stats` sampler.
    sampler: Arc<Mutex<Option<CancellationToken>>>,
}

/// A running driver: how to stop it, and a broker relay's figures.
struct Running {
    stop: CancellationToken,
    status: Option<Arc<SourceStatus>>,
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
            running: Arc::new(Mutex::new(HashMap::new())),
            sampler: Arc::new(Mutex::new(None)),
        }
    }

    /// Starts the sources of `pipeline` that are not running yet and stops
    /// those it no longer declares; a source whose declaration and plugins
    /// are unchanged keeps running (and keeps its broker connection).
    pub fn restart(&self, pipeline: &super::Pipeline) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = HashMap::new();
        // Two identical declarations are two sources: number repeats.
        let mut seen: HashMap<u64, u64> = HashMap::new();
        let mut key = |fingerprint: u64| {
            let n = seen.entry(fingerprint).or_default();
            *n += 1;
            fingerprint ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        };
        for src in &pipeline.sources {
            if matches!(src.driver, Driver::Webhook(_)) {
                // Served by `POST /hooks/NAME` with the current pipeline.
                continue;
            }
            let k = key(src.fingerprint);
            if let Some(r) = running.remove(&k) {
                next.insert(k, r);
                continue;
            }
            let stop = CancellationToken::new();
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
                Driver::Webhook(_) => {}
            }
            next.insert(k, Running { stop, status: None });
        }
        for route in &pipeline.brokers {
            let k = key(route.fingerprint);
            if let Some(r) = running.remove(&k) {
                next.insert(k, r);
                continue;
            }
            let stop = CancellationToken::new();
            let status = self.spawn_relay(route.clone(), stop.clone());
            next.insert(
                k,
                Running {
                    stop,
                    status: Some(status),
                },
            );
        }
        for (_, gone) in running.drain() {
            gone.stop.cancel();
        }
        *running = next;
        let wanted = !pipeline.sources.is_empty() || !pipeline.brokers.is_empty();
        let mut sampler = self.sampler.lock().unwrap_or_else(|e| e.into_inner());
        if wanted && sampler.is_none() {
            let stop = CancellationToken::new();
            tokio::spawn(sample_stats(
                self.hub.clone(),
                self.stats.clone(),
                stop.clone(),
            ));
            *sampler = Some(stop);
        }
    }

    /// Starts relaying broker source `route` until `stop`.
    fn spawn_relay(&self, route: BrokerRoute, stop: CancellationToken) -> Arc<SourceStatus> {
        let status = Arc::new(SourceStatus::new(&route.name, route.kind.as_str()));
        let kind = route.kind.clone();
        let relay = relay::Relay {
            route,
            ingest: self.ingest.clone(),
            max_event: self.ingest.max_event(),
            status: status.clone(),
        };
        match kind {
            BrokerKind::Postgres(c) => {
                tokio::spawn(relay.run(postgres::Outbox::new(c), stop));
            }
            BrokerKind::Nats(c) => {
                tokio::spawn(relay.run(nats::Nats::new(c), stop));
            }
            BrokerKind::Amqp(c) => {
                tokio::spawn(relay.run(amqp::Amqp::new(c), stop));
            }
            BrokerKind::Mqtt(c) => {
                tokio::spawn(relay.run(mqtt::Mqtt::new(c), stop));
            }
            BrokerKind::Redis(c) => {
                tokio::spawn(relay.run(streams::Streams::new(c), stop));
            }
        }
        status
    }

    /// The broker sources' figures (`/stats`), by name.
    pub fn statuses(&self) -> Vec<serde_json::Value> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = running
            .values()
            .filter_map(|r| r.status.as_ref().map(|s| s.to_json()))
            .collect();
        all.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        all
    }

    /// Stops every running driver (shutdown).
    pub fn stop(&self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for (_, r) in running.drain() {
            r.stop.cancel();
        }
        if let Some(s) = self
            .sampler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            s.cancel();
        }
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
