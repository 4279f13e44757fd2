//! Relays a broker into the log, effectively once: fetch a batch, turn each
//! message into events keyed by the message's identity, store them in one
//! append, and only then acknowledge. A crash between store and ack makes
//! the broker redeliver; the keys make the log answer with the stored ids
//! instead of storing again. A message that cannot become events goes to
//! the dead-letter topic with the reason and is acknowledged, so one poison
//! message never stalls the source. Broker or log trouble is retried with
//! backoff and never blocks anything else.

use super::broker::{Broker, Message};
use super::status::SourceStatus;
use crate::event::{Data, NewEvent};
use crate::pipeline::brokers::BrokerRoute;
use crate::pipeline::ingest::{Ingest, Keyed, KeyedError, Producer};
use crate::plugin::CallError;
use crate::publish::{parse_body, BodyFormat};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long one fetch waits for a first message before the loop looks
/// around (lag, stop).
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// How often the broker is asked for its lag.
const LAG_EVERY: Duration = Duration::from_secs(2);
/// Backoff bounds for reconnects and retried stores.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Exponential backoff with jitter.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(BACKOFF_MIN)
    }

    fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }

    /// The next pause: the current one with ±25% jitter; then doubled.
    fn next(&mut self) -> Duration {
        let base = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        let jitter = (crate::event::now_ms() % 50) as f64 / 100.0 - 0.25;
        base.mul_f64(1.0 + jitter)
    }
}

