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
//! impl spout_sdk::Filter for OnlyErrors {
//!     fn keep(&self, _sub: &spout_sdk::Subscription, e: &spout_sdk::Event) -> bool {
//!         e.kind == "error"
//!     }
//! }
//! spout_sdk::export_filter!(OnlyErrors);
//! ```

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
    /// JSON schema of the config (shown by `describe`).
    const CONFIG_SCHEMA: &'static str = "{\"type\":\"object\"}";
    /// Build the plugin from its config (the TOML table, as JSON).
    fn new(config: &str) -> Result<Self, String>;
}

/// `describe()` JSON for a plugin type.
pub fn describe<T: Plugin>() -> String {
    format!(
        "{{\"name\":{:?},\"version\":{:?},\"config_schema\":{}}}",
        T::NAME,
        T::VERSION,
        T::CONFIG_SCHEMA
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
                let v = <$ty as $crate::Plugin>::new(&config)?;
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
/// (config is ignored): the shortest way to write a filter.
#[macro_export]
macro_rules! filter_fn {
    ($name:literal, $f:path) => {
        struct __SpoutFnFilter;
        impl $crate::Plugin for __SpoutFnFilter {
            const NAME: &'static str = $name;
            fn new(_config: &str) -> Result<Self, String> {
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
