//! One-time tickets: a client authenticated by a route's auth plugin (a
//! bearer token, say) trades its credentials for a short-lived random
//! ticket, and opens the stream with `?ticket=…` — for EventSource, which
//! cannot send headers, without putting the long-lived token in a URL.
//! A ticket is consumed by its first use. Tickets live in a store beside
//! the log (`spout_log::Store`: the log's sled database, or Redis in cluster
//! mode, so any node honours them).

use crate::log::Store;
use crate::plugin::bindings::types::Request as PluginRequest;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Why a ticket could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// The store failed (sled, or Redis in cluster mode).
    #[error("ticket store: {0}")]
    Store(#[from] crate::log::LogError),
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

/// Where tickets are kept: the store `tickets` (sled tree) or Redis keys
/// `PREFIX:ticket:ID` with a TTL in cluster mode.
pub struct TicketStore {
    store: Store,
}

impl TicketStore {
    /// Tickets in `store`.
    pub fn new(store: Store) -> TicketStore {
        TicketStore { store }
    }

    /// Stores `ticket` under a new random id, valid for `ttl`; returns the id.
    pub fn issue(&self, ticket: &Ticket, ttl: Duration) -> Result<String, TicketError> {
        let id = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let value = serde_json::to_vec(ticket)?;
        self.store.set_for(id.as_bytes(), &value, ttl)?;
        Ok(id)
    }

    /// Takes the ticket `id` out of the store (so it works once); `None`
    /// when unknown, used or expired.
    pub fn take(&self, id: &str, now_ms: u64) -> Result<Option<Ticket>, TicketError> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let Some(value) = self.store.take(id.as_bytes())? else {
            return Ok(None);
        };
        let ticket: Ticket = serde_json::from_slice(&value)?;
        Ok((ticket.expires_ms > now_ms).then_some(ticket))
    }

    /// Drops expired tickets from a local store (Redis expires its own).
    pub fn sweep(&self, now_ms: u64) {
        self.store
            .retain(|v| serde_json::from_slice::<Ticket>(v).is_ok_and(|t| t.expires_ms > now_ms));
    }
}
