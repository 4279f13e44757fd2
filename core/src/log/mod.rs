//! The durable event log: the source of truth for every event.
//!
//! Events are stored in sled in blocks (see [`block`]): one value per group
//! commit, keyed by the big-endian `u64` id of its first event, so id order is
//! key order and replay is a range scan. One appender thread owns the write
//! path: it drains every append request that is waiting, assigns contiguous
//! ids, writes them as one block, fsyncs once when `fsync = "always"`,
//! answers the publishers and hands the events to the fan-out sink. That is
//! group commit: concurrent publishers share one insert and one flush.
//!
//! Ids never go backwards, not even when retention empties the log and the
//! server restarts: the highest id ever assigned is kept in a `meta` tree.

mod block;
mod record;
mod retention;
pub mod streams;

pub use record::{decode, RecordError, View};

use crate::config::{ClusterConfig, Fsync, LogConfig};
use crate::event::{now_ms, Event, NewEvent};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::oneshot;

/// Most append requests one group commit takes at once.
const MAX_GROUP: usize = 1024;
const META_TRIMMED: &[u8] = b"trimmed";

/// What the appender calls with every committed batch, in id order; the hub.
pub type Sink = Arc<dyn Fn(&[Arc<Event>]) + Send + Sync>;

/// A failure of the log; publishers see it as a 5xx.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The data directory could not be opened (in use, unreadable, corrupt).
    #[error("cannot open the log at {path}: {source}")]
    Open {
        /// The data directory.
        path: PathBuf,
        /// What sled reported.
        source: sled::Error,
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

struct Job {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Vec<u64>, LogError>>,
}

/// State shared by the handle, the appender thread and the retention thread.
struct Shared {
    db: sled::Db,
    events: sled::Tree,
    meta: sled::Tree,
    /// `topic \0 key` → id, for idempotent publishing.
    dedupe: sled::Tree,
    fsync: Fsync,
    /// Highest id committed (0 before the first event).
    head: AtomicU64,
    /// Highest id removed by retention; replay from before it needs a reset.
    trimmed: AtomicU64,
    /// Number of stored events.
    count: AtomicU64,
    /// Bytes of stored records.
    bytes: AtomicU64,
    /// Set when the appender stops (closed or failed); readiness reads it.
    stopped: AtomicBool,
    /// Registered once: looking a gauge up per commit costs a hash of its key.
    gauges: LogGauges,
}

struct LogGauges {
    events: metrics::Gauge,
    bytes: metrics::Gauge,
    last_id: metrics::Gauge,
}

/// A handle to the open log; clones share it.
#[derive(Clone)]
pub struct EventLog {
    shared: Arc<Shared>,
    sender: Arc<RwLock<Option<mpsc::Sender<Job>>>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    stop_retention: Arc<Mutex<Option<mpsc::Sender<()>>>>,
    /// Cluster mode: events live in Redis Streams; sled keeps only node-local
    /// state (plugin key-value stores).
    remote: Option<Arc<streams::RedisLog>>,
}

fn id_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

fn key_id(key: &[u8]) -> u64 {
    key.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

fn dedupe_key(topic: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + key.len() + 1);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// The dedupe entries of an event: its idempotency key on its topic, and a
/// Mercure wire id, which is unique across all topics (stored under the empty
/// topic, which no event can have).
fn dedupe_keys(topic: &str, key: Option<&str>, wire_id: Option<&str>) -> [Option<Vec<u8>>; 2] {
    [
        key.map(|k| dedupe_key(topic, k)),
        wire_id.map(|w| dedupe_key("", w)),
    ]
}

fn wire_id_of(ne: &NewEvent) -> Option<&str> {
    ne.extra.as_ref().and_then(|x| x.wire_id.as_deref())
}

fn meta_u64(meta: &sled::Tree, key: &[u8]) -> Result<u64, sled::Error> {
    Ok(meta.get(key)?.map_or(0, |v| key_id(&v)))
}

impl EventLog {
    /// Opens (or creates) the log in `config.path` and starts its threads.
    /// Every committed batch is passed to `sink`, in id order, right after its
    /// publishers are answered.
    pub fn open(config: &LogConfig, sink: Sink) -> Result<EventLog, LogError> {
        EventLog::open_with(config, None, sink)
    }

    /// Opens the log, on Redis Streams when `cluster` is given (the sled
    /// database in `config.path` then holds only node-local state).
    pub fn open_with(
        config: &LogConfig,
        cluster: Option<&ClusterConfig>,
        sink: Sink,
    ) -> Result<EventLog, LogError> {
        let remote = match cluster {
            Some(c) => Some(streams::RedisLog::start(
                c,
                &config.retention,
                sink.clone(),
            )?),
            None => None,
        };
        let open_err = |source| LogError::Open {
            path: config.path.clone(),
            source,
        };
        let flush_every = match config.fsync {
            Fsync::Batch => Some(config.flush_interval.as_millis().max(1) as u64),
            Fsync::Always | Fsync::Never => None,
        };
        // In cluster mode events live in Redis and nothing here must
        // outlive the process: a temporary database also lets several nodes
        // run from one config file on one machine.
        let db = if remote.is_some() {
            sled::Config::new().temporary(true)
        } else {
            sled::Config::new().path(&config.path)
        };
        let db = db
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(256 * 1024 * 1024)
            .flush_every_ms(flush_every)
            .open()
            .map_err(open_err)?;
        let events = db.open_tree("events").map_err(open_err)?;
        let meta = db.open_tree("meta").map_err(open_err)?;
        let dedupe = db.open_tree("dedupe").map_err(open_err)?;

        let (mut count, mut bytes, mut last) = (0u64, 0u64, 0u64);
        for item in events.iter() {
            let (k, v) = item?;
            let first = key_id(&k);
            let n = block::count(&v).map_err(|source| LogError::Corrupt { id: first, source })?;
            count += n as u64;
            bytes += v.len() as u64;
            if n > 0 {
                last = last.max(first + n as u64 - 1);
            }
        }
        // Retention records its floor before deleting, so even a log it
        // emptied remembers the highest id ever assigned.
        let trimmed = meta_u64(&meta, META_TRIMMED)?;
        let head = last.max(trimmed);
        tracing::info!(path = %config.path.display(), events = count, bytes, head, "log opened");

        let shared = Arc::new(Shared {
            db,
            events,
            meta,
            dedupe,
            fsync: config.fsync,
            head: AtomicU64::new(head),
            trimmed: AtomicU64::new(trimmed),
            count: AtomicU64::new(count),
            bytes: AtomicU64::new(bytes),
            stopped: AtomicBool::new(false),
            gauges: LogGauges {
                events: metrics::gauge!("spout_log_events"),
                bytes: metrics::gauge!("spout_log_bytes"),
                last_id: metrics::gauge!("spout_log_last_id"),
            },
        });
        shared.publish_gauges();

        let (fanout_tx, fanout_rx) = mpsc::sync_channel::<Vec<Arc<Event>>>(FANOUT_BACKLOG);
        let fanout = std::thread::Builder::new()
            .name("spout-fanout".into())
            .spawn({
                let sink = sink.clone();
                move || run_fanout(fanout_rx, sink)
            })
            .map_err(|e| LogError::Open {
                path: config.path.clone(),
                source: sled::Error::Io(e),
            })?;
        let (tx, rx) = mpsc::channel::<Job>();
        let appender = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("spout-log-append".into())
                .spawn(move || run_appender(shared, rx, sink, fanout_tx, fanout))
                .map_err(|e| LogError::Open {
                    path: config.path.clone(),
                    source: sled::Error::Io(e),
                })?
        };
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let retention = {
            let shared = shared.clone();
            let cfg = config.retention.clone();
            std::thread::Builder::new()
                .name("spout-log-retention".into())
                .spawn(move || retention::run(shared, cfg, stop_rx))
                .map_err(|e| LogError::Open {
                    path: config.path.clone(),
                    source: sled::Error::Io(e),
                })?
        };
        Ok(EventLog {
            shared,
            sender: Arc::new(RwLock::new(Some(tx))),
            threads: Arc::new(Mutex::new(vec![appender, retention])),
            stop_retention: Arc::new(Mutex::new(Some(stop_tx))),
            remote,
        })
    }

    /// Appends events in order and returns their ids once they are committed
    /// (and fsynced, with `fsync = "always"`). A request is all or nothing.
    pub async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<u64>, LogError> {
        if let Some(r) = &self.remote {
            return r.append(events).await;
        }
        let (reply, rx) = oneshot::channel();
        {
            let guard = self.sender.read().map_err(|_| LogError::Closed)?;
            let sender = guard.as_ref().ok_or(LogError::Closed)?;
            sender
                .send(Job { events, reply })
                .map_err(|_| LogError::Closed)?;
        }
        rx.await.map_err(|_| LogError::Closed)?
    }

    /// Highest committed id (0 when nothing was ever appended).
    pub fn head(&self) -> u64 {
        if let Some(r) = &self.remote {
            return r.head();
        }
        self.shared.head.load(Ordering::Acquire)
    }

    /// Highest id removed by retention (0 when nothing was removed).
    pub fn trimmed(&self) -> u64 {
        if let Some(r) = &self.remote {
            return r.trimmed();
        }
        self.shared.trimmed.load(Ordering::Acquire)
    }

    /// The first id a replay can still return: ids are contiguous, so it is
    /// the one after the highest id retention removed (`head + 1` when empty).
    pub fn earliest(&self) -> u64 {
        if let Some(r) = &self.remote {
            return r.earliest();
        }
        self.trimmed() + 1
    }

    /// Number of stored events.
    pub fn count(&self) -> u64 {
        if let Some(r) = &self.remote {
            return r.count();
        }
        self.shared.count.load(Ordering::Relaxed)
    }

    /// Bytes of stored records (0 in cluster mode: Redis accounts for its memory).
    pub fn bytes(&self) -> u64 {
        if self.remote.is_some() {
            return 0;
        }
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// The Redis side in cluster mode.
    pub fn remote(&self) -> Option<&Arc<streams::RedisLog>> {
        self.remote.as_ref()
    }

    /// The underlying sled database, for other stores that live beside the
    /// log (plugin key-value trees).
    pub fn db(&self) -> sled::Db {
        self.shared.db.clone()
    }

    /// Whether the log accepts appends (open and its writer alive).
    pub fn is_ready(&self) -> bool {
        if let Some(r) = &self.remote {
            return r.is_ready();
        }
        !self.shared.stopped.load(Ordering::Acquire)
    }

    /// Visits stored events with `after < id <= until` in id order, at most
    /// `max_scan` of them, until `visit` returns `false`. Returns the cursor:
    /// every id up to and including it has been looked at (`until` when the
    /// scan ran to the end).
    pub fn scan(
        &self,
        after: u64,
        until: u64,
        max_scan: usize,
        mut visit: impl FnMut(u64, View<'_>) -> Result<bool, LogError>,
    ) -> Result<u64, LogError> {
        if let Some(r) = &self.remote {
            return r.scan(after, until, max_scan, &mut visit);
        }
        if after >= until {
            return Ok(after.max(until));
        }
        // Start at the block that holds `after + 1` (its key is at or before it).
        let from = match self.shared.events.range(..=id_key(after + 1)).next_back() {
            Some(item) => key_id(&item?.0),
            None => after + 1,
        };
        let mut cursor = after;
        let mut seen = 0usize;
        for item in self.shared.events.range(id_key(from)..=id_key(until)) {
            let (k, v) = item?;
            let first = key_id(&k);
            for (i, rec) in block::records(&v).enumerate() {
                let id = first + i as u64;
                if id <= after {
                    continue;
                }
                if id > until {
                    break;
                }
                if seen == max_scan {
                    return Ok(cursor);
                }
                let view = rec
                    .and_then(decode)
                    .map_err(|source| LogError::Corrupt { id, source })?;
                seen += 1;
                cursor = id;
                if !visit(id, view)? {
                    return Ok(cursor);
                }
            }
        }
        Ok(until)
    }

    /// The log sequence of the event a Mercure publisher gave `wire_id`, if
    /// it is still stored.
    pub fn find_wire_id(&self, wire_id: &str) -> Result<Option<u64>, LogError> {
        if let Some(r) = &self.remote {
            return r.find_wire_id(wire_id);
        }
        Ok(self
            .shared
            .dedupe
            .get(dedupe_key("", wire_id))?
            .map(|v| key_id(&v)))
    }

    /// Stops the writer and the retention task and flushes everything to disk.
    /// Appends after this fail with [`LogError::Closed`].
    pub fn close(&self) -> Result<(), LogError> {
        if let Some(r) = &self.remote {
            r.close();
        }
        if let Ok(mut sender) = self.sender.write() {
            sender.take();
        }
        if let Ok(mut stop) = self.stop_retention.lock() {
            stop.take();
        }
        let threads = match self.threads.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(_) => Vec::new(),
        };
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a log thread panicked");
            }
        }
        self.shared.stopped.store(true, Ordering::Release);
        self.shared.db.flush()?;
        Ok(())
    }
}

