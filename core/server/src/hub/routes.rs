//! The index fan-out looks subscribers up in: native subscribers by exact
//! topic and by pattern, subscribers with their own admission rule by exact
//! topic (or, when no index can narrow them, in one list offered every
//! event), and each user's subscribers for the per-user limit.

use super::subscriber::Subscriber;
use crate::topic::{Pattern, Selector};
use crate::visibility::Index;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The index fan-out looks subscribers up in, so an event costs lookups, not
/// a scan of every subscriber.
#[derive(Default)]
pub(super) struct Routes {
    /// Native subscribers by exact topic (an event's first topic).
    pub(super) exact: HashMap<Arc<str>, Vec<Arc<Subscriber>>>,
    /// Native subscribers by pattern.
    pub(super) patterns: HashMap<Arc<str>, (Pattern, Vec<Arc<Subscriber>>)>,
    /// Pattern texts by their literal prefix (`users/7` of `users/7/**`):
    /// an event is matched only against patterns whose prefix is one of
    /// its topic's, so 10,000 per-user patterns cost an event a few
    /// lookups, not 10,000 matches.
    pub(super) by_prefix: HashMap<Box<str>, Vec<Arc<str>>>,
    pub(super) all: HashMap<u64, Arc<Subscriber>>,
    /// Subscribers with their own admission rule, by exact topic: offered
    /// events any of whose topics (first or further) is that one.
    pub(super) any_topic: HashMap<Arc<str>, Vec<Arc<Subscriber>>>,
    /// Subscribers with their own rule that no index can narrow (a `*` or
    /// template selector): offered every event.
    pub(super) everything: HashMap<u64, Arc<Subscriber>>,
    /// Subscribers with their own admission rule (counted for `/stats`).
    pub(super) admitted: usize,
    /// Each user's subscribers, oldest first.
    pub(super) users: HashMap<Box<str>, Vec<u64>>,
}

impl Routes {
    pub(super) fn add(&mut self, sel: &Selector, sub: &Arc<Subscriber>) {
        match sel {
            Selector::Exact(t) => self.exact.entry(t.clone()).or_default().push(sub.clone()),
            Selector::Pattern(p) => {
                let entry = self.patterns.entry(p.text().clone()).or_insert_with(|| {
                    self.by_prefix
                        .entry(p.literal_prefix().into())
                        .or_default()
                        .push(p.text().clone());
                    (p.clone(), Vec::new())
                });
                entry.1.push(sub.clone());
            }
        }
    }

    /// Calls `f` with the subscribers of every pattern that selects `topic`.
    pub(super) fn patterns_of<'a>(&'a self, topic: &str, mut f: impl FnMut(&'a [Arc<Subscriber>])) {
        if self.patterns.is_empty() {
            return;
        }
        // The empty prefix, then every proper prefix at a segment boundary.
        let ends = std::iter::once(0).chain(topic.match_indices('/').map(|(i, _)| i));
        for end in ends {
            let Some(texts) = self.by_prefix.get(&topic[..end]) else {
                continue;
            };
            for text in texts {
                if let Some((pattern, subs)) = self.patterns.get(text) {
                    if pattern.matches(topic) {
                        f(subs);
                    }
                }
            }
        }
    }

    pub(super) fn drop_selector(&mut self, sel: &Selector, key: u64) {
        match sel {
            Selector::Exact(t) => {
                if let Some(list) = self.exact.get_mut(t) {
                    list.retain(|s| s.key != key);
                    if list.is_empty() {
                        self.exact.remove(t);
                    }
                }
            }
            Selector::Pattern(p) => {
                if let Some((_, list)) = self.patterns.get_mut(p.text()) {
                    list.retain(|s| s.key != key);
                    if list.is_empty() {
                        self.patterns.remove(p.text());
                        let prefix = p.literal_prefix();
                        if let Some(texts) = self.by_prefix.get_mut(prefix) {
                            texts.retain(|t| t != p.text());
                            if texts.is_empty() {
                                self.by_prefix.remove(prefix);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Files a new subscriber: its selectors, its user, its own rule.
    pub(super) fn insert(&mut self, subscriber: &Arc<Subscriber>) {
        let key = subscriber.key;
        for sel in subscriber.selectors().iter() {
            self.add(sel, subscriber);
        }
        if let Some(user) = &subscriber.user {
            self.users.entry(user.clone()).or_default().push(key);
        }
        if let Some(a) = &subscriber.admission {
            self.admitted += 1;
            match a.index() {
                Index::Topics(topics) => {
                    // An update may name several of them: offered once.
                    subscriber.multi.store(true, Ordering::Relaxed);
                    for t in topics {
                        let list = self.any_topic.entry(t).or_default();
                        if !list.iter().any(|s| s.key == key) {
                            list.push(subscriber.clone());
                        }
                    }
                }
                Index::Everything => {
                    self.everything.insert(key, subscriber.clone());
                }
            }
        }
        self.all.insert(key, subscriber.clone());
    }

    /// Takes a subscriber out of every index.
    pub(super) fn remove(&mut self, sub: &Arc<Subscriber>) {
        for sel in sub.selectors().iter() {
            self.drop_selector(sel, sub.key);
        }
        if let Some(user) = &sub.user {
            if let Some(keys) = self.users.get_mut(user) {
                keys.retain(|k| *k != sub.key);
                if keys.is_empty() {
                    self.users.remove(user);
                }
            }
        }
        self.all.remove(&sub.key);
        if let Some(a) = &sub.admission {
            self.admitted -= 1;
            match a.index() {
                Index::Topics(topics) => {
                    for t in topics {
                        if let Some(list) = self.any_topic.get_mut(&t) {
                            list.retain(|s| s.key != sub.key);
                            if list.is_empty() {
                                self.any_topic.remove(&t);
                            }
                        }
                    }
                }
                Index::Everything => {
                    self.everything.remove(&sub.key);
                }
            }
        }
    }
}
