//! The one Redis client of a node in cluster mode: the Redis Streams log
//! backend ([`crate::streams`]), the shared key-value stores (plugin `kv`,
//! tickets: [`crate::store`]) and cluster presence all go through it.

use crate::config::ClusterConfig;
use crate::LogError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Synchronous connections kept for callers on blocking threads.
const SYNC_POOL: usize = 8;

/// A Redis connection source with this node's identity.
pub struct Redis {
    client: redis::Client,
    manager: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    /// Synchronous connections for callers on blocking threads (replay
    /// scans, plugin `kv`, tickets).
    pool: Mutex<Vec<redis::Connection>>,
    /// `PREFIX:` for every key of this cluster.
    pub prefix: String,
    /// This node's name, in client names and presence keys.
    pub node_id: String,
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(e.to_string())
}

impl Redis {
    /// A client for `cluster.url`; it connects lazily.
    pub fn connect(cluster: &ClusterConfig) -> Result<Arc<Redis>, LogError> {
        Ok(Arc::new(Redis {
            client: redis::Client::open(cluster.url.as_str()).map_err(unavailable)?,
            manager: tokio::sync::OnceCell::new(),
            pool: Mutex::new(Vec::new()),
            prefix: format!("{}:", cluster.prefix),
            node_id: cluster.node_id(),
        }))
    }

    /// The shared async connection (reconnects by itself).
    pub async fn connection(&self) -> Result<redis::aio::ConnectionManager, LogError> {
        let m = self
            .manager
            .get_or_try_init(|| async {
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(Duration::from_secs(3)))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_secs(1));
                self.client.get_connection_manager_with_config(cfg).await
            })
            .await
            .map_err(unavailable)?;
        Ok(m.clone())
    }

    /// A dedicated async connection (the stream reader's, whose blocking
    /// reads must not hold up other commands).
    pub async fn dedicated(
        &self,
        response_timeout: Duration,
    ) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(response_timeout));
        self.client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
    }

    /// Runs `f` on a pooled synchronous connection (blocking threads only).
    pub fn with_sync<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, LogError> {
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                let c = self
                    .client
                    .get_connection_with_timeout(Duration::from_secs(1))
                    .map_err(unavailable)?;
                c.set_read_timeout(Some(Duration::from_secs(5)))
                    .map_err(unavailable)?;
                c.set_write_timeout(Some(Duration::from_secs(5)))
                    .map_err(unavailable)?;
                c
            }
        };
        let out = f(&mut conn).map_err(unavailable)?;
        if let Ok(mut p) = self.pool.lock() {
            if p.len() < SYNC_POOL {
                p.push(conn);
            }
        }
        Ok(out)
    }
}