impl Shared {
    fn publish_gauges(&self) {
        let g = &self.gauges;
        g.events.set(self.count.load(Ordering::Relaxed) as f64);
        g.bytes.set(self.bytes.load(Ordering::Relaxed) as f64);
        g.last_id.set(self.head.load(Ordering::Relaxed) as f64);
    }
}

/// Committed batches waiting for the fan-out thread before commits wait.
const FANOUT_BACKLOG: usize = 1024;

/// Hands committed events to subscribers on its own thread, so a commit
/// never waits for the previous one's fan-out (10,000 subscribers take
/// milliseconds per event): publishers keep their rate, and batches that
/// piled up meanwhile go out in one pass, in commit order.
fn run_fanout(rx: mpsc::Receiver<Vec<Arc<Event>>>, sink: Sink) {
    while let Ok(mut events) = rx.recv() {
        while let Ok(more) = rx.try_recv() {
            events.extend(more);
        }
        sink(&events);
    }
}

fn run_appender(
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Job>,
    sink: Sink,
    fanout: mpsc::SyncSender<Vec<Arc<Event>>>,
    fanout_thread: JoinHandle<()>,
) {
    let latency = metrics::histogram!("spout_log_append_seconds");
    let commits = metrics::counter!("spout_log_commits_total");
    while let Ok(first) = rx.recv() {
        let started = Instant::now();
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let (events, result) = commit(&shared, &mut jobs);
        // Publishers are answered first: fan-out to many subscribers takes
        // time and the events are already stored. Subscribers that connect in
        // between read them from the log and skip the queued copies by id.
        match result {
            Ok(ids) => {
                for (job, ids) in jobs.into_iter().zip(ids) {
                    let _ = job.reply.send(Ok(ids));
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "log append failed");
                metrics::counter!("spout_log_errors_total").increment(1);
                let msg = err.to_string();
                for job in jobs {
                    let _ = job.reply.send(Err(LogError::Append(msg.clone())));
                }
            }
        }
        // Whatever is in the log is fanned out, even if a later step of the
        // commit failed: subscribers must never miss a stored event.
        if !events.is_empty() {
            if let Err(mpsc::SendError(events)) = fanout.send(events) {
                // The fan-out thread died (a panic): fan out here instead.
                sink(&events);
            }
        }
        commits.increment(1);
        latency.record(started.elapsed().as_secs_f64());
        shared.publish_gauges();
    }
    // Every committed event is handed out before the log counts as stopped.
    drop(fanout);
    let _ = fanout_thread.join();
    shared.stopped.store(true, Ordering::Release);
}

