//! One-time tickets: a client authenticated by a route's auth plugin (a
//! bearer token, say) trades its credentials for a short-lived random
//! ticket, and opens the stream with `?ticket=…` — for EventSource, which
//! cannot send headers, without putting the long-lived token in a URL.
//! A ticket is consumed by its first use. Tickets live in the log's sled
//! database, or in Redis in cluster mode, so any node honours them.

use crate::log::streams::RedisLog;
use crate::plugin::bindings::types::Request as PluginRequest;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Why a ticket could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// The local store failed.
    #[error("ticket store: {0}")]
    Local(#[from] sled::Error),
    /// Redis failed (cluster mode).
    #[error("ticket store: {0}")]
    Shared(#[from] crate::log::LogError),
    /// A stored ticket could not be decoded.
    #[error("ticket store: {0}")]
    Decode(#[from] serde_json::Error),
}

/// What a ticket stands for: the principal its auth plugin accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ticket {
    /// The stream route it opens.
    pub route: String,
    /// The principal's user.
    pub user: String,
    /// The principal's claims (JSON text).
    pub claims: String,
    /// Topic selectors the principal may subscribe to.
    pub allowed: Vec<String>,
    /// The request the auth plugin accepted, to re-check the stream when
    /// the pipeline is reloaded.
    pub request: StoredRequest,
    /// Expiry, ms since the epoch.
    pub expires_ms: u64,
}

/// A [`PluginRequest`] in storable form.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredRequest {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    remote_addr: String,
}

impl From<&PluginRequest> for StoredRequest {
    fn from(r: &PluginRequest) -> StoredRequest {
        StoredRequest {
            method: r.method.clone(),
            path: r.path.clone(),
            query: r.query.clone(),
            headers: r.headers.clone(),
            remote_addr: r.remote_addr.clone(),
        }
    }
}

impl From<StoredRequest> for PluginRequest {
    fn from(r: StoredRequest) -> PluginRequest {
        PluginRequest {
            method: r.method,
            path: r.path,
            query: r.query,
            headers: r.headers,
            remote_addr: r.remote_addr,
        }
    }
}

/// Where tickets are kept.
pub enum TicketStore {
    /// A sled tree beside the log.
    Local(sled::Tree),
    /// Redis keys `PREFIX:ticket:ID` with a TTL (cluster mode).
    Shared(Arc<RedisLog>),
}

impl TicketStore {
    /// Stores `ticket` under a new random id, valid for `ttl`; returns the id.
    pub fn issue(&self, ticket: &Ticket, ttl: Duration) -> Result<String, TicketError> {
        let id = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let value = serde_json::to_vec(ticket)?;
        match self {
            TicketStore::Local(tree) => {
                tree.insert(id.as_bytes(), value)?;
            }
            TicketStore::Shared(log) => {
                let key = format!("{}ticket:{id}", log.prefix);
                log.kv_set_ex(&key, &value, ttl.as_secs().max(1))?;
            }
        }
        Ok(id)
    }

    /// Takes the ticket `id` out of the store (so it works once); `None`
    /// when unknown, used or expired.
    pub fn take(&self, id: &str, now_ms: u64) -> Result<Option<Ticket>, TicketError> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let value = match self {
            TicketStore::Local(tree) => tree.remove(id.as_bytes())?.map(|v| v.to_vec()),
            TicketStore::Shared(log) => log.kv_take(&format!("{}ticket:{id}", log.prefix))?,
        };
        let Some(value) = value else { return Ok(None) };
        let ticket: Ticket = serde_json::from_slice(&value)?;
        Ok((ticket.expires_ms > now_ms).then_some(ticket))
    }

    /// Drops expired tickets from the local store (Redis expires its own).
    pub fn sweep(&self, now_ms: u64) {
        let TicketStore::Local(tree) = self else {
            return;
        };
        let expired: Vec<sled::IVec> = tree
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| {
                serde_json::from_slice::<Ticket>(v).map_or(true, |t| t.expires_ms <= now_ms)
            })
            .map(|(k, _)| k)
            .collect();
        for k in expired {
            let _ = tree.remove(k);
        }
    }
}
