//! Write Spout plugins as one trait impl (or one function) per kind.
//!
//! A Spout plugin is a wasm32-wasip2 component exporting one world of the
//! `spout:plugin` WIT package (bundled in `../wit`). This crate hides the
//! generated bindings: implement [`Filter`], [`Auth`], [`Transform`],
//! [`Batcher`], [`Compress`] or [`Source`] and call the matching `export_*!`
//! macro. Events arrive as borrowed [`Event`] views into one buffer.
//! Source plugins can read the server's live figures with [`stats`].
//!
//! ```ignore
//! struct OnlyErrors;
//! impl spout_sdk::Plugin for OnlyErrors {
//!     const NAME: &'static str = "only-errors";
//!     type Config = spout_sdk::NoConfig;
//!     fn new(_: spout_sdk::NoConfig) -> Result<Self, String> {
//!         Ok(OnlyErrors)
//!     }
//! }
//! impl spout_sdk::Filter for OnlyErrors {
//!     fn keep(&self, _sub: &spout_sdk::Subscription, e: &spout_sdk::Event) -> bool {
//!         e.kind == "error"
//!     }
//! }
//! spout_sdk::export_filter!(OnlyErrors);
//! ```
//!
//! # Config
//!
//! A plugin's `config` table from `config.toml` reaches `init` as JSON. The
//! SDK parses it into [`Plugin::Config`] before calling [`Plugin::new`]
//! (`""` and `null` count as `{}`), so a bad config is refused with the key
//! path at fault (``config key `keys[0].user`: missing field `user` ``), and
//! `describe` reports a JSON Schema generated from the same type, so the
//! schema cannot drift from what is accepted. Plugins without config use
//! [`NoConfig`].
//!
//! Derive both traits on the config type. The stock plugins depend on
//! `serde` (with `derive`) and `schemars` 1.x (the versions this SDK uses)
//! and write `#[derive(serde::Deserialize, schemars::JsonSchema)]`. A crate
//! that would rather depend on the SDK alone can use its re-exports instead:
//!
//! ```ignore
//! use spout_sdk::{schemars, serde};
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! #[serde(crate = "spout_sdk::serde", deny_unknown_fields)]
//! #[schemars(crate = "spout_sdk::schemars")]
//! struct Config {
//!     /// Events of this type pass.
//!     #[serde(default = "default_kind")]
//!     kind: String,
//! }
//! # fn default_kind() -> String { "error".into() }
//!
//! struct OnlyKind(String);
//! impl spout_sdk::Plugin for OnlyKind {
//!     const NAME: &'static str = "only-kind";
//!     type Config = Config;
//!     fn new(config: Config) -> Result<Self, String> {
//!         Ok(OnlyKind(config.kind))
//!     }
//! }
//! ```
//!
//! `#[serde(deny_unknown_fields)]` refuses unknown keys (and makes the
//! schema say `"additionalProperties": false`); doc comments become
//! descriptions; `#[schemars(range(..))]`, `#[schemars(length(..))]`,
//! `#[schemars(required)]` and `#[schemars(extend(..))]` add what the type
//! alone cannot say (check such constraints in `new` as well: the host does
//! not validate against the schema).

#![allow(clippy::too_many_arguments)]

/// Generated bindings, one module per world. Plugin code rarely needs these.
pub mod bindings {
    /// Imports shared by every world (log, clock, kv) and the shared types.
    pub mod base {
        wit_bindgen::generate!({
            path: "../wit",
            world: "base",
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "spout_sdk::bindings::base",
        });
    }
    macro_rules! world {
        ($name:ident, $world:literal, $module:literal) => {
            #[allow(missing_docs)]
            pub mod $name {
                wit_bindgen::generate!({
                    path: "../wit",
                    world: $world,
                    pub_export_macro: true,
                    export_macro_name: "export",
                    default_bindings_module: $module,
                    with: {
                        "spout:plugin/types@0.1.0": crate::bindings::base::spout::plugin::types,
                    },
                });
            }
        };
    }
    world!(auth, "auth-only", "spout_sdk::bindings::auth");
    world!(filter, "filter-only", "spout_sdk::bindings::filter");
    world!(
        transform,
        "transform-only",
        "spout_sdk::bindings::transform"
    );
    world!(batch, "batch-only", "spout_sdk::bindings::batch");
    world!(compress, "compress-only", "spout_sdk::bindings::compress");
    world!(source, "source-only", "spout_sdk::bindings::source");
}

