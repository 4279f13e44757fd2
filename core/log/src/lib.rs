//! The durable event log: the source of truth for every event.
//!
//! [`EventLog`] is what the rest of Spout sees: append (ids once stored),
//! scan by id range (replay, catch-up, `/poll`), the log's extent, and the
//! key-value [`store`]s that live beside it. Behind it one storage
//! [`Backend`]: sled on one node ([`local`]), Redis Streams in cluster mode
//! ([`streams`]). Whatever the backend, committed (or, in cluster mode,
//! read) events reach subscribers through one dedicated fan-out thread,
//! never a runtime worker: filter plugins may run there.
//!
//! An id is never given to two events, whatever crashes: on one node ids
//! are reserved ahead of use in a high-water mark file beside sled's, so a
//! window a crash loses becomes a gap; blocks are checksummed and chained,
//! start-up refuses a damaged log before sled can discard anything, and
//! [`repair`] keeps every intact event and moves on.
//!
//! This crate owns storage and nothing else: it may import `spout-proto`
//! (events, config) but never the plugin host (wasmtime), HTTP (hyper) or
//! the server; it builds and tests on its own.

#![warn(missing_docs)]

pub mod local;
mod record;
pub mod remote;
pub mod store;
pub mod streams;

pub use local::repair::{repair, RepairReport};
pub use record::{decode, RecordError, View};
pub use store::Store;

pub(crate) use spout_proto::{config, event};

use crate::config::{ClusterConfig, LogConfig};
use crate::event::{Event, NewEvent};
use record::Digest;
use std::cell::Cell;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What the fan-out thread calls with every committed batch, in id order;
/// the hub.
pub type Sink = Arc<dyn Fn(&[Arc<Event>]) + Send + Sync>;

/// A boxed future, for the object-safe [`Backend::append`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A failure of the log; publishers see it as a 5xx (a conflict as 409).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The data directory could not be opened (in use, unreadable).
    #[error("cannot open the log at {path}: {source}")]
    Open {
        /// The data directory.
        path: PathBuf,
        /// What sled reported.
        source: sled::Error,
    },
    /// The data directory is damaged: events are missing, a block fails its
    /// checksum, or the storage engine cannot read its own files.
    #[error(
        "the log in {path} is damaged: {detail}. To keep every intact event and go on with ids above all used ones, stop Spout and run `spout repair {path}` (or start with `spout serve --recover`); the damaged files are kept aside, not deleted"
    )]
    Damaged {
        /// The data directory.
        path: PathBuf,
        /// What is wrong, with the id range where known.
        detail: String,
    },
    /// A read or write failed.
    #[error("storage error: {0}")]
    Storage(#[from] sled::Error),
    /// A stored record could not be decoded.
    #[error("record {id} is unreadable: {source}")]
    Corrupt {
        /// The event id.
        id: u64,
        /// What is wrong with it.
        source: RecordError,
    },
    /// An idempotency key (or Mercure update id) was used before for an
    /// event with other content; nothing of the request was stored.
    #[error("{what} was already used for event {id} with other content")]
    Conflict {
        /// The key, described for the publisher.
        what: String,
        /// The event that holds it.
        id: u64,
    },
    /// A group commit failed; every publisher in it gets this.
    #[error("append failed: {0}")]
    Append(String),
    /// The log was closed (shutdown) before the request was handled.
    #[error("the log is closed")]
    Closed,
    /// Cluster mode: Redis could not be reached or refused the command.
    /// Nothing was acknowledged.
    #[error("the shared log (Redis) is unavailable: {0}")]
    Unavailable(String),
}

pub(crate) fn id_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

