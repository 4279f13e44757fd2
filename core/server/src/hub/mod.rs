//! In-memory fan-out of committed events to subscribers, and nothing else.
//!
//! The log's appender thread calls [`Hub::fan_out`] with each committed batch,
//! in id order. Subscribers are indexed by exact topic and by pattern, so an
//! event costs one lookup plus one queue push per interested subscriber; the
//! event's SSE frame was rendered once and is shared by reference count.
//!
//! Each subscriber has a bounded queue. When it is full the event is not
//! queued: the subscriber is flagged as lagged and its stream (see
//! [`crate::stream`]) catches up from the log, so a slow client never slows
//! the publisher or other clients and never silently loses an event.
//!
//! Filters run once per committed batch per filter group (subscription
//! key), not once per subscriber, and never on the fan-out thread nor under
//! the routes lock: the fan-out thread hands each route's filtered
//! subscribers to that route's own filter lane (a thread), so a filter that
//! spins to its deadline delays only its own route, and unfiltered
//! subscribers and new subscriptions never wait for any filter.
//!
//! One ticker serves every connection: it queues heartbeats and closes
//! connections that stayed lagged without even reading (see [`Hub::tick`]).

mod lanes;
mod presence;
mod routes;
mod subscriber;

pub use presence::{ConnectionInfo, Disconnect, PresenceChange, PresenceHook, TopicInfo};
pub use subscriber::{Subscriber, Subscription};

use crate::event::{now_ms, Event};
use crate::filter::FilterGroup;
use crate::limits::{PerUser, PerUserVerdict};
use crate::metrics::TopicMetrics;
use crate::plugin::bindings::types::Request as PluginRequest;
use crate::queue;
use crate::topic::Selector;
use crate::visibility::{Admission, Facts};
use lanes::Lanes;
use metrics::{Counter, Gauge};
use routes::Routes;
use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What a subscriber's queue carries.
#[derive(Debug, Clone)]
pub enum Item {
    /// A committed event.
    Event(Arc<Event>),
    /// Time for a `:` heartbeat comment.
    Heartbeat,
    /// Nothing to write; wakes the stream so it notices a flag (shutdown).
    Wake,
    /// A rendered frame without an id (`event: join` / `event: leave`).
    Control(bytes::Bytes),
}

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// `max_connections` streams are already open.
    #[error("the server holds its maximum of {0} connections")]
    Full(usize),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    Closing,
    /// The user already holds `per_user_connections` streams.
    #[error("user already holds its maximum of {0} connections")]
    UserFull(usize),
}

/// What a new subscription asks for.
#[derive(Debug, Clone)]
pub struct SubscribeSpec {
    /// Topics and patterns to receive.
    pub selectors: Vec<Selector>,
    /// The authenticated user, which events addressed with `to` must match.
    pub user: Option<String>,
    /// Cancels the whole connection; fired when the subscriber stays lagged
    /// without reading.
    pub kill: CancellationToken,
    /// The stream route the subscriber came in on.
    pub route: Arc<str>,
    /// The filters its subscription key runs, if the route has any.
    pub filter: Option<Arc<FilterGroup>>,
    /// The request as the route's auth plugin saw it, kept to re-check the
    /// subscriber when the pipeline is reloaded.
    pub auth: Option<Arc<PluginRequest>>,
    /// A protocol's own admission rule (a Mercure subscription's topic
    /// selectors and claims), which decides what it receives instead of
    /// `selectors` (then empty).
    pub admission: Option<Arc<dyn Admission>>,
    /// Its route tracks presence: it is listed by `/api/presence`, and its
    /// joining and leaving is announced to the route's other subscribers.
    pub presence: bool,
}

/// Live counts for `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct HubStats {
    /// Open SSE streams.
    pub connections: usize,
    /// Most streams open at once since start.
    pub peak_connections: usize,
    /// Distinct users among open streams.
    pub users: usize,
    /// Distinct topics and patterns subscribed to.
    pub topics: usize,
    /// Open subscriptions with a protocol's own admission rule (Mercure's),
    /// included in `connections`.
    pub admitted: usize,
    /// Events fanned out since start.
    pub events: u64,
}

