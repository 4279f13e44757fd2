//! Bans: users an operator threw out for a while (`POST /api/disconnect`
//! with `ban`). A banned user's new streams are refused until the ban ends.
//!
//! The check on every stream open reads memory only; the store beside the
//! log (a sled tree, or Redis keys shared by the cluster) keeps bans across
//! restarts, and in cluster mode every node hears of a new ban through the
//! disconnect it comes with (see [`crate::operate`]).

use crate::event::now_ms;
use crate::log::{LogError, Store};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// One ban.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ban {
    /// The banned user.
    pub user: String,
    /// When it ends, ms since the epoch.
    pub until: u64,
    /// Why (the disconnect's reason).
    pub reason: String,
}

impl Ban {
    /// A ban of `user` for `ttl` from now.
    pub fn new(user: &str, ttl: Duration, reason: &str) -> Ban {
        Ban {
            user: user.to_owned(),
            until: now_ms().saturating_add(ttl.as_millis() as u64),
            reason: reason.to_owned(),
        }
    }

    /// Whether it still holds.
    pub fn is_active(&self) -> bool {
        self.until > now_ms()
    }
}

/// The bans in force.
pub struct Bans {
    store: Store,
    active: Mutex<HashMap<String, Ban>>,
}

impl Bans {
    /// Loads the bans kept in `store` (expired ones are dropped). Blocking.
    pub fn load(store: Store) -> Bans {
        let mut active = HashMap::new();
        match store.entries() {
            Ok(entries) => {
                for (_, v) in entries {
                    if let Ok(ban) = serde_json::from_slice::<Ban>(&v) {
                        if ban.is_active() {
                            active.insert(ban.user.clone(), ban);
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "bans could not be read; none are in force"),
        }
        store.retain(|v| serde_json::from_slice::<Ban>(v).is_ok_and(|b| b.is_active()));
        Bans {
            store,
            active: Mutex::new(active),
        }
    }

    /// Records `ban` here (memory only: another node's ban, already stored).
    pub fn note(&self, ban: Ban) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active.retain(|_, b| b.is_active());
        active.insert(ban.user.clone(), ban);
    }

    /// Records `ban` and stores it for restarts (and the other nodes).
    /// Blocking.
    pub fn add(&self, ban: Ban) -> Result<(), LogError> {
        let ttl = Duration::from_millis(ban.until.saturating_sub(now_ms()).max(1000));
        let value = serde_json::to_vec(&ban).unwrap_or_default();
        self.store.set_for(ban.user.as_bytes(), &value, ttl)?;
        self.note(ban);
        Ok(())
    }

    /// Lifts the ban on `user` (memory only: see [`Bans::lift`]).
    pub fn forget(&self, user: &str) -> bool {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active.remove(user).is_some_and(|b| b.is_active())
    }

    /// Lifts the ban on `user` here and in the store; returns whether one
    /// was in force. Blocking.
    pub fn lift(&self, user: &str) -> Result<bool, LogError> {
        self.store.set(user.as_bytes(), None)?;
        Ok(self.forget(user))
    }

    /// The ban on `user` in force now, if any.
    pub fn of(&self, user: &str) -> Option<Ban> {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active.get(user).filter(|b| b.is_active()).cloned()
    }

    /// Bans in force now.
    pub fn list(&self) -> Vec<Ban> {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Ban> = active.values().filter(|b| b.is_active()).cloned().collect();
        out.sort_by(|a, b| a.user.cmp(&b.user));
        out
    }
}
