//! What the operator API does: each action answered from this node's share
//! ([`answer`]) and, in cluster mode, from every node's ([`everywhere`],
//! through [`crate::cluster::Presence::ask`]). The HTTP side is
//! `http::api`.

use crate::app::App;
use crate::bans::Ban;
use crate::hub::{ConnectionInfo, Disconnect, PresenceChange, TopicInfo};
use crate::topic::Selector;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// One request to the nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Ask {
    /// Topics with subscribers (optionally under a selector).
    Topics {
        /// A topic selector.
        selector: Option<String>,
    },
    /// Streams of presence routes that receive a topic.
    Presence {
        /// The topic.
        topic: String,
    },
    /// End streams (and maybe ban their user).
    Disconnect {
        /// Which streams.
        which: Disconnect,
        /// Sent in the `revoked` frame.
        reason: String,
        /// A ban to note (already stored by the asking node).
        ban: Option<Ban>,
    },
    /// Lift a ban (already removed from the store by the asking node).
    Unban {
        /// The user.
        user: String,
    },
    /// The node's figures.
    Info,
    /// A presence change on another node (a notice: no answer).
    Change {
        /// The node it happened on (which announced it itself).
        from: String,
        /// What happened.
        change: PresenceChange,
    },
}

/// This node's name (`local` on one node).
pub fn node_id(app: &App) -> &str {
    app.cluster.as_ref().map_or("local", |c| c.node_id.as_str())
}

/// Answers `ask` from this node's share; `None` for notices.
pub fn answer(app: &App, ask: Ask) -> Option<Value> {
    let node = node_id(app).to_owned();
    match ask {
        Ask::Topics { selector } => {
            let sel = selector.as_deref().and_then(|s| Selector::parse(s).ok());
            Some(json!(app.hub.topics(sel.as_ref())))
        }
        Ask::Presence { topic } => Some(json!(app.hub.presence(&topic, &node))),
        Ask::Disconnect { which, reason, ban } => {
            if let Some(ban) = ban {
                app.bans.note(ban);
            }
            let n = app.hub.disconnect(&which, &reason);
            if n > 0 {
                tracing::info!(node = %node, ?which, disconnected = n, "streams disconnected by the operator API");
            }
            Some(json!({ "node": node, "disconnected": n }))
        }
        Ask::Unban { user } => {
            app.bans.forget(&user);
            Some(json!({ "node": node }))
        }
        Ask::Info => Some(node_info(app)),
        Ask::Change { from, change } => {
            if from != node {
                app.hub.announce(&change, None);
            }
            None
        }
    }
}

/// This node's part of `/api/info`.
pub fn node_info(app: &App) -> Value {
    let hub = app.hub.stats();
    json!({
        "node": node_id(app),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": app.started.elapsed().as_millis() as u64,
        "connections": hub.connections,
        "users": hub.users,
        "pipeline_generation": app.pipeline.load().generation,
    })
}

/// Why a cluster-wide action failed.
#[derive(Debug, thiserror::Error)]
pub enum OperateError {
    /// The other nodes could not be asked.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::AskError),
}

/// Every node's answer to `ask` (this node's alone on one node), and
/// whether every live node answered.
pub async fn everywhere(
    app: &std::sync::Arc<App>,
    ask: Ask,
) -> Result<(Vec<Value>, bool), OperateError> {
    match &app.cluster {
        Some(cluster) => {
            let request = serde_json::to_value(&ask).unwrap_or(Value::Null);
            Ok(cluster.ask(&request).await?)
        }
        None => {
            let app = app.clone();
            let answer = tokio::task::spawn_blocking(move || answer(&app, ask))
                .await
                .ok()
                .flatten();
            Ok((answer.into_iter().collect(), true))
        }
    }
}

/// Merges the nodes' topic lists: counts add up, while the per-topic event
/// figures are each node's view of the one shared log (the highest wins).
pub fn merge_topics(answers: Vec<Value>) -> Vec<TopicInfo> {
    let mut out: BTreeMap<String, TopicInfo> = BTreeMap::new();
    for a in answers {
        let Ok(list) = serde_json::from_value::<Vec<TopicInfo>>(a) else {
            continue;
        };
        for t in list {
            match out.get_mut(&t.topic) {
                Some(m) => {
                    m.subscribers += t.subscribers;
                    m.users += t.users;
                    m.events = m.events.max(t.events);
                    m.last_id = m.last_id.max(t.last_id);
                }
                None => {
                    out.insert(t.topic.clone(), t);
                }
            }
        }
    }
    out.into_values().collect()
}

/// Merges the nodes' presence lists, oldest first.
pub fn merge_presence(answers: Vec<Value>) -> Vec<ConnectionInfo> {
    let mut out: Vec<ConnectionInfo> = answers
        .into_iter()
        .filter_map(|a| serde_json::from_value::<Vec<ConnectionInfo>>(a).ok())
        .flatten()
        .collect();
    out.sort_by(|a, b| (a.since, &a.connection).cmp(&(b.since, &b.connection)));
    out
}

/// Installs the cluster's request handler and presence hook (cluster
/// mode only; a no-op on one node).
pub fn wire_cluster(app: &std::sync::Arc<App>) {
    let Some(cluster) = &app.cluster else {
        return;
    };
    let weak = std::sync::Arc::downgrade(app);
    cluster.set_handler(std::sync::Arc::new(move |request| {
        let app = weak.upgrade()?;
        let ask: Ask = serde_json::from_value(request).ok()?;
        answer(&app, ask)
    }));
    let weak = std::sync::Arc::downgrade(app);
    let from = cluster.node_id.clone();
    app.hub.on_presence(std::sync::Arc::new(move |change| {
        let Some(app) = weak.upgrade() else { return };
        let notice = Ask::Change {
            from: from.clone(),
            change: change.clone(),
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            if let Some(cluster) = &app.cluster {
                let v = serde_json::to_value(&notice).unwrap_or(Value::Null);
                if let Err(e) = cluster.notify(&v).await {
                    tracing::debug!(error = %e, "presence change not sent to the other nodes");
                }
            }
        });
    }));
}