struct Inner {
    routes: RwLock<Routes>,
    next_key: AtomicU64,
    /// Distinguishes connection ids across restarts.
    conn_prefix: String,
    count: AtomicUsize,
    peak: AtomicUsize,
    events: std::sync::atomic::AtomicU64,
    /// Woken after every fan-out (long polls wait on it).
    appended: tokio::sync::Notify,
    max_connections: usize,
    queue: usize,
    /// Streams one user may hold (0 = unlimited), and what happens past it.
    /// Streams one user may hold, and what happens past it.
    per_user: PerUser,
    replaced: Counter,
    closing: AtomicBool,
    topics: Arc<Mutex<TopicMetrics>>,
    connections: Gauge,
    connections_total: Counter,
    lagged: Counter,
    overflow: Counter,
    /// One filter lane per stream route with filters, started on first use.
    lanes: Lanes,
    /// Cluster mode: passes presence changes on to the other nodes.
    presence_hook: OnceLock<PresenceHook>,
}

/// Filtered subscribers with their matched events, grouped by filter group.
fn by_group(subs: impl Iterator<Item = (Arc<Subscriber>, Vec<u32>)>) -> Vec<lanes::GroupWork> {
    // Fx, not SipHash: a pointer per filtered subscriber per batch (10,000
    // distinct filter keys are 10,000 lookups per batch), none chosen by a
    // client.
    let mut groups: FxHashMap<*const FilterGroup, lanes::GroupWork> = FxHashMap::default();
    for (s, ix) in subs {
        let Some(g) = &s.filter else { continue };
        groups
            .entry(Arc::as_ptr(g))
            .or_insert_with(|| (g.clone(), Vec::new()))
            .1
            .push((s.clone(), ix));
    }
    groups.into_values().collect()
}

