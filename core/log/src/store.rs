//! Key-value stores beside the log, for tickets and plugin `kv` stores: a
//! sled tree in the log's database on one node, or keys under a prefix in
//! Redis in cluster mode (one store for every node). The local/Redis choice
//! is made here, once, not by each user of a store.

use crate::remote::Redis;
use crate::LogError;
use std::sync::Arc;
use std::time::Duration;

/// One named key-value store.
#[derive(Clone)]
pub enum Store {
    /// A sled tree beside the log (one node).
    Local(sled::Tree),
    /// Redis keys `PREFIX` + key (cluster mode).
    Shared {
        /// The node's Redis client.
        redis: Arc<Redis>,
        /// `CLUSTER_PREFIX:NAMESPACE`.
        prefix: String,
    },
}

/// A key (without the store's prefix) and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

impl Store {
    fn key(prefix: &str, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(prefix.len() + key.len());
        k.extend_from_slice(prefix.as_bytes());
        k.extend_from_slice(key);
        k
    }

    /// The value under `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError> {
        match self {
            Store::Local(t) => Ok(t.get(key)?.map(|v| v.to_vec())),
            Store::Shared { redis, prefix } => {
                redis.with_sync(|c| redis::cmd("GET").arg(Store::key(prefix, key)).query(c))
            }
        }
    }

    /// Sets `key`, or deletes it with `None`.
    pub fn set(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), LogError> {
        match (self, value) {
            (Store::Local(t), Some(v)) => t.insert(key, v).map(|_| ()).map_err(Into::into),
            (Store::Local(t), None) => t.remove(key).map(|_| ()).map_err(Into::into),
            (Store::Shared { redis, prefix }, Some(v)) => redis.with_sync(|c| {
                redis::cmd("SET")
                    .arg(Store::key(prefix, key))
                    .arg(v)
                    .query(c)
            }),
            (Store::Shared { redis, prefix }, None) => {
                redis.with_sync(|c| redis::cmd("DEL").arg(Store::key(prefix, key)).query(c))
            }
        }
    }

    /// Sets `key` for `ttl`: Redis expires it; a local store keeps it until
    /// [`Store::retain`] drops it (its value must say when it expires).
    pub fn set_for(&self, key: &[u8], value: &[u8], ttl: Duration) -> Result<(), LogError> {
        match self {
            Store::Local(_) => self.set(key, Some(value)),
            Store::Shared { redis, prefix } => redis.with_sync(|c| {
                redis::cmd("SET")
                    .arg(Store::key(prefix, key))
                    .arg(value)
                    .arg("EX")
                    .arg(ttl.as_secs().max(1))
                    .query(c)
            }),
        }
    }

    /// Gets and deletes `key` in one step: what it holds is used once.
    pub fn take(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError> {
        match self {
            Store::Local(t) => Ok(t.remove(key)?.map(|v| v.to_vec())),
            Store::Shared { redis, prefix } => {
                redis.with_sync(|c| redis::cmd("GETDEL").arg(Store::key(prefix, key)).query(c))
            }
        }
    }

    /// Every entry (key without the prefix, value): for small stores read
    /// whole at start-up (bans). Blocking.
    pub fn entries(&self) -> Result<Vec<Entry>, LogError> {
        match self {
            Store::Local(t) => t
                .iter()
                .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(Into::into))
                .collect(),
            Store::Shared { redis, prefix } => redis.with_sync(|c| {
                let mut keys: Vec<Vec<u8>> = Vec::new();
                let mut cursor = 0u64;
                loop {
                    let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{prefix}*"))
                        .arg("COUNT")
                        .arg(1000)
                        .query(c)?;
                    keys.extend(batch);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
                let mut out = Vec::new();
                for k in keys {
                    let v: Option<Vec<u8>> = redis::cmd("GET").arg(&k).query(c)?;
                    if let Some(v) = v {
                        out.push((k[prefix.len().min(k.len())..].to_vec(), v));
                    }
                }
                Ok(out)
            }),
        }
    }

    /// Drops the entries of a local store whose value `keep` refuses (Redis
    /// expires its own entries).
    pub fn retain(&self, keep: impl Fn(&[u8]) -> bool) {
        let Store::Local(tree) = self else {
            return;
        };
        let gone: Vec<sled::IVec> = tree
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| !keep(v))
            .map(|(k, _)| k)
            .collect();
        for k in gone {
            let _ = tree.remove(k);
        }
    }
}