use bindings::base::spout::plugin::types as wit;

pub use schemars;
pub use serde;
/// Topic names and selectors (exact, `*`, a final `**`): the host's own
/// matcher, so a plugin accepts and matches topics exactly as Spout does.
pub use spout_topic as topic;

pub use wit::{Connection, Denial, Encoded, Principal, Request, Subscription};

/// The raw batch type crossing the boundary (buffer + spans).
pub type RawBatch = wit::EventBatch;

/// A borrowed view of one event of a batch.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// Log id (0 for events not yet stored).
    pub id: u64,
    /// Milliseconds since the Unix epoch when the log accepted it.
    pub time_ms: u64,
    /// The topic it was published to.
    pub topic: &'a str,
    /// The SSE `event:` type; `message` when the publisher gave none.
    pub kind: &'a str,
    /// The `data` bytes (JSON or text, as published).
    pub data: &'a [u8],
    /// The user a private event is addressed to.
    pub target: Option<&'a str>,
}

impl<'a> Event<'a> {
    /// The data as UTF-8 text (empty if it is not valid UTF-8).
    pub fn text(&self) -> &'a str {
        std::str::from_utf8(self.data).unwrap_or("")
    }
}

fn slice(buf: &[u8], s: wit::Span) -> &[u8] {
    let start = s.offset as usize;
    buf.get(start..start.saturating_add(s.len as usize))
        .unwrap_or(&[])
}

fn text(buf: &[u8], s: wit::Span) -> &str {
    std::str::from_utf8(slice(buf, s)).unwrap_or("")
}

/// Iterate the events of a raw batch as borrowed views.
pub fn events(batch: &RawBatch) -> impl Iterator<Item = Event<'_>> {
    batch.events.iter().map(move |r| {
        let kind = text(&batch.buf, r.kind);
        Event {
            id: r.id,
            time_ms: r.time_ms,
            topic: text(&batch.buf, r.topic),
            kind: if kind.is_empty() { "message" } else { kind },
            data: slice(&batch.buf, r.data),
            target: r.target.map(|t| text(&batch.buf, t)),
        }
    })
}

/// Builds a batch of new events to hand back to the host.
#[derive(Default)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    events: Vec<wit::EventRef>,
}

impl BatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    fn span(&mut self, bytes: &[u8]) -> wit::Span {
        let offset = self.buf.len() as u32;
        self.buf.extend_from_slice(bytes);
        wit::Span {
            offset,
            len: bytes.len() as u32,
        }
    }

    /// Append an event (id and time are assigned by the host when stored;
    /// a batch plugin may set `id` to say which stored id a frame stands for).
    pub fn push(&mut self, id: u64, topic: &str, kind: &str, data: &[u8], target: Option<&str>) {
        let topic = self.span(topic.as_bytes());
        let kind = self.span(kind.as_bytes());
        let data = self.span(data);
        let target = target.map(|t| self.span(t.as_bytes()));
        self.events.push(wit::EventRef {
            id,
            time_ms: 0,
            topic,
            kind,
            data,
            target,
        });
    }

    /// Append a copy of an existing event.
    pub fn push_event(&mut self, e: &Event<'_>) {
        self.push(e.id, e.topic, e.kind, e.data, e.target);
    }

    /// Number of events so far.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event was pushed.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The finished batch.
    pub fn finish(self) -> RawBatch {
        wit::EventBatch {
            buf: self.buf,
            events: self.events,
        }
    }
}

/// Host logging (lines appear in Spout's log tagged with the plugin name).
pub mod log {
    use crate::bindings::base::spout::plugin::log::{write, Level};
    /// Log at debug level.
    pub fn debug(msg: &str) {
        write(Level::Debug, msg)
    }
    /// Log at info level.
    pub fn info(msg: &str) {
        write(Level::Info, msg)
    }
    /// Log at warn level.
    pub fn warn(msg: &str) {
        write(Level::Warn, msg)
    }
    /// Log at error level.
    pub fn error(msg: &str) {
        write(Level::Error, msg)
    }
}

/// Host clocks.
pub mod clock {
    pub use crate::bindings::base::spout::plugin::clock::{monotonic_ns, wall_ms};
}

