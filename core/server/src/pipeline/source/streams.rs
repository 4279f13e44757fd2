//! A Redis stream read as a consumer group (`XREADGROUP`), acknowledged
//! with `XACK` after the entries' events are stored.
//!
//! Identity: the entry id (`1700000000000-0`), unique in its stream. After a
//! crash the same consumer name first re-reads its own pending entries
//! (`XREADGROUP … 0`), in order, before any new one; with `claim_idle` a
//! node also takes over entries another consumer left pending that long
//! (`XAUTOCLAIM`), so a dead node's entries are not stranded.
//!
//! An entry's body is its `payload` field when it has one, else a JSON
//! object of all its fields; its `subject` field (if any) is the subject.

use super::broker::{Broker, BrokerError, Message};
use crate::brokers::RedisSource;
use redis::aio::MultiplexedConnection;
use redis::Value;
use std::time::{Duration, Instant};

/// A consumer in a Redis stream's group.
pub struct Streams {
    cfg: RedisSource,
    consumer: String,
    conn: Option<MultiplexedConnection>,
    /// Own pending entries are read first after each (re)connect.
    pending_first: bool,
    last_claim: Option<Instant>,
}

impl Streams {
    /// A consumer for `cfg`; nothing connects until [`Broker::connect`].
    pub fn new(cfg: RedisSource) -> Streams {
        let consumer = cfg.consumer.clone().unwrap_or_else(default_consumer);
        Streams {
            cfg,
            consumer,
            conn: None,
            pending_first: true,
            last_claim: None,
        }
    }

    fn conn(&mut self) -> Result<&mut MultiplexedConnection, BrokerError> {
        self.conn
            .as_mut()
            .ok_or_else(|| BrokerError::Lost("not connected".into()))
    }

    /// Reads entries: the consumer's own pending ones (`0`) or new (`>`).
    async fn read(
        &mut self,
        id: &str,
        max: usize,
        block: Option<Duration>,
    ) -> Result<Vec<Message<String>>, BrokerError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.cfg.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(max);
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(b.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(&self.cfg.stream).arg(id);
        let reply: Value = cmd
            .query_async(self.conn()?)
            .await
            .map_err(|e| BrokerError::Lost(format!("XREADGROUP: {e}")))?;
        Ok(entries(reply))
    }

    /// Takes over entries other consumers left pending past `claim_idle`.
    async fn claim(&mut self, idle: Duration, max: usize) -> Result<(), BrokerError> {
        let mut start = "0-0".to_owned();
        loop {
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(&self.cfg.stream)
                .arg(&self.cfg.group)
                .arg(&self.consumer)
                .arg(idle.as_millis() as u64)
                .arg(&start)
                .arg("COUNT")
                .arg(max)
                .arg("JUSTID")
                .query_async(self.conn()?)
                .await
                .map_err(|e| BrokerError::Lost(format!("XAUTOCLAIM: {e}")))?;
            let Value::Array(parts) = reply else {
                return Ok(());
            };
            let next = parts.first().and_then(text).unwrap_or_else(|| "0-0".into());
            let claimed = matches!(parts.get(1), Some(Value::Array(ids)) if !ids.is_empty());
            if claimed {
                self.pending_first = true;
            }
            if next == "0-0" {
                return Ok(());
            }
            start = next;
        }
    }
}

/// The host name, so each node is its own consumer by default.
fn default_consumer() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "spout".into())
}

/// A bulk or simple string as text.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// The entries of an `XREADGROUP` reply (RESP2 array or RESP3 map).
fn entries(reply: Value) -> Vec<Message<String>> {
    let streams: Vec<Value> = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => kv.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(m) => m.into_iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for list in streams {
        let Value::Array(items) = list else { continue };
        for item in items {
            let Value::Array(mut pair) = item else {
                continue;
            };
            if pair.len() != 2 {
                continue;
            }
            let fields = pair.pop();
            let Some(id) = pair.first().and_then(text) else {
                continue;
            };
            // A pending entry deleted from the stream comes back as nil.
            let fields: Vec<(String, Vec<u8>)> = match fields {
                Some(Value::Array(f)) => f
                    .chunks(2)
                    .filter_map(|c| match c {
                        [k, Value::BulkString(v)] => Some((text(k)?, v.clone())),
                        [k, v] => Some((text(k)?, text(v)?.into_bytes())),
                        _ => None,
                    })
                    .collect(),
                Some(Value::Map(m)) => m
                    .iter()
                    .filter_map(|(k, v)| Some((text(k)?, text(v)?.into_bytes())))
                    .collect(),
                _ => Vec::new(),
            };
            out.push(message(id, fields));
        }
    }
    out
}

