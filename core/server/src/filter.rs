//! Filters run once per event batch per *subscription key*, not per
//! connection: connections with the same route, principal, topic selectors
//! and filter parameters share one [`FilterGroup`], and the hub asks the group,
//! not each connection.

use crate::config::OnError;
use crate::plugin::bindings::types::Subscription;
use crate::plugin::wire::BatchBuilder;
use crate::plugin::FilterPlugin;
use crate::topic::Selector;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};

/// A filter in a route, with what its failure means.
#[derive(Debug, Clone)]
pub struct Stage {
    /// The filter plugin.
    pub plugin: FilterPlugin,
    /// `drop` or `pass` the events when a call fails.
    pub on_error: OnError,
}

/// Query parameters never passed to filters: credentials, and the
/// stream's or `/poll`'s own.
const PRIVATE_PARAMS: &[&str] = &[
    "topic",
    "lastEventId",
    "after",
    "limit",
    "token",
    "apikey",
    "ticket",
    "authorization",
    "user",
];

/// What filters are told about a subscription: its user and claims, its
/// topic selectors and its query parameters other than `PRIVATE_PARAMS`,
/// both sorted so equal subscriptions compare equal.
pub fn subscription(
    user: &str,
    claims: &str,
    selectors: &[Selector],
    query: &[(String, String)],
) -> Subscription {
    let mut topics: Vec<String> = selectors.iter().map(|s| s.as_str().to_owned()).collect();
    topics.sort();
    let mut params: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| !PRIVATE_PARAMS.contains(&k.as_str()))
        .cloned()
        .collect();
    params.sort();
    Subscription {
        user: user.to_owned(),
        claims: claims.to_owned(),
        topics,
        params,
    }
}

/// Connections sharing one subscription key, and the filters they run.
pub struct FilterGroup {
    /// The route the connections came in on.
    pub route: String,
    /// What the filters are told about the subscription.
    pub sub: Subscription,
    stages: RwLock<Arc<[Stage]>>,
}

impl std::fmt::Debug for FilterGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterGroup")
            .field("route", &self.route)
            .field("user", &self.sub.user)
            .finish_non_exhaustive()
    }
}

impl FilterGroup {
    /// A group outside the registry (for one `/poll` request), or the one
    /// [`Groups::get`] registers.
    pub fn standalone(route: &str, sub: Subscription, stages: Arc<[Stage]>) -> FilterGroup {
        FilterGroup {
            route: route.to_owned(),
            sub,
            stages: RwLock::new(stages),
        }
    }

    /// Which events of `batch` the group's subscribers see. Every filter sees
    /// the whole batch and the answers are combined (an event passes when all
    /// keep it). A failed call drops or passes the batch per `on_error`.
    pub fn evaluate(&self, batch: &BatchBuilder) -> Vec<bool> {
        let n = batch.len();
        let stages = self
            .stages
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut keep = vec![true; n];
        if n == 0 {
            return keep;
        }
        for stage in stages.iter() {
            match stage.plugin.keep(&self.sub, batch.batch()) {
                Ok(mask) => {
                    for (k, m) in keep.iter_mut().zip(mask) {
                        *k &= m;
                    }
                }
                Err(_) if stage.on_error == OnError::Pass => {}
                Err(_) => keep.iter_mut().for_each(|k| *k = false),
            }
        }
        keep
    }

    /// Whether the group runs any filter.
    pub fn is_active(&self) -> bool {
        !self
            .stages
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Replaces the filters (hot reload).
    pub fn set_stages(&self, stages: Arc<[Stage]>) {
        *self.stages.write().unwrap_or_else(|e| e.into_inner()) = stages;
    }
}

/// Interns [`FilterGroup`]s by subscription key so equal keys share one.
#[derive(Default)]
pub struct Groups {
    map: Mutex<HashMap<String, Weak<FilterGroup>>>,
}

impl Groups {
    /// The group for this route and subscription, created with `stages` if
    /// none is alive.
    pub fn get(&self, route: &str, sub: Subscription, stages: &Arc<[Stage]>) -> Arc<FilterGroup> {
        let key =
            serde_json::json!([route, sub.user, sub.claims, sub.topics, sub.params]).to_string();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = map.get(&key).and_then(Weak::upgrade) {
            return g;
        }
        map.retain(|_, g| g.strong_count() > 0);
        let group = Arc::new(FilterGroup::standalone(route, sub, stages.clone()));
        map.insert(key, Arc::downgrade(&group));
        group
    }

    /// Every live group (for hot reload).
    pub fn live(&self) -> Vec<Arc<FilterGroup>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.values().filter_map(Weak::upgrade).collect()
    }

    /// Number of live groups (distinct subscription keys).
    pub fn count(&self) -> usize {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.values().filter(|g| g.strong_count() > 0).count()
    }
}
