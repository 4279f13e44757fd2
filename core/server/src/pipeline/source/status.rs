//! What a broker source is doing, for `/stats` and the `spout_source_*`
//! metrics: its state, last error, messages, dead letters and lag.

use crate::event::now_ms;
use metrics::{Counter, Gauge};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// One source's figures; shared by its relay task and `/stats`.
pub struct SourceStatus {
    name: String,
    kind: &'static str,
    inner: Mutex<Inner>,
    messages: AtomicU64,
    events: AtomicU64,
    dead: AtomicU64,
    errors: AtomicU64,
    unkeyed: AtomicU64,
    m_messages: Counter,
    m_events: Counter,
    m_dead: Counter,
    m_errors: Counter,
    m_connected: Gauge,
    m_lag: Gauge,
}

#[derive(Default)]
struct Inner {
    state: &'static str,
    last_error: Option<(String, u64)>,
    last_dead: Option<String>,
    lag: Option<u64>,
}

impl SourceStatus {
    /// Figures for source `name` of `kind` (`postgres`, `nats`, …).
    pub fn new(name: &str, kind: &'static str) -> SourceStatus {
        let labels = [("source", name.to_owned())];
        SourceStatus {
            name: name.to_owned(),
            kind,
            inner: Mutex::new(Inner {
                state: "starting",
                ..Inner::default()
            }),
            messages: AtomicU64::new(0),
            events: AtomicU64::new(0),
            dead: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            unkeyed: AtomicU64::new(0),
            m_messages: metrics::counter!("spout_source_messages_total", &labels),
            m_events: metrics::counter!("spout_source_events_total", &labels),
            m_dead: metrics::counter!("spout_source_dead_letters_total", &labels),
            m_errors: metrics::counter!("spout_source_errors_total", &labels),
            m_connected: metrics::gauge!("spout_source_connected", &labels),
            m_lag: metrics::gauge!("spout_source_lag", &labels),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `connecting`, `connected`, `stopped`, …
    pub fn set_state(&self, state: &'static str) {
        self.inner().state = state;
        self.m_connected
            .set(if state == "connected" { 1.0 } else { 0.0 });
    }

    /// Records a failure (connect, fetch, ack, store); the state says
    /// whether the connection is still up.
    pub fn failed(&self, error: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.m_errors.increment(1);
        self.inner().last_error = Some((error.to_owned(), now_ms()));
    }

    /// Messages acknowledged after their events (this many) were stored.
    pub fn stored(&self, messages: u64, events: u64) {
        self.messages.fetch_add(messages, Ordering::Relaxed);
        self.events.fetch_add(events, Ordering::Relaxed);
        self.m_messages.increment(messages);
        self.m_events.increment(events);
    }

    /// A message went to the dead-letter topic for `reason`.
    pub fn dead(&self, reason: &str) {
        self.dead.fetch_add(1, Ordering::Relaxed);
        self.m_dead.increment(1);
        self.inner().last_dead = Some(reason.to_owned());
    }

    /// Messages without an identity (stored at least once, not exactly once).
    pub fn unkeyed(&self, n: u64) {
        self.unkeyed.fetch_add(n, Ordering::Relaxed);
    }

    /// The broker's count of messages waiting, where it tells.
    pub fn set_lag(&self, lag: Option<u64>) {
        self.inner().lag = lag;
        if let Some(l) = lag {
            self.m_lag.set(l as f64);
        }
    }

    /// The `/stats` entry.
    pub fn to_json(&self) -> serde_json::Value {
        let inner = self.inner();
        serde_json::json!({
            "name": self.name,
            "kind": self.kind,
            "state": inner.state,
            "connected": inner.state == "connected",
            "messages": self.messages.load(Ordering::Relaxed),
            "events": self.events.load(Ordering::Relaxed),
            "dead_letters": self.dead.load(Ordering::Relaxed),
            "last_dead_letter": inner.last_dead,
            "errors": self.errors.load(Ordering::Relaxed),
            "last_error": inner.last_error.as_ref().map(|(e, _)| e),
            "last_error_at_ms": inner.last_error.as_ref().map(|(_, at)| at),
            "unkeyed": self.unkeyed.load(Ordering::Relaxed),
            "lag": inner.lag,
        })
    }
}
