//! Compiled components, cached in memory and on disk by the SHA-256 of the
//! component bytes (and the engine's compatibility hash): compiling takes tens of milliseconds, loading a cached
//! artifact well under one.

use super::LoadError;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use wasmtime::component::Component;
use wasmtime::Engine;

/// Where compiled artifacts live.
pub struct ArtifactCache {
    dir: PathBuf,
    memory: Mutex<HashMap<[u8; 32], Component>>,
}

impl ArtifactCache {
    /// A cache writing into `dir` (created on first use).
    pub fn new(dir: PathBuf) -> ArtifactCache {
        ArtifactCache {
            dir,
            memory: Mutex::new(HashMap::new()),
        }
    }

    /// The compiled component for `bytes`: from memory, from disk, or
    /// compiled now (and written to disk for the next start).
    pub fn component(&self, engine: &Engine, bytes: &[u8]) -> Result<Component, LoadError> {
        let hash: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(c) = self.lock().get(&hash) {
            return Ok(c.clone());
        }
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        // Engines with different settings or builds (debug and release,
        // another wasmtime) keep their own artifacts side by side.
        let engine_key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            h.finish()
        };
        let path = self.dir.join(format!("{hex}-{engine_key:016x}.cwasm"));
        if path.exists() {
            // SAFETY: the file was written by `precompile_component` of an
            // engine like this one into Spout's own data directory;
            // wasmtime checks version and configuration compatibility.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => {
                    self.lock().insert(hash, c.clone());
                    return Ok(c);
                }
                Err(err) => {
                    tracing::info!(path = %path.display(), error = %err, "cached plugin artifact is stale; recompiling");
                }
            }
        }
        let artifact = engine
            .precompile_component(bytes)
            .map_err(LoadError::Compile)?;
        if let Err(err) = std::fs::create_dir_all(&self.dir).and_then(|()| {
            // Unique per writer: several processes may share the directory.
            let tmp = path.with_extension(format!(
                "{}.{:?}.tmp",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::write(&tmp, &artifact)?;
            std::fs::rename(&tmp, &path)
        }) {
            tracing::warn!(path = %path.display(), error = %err, "cannot cache compiled plugin");
        }
        // SAFETY: `artifact` was just produced by `precompile_component` on
        // this engine.
        let c = unsafe { Component::deserialize(engine, &artifact) }.map_err(LoadError::Compile)?;
        self.lock().insert(hash, c.clone());
        Ok(c)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Component>> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }
}
