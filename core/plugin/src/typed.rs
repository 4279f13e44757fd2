//! Plugin handles typed by kind: the pipeline wires each config slot with a
//! [`Typed`] handle of the slot's kind, made once when the kind is checked,
//! so only that kind's calls exist on it and no call re-checks the kind at
//! run time.

use crate::bindings::types::{
    Connection, Denial, Encoded, EventBatch as Batch, Principal, Request, Subscription,
};
use crate::{wire, CallError, Kind, Plugin};
use std::marker::PhantomData;
use std::sync::Arc;

/// A plugin kind as a type.
pub trait PluginKind: Send + Sync + 'static {
    /// The kind's world.
    const KIND: Kind;
}

/// Kind markers for [`Typed`].
pub mod kinds {
    use super::{Kind, PluginKind};

    macro_rules! kind {
        ($name:ident, $doc:literal) => {
            #[doc = $doc]
            #[derive(Debug)]
            pub struct $name;
            impl PluginKind for $name {
                const KIND: Kind = Kind::$name;
            }
        };
    }
    kind!(Auth, "Authenticates requests.");
    kind!(Filter, "Chooses events per subscription key.");
    kind!(Transform, "Rewrites events before they are stored.");
    kind!(Batch, "Merges a window of events.");
    kind!(Compress, "Encodes event data.");
    kind!(Source, "Produces events.");
}

/// A loaded plugin known to be of kind `K`. Clones share the plugin; it
/// derefs to [`Plugin`] for its name, figures and limits.
pub struct Typed<K> {
    plugin: Arc<Plugin>,
    _kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Typed<K> {
    fn clone(&self) -> Self {
        Typed {
            plugin: self.plugin.clone(),
            _kind: PhantomData,
        }
    }
}

impl<K> std::fmt::Debug for Typed<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.plugin.fmt(f)
    }
}

impl<K> std::ops::Deref for Typed<K> {
    type Target = Plugin;
    fn deref(&self) -> &Plugin {
        &self.plugin
    }
}

impl<K: PluginKind> Typed<K> {
    /// The handle of kind `K` to `plugin`, if it is one.
    pub fn of(plugin: &Arc<Plugin>) -> Option<Typed<K>> {
        (plugin.kind() == K::KIND).then(|| Typed {
            plugin: plugin.clone(),
            _kind: PhantomData,
        })
    }

    /// Runs `f` with this handle on the plugin pool (never on the threads
    /// log reads use) and awaits it; refused at once when the plugin's
    /// queue is full (see [`crate::guard`]).
    pub async fn run<R, F>(&self, f: F) -> Result<R, CallError>
    where
        R: Send + 'static,
        F: FnOnce(&Typed<K>) -> Result<R, CallError> + Send + 'static,
    {
        let me = self.clone();
        self.plugin.run(move |_| f(&me)).await
    }
}

/// An `auth` plugin.
pub type AuthPlugin = Typed<kinds::Auth>;
/// A `filter` plugin.
pub type FilterPlugin = Typed<kinds::Filter>;
/// A `transform` plugin.
pub type TransformPlugin = Typed<kinds::Transform>;
/// A `batch` plugin.
pub type BatchPlugin = Typed<kinds::Batch>;
/// A `compress` plugin.
pub type CompressPlugin = Typed<kinds::Compress>;
/// A `source` plugin.
pub type SourcePlugin = Typed<kinds::Source>;

impl AuthPlugin {
    /// Who the request belongs to, or why it is refused.
    pub fn authenticate(&self, req: &Request) -> Result<Result<Principal, Denial>, CallError> {
        self.plugin.authenticate(req)
    }

    /// Tells the plugin a connection it authenticated has ended.
    pub fn on_disconnect(&self, conn: &Connection) -> Result<(), CallError> {
        self.plugin.on_disconnect(conn)
    }
}

impl FilterPlugin {
    /// Which events of `events` a subscription keeps, as a mask.
    pub fn keep(&self, sub: &Subscription, events: &Batch) -> Result<Vec<bool>, CallError> {
        self.plugin.keep(sub, events)
    }
}

impl TransformPlugin {
    /// The events to store instead of `events`, or the plugin's refusal.
    pub fn apply(&self, events: &Batch) -> Result<Result<Vec<wire::Returned>, Denial>, CallError> {
        self.plugin.apply(events)
    }
}

impl BatchPlugin {
    /// The frames to send for a window of events.
    pub fn merge(&self, events: &Batch) -> Result<Vec<wire::Returned>, CallError> {
        self.plugin.merge(events)
    }
}

impl CompressPlugin {
    /// Encoded data, or `None` to send it as it is.
    pub fn encode(&self, data: &[u8]) -> Result<Option<Encoded>, CallError> {
        self.plugin.encode(data)
    }
}

impl SourcePlugin {
    /// Events produced on the host's timer.
    pub fn poll(&self, now_ms: u64) -> Result<Vec<wire::Returned>, CallError> {
        self.plugin.poll(now_ms)
    }

    /// Events produced from host-read input (file lines, a webhook).
    pub fn on_input(
        &self,
        input: &[u8],
        meta: &[(String, String)],
    ) -> Result<Result<Vec<wire::Returned>, Denial>, CallError> {
        self.plugin.on_input(input, meta)
    }
}