pub(crate) fn key_id(key: &[u8]) -> u64 {
    key.get(..8)
        .and_then(|k| k.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

pub(crate) fn dedupe_key(topic: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + key.len() + 1);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// A dedupe entry: the id, then the content digest (entries written before
/// digests existed hold only the id and match any content).
pub(crate) fn dedupe_value(id: u64, digest: &Digest) -> [u8; 24] {
    let mut v = [0u8; 24];
    v[..8].copy_from_slice(&id_key(id));
    v[8..].copy_from_slice(digest);
    v
}

pub(crate) fn dedupe_digest(v: &[u8]) -> Option<Digest> {
    v.get(8..24).and_then(|d| d.try_into().ok())
}

/// The dedupe entries of an event: its idempotency key on its topic, and a
/// Mercure wire id, which is unique across all topics (stored under the empty
/// topic, which no event can have).
pub(crate) fn dedupe_keys(
    topic: &str,
    key: Option<&str>,
    wire_id: Option<&str>,
) -> [Option<Vec<u8>>; 2] {
    [
        key.map(|k| dedupe_key(topic, k)),
        wire_id.map(|w| dedupe_key("", w)),
    ]
}

/// How a conflicting dedupe key is named to the publisher.
pub(crate) fn describe_key(dk: &[u8]) -> String {
    let text = String::from_utf8_lossy(dk);
    match text.split_once('\0') {
        Some(("", wire)) => format!("update id `{wire}`"),
        Some((topic, key)) => format!("idempotency key `{key}` on topic `{topic}`"),
        None => format!("key `{text}`"),
    }
}

pub(crate) fn wire_id_of(ne: &NewEvent) -> Option<&str> {
    ne.extra.as_ref().and_then(|x| x.wire_id.as_deref())
}

pub(crate) fn meta_u64(meta: &sled::Tree, key: &[u8]) -> Result<u64, sled::Error> {
    Ok(meta.get(key)?.map_or(0, |v| key_id(&v)))
}

thread_local! {
    /// Set while storage code runs under `guarded`: a panic there is an
    /// error the caller reports, not a crash to print.
    static IN_STORAGE: Cell<bool> = const { Cell::new(false) };
}

/// Installs a panic hook that keeps quiet about panics `guarded` turns
/// into [`LogError::Damaged`] (sled panics on some damaged files), and
/// reports every other panic through `tracing`.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        if IN_STORAGE.with(Cell::get) {
            tracing::debug!(panic = %info, "storage engine panicked");
        } else {
            tracing::error!(panic = %info, "panic");
        }
    }));
}

/// Runs storage code, turning a panic inside it (sled on a damaged file)
/// into [`LogError::Damaged`] naming `dir` and what was being done.
pub(crate) fn guarded<T>(
    dir: &Path,
    doing: &str,
    f: impl FnOnce() -> Result<T, LogError>,
) -> Result<T, LogError> {
    let was = IN_STORAGE.with(|s| s.replace(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    IN_STORAGE.with(|s| s.set(was));
    r.unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(LogError::Damaged {
            path: dir.to_path_buf(),
            detail: format!("the storage engine (sled) failed while {doing}: {msg}"),
        })
    })
}

pub(crate) fn damaged(dir: &Path, detail: impl Into<String>) -> LogError {
    LogError::Damaged {
        path: dir.to_path_buf(),
        detail: detail.into(),
    }
}

