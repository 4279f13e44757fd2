//! Cluster presence: each node keeps an expiring key with its connection
//! count in Redis, and reads everyone's, so `/stats` and `/metrics` show
//! cluster-wide numbers without any node knowing the others' addresses.
//!
//! It also carries the operator API across nodes: a request is added to
//! the `PREFIX:control` stream, every node (the asking one too) reads it,
//! answers from its own share through the handler the app installed, and
//! pushes the answer to the request's reply list, which the asker pops
//! until every live node answered or the deadline passed.

use crate::hub::Hub;
use crate::log::remote::Redis;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long an operator request waits for the other nodes' answers.
const ASK_DEADLINE: Duration = Duration::from_secs(2);
/// Requests kept in the control stream (older ones are trimmed).
const CONTROL_LEN: usize = 10_000;

/// Answers one request from another node (or this one): `None` when it
/// needs no answer (a notice).
pub type Handler = Arc<dyn Fn(serde_json::Value) -> Option<serde_json::Value> + Send + Sync>;

/// Why a cluster-wide request failed.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// Redis could not be reached or refused a command.
    #[error("the cluster's Redis is unavailable: {0}")]
    Redis(String),
}

fn redis_err(e: impl std::fmt::Display) -> AskError {
    AskError::Redis(e.to_string())
}

/// How often a node reports; its key lives three times as long.
const EVERY: Duration = Duration::from_secs(2);

/// What the last look at the cluster found, and the way to ask every node.
pub struct Presence {
    /// This node's id.
    pub node_id: String,
    /// Nodes whose key had not expired.
    pub nodes: AtomicU64,
    /// Their open connections, summed.
    pub connections: AtomicU64,
    redis: Arc<Redis>,
    handler: OnceLock<Handler>,
}

impl Presence {
    /// Sets what answers requests from the control stream (once, when the
    /// app is built).
    pub fn set_handler(&self, handler: Handler) {
        let _ = self.handler.set(handler);
    }

    /// Sends `request` to every node and gathers their answers (this
    /// node's included); a node that does not answer within the deadline
    /// is left out. Returns the answers and whether all live nodes answered.
    pub async fn ask(
        &self,
        request: &serde_json::Value,
    ) -> Result<(Vec<serde_json::Value>, bool), AskError> {
        let reply = format!("{}reply:{}", self.redis.prefix, uuid::Uuid::new_v4());
        let expected = self.live_nodes().await?.max(1);
        self.post(request, Some(&reply)).await?;
        // BLPOP holds its connection: a dedicated one.
        let mut d = self
            .redis
            .dedicated(ASK_DEADLINE + Duration::from_secs(1))
            .await
            .map_err(redis_err)?;
        let until = Instant::now() + ASK_DEADLINE;
        let mut answers = Vec::new();
        while answers.len() < expected as usize {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let got: Option<(String, String)> = redis::cmd("BLPOP")
                .arg(&reply)
                .arg(left.as_secs_f64().max(0.01))
                .query_async(&mut d)
                .await
                .map_err(redis_err)?;
            match got {
                Some((_, text)) => {
                    if let Ok(v) = serde_json::from_str(&text) {
                        answers.push(v);
                    }
                }
                None => break,
            }
        }
        let _: Result<(), _> = redis::cmd("DEL").arg(&reply).query_async(&mut d).await;
        let complete = answers.len() >= expected as usize;
        Ok((answers, complete))
    }

    /// Tells every node something that needs no answer (a presence change).
    pub async fn notify(&self, notice: &serde_json::Value) -> Result<(), AskError> {
        self.post(notice, None).await
    }

    /// Adds `message` (and where to reply, if anything) to the control stream.
    async fn post(&self, message: &serde_json::Value, reply: Option<&str>) -> Result<(), AskError> {
        let mut c = self.redis.connection().await.map_err(redis_err)?;
        let mut cmd = redis::cmd("XADD");
        cmd.arg(format!("{}control", self.redis.prefix))
            .arg("MAXLEN")
            .arg("~")
            .arg(CONTROL_LEN)
            .arg("*")
            .arg("m")
            .arg(message.to_string());
        if let Some(to) = reply {
            cmd.arg("reply").arg(to);
        }
        let _: String = cmd.query_async(&mut c).await.map_err(redis_err)?;
        Ok(())
    }

