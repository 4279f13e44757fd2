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

/// One broker message's events and the key that makes storing them
/// idempotent (`None`: the message has no stable identity).
#[derive(Debug)]
pub struct Keyed {
    /// The message's idempotency key.
    pub key: Option<String>,
    /// What it became.
    pub events: Vec<NewEvent>,
}

/// Why a [`Ingest::ingest_keyed`] stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum KeyedError {
    /// This message (by index) was refused or failed.
    #[error("{1}")]
    Message(usize, IngestError),
    /// The batch as a whole failed (the log, a transform's pool).
    #[error(transparent)]
    Batch(IngestError),
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

    /// Makes every stored event durable now (see [`EventLog::sync`]).
    pub async fn sync(&self) -> Result<(), IngestError> {
        Ok(self.log.sync().await?)
    }

    /// The largest event data accepted, in bytes.
    pub fn max_event(&self) -> usize {
        self.max_event
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

    /// Ingests the events of several broker messages in one log append:
    /// each message's events are checked and transformed apart from the
    /// others, then keyed with the message's key (`KEY`, or `KEY#i` when
    /// it became several events), so a redelivered message stores nothing
    /// twice whatever its transforms did. All or nothing; a message whose
    /// events are refused is named in the error.
    pub async fn ingest_keyed(
        &self,
        from: Producer<'_>,
        messages: Vec<Keyed>,
        transforms: &[TransformPlugin],
    ) -> Result<Vec<u64>, KeyedError> {
        if let Producer::Source(plugin) = from {
            for (i, m) in messages.iter().enumerate() {
                for e in &m.events {
                    check_event(plugin, e, self.max_event)
                        .map_err(|e| KeyedError::Message(i, IngestError::SourceInvalid(e)))?;
                }
            }
        }
        let messages = match transforms.first() {
            None => messages,
            Some(first) => {
                let chain = transforms.to_vec();
                let max_event = self.max_event;
                first
                    .run(move |_| {
                        Ok(messages
                            .into_iter()
                            .enumerate()
                            .map(|(i, m)| {
                                let events = chain
                                    .iter()
                                    .try_fold(m.events, |events, plugin| {
                                        transform(plugin, events, max_event)
                                    })
                                    .map_err(|e| KeyedError::Message(i, e))?;
                                Ok(Keyed { key: m.key, events })
                            })
                            .collect::<Result<Vec<_>, KeyedError>>())
                    })
                    .await
                    .map_err(|e| KeyedError::Batch(IngestError::TransformFailed(e)))??
            }
        };
        let mut events = Vec::new();
        for m in messages {
            let n = m.events.len();
            for (i, mut e) in m.events.into_iter().enumerate() {
                e.key = match (&m.key, n) {
                    (None, _) => None,
                    (Some(k), 1) => Some(k.clone()),
                    (Some(k), _) => Some(format!("{k}#{i}")),
                };
                events.push(e);
            }
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.log
            .append(events)
            .await
            .map_err(|e| KeyedError::Batch(e.into()))
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