/// Sleeps `d` unless stopped first; false when stopped.
async fn pause(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

/// Everything a relay needs besides its broker.
pub struct Relay {
    /// The resolved `[[source]]`.
    pub route: BrokerRoute,
    /// Where events go.
    pub ingest: Ingest,
    /// Bound on an event's data.
    pub max_event: usize,
    /// Its figures for `/stats` and metrics.
    pub status: Arc<SourceStatus>,
}

/// A message for the plugin: its index, body and meta.
type Input = (usize, bytes::Bytes, Vec<(String, String)>);

/// A message on its way: what it became, or why it could not.
struct Prepared<A> {
    ack: A,
    key: Option<String>,
    identity: Option<String>,
    subject: Option<String>,
    body: bytes::Bytes,
    meta: Vec<(String, String)>,
    outcome: Result<Vec<NewEvent>, String>,
}

impl Relay {
    /// Runs the source until `stop`: connect, then fetch → store → ack,
    /// reconnecting with backoff after any broker error.
    pub async fn run<B: Broker>(self, mut broker: B, stop: CancellationToken) {
        let mut backoff = Backoff::new();
        let what = broker.describe();
        loop {
            self.status.set_state("connecting");
            let connected = tokio::select! {
                () = stop.cancelled() => break,
                r = broker.connect() => r,
            };
            if let Err(error) = connected {
                self.status.failed(&error.to_string());
                tracing::warn!(source = %self.route.name, broker = %what, %error, "source cannot connect; retrying");
                broker.disconnect();
                if !pause(backoff.next(), &stop).await {
                    break;
                }
                continue;
            }
            self.status.set_state("connected");
            tracing::info!(source = %self.route.name, broker = %what, "source connected");
            backoff.reset();
            let mut lag_at: Option<Instant> = None;
            let error = loop {
                if lag_at.is_none_or(|t| t.elapsed() >= LAG_EVERY) {
                    let lag = broker.lag().await;
                    self.status.set_lag(lag);
                    lag_at = Some(Instant::now());
                }
                let fetched = tokio::select! {
                    () = stop.cancelled() => None,
                    r = broker.fetch(self.batch(), FETCH_WAIT) => Some(r),
                };
                let messages = match fetched {
                    None => break None,
                    Some(Err(e)) => break Some(e.to_string()),
                    Some(Ok(m)) => m,
                };
                if messages.is_empty() {
                    continue;
                }
                let Some(acks) = self.store(messages, &stop).await else {
                    break None;
                };
                if let Err(e) = broker.ack(acks).await {
                    break Some(e.to_string());
                }
            };
            broker.disconnect();
            match error {
                None => break,
                Some(error) => {
                    self.status.failed(&error);
                    tracing::warn!(source = %self.route.name, broker = %what, %error, "source connection lost; reconnecting");
                    if !pause(backoff.next(), &stop).await {
                        break;
                    }
                }
            }
        }
        self.status.set_state("stopped");
    }

    fn batch(&self) -> usize {
        use crate::pipeline::brokers::BrokerKind as K;
        match &self.route.kind {
            K::Postgres(c) => c.batch,
            K::Nats(c) => c.batch,
            K::Amqp(c) => c.batch,
            K::Mqtt(c) => c.batch,
            K::Redis(c) => c.batch,
        }
    }

    /// Stores the events of `messages` (retrying while the log or a plugin
    /// is unavailable) and dead-letters those that cannot become events;
    /// returns every message's ack, or `None` when stopped first.
    async fn store<A: Send + 'static>(
        &self,
        messages: Vec<Message<A>>,
        stop: &CancellationToken,
    ) -> Option<Vec<A>> {
        let count = messages.len() as u64;
        let mut prepared = match self.prepare(messages, stop).await {
            Some(p) => p,
            None => return None,
        };
        let mut backoff = Backoff::new();
        loop {
            let live: Vec<usize> = (0..prepared.len())
                .filter(|&i| prepared[i].outcome.is_ok())
                .collect();
            if live.is_empty() {
                break;
            }
            match self.append(&prepared, &live).await {
                Ok(()) => break,
                Err(KeyedError::Message(i, error)) if !error.is_retryable() => {
                    prepared[live[i]].outcome = Err(error.to_string());
                }
                Err(KeyedError::Batch(error)) if !error.is_retryable() && live.len() > 1 => {
                    // Which message? Store them one by one.
                    for &i in &live {
                        loop {
                            match self.append(&prepared, &[i]).await {
                                Ok(()) => break,
                                Err(KeyedError::Message(_, e) | KeyedError::Batch(e))
                                    if !e.is_retryable() =>
                                {
                                    prepared[i].outcome = Err(e.to_string());
                                    break;
                                }
                                Err(e) => {
                                    self.status.failed(&e.to_string());
                                    if !pause(backoff.next(), stop).await {
                                        return None;
                                    }
                                }
                            }
                        }
                    }
                    // Each is stored or refused now: no retry of the batch.
                    break;
                }
                Err(KeyedError::Batch(error)) if !error.is_retryable() => {
                    prepared[live[0]].outcome = Err(error.to_string());
                }
                Err(e) => {
                    self.status.failed(&e.to_string());
                    tracing::warn!(source = %self.route.name, error = %e, "source events not stored; retrying");
                    if !pause(backoff.next(), stop).await {
                        return None;
                    }
                }
            }
        }
        let mut events = 0u64;
        for p in &prepared {
            match &p.outcome {
                Ok(e) => events += e.len() as u64,
                Err(reason) => {
                    if !self.dead_letter(p, reason, stop).await {
                        return None;
                    }
                }
            }
        }
        // Durable before acknowledged, whatever the `fsync` mode: an ack the
        // broker has for an event a crash then loses would lose it.
        let mut backoff = Backoff::new();
        while let Err(e) = self.ingest.sync().await {
            self.status.failed(&e.to_string());
            if !pause(backoff.next(), stop).await {
                return None;
            }
        }
        let acks = prepared.into_iter().map(|p| p.ack).collect();
        self.status.stored(count, events);
        Some(acks)
    }

    /// Appends the events of `prepared[which]` in one go.
    async fn append<A>(&self, prepared: &[Prepared<A>], which: &[usize]) -> Result<(), KeyedError> {
        let keyed: Vec<Keyed> = which
            .iter()
            .map(|&i| Keyed {
                key: prepared[i].key.clone(),
                events: prepared[i].outcome.as_ref().cloned().unwrap_or_default(),
            })
            .collect();
        let from = match &self.route.plugin {
            Some(p) => Producer::Source(p),
            None => Producer::Publisher,
        };
        self.ingest
            .ingest_keyed(from, keyed, &self.route.transforms)
            .await
            .map(|_| ())
    }

    /// Stores a dead letter for `p` (retrying while the log is away);
    /// false when stopped first. A dead letter the log refuses is logged
    /// and dropped: the message is acknowledged either way.
    async fn dead_letter<A>(
        &self,
        p: &Prepared<A>,
        reason: &str,
        stop: &CancellationToken,
    ) -> bool {
        self.status.dead(reason);
        tracing::warn!(source = %self.route.name, identity = ?p.identity, %reason, topic = %self.route.dead_letter, "message dead-lettered");
        let body = match std::str::from_utf8(&p.body) {
            Ok(text) => serde_json::json!(text),
            Err(_) => {
                use base64::Engine;
                serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(&p.body) })
            }
        };
        let data = serde_json::json!({
            "source": self.route.name,
            "identity": p.identity,
            "subject": p.subject,
            "reason": reason,
            "body": body,
        });
        let event = NewEvent {
            topic: self.route.dead_letter.clone(),
            kind: Some("dead-letter".into()),
            data: Data::Json(bytes::Bytes::from(data.to_string())),
            to: None,
            key: p.key.as_ref().map(|k| format!("{k}#dead")),
            extra: None,
        };
        let mut backoff = Backoff::new();
        loop {
            let keyed = vec![Keyed {
                key: event.key.clone(),
                events: vec![event.clone()],
            }];
            match self
                .ingest
                .ingest_keyed(Producer::Publisher, keyed, &[])
                .await
            {
                Ok(_) => return true,
                Err(KeyedError::Message(_, e) | KeyedError::Batch(e)) if !e.is_retryable() => {
                    tracing::error!(source = %self.route.name, error = %e, "dead letter refused; message dropped");
                    return true;
                }
                Err(e) => {
                    self.status.failed(&e.to_string());
                    if !pause(backoff.next(), stop).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Turns each message into events (through the plugin when there is
    /// one); `None` when stopped while the plugin was unavailable.
    async fn prepare<A: Send + 'static>(
        &self,
        messages: Vec<Message<A>>,
        stop: &CancellationToken,
    ) -> Option<Vec<Prepared<A>>> {
        let mut prepared: Vec<Prepared<A>> = messages
            .into_iter()
            .map(|m| {
                let identity = match &self.route.id_field {
                    Some(field) => field_of(&m.body, field),
                    None => m.identity,
                };
                let outcome = match (&self.route.id_field, &identity) {
                    (Some(field), None) => {
                        Err(format!("the body has no `{field}` (the source's id_field)"))
                    }
                    _ => Ok(Vec::new()),
                };
                Prepared {
                    key: identity
                        .as_ref()
                        .map(|id| format!("{}/{id}", self.route.name)),
                    identity,
                    subject: m.subject,
                    body: m.body,
                    meta: m.meta,
                    ack: m.ack,
                    outcome,
                }
            })
            .collect();
        if prepared
            .iter()
            .any(|p| p.key.is_none() && p.outcome.is_ok())
        {
            self.status
                .unkeyed(prepared.iter().filter(|p| p.key.is_none()).count() as u64);
        }
        match &self.route.plugin {
            None => {
                for p in &mut prepared {
                    if p.outcome.is_ok() {
                        p.outcome = self.plain(&p.body, p.subject.as_deref());
                    }
                }
            }
            Some(plugin) => {
                let inputs: Vec<Input> = prepared
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.outcome.is_ok())
                    .map(|(i, p)| {
                        let mut meta = p.meta.clone();
                        if let Some(s) = &p.subject {
                            meta.push(("subject".to_owned(), s.clone()));
                        }
                        if let Some(id) = &p.identity {
                            meta.push(("identity".to_owned(), id.clone()));
                        }
                        meta.push(("source".to_owned(), self.route.name.clone()));
                        (i, p.body.clone(), meta)
                    })
                    .collect();
                let mut backoff = Backoff::new();
                let results = loop {
                    let inputs = inputs.clone();
                    let called = plugin
                        .run(move |p| {
                            Ok(inputs
                                .into_iter()
                                .map(|(i, body, meta)| (i, p.on_input(&body, &meta)))
                                .collect::<Vec<_>>())
                        })
                        .await;
                    // Busy or its circuit open is not the messages' fault:
                    // the batch is mapped again after a pause.
                    let unavailable = |e: &CallError| {
                        matches!(e, CallError::Busy { .. } | CallError::CircuitOpen { .. })
                    };
                    match called {
                        Ok(results) => {
                            match results
                                .iter()
                                .find_map(|(_, r)| r.as_ref().err().filter(|e| unavailable(e)))
                            {
                                None => break results,
                                Some(e) => self.status.failed(&e.to_string()),
                            }
                        }
                        Err(e) => self.status.failed(&e.to_string()),
                    }
                    if !pause(backoff.next(), stop).await {
                        return None;
                    }
                };
                for (i, result) in results {
                    prepared[i].outcome = match result {
                        Ok(Ok(returned)) => Ok(returned.into_iter().map(|r| r.event).collect()),
                        Ok(Err(denial)) => Err(format!(
                            "refused by plugin `{}`: {}",
                            plugin.name(),
                            denial.reason
                        )),
                        Err(e) => Err(e.to_string()),
                    };
                }
            }
        }
        Some(prepared)
    }

    /// A message without a plugin: a `/publish` JSON body as is, else the
    /// body as data for the `topic` template.
    fn plain(&self, body: &[u8], subject: Option<&str>) -> Result<Vec<NewEvent>, String> {
        let refused = match parse_body(BodyFormat::Json, body, self.max_event) {
            Ok(events) => return Ok(events),
            Err(e) => e,
        };
        let Some(template) = &self.route.topic else {
            return Err(format!(
                "not a /publish event ({refused}) and the source has no `topic`"
            ));
        };
        let topic = if template.contains("{subject}") {
            let Some(subject) = subject else {
                return Err("the message has no subject for the `topic` template".into());
            };
            let subject = if self.route.kind.dotted_subjects() {
                subject.replace('.', "/")
            } else {
                subject.to_owned()
            };
            template.replace("{subject}", &subject)
        } else {
            template.clone()
        };
        crate::topic::validate_topic(&topic)
            .map_err(|e| format!("topic {topic:?} (from the subject): {e}"))?;
        let data = match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(v) => Data::Json(bytes::Bytes::from(v.to_string())),
            Err(_) => match std::str::from_utf8(body) {
                Ok(text) => Data::Text(text.to_owned()),
                Err(_) => return Err("the body is not UTF-8 text".into()),
            },
        };
        if data.len() > self.max_event {
            return Err(format!(
                "data is {} bytes, over the limit of {}",
                data.len(),
                self.max_event
            ));
        }
        Ok(vec![NewEvent {
            topic,
            kind: None,
            data,
            to: None,
            key: None,
            extra: None,
        }])
    }
}

/// The dotted field `path` of a JSON body as text (strings as is, numbers
/// as written); `None` when absent or not a scalar.
fn field_of(body: &[u8], path: &str) -> Option<String> {
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    for part in path.split('.') {
        v = v.get_mut(part)?.take();
    }
    match v {
        serde_json::Value::String(s) if !s.is_empty() => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