    async fn live_nodes(&self) -> Result<u64, AskError> {
        let mut c = self.redis.connection().await.map_err(redis_err)?;
        Ok(node_keys(&self.redis, &mut c)
            .await
            .map_err(redis_err)?
            .len() as u64)
    }

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
        nodes: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        redis: log.clone(),
        handler: OnceLock::new(),
    });
    tokio::spawn(serve_control(presence.clone(), stop.clone()));
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
    let keys = node_keys(log, &mut c).await?;
    let counts: Vec<Option<u64>> = if keys.is_empty() {
        Vec::new()
    } else {
        redis::cmd("MGET").arg(&keys).query_async(&mut c).await?
    };
    let live: Vec<u64> = counts.into_iter().flatten().collect();
    Ok((live.len() as u64, live.iter().sum()))
}

/// The presence keys of the live nodes.
async fn node_keys(
    log: &Redis,
    c: &mut redis::aio::ConnectionManager,
) -> redis::RedisResult<Vec<String>> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}node:*", log.prefix))
            .arg("COUNT")
            .arg(1000)
            .query_async(c)
            .await?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    Ok(keys)
}

/// Reads the control stream from its end and answers each request with
/// the installed handler, until `stop` fires; reconnects after errors.
async fn serve_control(p: Arc<Presence>, stop: CancellationToken) {
    let stream = format!("{}control", p.redis.prefix);
    let mut last = "$".to_owned();
    loop {
        let conn = tokio::select! {
            _ = stop.cancelled() => return,
            c = p.redis.dedicated(Duration::from_secs(10)) => c,
        };
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "control stream: cannot connect");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if last == "$" {
            // Start after what is there now (older requests were answered
            // or timed out), without missing one that arrives meanwhile.
            let top: redis::RedisResult<redis::Value> = redis::cmd("XREVRANGE")
                .arg(&stream)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn)
                .await;
            last = match top {
                Ok(v) => first_entry_id(&v).unwrap_or_else(|| "0-0".into()),
                Err(_) => "0-0".into(),
            };
        }
        loop {
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(100)
                .arg("BLOCK")
                .arg(5000)
                .arg("STREAMS")
                .arg(&stream)
                .arg(&last);
            let read = tokio::select! {
                _ = stop.cancelled() => return,
                r = cmd.query_async::<redis::Value>(&mut conn) => r,
            };
            let reply = match read {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!(error = %e, "control stream: read failed");
                    break;
                }
            };
            for (id, fields) in control_entries(reply) {
                last = id;
                let Some(text) = fields.get("m") else {
                    continue;
                };
                let Ok(request) = serde_json::from_str::<serde_json::Value>(text) else {
                    continue;
                };
                let Some(handler) = p.handler.get() else {
                    continue;
                };
                let handler = handler.clone();
                let answer = tokio::task::spawn_blocking(move || handler(request))
                    .await
                    .ok()
                    .flatten();
                if let (Some(answer), Some(to)) = (answer, fields.get("reply")) {
                    let pushed: redis::RedisResult<()> = redis::pipe()
                        .cmd("RPUSH")
                        .arg(to)
                        .arg(answer.to_string())
                        .ignore()
                        .cmd("EXPIRE")
                        .arg(to)
                        .arg(30)
                        .ignore()
                        .query_async(&mut conn)
                        .await;
                    if let Err(e) = pushed {
                        tracing::debug!(error = %e, "control stream: answer not sent");
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn text(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The id of the first entry of an XRANGE/XREVRANGE reply.
fn first_entry_id(v: &redis::Value) -> Option<String> {
    let redis::Value::Array(entries) = v else {
        return None;
    };
    let redis::Value::Array(pair) = entries.first()? else {
        return None;
    };
    text(pair.first()?)
}

/// An XREAD reply (RESP2 array or RESP3 map) → entries: id and fields.
fn control_entries(
    reply: redis::Value,
) -> Vec<(String, std::collections::HashMap<String, String>)> {
    let per_stream: Vec<redis::Value> = match reply {
        redis::Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                redis::Value::Array(mut kv) if kv.len() == 2 => kv.pop(),
                _ => None,
            })
            .collect(),
        redis::Value::Map(m) => m.into_iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for entries in per_stream {
        let redis::Value::Array(entries) = entries else {
            continue;
        };
        for e in entries {
            let redis::Value::Array(pair) = e else {
                continue;
            };
            let (Some(id), Some(redis::Value::Array(fields))) = (pair.first(), pair.get(1)) else {
                continue;
            };
            let Some(id) = text(id) else { continue };
            let mut map = std::collections::HashMap::new();
            for kv in fields.chunks(2) {
                if let [k, v] = kv {
                    if let (Some(k), Some(v)) = (text(k), text(v)) {
                        map.insert(k, v);
                    }
                }
            }
            out.push((id, map));
        }
    }
    out
}
