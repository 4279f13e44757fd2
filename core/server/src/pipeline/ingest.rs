//! One way in: every event that enters Spout — `POST /publish`, a Mercure
//! `POST`, a source's poll or tailed lines, a webhook — goes through
//! [`Ingest::ingest`]: each event is checked, the route's transforms rewrite
//! (or refuse) the batch, and what they return is checked as strictly as a
//! publisher's own events before it is appended. Errors are
//! [`IngestError`]s; the HTTP layer turns them into statuses.

use crate::event::NewEvent;
use crate::log::{EventLog, LogError};
use crate::plugin::wire::{data_bytes, BatchBuilder};
use crate::plugin::{CallError, Plugin, SourcePlugin, TransformPlugin};

/// Why events were not stored. Nothing of a refused batch is stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A source plugin produced an invalid event.
    #[error("{0}")]
    SourceInvalid(String),
    /// A transform call failed (trap, timeout, busy, …).
    #[error("{0}")]
    TransformFailed(CallError),
    /// A transform refused the batch with this status and reason.
    #[error("{reason}")]
    Rejected {
        /// The status the plugin chose (4xx; anything else becomes 422).
        status: u16,
        /// Its reason, for the publisher.
        reason: String,
    },
    /// A transform returned an invalid event.
    #[error("{0}")]
    TransformInvalid(String),
    /// The log refused or failed the append.
    #[error(transparent)]
    Log(#[from] LogError),
}

impl IngestError {
    /// Whether trying again later may succeed (the log or a plugin was
    /// unavailable), as opposed to the events being refused.
    pub fn is_retryable(&self) -> bool {
        match self {
            IngestError::TransformFailed(_) => true,
            IngestError::Log(LogError::Conflict { .. }) => false,
            IngestError::Log(_) => true,
            _ => false,
        }
    }
}

/// The ingest path: the log and the size every event must stay under.
#[derive(Clone)]
pub struct Ingest {
    log: EventLog,
    max_event: usize,
}

/// Where events come from, for what is checked and how errors read.
#[derive(Clone, Copy)]
pub enum Producer<'a> {
    /// A publisher (`/publish` or Mercure): its events were validated when
    /// its body was parsed.
    Publisher,
    /// A source plugin: each event it produced is checked here.
    Source(&'a SourcePlugin),
}

impl Ingest {
    /// The ingest path into `log`, for events of at most `max_event` bytes.
    pub fn new(log: EventLog, max_event: usize) -> Ingest {
        Ingest { log, max_event }
    }

    /// Checks `events`, runs `transforms` over them in order and appends
    /// what comes out; returns the ids (empty when the transforms dropped
    /// everything). All or nothing.
    pub async fn ingest(
        &self,
        from: Producer<'_>,
        events: Vec<NewEvent>,
        transforms: &[TransformPlugin],
    ) -> Result<Vec<u64>, IngestError> {
        if let Producer::Source(plugin) = from {
            for e in &events {
                check_event(plugin, e, self.max_event).map_err(IngestError::SourceInvalid)?;
            }
        }
        let events = self.transform(transforms, events).await?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.log.append(events).await?)
    }

    /// Runs a transform chain over the events on the plugin pool (plugin
    /// calls block).
    async fn transform(
        &self,
        chain: &[TransformPlugin],
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, IngestError> {
        let Some(first) = chain.first() else {
            return Ok(events);
        };
        if events.is_empty() {
            return Ok(events);
        }
        let chain = chain.to_vec();
        let max_event = self.max_event;
        first
            .run(move |_| {
                Ok(chain.iter().try_fold(events, |events, plugin| {
                    transform(plugin, events, max_event)
                }))
            })
            .await
            .map_err(IngestError::TransformFailed)?
    }
}

/// Runs one transform plugin over the events and checks what it returns as
/// strictly as a publisher's own events.
fn transform(
    plugin: &TransformPlugin,
    events: Vec<NewEvent>,
    max_event: usize,
) -> Result<Vec<NewEvent>, IngestError> {
    let mut batch = BatchBuilder::default();
    for e in &events {
        batch.push(
            0,
            0,
            &e.topic,
            e.kind.as_deref(),
            data_bytes(&e.data),
            e.to.as_deref(),
        );
    }
    let out = plugin
        .apply(batch.batch())
        .map_err(IngestError::TransformFailed)?
        .map_err(|d| IngestError::Rejected {
            status: d.status,
            reason: d.reason,
        })?;
    let same_shape = out.len() == events.len();
    let mut events = events;
    out.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let mut e = r.event;
            check_event(plugin, &e, max_event).map_err(IngestError::TransformInvalid)?;
            if same_shape {
                // One event in, one out: keep what the transform cannot see
                // (the publisher's idempotency key, a Mercure update's id,
                // further topics, `private` and `retry`).
                e.key = events[i].key.take();
                e.extra = events[i].extra.take();
            }
            Ok(e)
        })
        .collect()
}

/// Checks an event a plugin produced: a valid topic, data within bounds.
pub fn check_event(plugin: &Plugin, e: &NewEvent, max_event: usize) -> Result<(), String> {
    let what = format!(
        "{} plugin `{}` produced an invalid event",
        plugin.kind(),
        plugin.name()
    );
    crate::topic::validate_topic(&e.topic)
        .map_err(|err| format!("{what}: topic {:?}: {err}", e.topic))?;
    if e.data.len() > max_event {
        return Err(format!("{what}: data is over {max_event} bytes"));
    }
    Ok(())
}
