//! Drives source plugins: a timer calls `poll`, a tailed file's new lines
//! and a webhook's bodies go to `on-input` (the webhook's HTTP side is
//! `http::hooks`). What a plugin returns is checked, passed through the
//! source's transforms and appended to the log like a publisher's events.

pub mod tail;

use super::{Driver, SourceRoute};
use crate::app::App;
use crate::event::{now_ms, NewEvent};
use crate::http::publish::run_transforms;
use crate::http::ApiError;
use crate::plugin::wire::Returned;
use http::StatusCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Stops the running source drivers and starts those of `pipeline`.
pub fn restart(app: &Arc<App>, pipeline: &super::Pipeline) {
    let stop = CancellationToken::new();
    for src in &pipeline.sources {
        match &src.driver {
            Driver::Every(every) => {
                tokio::spawn(drive_timer(app.clone(), src.clone(), *every, stop.clone()));
            }
            Driver::Tail { path, from_start } => {
                tail::spawn(
                    app.clone(),
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
        tokio::spawn(sample_stats(app.clone(), stop.clone()));
    }
    let mut current = app.sources.lock().unwrap_or_else(|e| e.into_inner());
    current.cancel();
    *current = stop;
}

/// Keeps the figures of the plugins' `stats` import current.
async fn sample_stats(app: Arc<App>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let hub = app.hub.stats();
        app.runtime
            .stats()
            .sample(hub.connections as u64, hub.events);
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
    }
}

async fn drive_timer(app: Arc<App>, src: SourceRoute, every: Duration, stop: CancellationToken) {
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
        if let Err(error) = ingest(&app, &src, returned).await {
            tracing::warn!(plugin = src.plugin.name(), error = %error.detail, "source events not stored");
        }
    }
}

/// Checks a source's events, runs its transforms and appends them to the
/// log; returns their ids. An invalid event fails the whole input, so a
/// webhook caller or the log line learns why.
pub async fn ingest(
    app: &Arc<App>,
    src: &SourceRoute,
    returned: Vec<Returned>,
) -> Result<Vec<u64>, ApiError> {
    let max_event = app.config.server.limits.max_event_bytes.as_u64() as usize;
    let mut events: Vec<NewEvent> = Vec::with_capacity(returned.len());
    for r in returned {
        super::check_event(&src.plugin, &r.event, max_event).map_err(|detail| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "source_invalid", detail)
        })?;
        events.push(r.event);
    }
    let events = run_transforms(src.transforms.clone(), events, max_event).await?;
    if events.is_empty() {
        return Ok(Vec::new());
    }
    app.log
        .append(events)
        .await
        .map_err(crate::http::publish::log_error)
}