/// One entry as a message: `payload` is the body, else all fields as JSON.
fn message(id: String, fields: Vec<(String, Vec<u8>)>) -> Message<String> {
    let subject = fields
        .iter()
        .find(|(k, _)| k == "subject")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
    let body = match fields.iter().find(|(k, _)| k == "payload") {
        Some((_, v)) => bytes::Bytes::from(v.clone()),
        None => {
            let map: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned().into()))
                .collect();
            bytes::Bytes::from(serde_json::Value::Object(map).to_string())
        }
    };
    Message {
        identity: Some(id.clone()),
        subject,
        body,
        meta: vec![("entry-id".into(), id.clone())],
        ack: id,
    }
}

impl Broker for Streams {
    type Ack = String;

    fn describe(&self) -> String {
        format!(
            "redis {}/{} as {}",
            self.cfg.stream, self.cfg.group, self.consumer
        )
    }

    async fn connect(&mut self) -> Result<(), BrokerError> {
        let client = redis::Client::open(self.cfg.url.as_str())
            .map_err(|e| BrokerError::Connect(format!("{}: {e}", self.cfg.url)))?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            // Reads block up to the relay's wait; leave room for it.
            .set_response_timeout(Some(Duration::from_secs(10)));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| BrokerError::Connect(format!("{}: {e}", self.cfg.url)))?;
        let created: Result<Value, _> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.cfg.stream)
            .arg(&self.cfg.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        if let Err(e) = created {
            if e.code() != Some("BUSYGROUP") {
                return Err(BrokerError::Connect(format!("XGROUP CREATE: {e}")));
            }
        }
        self.conn = Some(conn);
        self.pending_first = true;
        Ok(())
    }

    async fn fetch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Message<String>>, BrokerError> {
        if let Some(idle) = self.cfg.claim_idle {
            if self
                .last_claim
                .is_none_or(|t| t.elapsed() >= idle.min(Duration::from_secs(5)))
            {
                self.last_claim = Some(Instant::now());
                self.claim(idle, max).await?;
            }
        }
        if self.pending_first {
            let own = self.read("0", max, None).await?;
            if !own.is_empty() {
                return Ok(own);
            }
            self.pending_first = false;
        }
        self.read(">", max, Some(wait)).await
    }

    async fn ack(&mut self, acks: Vec<String>) -> Result<(), BrokerError> {
        if acks.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&self.cfg.stream).arg(&self.cfg.group).arg(&acks);
        let _: Value = cmd
            .query_async(self.conn()?)
            .await
            .map_err(|e| BrokerError::Lost(format!("XACK: {e}")))?;
        Ok(())
    }

    async fn lag(&mut self) -> Option<u64> {
        let reply: Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.cfg.stream)
            .query_async(self.conn().ok()?)
            .await
            .ok()?;
        let Value::Array(groups) = reply else {
            return None;
        };
        for g in groups {
            let pairs: Vec<(String, Value)> = match g {
                Value::Array(f) => f
                    .chunks(2)
                    .filter_map(|c| Some((text(&c[0])?, c.get(1)?.clone())))
                    .collect(),
                Value::Map(m) => m
                    .into_iter()
                    .filter_map(|(k, v)| Some((text(&k)?, v)))
                    .collect(),
                _ => continue,
            };
            let field = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v);
            if field("name").and_then(text).as_deref() != Some(self.cfg.group.as_str()) {
                continue;
            }
            return match field("lag") {
                Some(Value::Int(n)) => Some((*n).max(0) as u64),
                _ => match field("pending") {
                    Some(Value::Int(n)) => Some((*n).max(0) as u64),
                    _ => None,
                },
            };
        }
        None
    }

    fn disconnect(&mut self) {
        self.conn = None;
    }
}