/// The plugin's own key-value store (persisted by the host).
pub mod kv {
    pub use crate::bindings::base::spout::plugin::kv::{delete, get, set};
}

/// Live server figures, as [`stats`] returns them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stats {
    /// Open SSE connections on this node.
    pub connections: u64,
    /// Events appended to the log since start-up.
    pub events_total: u64,
    /// Events appended per second, over the last few seconds.
    pub events_per_second: f64,
    /// Milliseconds since the server started.
    pub uptime_ms: u64,
}

/// The server's live figures, from the host's `stats` import.
///
/// The import belongs to the `source` world: call this from [`Source`]
/// plugins only. A component of another kind that calls it imports an
/// interface its world does not offer, and the host will not load it.
pub fn stats() -> Stats {
    let s = bindings::source::spout::plugin::stats::current();
    Stats {
        connections: s.connections,
        events_total: s.events_total,
        events_per_second: s.events_per_second,
        uptime_ms: s.uptime_ms,
    }
}

/// What every plugin kind shares: construction from config and a description.
pub trait Plugin: Sized + 'static {
    /// Name shown by `describe` (defaults to the crate name).
    const NAME: &'static str;
    /// Version shown by `describe`.
    const VERSION: &'static str = "0.1.0";
    /// Its `config` table from config.toml, parsed before `new`.
    ///
    /// `describe` reports its JSON Schema; [`NoConfig`] when there is none.
    type Config: serde::de::DeserializeOwned + schemars::JsonSchema;
    /// Build the plugin from its parsed config; an `Err` fails `init` (a
    /// config error naming the plugin).
    fn new(config: Self::Config) -> Result<Self, String>;
}

/// The config of a plugin that takes none: accepts and ignores whatever it
/// is given; its schema is `{"type":"object"}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoConfig;

impl<'de> serde::Deserialize<'de> for NoConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| NoConfig)
    }
}

impl schemars::JsonSchema for NoConfig {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "NoConfig".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "object" })
    }
}

/// Parses the config JSON the host passes to `init` (`""` and `null` mean
/// `{}`). An error names the key path at fault: ``config key `a.b[2]`: ..``,
/// or ``config: ..`` for the config as a whole.
pub fn parse_config<C: serde::de::DeserializeOwned>(json: &str) -> Result<C, String> {
    let json = match json.trim() {
        "" | "null" => "{}",
        j => j,
    };
    let mut de = serde_json::Deserializer::from_str(json);
    match serde_path_to_error::deserialize(&mut de) {
        // Only whitespace may follow the value.
        Ok(config) => de
            .end()
            .map(|()| config)
            .map_err(|e| format!("config: {e}")),
        Err(e) => Err(config_error(e)),
    }
}

/// A parse error as `init` reports it, naming the key path at fault.
fn config_error(e: serde_path_to_error::Error<serde_json::Error>) -> String {
    let mut path = e.path().to_string();
    let inner = e.into_inner();
    let mut msg = inner.to_string();
    if inner.is_data() {
        // The key path says where; a position in the JSON the host made of
        // the TOML table would only confuse.
        let at = format!(" at line {} column {}", inner.line(), inner.column());
        if let Some(m) = msg.strip_suffix(&at) {
            msg.truncate(m.len());
        }
        // A missing key is reported at its parent: name the key itself.
        if let Some(key) = msg
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            if path != "." {
                path = format!("{path}.{key}");
            }
        }
    }
    if path == "." {
        format!("config: {msg}")
    } else {
        format!("config key `{path}`: {msg}")
    }
}

/// What `init` does: [`parse_config`], then [`Plugin::new`]. Handy in a
/// plugin's unit tests.
pub fn init<T: Plugin>(config: &str) -> Result<T, String> {
    T::new(parse_config(config)?)
}

/// The JSON Schema (draft 2020-12) of a config type, as `describe` reports
/// it: subschemas inlined, no title.
pub fn config_schema<C: schemars::JsonSchema>() -> schemars::Schema {
    // Not `into_root_schema_for`: its title handling and transforms cost
    // tens of KiB in every component for nothing a plugin needs.
    let mut generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let mut schema = generator.subschema_for::<C>();
    // Only a recursive type leaves definitions behind.
    let definitions = generator.take_definitions(false);
    if !definitions.is_empty() {
        schema.insert("$defs".into(), definitions.into());
    }
    schema.insert(
        "$schema".into(),
        "https://json-schema.org/draft/2020-12/schema".into(),
    );
    schema
}

