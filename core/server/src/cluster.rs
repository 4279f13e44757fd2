//! Cluster presence: each node keeps an expiring key with its connection
//! count in Redis, and reads everyone's, so `/stats` and `/metrics` show
//! cluster-wide numbers without any node knowing the others' addresses.

use crate::hub::Hub;
use crate::log::remote::Redis;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a node reports; its key lives three times as long.
const EVERY: Duration = Duration::from_secs(2);

/// What the last look at the cluster found.
#[derive(Debug, Default)]
pub struct Presence {
    /// This node's id.
    pub node_id: String,
    /// Nodes whose key had not expired.
    pub nodes: AtomicU64,
    /// Their open connections, summed.
    pub connections: AtomicU64,
}

impl Presence {
    /// `/stats` view.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "node_id": self.node_id,
            "nodes": self.nodes.load(Ordering::Relaxed),
            "connections": self.connections.load(Ordering::Relaxed),
        })
    }
}

/// Starts reporting this node's connections until `stop` fires.
pub fn start(log: Arc<Redis>, hub: Hub, stop: CancellationToken) -> Arc<Presence> {
    let presence = Arc::new(Presence {
        node_id: log.node_id.clone(),
        ..Presence::default()
    });
    let p = presence.clone();
    tokio::spawn(async move {
        let nodes_gauge = metrics::gauge!("spout_cluster_nodes");
        let conns_gauge = metrics::gauge!("spout_cluster_connections");
        loop {
            match report(&log, &hub).await {
                Ok((nodes, conns)) => {
                    p.nodes.store(nodes, Ordering::Relaxed);
                    p.connections.store(conns, Ordering::Relaxed);
                    nodes_gauge.set(nodes as f64);
                    conns_gauge.set(conns as f64);
                }
                Err(e) => tracing::debug!(error = %e, "cluster presence not updated"),
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
        // Leave at once rather than when the key expires.
        if let Ok(mut c) = log.connection().await {
            let key = format!("{}node:{}", log.prefix, log.node_id);
            let _: Result<(), _> = redis::cmd("DEL").arg(key).query_async(&mut c).await;
        }
    });
    presence
}

async fn report(log: &Redis, hub: &Hub) -> Result<(u64, u64), Box<dyn std::error::Error>> {
    let mut c = log.connection().await?;
    let key = format!("{}node:{}", log.prefix, log.node_id);
    let mine = hub.stats().connections as u64;
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(mine)
        .arg("EX")
        .arg(EVERY.as_secs() * 3)
        .query_async(&mut c)
        .await?;
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}node:*", log.prefix))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let counts: Vec<Option<u64>> = if keys.is_empty() {
        Vec::new()
    } else {
        redis::cmd("MGET").arg(&keys).query_async(&mut c).await?
    };
    let live: Vec<u64> = counts.into_iter().flatten().collect();
    Ok((live.len() as u64, live.iter().sum()))
}
