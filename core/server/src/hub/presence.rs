//! What the operator API asks the hub: which topics have subscribers, who
//! receives a topic (presence), and throwing streams out (disconnect). Also
//! the `event: join` / `event: leave` frames of routes with `presence = true`.
//!
//! Each answer covers this node; [`crate::cluster`] gathers every node's.
//! Listing walks the subscriber index under its read lock: an operator's
//! call, never the publish path.

use super::{read, Hub, Item, Subscriber};
use crate::sse;
use crate::topic::Selector;
use bytes::Bytes;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// One topic (or pattern) with open subscribers on this node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopicInfo {
    /// The topic or pattern subscribers named.
    pub topic: String,
    /// Whether it is a pattern (`*`, `**`).
    pub pattern: bool,
    /// Open streams subscribed to it.
    pub subscribers: u64,
    /// Distinct users among them (anonymous streams not counted).
    pub users: u64,
    /// Events on this exact topic fanned out since the node started.
    pub events: u64,
    /// The last of them (0: none seen).
    pub last_id: u64,
}

/// One open stream as `/api/presence` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConnectionInfo {
    /// The connection id of its `connected` frame.
    pub connection: String,
    /// Its user, if authenticated.
    pub user: Option<String>,
    /// The stream route it came in on.
    pub route: String,
    /// When it subscribed, ms since the epoch.
    pub since: u64,
    /// The node holding it.
    pub node: String,
    /// What it subscribed to.
    pub topics: Vec<String>,
}

/// Which streams a disconnect ends.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Disconnect {
    /// Every stream of this user.
    User(String),
    /// The stream with this connection id.
    Connection(String),
}

/// A join or leave on a presence route, passed to the other nodes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PresenceChange {
    /// The route it happened on.
    pub route: String,
    /// The exact topic it concerns.
    pub topic: String,
    /// `join` or `leave`.
    pub event: String,
    /// The frame's data (JSON text).
    pub data: String,
}

/// Called with every local presence change (cluster mode sends it on).
pub type PresenceHook = Arc<dyn Fn(&PresenceChange) + Send + Sync>;

impl Hub {
    /// Topics and patterns with open subscribers on this node, sorted, with
    /// their counts; `only` keeps those a selector covers.
    pub fn topics(&self, only: Option<&Selector>) -> Vec<TopicInfo> {
        let routes = read(&self.inner.routes);
        let seen = self.inner.topics.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: BTreeMap<String, TopicInfo> = BTreeMap::new();
        let mut add = |topic: &str, pattern: bool, subs: &[Arc<Subscriber>]| {
            if only.is_some_and(|sel| !covers(sel, topic)) {
                return;
            }
            let users: HashSet<&str> = subs.iter().filter_map(|s| s.user.as_deref()).collect();
            let (events, last_id) = if pattern {
                (0, 0)
            } else {
                seen.seen(topic).unwrap_or((0, 0))
            };
            let e = out.entry(topic.to_owned()).or_insert(TopicInfo {
                topic: topic.to_owned(),
                pattern,
                subscribers: 0,
                users: 0,
                events,
                last_id,
            });
            e.subscribers += subs.len() as u64;
            e.users += users.len() as u64;
        };
        for (t, subs) in &routes.exact {
            add(t, false, subs);
        }
        for (t, (_, subs)) in &routes.patterns {
            add(t, true, subs);
        }
        for (t, subs) in &routes.any_topic {
            add(t, false, subs);
        }
        out.into_values().collect()
    }

    /// The streams of presence routes that receive `topic` on this node,
    /// oldest first.
    pub fn presence(&self, topic: &str, node: &str) -> Vec<ConnectionInfo> {
        let routes = read(&self.inner.routes);
        let mut out: Vec<ConnectionInfo> = routes
            .all
            .values()
            .filter(|s| s.presence && receives(s, topic))
            .map(|s| info(s, node))
            .collect();
        out.sort_by(|a, b| (a.since, &a.connection).cmp(&(b.since, &b.connection)));
        out
    }

    /// Ends the matching streams on this node with `event: revoked` and
    /// `reason`; returns how many.
    pub fn disconnect(&self, which: &Disconnect, reason: &str) -> usize {
        let routes = read(&self.inner.routes);
        let mut n = 0;
        for s in routes.all.values() {
            let hit = match which {
                Disconnect::User(u) => s.user.as_deref() == Some(u.as_str()),
                Disconnect::Connection(c) => &*s.conn_id == c.as_str(),
            };
            if hit && s.ended().is_none() {
                s.end("revoked", reason.to_owned());
                n += 1;
            }
        }
        n
    }

    /// Sets what every local presence change is also passed to (once).
    pub fn on_presence(&self, hook: PresenceHook) {
        let _ = self.inner.presence_hook.set(hook);
    }

    /// Announces `sub` joining or leaving each of its exact topics to the
    /// other subscribers of its route here, and through the hook elsewhere.
    pub(super) fn announce_own(&self, sub: &Subscriber, event: &'static str) {
        for sel in sub.selectors() {
            let Selector::Exact(topic) = sel else {
                continue;
            };
            let change = PresenceChange {
                route: sub.route.to_string(),
                topic: topic.to_string(),
                event: event.into(),
                data: serde_json::json!({
                    "topic": &*topic,
                    "connection": &*sub.conn_id,
                    "user": sub.user.as_deref(),
                })
                .to_string(),
            };
            self.announce(&change, Some(sub.key));
            if let Some(hook) = self.inner.presence_hook.get() {
                hook(&change);
            }
        }
    }

    /// Queues a presence frame for the subscribers of the change's route
    /// that receive its topic (but `except`). Best effort, like any
    /// presence feed: a full queue skips it.
    pub fn announce(&self, change: &PresenceChange, except: Option<u64>) {
        // Rendered from parsed JSON and a known name: a change from another
        // node cannot inject lines into the stream.
        let name = if change.event == "leave" {
            "leave"
        } else {
            "join"
        };
        let data: serde_json::Value =
            serde_json::from_str(&change.data).unwrap_or(serde_json::Value::Null);
        let frame: Bytes = sse::control_frame(name, &data);
        let routes = read(&self.inner.routes);
        let mut offer = |s: &Arc<Subscriber>| {
            if s.presence && Some(s.key) != except && *s.route == *change.route {
                let _ = s.tx.try_send(Item::Control(frame.clone()));
            }
        };
        if let Some(list) = routes.exact.get(change.topic.as_str()) {
            list.iter().for_each(&mut offer);
        }
        routes.patterns_of(&change.topic, |list| list.iter().for_each(&mut offer));
    }
}

/// Whether selector `sel` covers `topic` (a pattern named by its text is
/// covered when the selector is that pattern).
fn covers(sel: &Selector, topic: &str) -> bool {
    match sel {
        Selector::Exact(t) => &**t == topic,
        Selector::Pattern(p) => p.matches(topic) || &**p.text() == topic,
    }
}

/// Whether `s` subscribed to something that matches `topic`.
fn receives(s: &Subscriber, topic: &str) -> bool {
    s.selectors().iter().any(|sel| match sel {
        Selector::Exact(t) => &**t == topic,
        Selector::Pattern(p) => p.matches(topic),
    })
}

fn info(s: &Subscriber, node: &str) -> ConnectionInfo {
    ConnectionInfo {
        connection: s.conn_id.to_string(),
        user: s.user.as_deref().map(str::to_owned),
        route: s.route.to_string(),
        since: s.since_ms,
        node: node.to_owned(),
        topics: s
            .selectors()
            .iter()
            .map(|sel| sel.as_str().to_string())
            .collect(),
    }
}