/// A storage backend of the log. Both keep ids strictly increasing and
/// hand what they commit (or read, in cluster mode) to the fan-out thread they
/// were opened with, in id order.
pub trait Backend: Send + Sync {
    /// Appends events in order and returns their ids once they are stored
    /// (and fsynced, with `fsync = "always"`). A request is all or nothing.
    fn append(&self, events: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<u64>, LogError>>;
    /// Highest id given out (0 when nothing was ever appended).
    fn head(&self) -> u64;
    /// Highest id no longer stored because retention removed it.
    fn trimmed(&self) -> u64;
    /// The first id a replay can still return.
    fn earliest(&self) -> u64;
    /// Number of stored events.
    fn count(&self) -> u64;
    /// Bytes of stored records, where the backend accounts for them.
    fn bytes(&self) -> Option<u64>;
    /// The id of the first stored event, if any.
    fn first_id(&self) -> Option<u64>;
    /// Visits stored events with `after < id <= until` in id order, at most
    /// `max_scan` of them, until `visit` returns `false`; returns the
    /// cursor (see [`EventLog::scan`]).
    fn scan(
        &self,
        after: u64,
        until: u64,
        max_scan: usize,
        visit: &mut dyn FnMut(u64, View<'_>) -> Result<bool, LogError>,
    ) -> Result<u64, LogError>;
    /// The id of the event a Mercure publisher gave `wire_id`, if stored.
    fn find_wire_id(&self, wire_id: &str) -> Result<Option<u64>, LogError>;
    /// Whether it accepts appends.
    fn is_ready(&self) -> bool;
    /// Stops its threads or tasks and makes everything durable.
    fn close(&self) -> Result<(), LogError>;
    /// Erases every stored event `matches` selects (an operator's erasure
    /// request) and returns how many; their ids are never given again.
    /// Blocking: call it off the async workers.
    fn erase(&self, matches: &(dyn Fn(&View<'_>) -> bool + Sync)) -> Result<u64, LogError>;
    /// Makes everything appended so far durable now, whatever the `fsync`
    /// mode (a relay acknowledges its broker only after this). Backends
    /// whose appends are durable when they return need do nothing.
    fn sync(&self) -> BoxFuture<'_, Result<(), LogError>> {
        Box::pin(async { Ok(()) })
    }
}

/// A handle to the open log; clones share it.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    fanout: Arc<FanOut>,
    /// sled: the log's own database on one node; a temporary one in
    /// cluster mode (node-local state only).
    db: sled::Db,
    /// Cluster mode: the node's one Redis client.
    redis: Option<Arc<remote::Redis>>,
}

impl EventLog {
    /// Opens (or creates) the log in `config.path` on one node. Every
    /// committed batch is passed to `sink`, in id order, on the fan-out
    /// thread, right after its publishers are answered.
    pub fn open(config: &LogConfig, sink: Sink) -> Result<EventLog, LogError> {
        EventLog::open_with(config, None, sink)
    }

    /// Opens the log, on Redis Streams when `cluster` is given (the sled
    /// database in `config.path` is then not used; node-local state lives
    /// in a temporary one).
    pub fn open_with(
        config: &LogConfig,
        cluster: Option<&ClusterConfig>,
        sink: Sink,
    ) -> Result<EventLog, LogError> {
        let fanout = FanOut::start(sink).map_err(|e| LogError::Open {
            path: config.path.clone(),
            source: sled::Error::Io(e),
        })?;
        let inner = match cluster {
            Some(c) => {
                let redis = remote::Redis::connect(c)?;
                let backend =
                    streams::RedisLog::start(redis.clone(), &config.retention, fanout.clone())?;
                // Nothing node-local must outlive the process, and several
                // nodes may run from one config file on one machine.
                let db = sled::Config::new()
                    .temporary(true)
                    .mode(sled::Mode::HighThroughput)
                    .open()
                    .map_err(|source| LogError::Open {
                        path: config.path.clone(),
                        source,
                    })?;
                Inner {
                    backend,
                    fanout,
                    db,
                    redis: Some(redis),
                }
            }
            None => {
                let (backend, db) = local::SledLog::open(config, fanout.clone())?;
                Inner {
                    backend: Arc::new(backend),
                    fanout,
                    db,
                    redis: None,
                }
            }
        };
        Ok(EventLog {
            inner: Arc::new(inner),
        })
    }

    /// Appends events in order and returns their ids once they are committed
    /// (and fsynced, with `fsync = "always"`). A request is all or nothing.
    pub async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<u64>, LogError> {
        self.inner.backend.append(events).await
    }

    /// Makes every event appended so far durable, whatever the `fsync`
    /// mode: what a broker source waits for before acknowledging.
    pub async fn sync(&self) -> Result<(), LogError> {
        self.inner.backend.sync().await
    }

    /// Highest id given out (0 when nothing was ever appended). After a
    /// crash it is the reserved mark: every id a client may have seen.
    pub fn head(&self) -> u64 {
        self.inner.backend.head()
    }

    /// Highest id removed by retention (0 when nothing was removed).
    pub fn trimmed(&self) -> u64 {
        self.inner.backend.trimmed()
    }

    /// The first id a replay can still return: the one after the highest id
    /// retention removed (ids a crash skipped are gaps, not losses).
    pub fn earliest(&self) -> u64 {
        self.inner.backend.earliest()
    }

    /// Number of stored events.
    pub fn count(&self) -> u64 {
        self.inner.backend.count()
    }

    /// Bytes of stored records (`None` in cluster mode: Redis accounts for
    /// its own memory).
    pub fn bytes(&self) -> Option<u64> {
        self.inner.backend.bytes()
    }

    /// The id of the first stored event, if any.
    pub fn first_id(&self) -> Option<u64> {
        self.inner.backend.first_id()
    }

    /// Whether the log accepts appends (open and its writer alive, or Redis
    /// reachable).
    pub fn is_ready(&self) -> bool {
        self.inner.backend.is_ready()
    }

    /// Visits stored events with `after < id <= until` in id order, at most
    /// `max_scan` of them, until `visit` returns `false`. Returns the cursor:
    /// every id up to and including it has been looked at (`until` when the
    /// scan ran to the end). A damaged block is an error
    /// ([`LogError::Damaged`]): a damaged event is never served.
    pub fn scan(
        &self,
        after: u64,
        until: u64,
        max_scan: usize,
        mut visit: impl FnMut(u64, View<'_>) -> Result<bool, LogError>,
    ) -> Result<u64, LogError> {
        self.inner.backend.scan(after, until, max_scan, &mut visit)
    }

    /// Erases every stored event `matches` selects, from every node's
    /// replay, `/poll` and history; returns how many. Blocking.
    pub fn erase(&self, matches: &(dyn Fn(&View<'_>) -> bool + Sync)) -> Result<u64, LogError> {
        self.inner.backend.erase(matches)
    }

    /// The log sequence of the event a Mercure publisher gave `wire_id`, if
    /// it is still stored.
    pub fn find_wire_id(&self, wire_id: &str) -> Result<Option<u64>, LogError> {
        self.inner.backend.find_wire_id(wire_id)
    }

    /// A key-value store beside the log, shared by every node in cluster
    /// mode: the sled tree `tree` on one node, Redis keys
    /// `CLUSTER_PREFIX` + `namespace` + key in cluster mode.
    pub fn store(&self, tree: &str, namespace: &str) -> Result<Store, LogError> {
        Ok(match &self.inner.redis {
            Some(redis) => Store::Shared {
                redis: redis.clone(),
                prefix: format!("{}{namespace}", redis.prefix),
            },
            None => Store::Local(self.inner.db.open_tree(tree)?),
        })
    }

    /// A node-local sled tree (temporary in cluster mode): state that
    /// belongs to this node, like file-tail positions.
    pub fn local_tree(&self, name: &str) -> Result<sled::Tree, LogError> {
        Ok(self.inner.db.open_tree(name)?)
    }

    /// Cluster mode: the node's Redis client (presence uses it too).
    pub fn redis(&self) -> Option<&Arc<remote::Redis>> {
        self.inner.redis.as_ref()
    }

    /// Stops the backend (flushing everything to disk and recording a clean
    /// close on one node), then hands out every committed event still
    /// queued for fan-out. Appends after this fail with [`LogError::Closed`].
    pub fn close(&self) -> Result<(), LogError> {
        let closed = self.inner.backend.close();
        self.inner.fanout.close();
        closed
    }
}

/// Committed batches waiting for the fan-out thread before senders wait.
const FANOUT_BACKLOG: usize = 1024;

/// The one thread that hands stored events to subscribers (the sink), for
/// either backend: a commit never waits for the previous one's fan-out
/// (10,000 subscribers take milliseconds per event), batches that piled up
/// meanwhile go out in one pass, in commit order, and no runtime worker
/// ever runs the sink (filter plugins may run there).
pub(crate) struct FanOut {
    sink: Sink,
    state: Mutex<FanOutState>,
}

/// The sending end of the fan-out thread's queue of committed batches.
type Batches = mpsc::SyncSender<Vec<Arc<Event>>>;

struct FanOutState {
    tx: Option<Batches>,
    thread: Option<JoinHandle<()>>,
}

impl FanOut {
    pub(crate) fn start(sink: Sink) -> std::io::Result<Arc<FanOut>> {
        let (tx, thread) = FanOut::spawn(&sink)?;
        Ok(Arc::new(FanOut {
            sink,
            state: Mutex::new(FanOutState {
                tx: Some(tx),
                thread: Some(thread),
            }),
        }))
    }

    fn spawn(sink: &Sink) -> std::io::Result<(Batches, JoinHandle<()>)> {
        let (tx, rx) = mpsc::sync_channel::<Vec<Arc<Event>>>(FANOUT_BACKLOG);
        let sink = sink.clone();
        let thread = std::thread::Builder::new()
            .name("spout-fanout".into())
            .spawn(move || run_fanout(rx, sink))?;
        Ok((tx, thread))
    }

    fn sender(&self) -> Option<Batches> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tx
            .clone()
    }

    /// Hands events over, waiting while the backlog is full (the
    /// appender's way: a commit that cannot be fanned out waits).
    pub(crate) fn send(&self, events: Vec<Arc<Event>>) {
        match self.sender() {
            Some(tx) => {
                if let Err(mpsc::SendError(events)) = tx.send(events) {
                    self.respawn(events);
                }
            }
            // Closed: whatever was stored still reaches subscribers.
            None => (self.sink)(&events),
        }
    }

    /// Hands events over without waiting; gives them back when the backlog
    /// is full (async callers wait off their worker and try again).
    pub(crate) fn try_send(&self, events: Vec<Arc<Event>>) -> Result<(), Vec<Arc<Event>>> {
        match self.sender() {
            Some(tx) => match tx.try_send(events) {
                Ok(()) => Ok(()),
                Err(mpsc::TrySendError::Full(events)) => Err(events),
                Err(mpsc::TrySendError::Disconnected(events)) => {
                    self.respawn(events);
                    Ok(())
                }
            },
            None => Ok(()),
        }
    }

    /// The thread died (a panic in the sink): start a new one, so stored
    /// events still reach subscribers, and hand it `events`.
    fn respawn(&self, events: Vec<Arc<Event>>) {
        tracing::error!("the fan-out thread died; starting a new one");
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = st.thread.take() {
            let _ = old.join();
        }
        match FanOut::spawn(&self.sink) {
            Ok((tx, thread)) => {
                let sent = tx.send(events);
                st.tx = Some(tx);
                st.thread = Some(thread);
                if let Err(mpsc::SendError(events)) = sent {
                    (self.sink)(&events);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start a fan-out thread; fanning out here");
                st.tx = None;
                drop(st);
                (self.sink)(&events);
            }
        }
    }

    /// Drains what is queued and stops the thread.
    pub(crate) fn close(&self) {
        let thread = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.tx = None;
            st.thread.take()
        };
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// Hands committed events to the sink until every sender is gone.
fn run_fanout(rx: mpsc::Receiver<Vec<Arc<Event>>>, sink: Sink) {
    while let Ok(mut events) = rx.recv() {
        while let Ok(more) = rx.try_recv() {
            events.extend(more);
        }
        sink(&events);
    }
}
