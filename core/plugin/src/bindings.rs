//! Host bindings generated from `plugins/wit`, one module per world.
//!
//! `base` owns the shared imports (types, log, clock, kv); the kind worlds
//! reuse them so one linker serves every plugin.

#![allow(missing_docs, clippy::all)]

/// Shared types and imports, and the `lifecycle` export.
pub mod base {
    wasmtime::component::bindgen!({
        path: "../../plugins/wit",
        world: "base",
    });
}

macro_rules! kind_world {
    ($module:ident, $world:literal) => {
        /// Bindings of one plugin world.
        pub mod $module {
            wasmtime::component::bindgen!({
                path: "../../plugins/wit",
                world: $world,
                with: {
                    "spout:plugin/types": crate::bindings::base::spout::plugin::types,
                    "spout:plugin/log": crate::bindings::base::spout::plugin::log,
                    "spout:plugin/clock": crate::bindings::base::spout::plugin::clock,
                    "spout:plugin/kv": crate::bindings::base::spout::plugin::kv,
                },
            });
        }
    };
}

kind_world!(auth, "auth");
kind_world!(filter, "filter");
kind_world!(transform, "transform");
kind_world!(batch, "batch");
kind_world!(compress, "compress");
kind_world!(source, "source");

pub use base::spout::plugin::types;
