//! One subscriber as the hub sees it (its queue's sending end, its flags)
//! and the [`Subscription`] its stream holds (the receiving end; dropping it
//! leaves the hub).

use super::{Hub, Item};
use crate::event::{now_ms, Event};
use crate::filter::FilterGroup;
use crate::plugin::bindings::types::Request as PluginRequest;
use crate::queue;
use crate::topic::Selector;
use crate::visibility::{Admission, Audience, Facts};
use metrics::Counter;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use tokio_util::sync::CancellationToken;

/// One subscriber as the hub sees it.
pub struct Subscriber {
    /// Connection id shown in the `connected` frame.
    pub conn_id: Arc<str>,
    /// The user events with `to` are matched against.
    pub user: Option<Box<str>>,
    /// What this subscriber receives; `POST /connections/{id}/topics`
    /// changes it (under the hub's routes lock, which is taken first).
    pub(super) selectors: RwLock<Vec<Selector>>,
    /// Whether it has more than one selector (read on every offer).
    pub(super) multi: AtomicBool,
    pub(super) key: u64,
    pub(super) tx: queue::Sender<Item>,
    /// Set by the hub when an event could not be queued; cleared by the stream
    /// when it starts catching up.
    pub(super) lagged: AtomicBool,
    /// When `lagged` was last raised (ms since epoch), 0 when handled.
    pub(super) lagged_since: AtomicU64,
    /// Set at shutdown: the stream sends `event: shutdown` and ends.
    pub(super) closing: AtomicBool,
    /// Highest id queued, to queue an event once when several selectors match.
    pub(super) last_offered: AtomicU64,
    pub(super) kill: CancellationToken,
    /// The stream route the subscriber came in on.
    pub route: Arc<str>,
    /// Its filter group (shared with equal subscription keys).
    pub filter: Option<Arc<FilterGroup>>,
    /// The request its auth plugin accepted.
    pub auth: Option<Arc<PluginRequest>>,
    /// Its protocol's own admission rule, if any (see [`super::SubscribeSpec`]).
    pub admission: Option<Arc<dyn Admission>>,
    /// Set when the stream must end early: `(event name, reason)` —
    /// `revoked` (a reloaded pipeline no longer admits it) or `replaced`
    /// (its user opened one stream more than allowed).
    pub(super) ended: OnceLock<(&'static str, String)>,
    /// Its route tracks presence (see [`super::SubscribeSpec::presence`]).
    pub presence: bool,
    /// When it subscribed, ms since the epoch.
    pub since_ms: u64,
}

impl Subscriber {
    /// Whether this subscriber may see an event the hub's index matched to
    /// it (the one rule of [`crate::visibility`]).
    pub(super) fn may_see(&self, facts: &Facts<'_>) -> bool {
        Audience {
            selectors: &[],
            user: self.user.as_deref(),
            admission: self.admission.as_ref(),
        }
        .admits_matched(facts)
    }

    /// Flags the subscriber as behind: its stream catches up from the log.
    pub(super) fn fall_behind(&self, lagged: &Counter) {
        if !self.lagged.swap(true, Ordering::AcqRel) {
            self.lagged_since.store(now_ms(), Ordering::Release);
            lagged.increment(1);
        }
    }

    /// Queues `ev` if this subscriber may see it; returns whether it was queued.
    pub(super) fn offer(&self, ev: &Arc<Event>, facts: &Facts<'_>, lagged: &Counter) -> bool {
        // Several selectors (or topics) may lead here for one event: it is
        // looked at once (the verdict would be the same).
        if self.multi.load(Ordering::Relaxed) {
            if ev.id <= self.last_offered.load(Ordering::Relaxed) {
                return false;
            }
            self.last_offered.store(ev.id, Ordering::Relaxed);
        }
        if !self.may_see(facts) {
            return false;
        }
        match self.tx.try_send(Item::Event(ev.clone())) {
            Ok(()) => true,
            Err(queue::TrySendError::Full(_)) => {
                self.fall_behind(lagged);
                false
            }
            Err(queue::TrySendError::Closed(_)) => false,
        }
    }

    /// Its topic selectors right now.
    pub fn selectors(&self) -> Vec<Selector> {
        self.selectors
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes the lagged flag: true means events were dropped from the queue
    /// and the stream must catch up from the log.
    pub fn take_lagged(&self) -> bool {
        if self.lagged.swap(false, Ordering::AcqRel) {
            self.lagged_since.store(0, Ordering::Release);
            true
        } else {
            false
        }
    }

    /// Whether the server is shutting down this subscriber.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Ends the stream with `event: revoked` (the pipeline no longer admits it).
    pub fn revoke(&self, reason: String) {
        self.end("revoked", reason);
    }

    pub(super) fn end(&self, event: &'static str, reason: String) {
        if self.ended.set((event, reason)).is_ok() {
            let _ = self.tx.try_send(Item::Wake);
        }
    }

    /// The control event the stream must end with, and why, if any.
    pub fn ended(&self) -> Option<(&'static str, &str)> {
        self.ended.get().map(|(e, r)| (*e, r.as_str()))
    }
}

/// A live subscription: the queue's receiving end. Dropping it (the client
/// went away) removes the subscriber from the hub at once.
pub struct Subscription {
    /// The hub's view of this subscriber.
    pub subscriber: Arc<Subscriber>,
    /// Events and frames queued for this subscriber.
    pub rx: queue::Receiver<Item>,
    pub(super) hub: Hub,
}

impl Subscription {
    /// Counts this stream being closed with `event: overflow`.
    pub fn count_overflow(&self) {
        self.hub.count_overflow();
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.remove(&self.subscriber);
    }
}