/// `config_schema::<NoConfig>()` as JSON text.
const NO_CONFIG_SCHEMA: &str =
    "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"type\":\"object\"}";

/// `describe()` JSON for a plugin type: `{"name","version","config_schema"}`.
pub fn describe<T: Plugin>() -> String {
    // Serialising strings and a plain JSON value cannot fail.
    let text = |s: &str| serde_json::to_string(s).unwrap_or_default();
    // `NoConfig`'s schema is known: spare such plugins the generator (the
    // comparison of two constants folds away at compile time).
    let schema = if std::any::type_name::<T::Config>() == std::any::type_name::<NoConfig>() {
        NO_CONFIG_SCHEMA.to_owned()
    } else {
        serde_json::to_string(config_schema::<T::Config>().as_value())
            .unwrap_or_else(|_| "{\"type\":\"object\"}".into())
    };
    format!(
        "{{\"name\":{},\"version\":{},\"config_schema\":{}}}",
        text(T::NAME),
        text(T::VERSION),
        schema
    )
}

/// A subscription filter: which events a subscriber sees.
pub trait Filter: Plugin {
    /// Whether `event` goes to subscribers with this subscription key.
    fn keep(&self, sub: &Subscription, event: &Event<'_>) -> bool;

    /// Decides a whole batch for one subscription key: push the indices of
    /// the kept events, ascending. The default asks [`Filter::keep`] per
    /// event; override it to do per-subscription work (parsing parameters)
    /// once per call instead of once per event.
    fn keep_batch(&self, sub: &Subscription, batch: &RawBatch, kept: &mut Vec<u32>) {
        for (i, e) in events(batch).enumerate() {
            if self.keep(sub, &e) {
                kept.push(i as u32);
            }
        }
    }
}

/// Authentication and authorization of requests.
pub trait Auth: Plugin {
    /// The principal for a request, or why it is refused.
    fn authenticate(&self, req: &Request) -> Result<Principal, Denial>;
    /// Called when a connection authenticated by this plugin ends.
    fn on_disconnect(&self, _conn: &Connection) {}
}

/// Ingest-side rewrite: enrich, split, drop or refuse events before they
/// are stored.
pub trait Transform: Plugin {
    /// Push the events to store for `event` into `out` (none drops it), or
    /// refuse the whole publish with a [`Denial`] (status and reason are
    /// what the publisher gets, e.g. 422 and validation errors).
    fn apply(&self, event: &Event<'_>, out: &mut BatchBuilder) -> Result<(), Denial>;
}

/// Merges the events a stream collected over its window.
pub trait Batcher: Plugin {
    /// Merge a window's events into the frames to send.
    fn merge(&self, events: &RawBatch) -> RawBatch;
}

/// Encodes event data.
pub trait Compress: Plugin {
    /// Encode `data`, or `None` to send it as it is.
    fn encode(&self, data: &[u8]) -> Option<Encoded>;
}

/// Produces events from a timer or host-fed input.
pub trait Source: Plugin {
    /// Called on the host's timer.
    fn poll(&self, _now_ms: u64, _out: &mut BatchBuilder) {}
    /// Called with input the host read and its metadata (header pairs).
    fn on_input(
        &self,
        _input: &[u8],
        _meta: &[(String, String)],
        _out: &mut BatchBuilder,
    ) -> Result<(), Denial> {
        Ok(())
    }
}

/// Runtime support for the export macros; not part of the stable API.
#[doc(hidden)]
pub mod rt {
    use std::cell::RefCell;

    /// The single plugin instance of a component, set by `init`.
    pub struct Slot<T>(RefCell<Option<T>>);

    // SAFETY: wasm32-wasip2 components are single-threaded.
    unsafe impl<T> Sync for Slot<T> {}

