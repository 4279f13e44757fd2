//! Drives source plugins: on each tick, call `poll` and publish what it
//! returns through the log, like a publisher would.

use super::Pipeline;
use crate::app::App;
use crate::event::now_ms;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Stops the running source drivers and starts those of `pipeline`; returns
/// the token that stops the new ones.
pub fn restart(app: &Arc<App>, pipeline: &Pipeline) {
    let stop = CancellationToken::new();
    for src in &pipeline.sources {
        tokio::spawn(drive(app.clone(), src.clone(), stop.clone()));
    }
    let mut current = app.sources.lock().unwrap_or_else(|e| e.into_inner());
    current.cancel();
    *current = stop;
}

async fn drive(app: Arc<App>, src: super::SourceRoute, stop: CancellationToken) {
    let mut tick = tokio::time::interval(src.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let max_event = app.config.server.limits.max_event_bytes.as_u64() as usize;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let plugin = src.plugin.clone();
        let polled = tokio::task::spawn_blocking(move || plugin.poll(now_ms())).await;
        // Failed calls are logged and counted by the plugin host.
        let Ok(Ok(returned)) = polled else { continue };
        let mut events = Vec::with_capacity(returned.len());
        for r in returned {
            match super::check_event(&src.plugin, &r.event, max_event) {
                Ok(()) => events.push(r.event),
                Err(error) => {
                    tracing::warn!(plugin = src.plugin.name(), %error, "source event dropped")
                }
            }
        }
        if events.is_empty() {
            continue;
        }
        if let Err(error) = app.log.append(events).await {
            tracing::warn!(plugin = src.plugin.name(), %error, "source events could not be stored");
        }
    }
}