/// The fan-out hub; clones share it.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl Hub {
    /// A hub that admits `max_connections` subscribers with `queue` slots each.
    pub fn new(max_connections: usize, queue: usize) -> Hub {
        let topics = Arc::new(Mutex::new(TopicMetrics::default()));
        let lagged = metrics::counter!("spout_subscribers_lagged_total");
        Hub {
            inner: Arc::new(Inner {
                routes: RwLock::new(Routes::default()),
                next_key: AtomicU64::new(1),
                conn_prefix: format!("{:x}", now_ms()),
                count: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
                events: std::sync::atomic::AtomicU64::new(0),
                appended: tokio::sync::Notify::new(),
                max_connections,
                queue,
                per_user: PerUser::default(),
                replaced: metrics::counter!("spout_limit_rejections_total", "limit" => "per_user_replaced"),
                closing: AtomicBool::new(false),
                lanes: Lanes::new(topics.clone(), lagged.clone()),
                topics,
                connections: metrics::gauge!("spout_connections"),
                connections_total: metrics::counter!("spout_connections_total"),
                lagged,
                overflow: metrics::counter!("spout_subscribers_overflow_total"),
                presence_hook: OnceLock::new(),
            }),
        }
    }

    /// Limits the streams one user may hold at once (see [`PerUser`]).
    pub fn with_user_limit(mut self, per_user: PerUser) -> Hub {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.per_user = per_user;
        }
        self
    }

    /// Registers a subscriber; events committed from now on are queued for it.
    pub fn subscribe(&self, spec: SubscribeSpec) -> Result<Subscription, HubError> {
        let inner = &self.inner;
        if inner.closing.load(Ordering::Acquire) {
            return Err(HubError::Closing);
        }
        if let Some(user) = &spec.user {
            let routes = read(&inner.routes);
            let keys = routes.users.get(user.as_str()).map_or(&[][..], |k| &k[..]);
            match inner.per_user.check(keys.len()) {
                PerUserVerdict::Admit => {}
                PerUserVerdict::Refuse => return Err(HubError::UserFull(inner.per_user.max)),
                PerUserVerdict::ReplaceOldest(n) => {
                    // The oldest streams end; they leave the hub when their
                    // connections close.
                    for key in &keys[..n] {
                        if let Some(old) = routes.all.get(key) {
                            if old.ended().is_none() {
                                inner.replaced.increment(1);
                            }
                            old.end(
                                "replaced",
                                format!("user `{user}` opened a newer connection"),
                            );
                        }
                    }
                }
            }
        }
        let n = inner.count.fetch_add(1, Ordering::AcqRel) + 1;
        if n > inner.max_connections {
            inner.count.fetch_sub(1, Ordering::AcqRel);
            return Err(HubError::Full(inner.max_connections));
        }
        inner.peak.fetch_max(n, Ordering::Relaxed);
        let key = inner.next_key.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = queue::channel(inner.queue);
        let subscriber = Arc::new(Subscriber {
            // The random tail makes ids unguessable: an id is what
            // `POST /connections/{id}/topics` acts on.
            conn_id: format!(
                "{}-{key:x}-{:016x}",
                inner.conn_prefix,
                uuid::Uuid::new_v4().as_u64_pair().0
            )
            .into(),
            user: spec.user.map(String::into_boxed_str),
            multi: AtomicBool::new(spec.selectors.len() > 1),
            selectors: RwLock::new(spec.selectors),
            key,
            tx,
            lagged: AtomicBool::new(false),
            lagged_since: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            last_offered: AtomicU64::new(0),
            kill: spec.kill,
            route: spec.route,
            filter: spec.filter,
            auth: spec.auth,
            admission: spec.admission,
            ended: OnceLock::new(),
            presence: spec.presence,
            since_ms: now_ms(),
        });
        write(&inner.routes).insert(&subscriber);
        inner.connections.set(n as f64);
        inner.connections_total.increment(1);
        if subscriber.presence {
            self.announce_own(&subscriber, "join");
        }
        Ok(Subscription {
            subscriber,
            rx,
            hub: self.clone(),
        })
    }

    fn remove(&self, sub: &Arc<Subscriber>) {
        let inner = &self.inner;
        write(&inner.routes).remove(sub);
        let n = inner.count.fetch_sub(1, Ordering::AcqRel) - 1;
        inner.connections.set(n as f64);
        if sub.presence {
            self.announce_own(sub, "leave");
        }
    }

    /// Queues each event for every subscriber whose selectors match it.
    /// Called by the log's fan-out thread with each committed batch, in id
    /// order; never blocks on a subscriber and never runs a filter: the
    /// subscribers of filtered routes are handed to their route's lane.
    pub fn fan_out(&self, events: &[Arc<Event>]) {
        let inner = &self.inner;
        inner
            .events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        // Per filtered subscriber (one lookup per matched event): the
        // events it matched. Grouped by filter group once, after the loop.
        // Keyed by the hub's own subscriber numbers (Fx: see `by_group`).
        let mut filtered: FxHashMap<u64, (Arc<Subscriber>, Vec<u32>)> = FxHashMap::default();
        {
            let routes = read(&inner.routes);
            let mut topics = inner.topics.lock().unwrap_or_else(|e| e.into_inner());
            for (i, ev) in events.iter().enumerate() {
                let facts = Facts::of_event(ev);
                let mut delivered = 0u64;
                let mut offer = |s: &Arc<Subscriber>| match &s.filter {
                    Some(_) => {
                        if !s.may_see(&facts) {
                            return;
                        }
                        let (_, ix) = filtered
                            .entry(s.key)
                            .or_insert_with(|| (s.clone(), Vec::new()));
                        // Several selectors may match one event: once.
                        if ix.last() != Some(&(i as u32)) {
                            ix.push(i as u32);
                        }
                    }
                    None => delivered += u64::from(s.offer(ev, &facts, &inner.lagged)),
                };
                if let Some(list) = routes.exact.get(&*ev.topic) {
                    list.iter().for_each(&mut offer);
                }
                routes.patterns_of(&ev.topic, |list| list.iter().for_each(&mut offer));
                if !routes.any_topic.is_empty() {
                    for t in facts.topics() {
                        if let Some(list) = routes.any_topic.get(t) {
                            list.iter().for_each(&mut offer);
                        }
                    }
                }
                routes.everything.values().for_each(&mut offer);
                let m = topics.get(&ev.topic);
                m.published.increment(1);
                m.delivered.increment(delivered);
                m.count += 1;
                m.last_id = ev.id;
            }
        }
        if !filtered.is_empty() {
            inner
                .lanes
                .dispatch(events, by_group(filtered.into_values()).into_iter());
        }
        inner.appended.notify_waiters();
    }

    /// The open subscriber with connection id `conn_id`.
    pub fn find(&self, conn_id: &str) -> Option<Arc<Subscriber>> {
        let key = conn_id
            .rsplit('-')
            .nth(1)
            .and_then(|k| u64::from_str_radix(k, 16).ok())?;
        let routes = read(&self.inner.routes);
        routes
            .all
            .get(&key)
            .filter(|s| &*s.conn_id == conn_id)
            .cloned()
    }

    /// Adds and removes selectors of a live subscriber; events committed
    /// from now on follow the new list, which is returned.
    pub fn change_topics(
        &self,
        sub: &Arc<Subscriber>,
        add: &[Selector],
        remove: &[Selector],
    ) -> Vec<Selector> {
        let mut routes = write(&self.inner.routes);
        let mut sels = sub.selectors.write().unwrap_or_else(|e| e.into_inner());
        for sel in remove {
            if let Some(i) = sels.iter().position(|s| s == sel) {
                sels.remove(i);
                routes.drop_selector(sel, sub.key);
            }
        }
        for sel in add {
            if !sels.contains(sel) {
                sels.push(sel.clone());
                routes.add(sel, sub);
            }
        }
        sub.multi.store(sels.len() > 1, Ordering::Relaxed);
        sels.clone()
    }

    /// Every open subscriber with its own admission rule (the Mercure
    /// subscriptions API finds its own among them).
    pub fn admitted_subscribers(&self) -> Vec<Arc<Subscriber>> {
        read(&self.inner.routes)
            .all
            .values()
            .filter(|s| s.admission.is_some())
            .cloned()
            .collect()
    }

    /// Every open subscriber (for re-checking them after a reload).
    pub fn subscribers(&self) -> Vec<Arc<Subscriber>> {
        read(&self.inner.routes).all.values().cloned().collect()
    }

    /// Queues a heartbeat for every subscriber, and cancels the
    /// connection of any subscriber that has been lagged for longer than
    /// `stuck_after` without its stream noticing — a client that stopped
    /// reading altogether. Called by one ticker for all connections.
    pub fn tick(&self, stuck_after: Duration) {
        let now = now_ms();
        let stuck_ms = stuck_after.as_millis() as u64;
        let routes = read(&self.inner.routes);
        for s in routes.all.values() {
            let _ = s.tx.try_send(Item::Heartbeat);
            let since = s.lagged_since.load(Ordering::Acquire);
            if since != 0 && now.saturating_sub(since) > stuck_ms && !s.kill.is_cancelled() {
                tracing::info!(connection = %s.conn_id, "closing a subscriber that stopped reading");
                self.inner.overflow.increment(1);
                s.kill.cancel();
            }
        }
    }

    fn count_overflow(&self) {
        self.inner.overflow.increment(1);
    }

    /// Stops admitting subscribers and tells every stream to send
    /// `event: shutdown` and end.
    pub fn close_all(&self) {
        self.inner.closing.store(true, Ordering::Release);
        let routes = read(&self.inner.routes);
        for s in routes.all.values() {
            s.closing.store(true, Ordering::Release);
            // Wakes the stream; if the queue is full the stream is busy and
            // sees the flag on its next poll.
            let _ = s.tx.try_send(Item::Wake);
        }
        // Long polls answer now instead of at their deadline.
        self.inner.appended.notify_waiters();
    }

    /// Resolves after the next fan-out: a long poll enables it, looks at
    /// the log, then waits, so an event in between is not missed.
    pub fn appended(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.appended.notified()
    }

    /// Current counts.
    pub fn stats(&self) -> HubStats {
        let routes = read(&self.inner.routes);
        HubStats {
            connections: self.inner.count.load(Ordering::Acquire),
            peak_connections: self.inner.peak.load(Ordering::Relaxed),
            users: routes.users.len(),
            topics: routes.exact.len() + routes.patterns.len(),
            admitted: routes.admitted,
            events: self.inner.events.load(Ordering::Relaxed),
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Data, NewEvent};
    use crate::visibility::Index;

    fn event(id: u64, topic: &str, to: Option<&str>) -> Arc<Event> {
        Arc::new(Event::new(
            id,
            0,
            NewEvent {
                topic: topic.into(),
                kind: None,
                data: Data::Text(id.to_string()),
                to: to.map(Into::into),
                key: None,
                extra: None,
            },
        ))
    }

    fn spec(sels: &[&str], user: Option<&str>) -> SubscribeSpec {
        SubscribeSpec {
            selectors: sels.iter().map(|s| Selector::parse(s).unwrap()).collect(),
            user: user.map(Into::into),
            kill: CancellationToken::new(),
            route: "/events".into(),
            filter: None,
            auth: None,
            admission: None,
            presence: false,
        }
    }

    fn drain(sub: &mut Subscription) -> Vec<u64> {
        let mut ids = Vec::new();
        while let Some(item) = sub.rx.try_recv() {
            if let Item::Event(e) = item {
                ids.push(e.id);
            }
        }
        ids
    }

    #[test]
    fn routes_by_topic_pattern_and_user() {
        let hub = Hub::new(10, 16);
        let mut exact = hub.subscribe(spec(&["orders"], None)).unwrap();
        let mut both = hub
            .subscribe(spec(&["orders/*", "orders/**"], None))
            .unwrap();
        let mut bob = hub.subscribe(spec(&["orders"], Some("bob"))).unwrap();
        hub.fan_out(&[
            event(1, "orders", None),
            event(2, "orders/1", None),
            event(3, "orders/1/2", None),
            event(4, "orders", Some("bob")),
            event(5, "other", None),
        ]);
        assert_eq!(drain(&mut exact), [1]);
        assert_eq!(drain(&mut both), [2, 3]);
        assert_eq!(drain(&mut bob), [1, 4]);
        assert_eq!(hub.stats().users, 1);
        assert_eq!(hub.stats().topics, 3);
    }

    #[test]
    fn patterns_are_found_by_their_literal_prefix_whatever_their_shape() {
        let hub = Hub::new(2000, 16);
        let mut subs: Vec<(&str, Subscription)> =
            ["**", "*/x", "a/*/c", "a/b/**", "a/b/*", "u/1/**"]
                .into_iter()
                .map(|p| (p, hub.subscribe(spec(&[p], None)).unwrap()))
                .collect();
        // 1,000 per-user patterns that match none of the events.
        let _others: Vec<Subscription> = (0..1000)
            .map(|i| {
                hub.subscribe(spec(&[&format!("u/{}/**", i + 2)], None))
                    .unwrap()
            })
            .collect();
        hub.fan_out(&[
            event(1, "a/x", None),
            event(2, "a/b/c", None),
            event(3, "a/b/c/d", None),
            event(4, "u/1/inbox", None),
            event(5, "u", None),
        ]);
        let got: Vec<(&str, Vec<u64>)> = subs.iter_mut().map(|(p, s)| (*p, drain(s))).collect();
        assert_eq!(
            got,
            [
                ("**", vec![1, 2, 3, 4, 5]),
                ("*/x", vec![1]),
                ("a/*/c", vec![2]),
                ("a/b/**", vec![2, 3]),
                ("a/b/*", vec![2]),
                ("u/1/**", vec![4]),
            ]
        );
        // Leaving drops a pattern from the prefix index too.
        drop(subs);
        drop(_others);
        let routes = read(&hub.inner.routes);
        assert!(routes.patterns.is_empty() && routes.by_prefix.is_empty());
    }

    /// An admission rule that counts how often the hub asks it.
    #[derive(Debug)]
    struct Counting {
        index: Index,
        asked: AtomicUsize,
    }

    impl Admission for Counting {
        fn admits(&self, e: &Facts<'_>, _user: Option<&str>) -> bool {
            self.asked.fetch_add(1, Ordering::Relaxed);
            e.topics().any(|t| t.starts_with('x'))
        }
        fn index(&self) -> Index {
            self.index.clone()
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    fn with_rule(index: Index) -> (SubscribeSpec, Arc<Counting>) {
        let rule = Arc::new(Counting {
            index,
            asked: AtomicUsize::new(0),
        });
        let mut s = spec(&[], None);
        s.admission = Some(rule.clone());
        (s, rule)
    }

    fn with_also(id: u64, topic: &str, also: &[&str]) -> Arc<Event> {
        Arc::new(Event::new(
            id,
            0,
            NewEvent {
                topic: topic.into(),
                kind: None,
                data: Data::Text(String::new()),
                to: None,
                key: None,
                extra: Some(Box::new(crate::event::Extra {
                    also: also.iter().map(|t| Box::from(*t)).collect(),
                    ..Default::default()
                })),
            },
        ))
    }

    #[test]
    fn own_rule_subscribers_on_exact_topics_are_indexed_not_scanned() {
        let hub = Hub::new(2000, 16);
        // 1,000 subscribers each on a topic of its own, one on `x1`, one
        // that no index can narrow.
        let mut others = Vec::new();
        for i in 0..1000 {
            let (s, rule) = with_rule(Index::Topics(vec![format!("other/{i}").into()]));
            others.push((hub.subscribe(s).unwrap(), rule));
        }
        let (s, x1) = with_rule(Index::Topics(vec!["x1".into(), "x2".into()]));
        let mut x1_sub = hub.subscribe(s).unwrap();
        let (s, all) = with_rule(Index::Everything);
        let mut all_sub = hub.subscribe(s).unwrap();
        hub.fan_out(&[
            with_also(1, "y", &["x1"]),
            with_also(2, "x1", &["x2"]),
            with_also(3, "z", &[]),
        ]);
        assert_eq!(
            drain(&mut x1_sub),
            [1, 2],
            "once per event, by any of its topics"
        );
        assert_eq!(drain(&mut all_sub), [1, 2]);
        assert_eq!(
            all.asked.load(Ordering::Relaxed),
            3,
            "the scanned one is asked per event"
        );
        assert_eq!(
            x1.asked.load(Ordering::Relaxed),
            2,
            "the indexed one only for its topics"
        );
        assert!(
            others
                .iter()
                .all(|(_, r)| r.asked.load(Ordering::Relaxed) == 0),
            "subscribers of other topics are never looked at"
        );
        assert_eq!(hub.stats().admitted, 1002);
        drop(others);
        assert_eq!(hub.stats().admitted, 2);
    }

    #[test]
    fn full_queue_flags_lag_and_drop_unregisters() {
        let hub = Hub::new(2, 2);
        let mut sub = hub.subscribe(spec(&["t"], None)).unwrap();
        hub.fan_out(&[
            event(1, "t", None),
            event(2, "t", None),
            event(3, "t", None),
        ]);
        assert!(sub.subscriber.take_lagged());
        assert!(!sub.subscriber.take_lagged());
        assert_eq!(drain(&mut sub), [1, 2]);
        let _second = hub.subscribe(spec(&["t"], None)).unwrap();
        assert_eq!(
            hub.subscribe(spec(&["t"], None)).err(),
            Some(HubError::Full(2))
        );
        drop(sub);
        assert_eq!(hub.stats().connections, 1);
        assert_eq!(hub.stats().peak_connections, 2);
        hub.close_all();
        assert_eq!(
            hub.subscribe(spec(&["t"], None)).err(),
            Some(HubError::Closing)
        );
    }
}