    impl<T> Slot<T> {
        /// An empty slot.
        pub const fn new() -> Self {
            Slot(RefCell::new(None))
        }
        /// Store the instance.
        pub fn set(&self, v: T) {
            *self.0.borrow_mut() = Some(v);
        }
        /// Run `f` with the instance; panics (a trap) if `init` was not called.
        pub fn with<R>(&self, f: impl FnOnce(&T) -> R) -> R {
            let g = self.0.borrow();
            match g.as_ref() {
                Some(v) => f(v),
                None => panic!("plugin used before init"),
            }
        }
    }

    impl<T> Default for Slot<T> {
        fn default() -> Self {
            Self::new()
        }
    }
}

/// Implements the lifecycle interface for `$ty` inside an export macro.
#[doc(hidden)]
#[macro_export]
macro_rules! __lifecycle {
    ($world:ident, $ty:ty) => {
        impl $crate::bindings::base::exports::spout::plugin::lifecycle::Guest for __SpoutExport {
            fn describe() -> String {
                $crate::describe::<$ty>()
            }
            fn init(config: String) -> Result<(), String> {
                let v = $crate::init::<$ty>(&config)?;
                __SPOUT_SLOT.set(v);
                Ok(())
            }
        }
        static __SPOUT_SLOT: $crate::rt::Slot<$ty> = $crate::rt::Slot::new();
        $crate::bindings::base::export!(__SpoutExport with_types_in $crate::bindings::base);
    };
}

/// Export a [`Filter`] implementation as the component's `filter` world.
#[macro_export]
macro_rules! export_filter {
    ($ty:ty) => {
        const _: () = {
            struct __SpoutExport;
            $crate::__lifecycle!(filter, $ty);
            impl $crate::bindings::filter::Guest for __SpoutExport {
                fn keep(sub: $crate::Subscription, events: $crate::RawBatch) -> Vec<u32> {
                    __SPOUT_SLOT.with(|p| {
                        let mut kept = Vec::with_capacity(events.events.len());
                        <$ty as $crate::Filter>::keep_batch(p, &sub, &events, &mut kept);
                        kept
                    })
                }
            }
    $crate::bindings::filter::export!(__SpoutExport with_types_in $crate::bindings::filter);
        };
    };
}

/// Export a stateless filter function `fn(&Subscription, &Event) -> bool`
/// (config is ignored: [`NoConfig`]): the shortest way to write a filter.
#[macro_export]
macro_rules! filter_fn {
    ($name:literal, $f:path) => {
        struct __SpoutFnFilter;
        impl $crate::Plugin for __SpoutFnFilter {
            const NAME: &'static str = $name;
            type Config = $crate::NoConfig;
            fn new(_config: $crate::NoConfig) -> Result<Self, String> {
                Ok(__SpoutFnFilter)
            }
        }
        impl $crate::Filter for __SpoutFnFilter {
            fn keep(&self, sub: &$crate::Subscription, e: &$crate::Event<'_>) -> bool {
                $f(sub, e)
            }
        }
        $crate::export_filter!(__SpoutFnFilter);
    };
}

/// Export an [`Auth`] implementation as the component's `auth` world.
#[macro_export]
macro_rules! export_auth {
    ($ty:ty) => {
        const _: () = {
            struct __SpoutExport;
            $crate::__lifecycle!(auth, $ty);
            impl $crate::bindings::auth::Guest for __SpoutExport {
                fn authenticate(req: $crate::Request) -> Result<$crate::Principal, $crate::Denial> {
                    __SPOUT_SLOT.with(|p| <$ty as $crate::Auth>::authenticate(p, &req))
                }
                fn on_disconnect(conn: $crate::Connection) {
                    __SPOUT_SLOT.with(|p| <$ty as $crate::Auth>::on_disconnect(p, &conn))
                }
            }
    $crate::bindings::auth::export!(__SpoutExport with_types_in $crate::bindings::auth);
        };
    };
}

/// Export a [`Transform`] implementation as the component's `transform` world.
#[macro_export]
macro_rules! export_transform {
    ($ty:ty) => {
        const _: () = {
            struct __SpoutExport;
            $crate::__lifecycle!(transform, $ty);
            impl $crate::bindings::transform::Guest for __SpoutExport {
                fn apply(
                    events: $crate::RawBatch,
                ) -> ::core::result::Result<$crate::RawBatch, $crate::Denial> {
                    __SPOUT_SLOT.with(|p| {
                        let mut out = $crate::BatchBuilder::new();
                        for e in $crate::events(&events) {
                            <$ty as $crate::Transform>::apply(p, &e, &mut out)?;
                        }
                        Ok(out.finish())
                    })
                }
            }
            $crate::bindings::transform::export!(__SpoutExport with_types_in $crate::bindings::transform);
        };
    };
}

/// Export a [`Batcher`] implementation as the component's `batch` world.
#[macro_export]
macro_rules! export_batch {
    ($ty:ty) => {
        const _: () = {
            struct __SpoutExport;
            $crate::__lifecycle!(batch, $ty);
            impl $crate::bindings::batch::Guest for __SpoutExport {
                fn merge(events: $crate::RawBatch) -> $crate::RawBatch {
                    __SPOUT_SLOT.with(|p| <$ty as $crate::Batcher>::merge(p, &events))
                }
            }
    $crate::bindings::batch::export!(__SpoutExport with_types_in $crate::bindings::batch);
        };
    };
}

/// Export a [`Compress`] implementation as the component's `compress` world.
#[macro_export]
macro_rules! export_compress {
    ($ty:ty) => {
        const _: () = {
            struct __SpoutExport;
            $crate::__lifecycle!(compress, $ty);
            impl $crate::bindings::compress::Guest for __SpoutExport {
                fn encode(data: Vec<u8>) -> Option<$crate::Encoded> {
                    __SPOUT_SLOT.with(|p| <$ty as $crate::Compress>::encode(p, &data))
                }
            }
            $crate::bindings::compress::export!(__SpoutExport with_types_in $crate::bindings::compress);
        };
    };
}

/// Export a [`Source`] implementation as the component's `source` world.
#[macro_export]
macro_rules! export_source {
    ($ty:ty) => {
        const _: () = {
            struct __SpoutExport;
            $crate::__lifecycle!(source, $ty);
            impl $crate::bindings::source::Guest for __SpoutExport {
                fn poll(now_ms: u64) -> $crate::RawBatch {
                    __SPOUT_SLOT.with(|p| {
                        let mut out = $crate::BatchBuilder::new();
                        <$ty as $crate::Source>::poll(p, now_ms, &mut out);
                        out.finish()
                    })
                }
                fn on_input(
                    input: Vec<u8>,
                    meta: Vec<(String, String)>,
                ) -> Result<$crate::RawBatch, $crate::Denial> {
                    __SPOUT_SLOT.with(|p| {
                        let mut out = $crate::BatchBuilder::new();
                        <$ty as $crate::Source>::on_input(p, &input, &meta, &mut out)?;
                        Ok(out.finish())
                    })
                }
            }
            // The core export `poll` would shadow libc's `poll` in a native
            // build (a plugin's unit tests), which std calls at start-up.
            #[cfg(target_arch = "wasm32")]
    $crate::bindings::source::export!(__SpoutExport with_types_in $crate::bindings::source);
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, schemars::JsonSchema, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Config {
        /// The keys.
        #[serde(default)]
        keys: Vec<Key>,
        #[serde(default = "default_mode")]
        mode: String,
    }

    fn default_mode() -> String {
        "mask".into()
    }

    #[derive(Deserialize, schemars::JsonSchema, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Key {
        user: String,
        #[serde(default)]
        topics: Vec<String>,
    }

    #[derive(Deserialize, schemars::JsonSchema, Debug)]
    struct Required {
        #[allow(dead_code)]
        secret: String,
    }

    fn err<C: serde::de::DeserializeOwned + std::fmt::Debug>(json: &str) -> String {
        parse_config::<C>(json).unwrap_err()
    }

    #[test]
    fn empty_and_null_are_an_empty_object() {
        for json in ["", "  ", "null", " null\n", "{}"] {
            assert_eq!(
                parse_config::<Config>(json).unwrap(),
                Config {
                    keys: vec![],
                    mode: "mask".into()
                },
                "{json:?}"
            );
        }
        assert_eq!(err::<Required>(""), "config: missing field `secret`");
        assert_eq!(err::<Required>("null"), "config: missing field `secret`");
    }

    #[test]
    fn errors_name_the_key_path() {
        assert_eq!(
            err::<Config>(r#"{"keys":[{"user":"a"},{"topics":[]}]}"#),
            "config key `keys[1].user`: missing field `user`"
        );
        assert_eq!(
            err::<Config>(r#"{"keys":[{"user":"a","topics":["x",7]}]}"#),
            "config key `keys[0].topics[1]`: invalid type: integer `7`, expected a string"
        );
        let unknown = err::<Config>(r#"{"keys":[{"user":"a","usr":"b"}]}"#);
        assert!(
            unknown.starts_with("config key `keys[0].usr`: unknown field `usr`"),
            "{unknown}"
        );
        let unknown = err::<Config>(r#"{"mod":"x"}"#);
        assert!(
            unknown.starts_with("config key `mod`: unknown field `mod`"),
            "{unknown}"
        );
        assert_eq!(
            err::<Config>(r#"{"mode":1}"#),
            "config key `mode`: invalid type: integer `1`, expected a string"
        );
        assert_eq!(
            err::<Config>("5"),
            "config: invalid type: integer `5`, expected struct Config"
        );
        // Syntax errors keep their position.
        assert_eq!(
            err::<Config>(r#"{"mode":"#),
            "config key `mode`: EOF while parsing a value at line 1 column 8"
        );
        assert_eq!(
            err::<Config>("{} x"),
            "config: trailing characters at line 1 column 4"
        );
    }

    #[test]
    fn no_config_takes_anything() {
        for json in ["", "null", "{}", r#"{"a":[1,{"b":null}]}"#, "5"] {
            assert_eq!(parse_config::<NoConfig>(json), Ok(NoConfig), "{json:?}");
        }
        assert_eq!(
            serde_json::to_value(config_schema::<NoConfig>()).unwrap(),
            serde_json::json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object"
            })
        );
    }

    struct Nothing;

    impl Plugin for Nothing {
        const NAME: &'static str = "nothing";
        const VERSION: &'static str = "2.0.0";
        type Config = NoConfig;
        fn new(_: NoConfig) -> Result<Self, String> {
            Ok(Nothing)
        }
    }

    #[test]
    fn no_config_describe_is_the_generated_schema() {
        assert_eq!(
            NO_CONFIG_SCHEMA,
            serde_json::to_string(config_schema::<NoConfig>().as_value()).unwrap()
        );
        assert_eq!(
            describe::<Nothing>(),
            format!(r#"{{"name":"nothing","version":"2.0.0","config_schema":{NO_CONFIG_SCHEMA}}}"#)
        );
        assert!(init::<Nothing>(r#"{"any":"thing"}"#).is_ok());
    }

    struct Dummy(Config);

    impl Plugin for Dummy {
        const NAME: &'static str = "dum\"my";
        type Config = Config;
        fn new(config: Config) -> Result<Self, String> {
            if config.mode == "bad" {
                return Err("`mode` may not be bad".into());
            }
            Ok(Dummy(config))
        }
    }

    #[test]
    fn init_parses_then_builds() {
        assert_eq!(init::<Dummy>("").unwrap().0.mode, "mask");
        assert_eq!(
            init::<Dummy>(r#"{"mode":"bad"}"#).err().unwrap(),
            "`mode` may not be bad"
        );
        assert!(init::<Dummy>(r#"{"mood":"x"}"#)
            .err()
            .unwrap()
            .starts_with("config key `mood`"));
    }

    #[test]
    fn describe_reports_the_schema_of_the_config_type() {
        let d: serde_json::Value = serde_json::from_str(&describe::<Dummy>()).unwrap();
        assert_eq!(d["name"], "dum\"my");
        assert_eq!(d["version"], "0.1.0");
        let s = &d["config_schema"];
        assert_eq!(s["type"], "object");
        assert_eq!(s["additionalProperties"], false);
        assert!(s.get("title").is_none());
        assert!(s.get("$defs").is_none(), "{s}");
        assert_eq!(s["properties"]["mode"]["default"], "mask");
        assert_eq!(s["properties"]["keys"]["description"], "The keys.");
        let key = &s["properties"]["keys"]["items"];
        assert_eq!(key["required"], serde_json::json!(["user"]));
        assert_eq!(key["additionalProperties"], false);
    }

    #[test]
    fn topic_is_the_hosts_matcher() {
        let s = topic::Selector::parse("orders/*").unwrap();
        assert!(s.matches("orders/1"));
        assert!(!s.matches("orders/1/2"));
        assert!(topic::Selector::parse("a/**/b").is_err());
    }
}
