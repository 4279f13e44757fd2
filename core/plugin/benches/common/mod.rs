//! What the plugin benches share.

use spout_plugin::Stores;
use std::sync::Arc;

/// Plugin key-value stores in a temporary sled database.
pub fn kv() -> Stores {
    let db = sled::Config::new().temporary(true).open().unwrap();
    Arc::new(move |name| {
        db.open_tree(format!("plugin:{name}"))
            .map(spout_log::Store::Local)
            .map_err(|e| spout_plugin::LoadError::Kv(e.to_string()))
    })
}