/// Writes every job's events as one batch. Returns the events that reached
/// the log (for fan-out) and each job's ids, or the error that kept the commit
/// from completing. Ids advance as soon as the batch is in the tree, so a later
/// failure (fsync, say) can never lead to an id being reused.
/// The outcome of one group commit: what reached the log, and per job ids or the error.
type Committed = (Vec<Arc<Event>>, Result<Vec<Vec<u64>>, LogError>);

fn commit(shared: &Shared, jobs: &mut [Job]) -> Committed {
    let time_ms = now_ms();
    let mut next = shared.head.load(Ordering::Acquire) + 1;
    let mut batch = sled::Batch::default();
    let mut block = block::BlockWriter::new();
    let mut block_first = next;
    let mut dedupe_batch = sled::Batch::default();
    let mut fresh_keys: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut events = Vec::new();
    let mut all_ids = Vec::with_capacity(jobs.len());
    let mut bytes = 0u64;
    for job in jobs.iter_mut() {
        let mut ids = Vec::with_capacity(job.events.len());
        for ne in job.events.drain(..) {
            let mut known = None;
            let dks = dedupe_keys(&ne.topic, ne.key.as_deref(), wire_id_of(&ne));
            for dk in dks.iter().flatten() {
                known = match fresh_keys.get(dk) {
                    Some(id) => Some(*id),
                    None => match shared.dedupe.get(dk) {
                        Ok(v) => v.map(|v| key_id(&v)),
                        Err(e) => return (Vec::new(), Err(e.into())),
                    },
                };
                if known.is_some() {
                    break;
                }
            }
            if let Some(id) = known {
                ids.push(id);
                continue;
            }
            for dk in dks.into_iter().flatten() {
                dedupe_batch.insert(dk.clone(), &id_key(next));
                fresh_keys.insert(dk, next);
            }
            let event = Event::new(next, time_ms, ne);
            if block.is_full() {
                let full = std::mem::replace(&mut block, block::BlockWriter::new());
                let full = full.finish();
                bytes += full.len() as u64;
                batch.insert(&id_key(block_first), full);
                block_first = next;
            }
            block.push(&event);
            ids.push(next);
            events.push(Arc::new(event));
            next += 1;
        }
        all_ids.push(ids);
    }
    if events.is_empty() {
        return (events, Ok(all_ids));
    }
    let last_block = block.finish();
    bytes += last_block.len() as u64;
    batch.insert(&id_key(block_first), last_block);
    if let Err(e) = shared.events.apply_batch(batch) {
        return (Vec::new(), Err(e.into()));
    }
    shared.head.store(next - 1, Ordering::Release);
    shared
        .count
        .fetch_add(events.len() as u64, Ordering::Relaxed);
    shared.bytes.fetch_add(bytes, Ordering::Relaxed);
    let finish = || -> Result<(), LogError> {
        if !fresh_keys.is_empty() {
            shared.dedupe.apply_batch(dedupe_batch)?;
        }
        if shared.fsync == Fsync::Always {
            shared.db.flush()?;
        }
        Ok(())
    };
    let result = finish().map(|()| all_ids);
    (events, result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Data;

    fn config(dir: &std::path::Path, fsync: Fsync) -> LogConfig {
        LogConfig {
            path: dir.to_path_buf(),
            fsync,
            ..LogConfig::default()
        }
    }

    /// Opens a log whose fan-out goes nowhere.
    fn open_quiet(dir: &std::path::Path, fsync: Fsync) -> EventLog {
        EventLog::open(&config(dir, fsync), Arc::new(|_: &[Arc<Event>]| {})).unwrap()
    }

    fn ev(topic: &str, text: &str, key: Option<&str>) -> NewEvent {
        NewEvent {
            topic: topic.into(),
            kind: None,
            data: Data::Text(text.into()),
            to: None,
            key: key.map(Into::into),
            extra: None,
        }
    }

    fn collect(log: &EventLog, after: u64) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        log.scan(after, log.head(), usize::MAX, |id, v| {
            out.push((id, String::from_utf8_lossy(v.data).into_owned()));
            Ok(true)
        })
        .unwrap();
        out
    }

    #[tokio::test]
    async fn ids_increase_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink: Sink = {
            let seen = seen.clone();
            Arc::new(move |evs: &[Arc<Event>]| {
                seen.lock().unwrap().extend(evs.iter().map(|e| e.id));
            })
        };
        let log = EventLog::open(&config(dir.path(), Fsync::Always), sink).unwrap();
        assert_eq!(
            log.append(vec![ev("a", "1", None), ev("b", "2", None)])
                .await
                .unwrap(),
            [1, 2]
        );
        assert_eq!(log.append(vec![ev("a", "3", None)]).await.unwrap(), [3]);
        log.close().unwrap(); // joins the appender: every sink call is done
        assert_eq!(*seen.lock().unwrap(), [1, 2, 3]);
        assert!(matches!(
            log.append(vec![ev("a", "x", None)]).await,
            Err(LogError::Closed)
        ));
        drop(log);

        let log = open_quiet(dir.path(), Fsync::Always);
        assert_eq!(log.head(), 3);
        assert_eq!(log.count(), 3);
        assert_eq!(log.append(vec![ev("a", "4", None)]).await.unwrap(), [4]);
        assert_eq!(
            collect(&log, 1),
            [(2, "2".to_string()), (3, "3".into()), (4, "4".into())]
        );
        log.close().unwrap();
    }

    #[tokio::test]
    async fn retention_trims_inside_a_block_and_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_quiet(dir.path(), Fsync::Never);
        // One request: one block of 20 events; then two more blocks.
        let batch = (1..=20)
            .map(|i| ev("t", &i.to_string(), Some(&format!("k{i}"))))
            .collect();
        log.append(batch).await.unwrap();
        assert_eq!(
            log.shared.events.len(),
            1,
            "one request, one commit, one block"
        );
        log.append(vec![ev("t", "21", None)]).await.unwrap();
        log.append(vec![ev("t", "22", None)]).await.unwrap();
        let cfg = crate::config::RetentionConfig {
            max_age: None,
            max_events: Some(5),
            max_bytes: None,
            interval: std::time::Duration::from_secs(3600),
        };
        assert_eq!(retention::enforce(&log.shared, &cfg, now_ms()).unwrap(), 17);
        assert_eq!(log.count(), 5);
        assert_eq!(log.trimmed(), 17);
        assert_eq!(log.earliest(), 18);
        let ids: Vec<u64> = collect(&log, 0).into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, [18, 19, 20, 21, 22]);
        assert_eq!(collect(&log, 18)[0], (19, "19".to_string()));
        // The dedupe keys of removed events are gone; kept ones still dedupe.
        assert_eq!(
            log.append(vec![ev("t", "again", Some("k19"))])
                .await
                .unwrap(),
            [19]
        );
        assert_eq!(
            log.append(vec![ev("t", "new", Some("k1"))]).await.unwrap(),
            [23]
        );
        let bytes_before = log.bytes();
        let cfg = crate::config::RetentionConfig {
            max_events: Some(1),
            ..cfg
        };
        retention::enforce(&log.shared, &cfg, now_ms()).unwrap();
        assert_eq!(collect(&log, 0), [(23, "new".to_string())]);
        assert!(log.bytes() < bytes_before);
        log.close().unwrap();
        drop(log);
        // Counts survive a reopen.
        let log = open_quiet(dir.path(), Fsync::Never);
        assert_eq!((log.count(), log.head(), log.trimmed()), (1, 23, 22));
        log.close().unwrap();
    }

    #[tokio::test]
    async fn retention_by_bytes_and_age() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_quiet(dir.path(), Fsync::Never);
        for i in 0..50 {
            log.append(vec![ev("t", &"x".repeat(100 + i), None)])
                .await
                .unwrap();
        }
        let total = log.bytes();
        let cfg = crate::config::RetentionConfig {
            max_age: None,
            max_events: None,
            max_bytes: Some(bytesize::ByteSize::b(total / 2)),
            interval: std::time::Duration::from_secs(3600),
        };
        let removed = retention::enforce(&log.shared, &cfg, now_ms()).unwrap();
        assert!(
            removed > 0 && log.bytes() <= total / 2,
            "{} > {}",
            log.bytes(),
            total / 2
        );
        assert_eq!(log.count(), 50 - removed);
        // Everything is older than a millisecond a second from now.
        let cfg = crate::config::RetentionConfig {
            max_age: Some(std::time::Duration::from_millis(1)),
            max_bytes: None,
            ..cfg
        };
        retention::enforce(&log.shared, &cfg, now_ms() + 1000).unwrap();
        assert_eq!((log.count(), log.bytes(), log.earliest()), (0, 0, 51));
        log.close().unwrap();
    }

    #[tokio::test]
    async fn large_commits_span_blocks_and_scans_resume_anywhere() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_quiet(dir.path(), Fsync::Never);
        let n = block::MAX_EVENTS * 2 + 500;
        let ids = log
            .append((1..=n).map(|i| ev("t", &i.to_string(), None)).collect())
            .await
            .unwrap();
        assert_eq!(ids.len(), n);
        assert_eq!(log.shared.events.len(), 3, "split into three blocks");
        for after in [0u64, 1, 1023, 1024, 1025, 2047, 2048, 2500] {
            let got = collect(&log, after);
            assert_eq!(got.len(), n - after as usize, "after {after}");
            assert_eq!(got[0], (after + 1, (after + 1).to_string()));
        }
        // A bounded scan stops where it says.
        let end = log.scan(1000, n as u64, 100, |_, _| Ok(true)).unwrap();
        assert_eq!(end, 1100);
        log.close().unwrap();
    }

    #[tokio::test]
    async fn idempotency_keys_return_the_first_id() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_quiet(dir.path(), Fsync::Never);
        let ids = log
            .append(vec![
                ev("a", "1", Some("k")),
                ev("a", "dup", Some("k")),
                ev("b", "other topic", Some("k")),
            ])
            .await
            .unwrap();
        assert_eq!(ids, [1, 1, 2]);
        assert_eq!(
            log.append(vec![ev("a", "retry", Some("k"))]).await.unwrap(),
            [1]
        );
        assert_eq!(log.count(), 2);
        log.close().unwrap();
    }

    #[tokio::test]
    async fn concurrent_appends_are_all_committed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_quiet(dir.path(), Fsync::Always);
        let mut tasks = Vec::new();
        for p in 0..16 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..50 {
                    ids.extend(
                        log.append(vec![ev("t", &format!("{p}-{i}"), None)])
                            .await
                            .unwrap(),
                    );
                }
                ids
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            let ids = t.await.unwrap();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "per-publisher order");
            all.extend(ids);
        }
        all.sort_unstable();
        assert_eq!(all, (1..=800).collect::<Vec<u64>>());
        // Group commit: one block per commit, and waiting publishers shared commits.
        let blocks = log.shared.events.len();
        assert!(blocks < 800, "{blocks} commits for 800 concurrent appends");
        log.close().unwrap();
    }
}
