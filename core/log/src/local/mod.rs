//! The log on one node: events in sled, in checksummed, chained blocks
//! (see `block`), one appender thread doing group commit, ids reserved
//! ahead of use in a high-water mark file (`mark`), damaged files found
//! before sled can discard anything (`inventory`) and rebuilt by
//! [`repair`], and a background thread for flushing and retention
//! (`retention`).
//!
//! One appender thread owns the write path: it drains every append request
//! that is waiting, assigns contiguous ids, writes them as one block, fsyncs
//! once when `fsync = "always"`, answers the publishers and hands the events
//! to the fan-out thread. That is group commit: concurrent publishers share
//! one insert and one flush.

mod block;
mod erase;
pub(crate) mod inventory;
pub(crate) mod mark;
pub mod repair;
mod retention;

use crate::config::{Fsync, LogConfig};
use crate::event::{now_ms, Event, NewEvent};
use crate::record::{self, decode, Digest, View};
use crate::{
    damaged, dedupe_digest, dedupe_key, dedupe_keys, dedupe_value, describe_key, guarded, id_key,
    key_id, meta_u64, wire_id_of, Backend, BoxFuture, FanOut, LogError,
};
use inventory::{BlockInfo, Chain};
use mark::{Mark, State};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Most append requests one group commit takes at once.
const MAX_GROUP: usize = 1024;
/// The durable watermark in the mark file is rewritten at most this often.
const DURABLE_EVERY: Duration = Duration::from_secs(1);

const META_TRIMMED: &[u8] = b"trimmed";

struct Job {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Vec<u64>, LogError>>,
}

/// State shared by the handle, the appender thread and the retention thread.
struct Shared {
    /// The data directory, for error messages.
    dir: PathBuf,
    db: sled::Db,
    events: sled::Tree,
    meta: sled::Tree,
    /// `topic \0 key` → id (+ content digest), for idempotent publishing.
    dedupe: sled::Tree,
    fsync: Fsync,
    /// Highest id handed out or reserved by a run that crashed (0 before
    /// the first event): subscribers may have seen every id up to it.
    head: AtomicU64,
    /// Every id up to here is reserved in the mark (fsynced): the appender
    /// hands them out without touching the mark file or its lock.
    reserved: AtomicU64,
    /// Highest id actually stored: the `prev` of the next block.
    stored_last: AtomicU64,
    /// Highest id removed by retention; replay from before it needs a reset.
    trimmed: AtomicU64,
    /// Number of stored events.
    count: AtomicU64,
    /// Bytes of stored records.
    bytes: AtomicU64,
    /// Set when the appender stops (closed or failed); readiness reads it.
    stopped: AtomicBool,
    /// The id high-water mark (`None` in cluster mode: ids come from Redis).
    mark: Option<Mutex<Mark>>,
    /// Registered once: looking a gauge up per commit costs a hash of its key.
    gauges: LogGauges,
    /// Held by whatever rewrites stored blocks (retention, erasure): the
    /// appender only adds new ones.
    rewrite: Mutex<()>,
}

struct LogGauges {
    events: metrics::Gauge,
    bytes: metrics::Gauge,
    last_id: metrics::Gauge,
}

/// What a verified walk over sled's events tree found.
struct Contents {
    count: u64,
    bytes: u64,
    last: u64,
    chain: Chain,
}

/// Reads every block of the events tree, checks each (checksum, framing,
/// placement) and totals them.
fn verify_tree(dir: &Path, events: &sled::Tree) -> Result<Contents, LogError> {
    let mut c = Contents {
        count: 0,
        bytes: 0,
        last: 0,
        chain: Chain::default(),
    };
    for item in events.iter() {
        let (k, v) = item?;
        let first = key_id(&k);
        let h = block::verify(first, &v).map_err(|e| {
            let n = block::count(&v).unwrap_or(1).max(1) as u64;
            damaged(
                dir,
                format!(
                    "the block holding events {}..{} is unreadable ({e})",
                    first,
                    first + n - 1
                ),
            )
        })?;
        let n = u64::from(h.count);
        if n == 0 {
            continue;
        }
        // Erased events leave empty records (see `erase`).
        let erased = block::records(&v)
            .filter(|r| r.as_ref().is_ok_and(|r| r.is_empty()))
            .count() as u64;
        c.count += n - erased;
        c.bytes += v.len() as u64;
        c.last = c.last.max(first + n - 1);
        c.chain.add(BlockInfo {
            first,
            count: h.count,
            // Version 1 blocks were written with contiguous ids.
            prev: h.prev.unwrap_or(first - 1),
        });
    }
    Ok(c)
}

/// Opens the sled log in `config.path`, checking it against the mark file
/// first from sled's raw files (before sled may discard a damaged part),
/// then through sled.
///
/// sled's own recovery overwrites whatever follows a damaged spot in its
/// file. Unless the file is exactly as a clean close left it (and no block
/// in it looks damaged), it is copied to `DIR/.open-backup` before sled
/// opens it, and put back if the log turns out damaged: `spout repair` then
/// works on the untouched files.
fn open_local(config: &LogConfig) -> Result<Shared, LogError> {
    let dir = config.path.as_path();
    let open_err = |source| LogError::Open {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| open_err(sled::Error::Io(e)))?;
    let mark = Mark::read(dir).map_err(|e| damaged(dir, e.to_string()))?;
    let db_len = std::fs::metadata(dir.join("db")).map_or(0, |m| m.len());
    let mut suspicious = 0;
    if db_len > 0 || mark.is_some() {
        let mut raw = Chain::default();
        let mut found = 0u64;
        suspicious = inventory::carve_dir(dir, &mut |info, _| {
            raw.add(info);
            found += 1;
        })
        .map_err(|e| open_err(sled::Error::Io(e)))?;
        match &mark {
            Some(m) => {
                let lost = raw.missing(m.durable, m.trimmed.max(m.legacy));
                if !lost.is_empty() {
                    return Err(damaged(
                        dir,
                        format!(
                            "events {} are missing from sled's files although events up to {} had been stored durably (spout.mark); sled was not opened, so nothing after the damage has been discarded",
                            inventory::ranges(&lost),
                            m.durable
                        ),
                    ));
                }
            }
            None if found > 0 => {
                return Err(damaged(
                    dir,
                    format!(
                        "the id high-water mark {} is missing, so the next free id is unknown",
                        mark::FILE
                    ),
                ))
            }
            None => {}
        }
    }
    let unchanged = mark.is_some_and(|m| {
        m.clean && m.db != mark::FileId::default() && m.db == mark::FileId::of(&dir.join("db"))
    });
    let backup = if db_len > 0 && !(unchanged && suspicious == 0) {
        Some(backup(dir).map_err(|e| open_err(sled::Error::Io(e)))?)
    } else {
        None
    };
    match guarded(dir, "opening its files", || open_sled(config, mark)) {
        Ok(shared) => {
            if let Some(b) = backup {
                let _ = std::fs::remove_dir_all(b);
            }
            Ok(shared)
        }
        Err(LogError::Damaged { path, detail }) => {
            let detail = match backup {
                Some(b) => match restore(dir, &b) {
                    Ok(()) => format!("{detail}; sled's files were put back as they were before it opened them"),
                    Err(e) => format!(
                        "{detail}; sled's files as they were before it opened them are in {} (putting them back failed: {e})",
                        b.display()
                    ),
                },
                None => detail,
            };
            Err(LogError::Damaged { path, detail })
        }
        Err(other) => {
            if let Some(b) = backup {
                let _ = restore(dir, &b);
            }
            Err(other)
        }
    }
}

const BACKUP: &str = ".open-backup";

/// Copies sled's files to `DIR/.open-backup` (see [`open_local`]).
fn backup(dir: &Path) -> std::io::Result<PathBuf> {
    let to = dir.join(BACKUP);
    if to.exists() {
        std::fs::remove_dir_all(&to)?;
    }
    std::fs::create_dir_all(&to)?;
    for f in repair::storage_files(dir) {
        if let Some(name) = f.file_name() {
            if name != mark::FILE {
                repair::copy_tree(&f, &to.join(name))?;
            }
        }
    }
    Ok(to)
}

/// Puts the files [`backup`] copied back in place of sled's.
fn restore(dir: &Path, from: &Path) -> std::io::Result<()> {
    for f in repair::storage_files(dir) {
        if f.file_name().is_some_and(|n| n != mark::FILE) {
            if f.is_dir() {
                std::fs::remove_dir_all(&f)?;
            } else {
                std::fs::remove_file(&f)?;
            }
        }
    }
    for f in std::fs::read_dir(from)? {
        let f = f?;
        std::fs::rename(f.path(), dir.join(f.file_name()))?;
    }
    std::fs::remove_dir(from)
}

/// Opens sled in `config.path` and checks what it reads against the mark.
fn open_sled(config: &LogConfig, mark: Option<State>) -> Result<Shared, LogError> {
    let dir = config.path.as_path();
    let open_err = |source| LogError::Open {
        path: dir.to_path_buf(),
        source,
    };
    let db = sled::Config::new()
        .path(dir)
        .mode(sled::Mode::HighThroughput)
        .cache_capacity(256 * 1024 * 1024)
        .open()
        .map_err(|e| match e {
            sled::Error::Corruption { .. } => damaged(dir, format!("sled reports {e}")),
            other => open_err(other),
        })?;
    let events = db.open_tree("events").map_err(open_err)?;
    let meta = db.open_tree("meta").map_err(open_err)?;
    let c = verify_tree(dir, &events)?;
    // Retention records its floor before deleting, so even a log it
    // emptied remembers the highest id ever assigned.
    let trimmed = meta_u64(&meta, META_TRIMMED)?.max(mark.map_or(0, |m| m.trimmed));
    let floor = trimmed.max(mark.map_or(0, |m| m.legacy));
    let lost = c.chain.missing(c.last, floor);
    if !lost.is_empty() {
        return Err(damaged(
            dir,
            format!(
                "events {} are missing from sled's events tree",
                inventory::ranges(&lost)
            ),
        ));
    }
    let stored = c.last.max(trimmed);
    if let Some(m) = &mark {
        if stored < m.durable {
            return Err(damaged(
                dir,
                format!(
                    "sled holds events up to {stored} but events up to {} had been stored durably (spout.mark): events {}..{} are gone (sled stops reading its file at a damaged spot)",
                    m.durable,
                    stored + 1,
                    m.durable
                ),
            ));
        }
    }
    let head = stored.max(mark.map_or(0, |m| m.reserved));
    if let Some(m) = &mark {
        if !m.clean && m.reserved > stored {
            tracing::warn!(
                path = %dir.display(),
                stored,
                reserved = m.reserved,
                "the last run did not close the log; ids up to the reserved mark are skipped, so no id is given twice"
            );
        }
    }
    let state = State {
        reserved: head,
        durable: stored,
        trimmed,
        // A data directory from before the mark: its blocks may be of
        // version 1, which only sled can find.
        legacy: mark.map_or(stored, |m| m.legacy),
        db: mark::FileId::default(),
        clean: false,
    };
    let mark = Mark::create(dir, state).map_err(|e| open_err(sled::Error::Io(mark_io(e))))?;
    let shared = Shared::new(config, db, Some(mark), state)?;
    shared.count.store(c.count, Ordering::Relaxed);
    shared.bytes.store(c.bytes, Ordering::Relaxed);
    shared.stored_last.store(stored, Ordering::Relaxed);
    tracing::info!(path = %dir.display(), events = c.count, bytes = c.bytes, head, "log opened");
    Ok(shared)
}

fn mark_io(e: mark::MarkError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl Shared {
    fn new(
        config: &LogConfig,
        db: sled::Db,
        mark: Option<Mark>,
        state: State,
    ) -> Result<Shared, LogError> {
        let open_err = |source| LogError::Open {
            path: config.path.clone(),
            source,
        };
        Ok(Shared {
            dir: config.path.clone(),
            events: db.open_tree("events").map_err(open_err)?,
            meta: db.open_tree("meta").map_err(open_err)?,
            dedupe: db.open_tree("dedupe").map_err(open_err)?,
            db,
            fsync: config.fsync,
            head: AtomicU64::new(state.reserved),
            // No mark (cluster mode): nothing to reserve.
            reserved: AtomicU64::new(if mark.is_some() {
                state.reserved
            } else {
                u64::MAX
            }),
            stored_last: AtomicU64::new(state.durable),
            trimmed: AtomicU64::new(state.trimmed),
            count: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            mark: mark.map(Mutex::new),
            gauges: LogGauges {
                events: metrics::gauge!("spout_log_events"),
                bytes: metrics::gauge!("spout_log_bytes"),
                last_id: metrics::gauge!("spout_log_last_id"),
            },
            rewrite: Mutex::new(()),
        })
    }

    /// Changes the mark with `f` and writes it (fsynced). No-op in cluster mode.
    fn update_mark(&self, f: impl FnOnce(&mut State)) -> Result<(), LogError> {
        let Some(mark) = &self.mark else {
            return Ok(());
        };
        let mut mark = mark.lock().unwrap_or_else(|e| e.into_inner());
        let mut s = mark.state();
        f(&mut s);
        if s == mark.state() {
            return Ok(());
        }
        mark.write(s)
            .map_err(|e| LogError::Append(format!("cannot write the id high-water mark: {e}")))
    }

    /// Reserves ids up to `want` in the mark (fsynced) before any is used.
    fn reserve(&self, want: u64) -> Result<(), LogError> {
        self.update_mark(|s| s.reserved = s.reserved.max(want))?;
        self.reserved.fetch_max(want, Ordering::AcqRel);
        Ok(())
    }

    /// Flushes sled and records what is now durable in the mark (at most
    /// every [`DURABLE_EVERY`]).
    fn flush(&self, last_durable_write: &mut Instant) -> Result<(), LogError> {
        let stored = self.stored_last.load(Ordering::Acquire);
        guarded(&self.dir, "flushing", || Ok(self.db.flush()?))?;
        if last_durable_write.elapsed() >= DURABLE_EVERY {
            self.update_mark(|s| s.durable = s.durable.max(stored))?;
            *last_durable_write = Instant::now();
        }
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

/// The sled backend: the open log, its appender and its background thread.
pub struct SledLog {
    shared: Arc<Shared>,
    sender: RwLock<Option<mpsc::Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stop_retention: Mutex<Option<mpsc::Sender<()>>>,
}

impl SledLog {
    /// Opens (or creates) the log in `config.path` (checked first: see
    /// [`open_local`]) and starts its appender and background threads;
    /// committed events go to `fanout`. Also returns the database, for the
    /// stores that live beside the log.
    pub(crate) fn open(
        config: &LogConfig,
        fanout: Arc<FanOut>,
    ) -> Result<(SledLog, sled::Db), LogError> {
        let dir = config.path.clone();
        let shared = Arc::new(guarded(&dir, "opening its files", || open_local(config))?);
        shared.publish_gauges();
        let spawn_err = |e| LogError::Open {
            path: dir.clone(),
            source: sled::Error::Io(e),
        };
        let (tx, rx) = mpsc::channel::<Job>();
        let appender = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("spout-log-append".into())
                .spawn(move || run_appender(shared, rx, fanout))
                .map_err(spawn_err)?
        };
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let background = {
            let shared = shared.clone();
            let cfg = config.retention.clone();
            let flush = match config.fsync {
                Fsync::Batch => Some(config.flush_interval),
                Fsync::Always => Some(config.flush_interval.max(DURABLE_EVERY)),
                Fsync::Never => None,
            };
            std::thread::Builder::new()
                .name("spout-log-retention".into())
                .spawn(move || retention::run(shared, cfg, flush, stop_rx))
                .map_err(spawn_err)?
        };
        let db = shared.db.clone();
        Ok((
            SledLog {
                shared,
                sender: RwLock::new(Some(tx)),
                threads: Mutex::new(vec![appender, background]),
                stop_retention: Mutex::new(Some(stop_tx)),
            },
            db,
        ))
    }
}

impl Backend for SledLog {
    fn append(&self, events: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<u64>, LogError>> {
        let (reply, rx) = oneshot::channel();
        let sent = self
            .sender
            .read()
            .map_err(|_| LogError::Closed)
            .and_then(|guard| {
                let sender = guard.as_ref().ok_or(LogError::Closed)?;
                sender
                    .send(Job { events, reply })
                    .map_err(|_| LogError::Closed)
            });
        Box::pin(async move {
            sent?;
            rx.await.map_err(|_| LogError::Closed)?
        })
    }

    fn head(&self) -> u64 {
        self.shared.head.load(Ordering::Acquire)
    }

    fn trimmed(&self) -> u64 {
        self.shared.trimmed.load(Ordering::Acquire)
    }

    fn earliest(&self) -> u64 {
        self.trimmed() + 1
    }

    fn count(&self) -> u64 {
        self.shared.count.load(Ordering::Relaxed)
    }

    fn bytes(&self) -> Option<u64> {
        Some(self.shared.bytes.load(Ordering::Relaxed))
    }

    fn first_id(&self) -> Option<u64> {
        let first = self.shared.events.first().ok().flatten()?;
        Some(key_id(&first.0))
    }

    fn scan(
        &self,
        after: u64,
        until: u64,
        max_scan: usize,
        visit: &mut dyn FnMut(u64, View<'_>) -> Result<bool, LogError>,
    ) -> Result<u64, LogError> {
        if after >= until {
            return Ok(after.max(until));
        }
        let shared = &self.shared;
        guarded(&shared.dir, "reading events", || {
            // Start at the block that holds `after + 1` (its key is at or before it).
            let from = match shared.events.range(..=id_key(after + 1)).next_back() {
                Some(item) => key_id(&item?.0),
                None => after + 1,
            };
            let mut cursor = after;
            let mut seen = 0usize;
            for item in shared.events.range(id_key(from)..=id_key(until)) {
                let (k, v) = item?;
                let first = key_id(&k);
                if let Err(e) = block::verify(first, &v) {
                    metrics::counter!("spout_log_damaged_reads_total").increment(1);
                    let n = block::count(&v).unwrap_or(1).max(1) as u64;
                    return Err(damaged(
                        &shared.dir,
                        format!(
                            "the block holding events {first}..{} fails its check ({e}); those events are not served",
                            first + n - 1
                        ),
                    ));
                }
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
                    let rec = rec.map_err(|source| LogError::Corrupt { id, source })?;
                    seen += 1;
                    if rec.is_empty() {
                        // Erased.
                        cursor = id;
                        continue;
                    }
                    let view = decode(rec).map_err(|source| LogError::Corrupt { id, source })?;
                    cursor = id;
                    if !visit(id, view)? {
                        return Ok(cursor);
                    }
                }
            }
            Ok(until)
        })
    }

    fn find_wire_id(&self, wire_id: &str) -> Result<Option<u64>, LogError> {
        Ok(self
            .shared
            .dedupe
            .get(dedupe_key("", wire_id))?
            .map(|v| key_id(&v)))
    }

    fn is_ready(&self) -> bool {
        !self.shared.stopped.load(Ordering::Acquire)
    }

    fn erase(&self, matches: &(dyn Fn(&View<'_>) -> bool + Sync)) -> Result<u64, LogError> {
        erase::erase(&self.shared, matches)
    }

    /// Stops the appender and the background thread, flushes everything to
    /// disk and records a clean close (the next start continues right after
    /// the last id). Appends after this fail with [`LogError::Closed`].
    fn close(&self) -> Result<(), LogError> {
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
        let shared = &self.shared;
        shared.stopped.store(true, Ordering::Release);
        guarded(&shared.dir, "flushing", || Ok(shared.db.flush()?))?;
        let head = shared.head.load(Ordering::Acquire);
        let stored = shared.stored_last.load(Ordering::Acquire);
        let db = mark::FileId::of(&shared.dir.join("db"));
        shared.update_mark(|s| {
            s.reserved = head;
            s.durable = s.durable.max(stored);
            s.db = db;
            s.clean = true;
        })?;
        Ok(())
    }
    fn sync(&self) -> BoxFuture<'_, Result<(), LogError>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            if shared.fsync == Fsync::Always {
                return Ok(());
            }
            tokio::task::spawn_blocking(move || {
                guarded(&shared.dir, "flushing", || Ok(shared.db.flush()?))
            })
            .await
            .map_err(|e| LogError::Append(format!("flush: {e}")))?
            .map(|_| ())
        })
    }
}

fn run_appender(shared: Arc<Shared>, rx: mpsc::Receiver<Job>, fanout: Arc<FanOut>) {
    let latency = metrics::histogram!("spout_log_append_seconds");
    let commits = metrics::counter!("spout_log_commits_total");
    // Set when the storage engine failed under us: every later append gets
    // the same error instead of writing into a database in an unknown state.
    let mut broken: Option<String> = None;
    while let Ok(first) = rx.recv() {
        let started = Instant::now();
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        if let Some(why) = &broken {
            for job in jobs {
                let _ = job.reply.send(Err(damaged(&shared.dir, why.clone())));
            }
            continue;
        }
        let committed = guarded(&shared.dir, "appending", || Ok(commit(&shared, &mut jobs)));
        let (events, results) = match committed {
            Ok(c) => c,
            Err(err) => {
                tracing::error!(error = %err, "log append failed; the log refuses appends until restarted");
                shared.stopped.store(true, Ordering::Release);
                broken = Some(match &err {
                    LogError::Damaged { detail, .. } => detail.clone(),
                    other => other.to_string(),
                });
                let n = jobs.len();
                (
                    Vec::new(),
                    (0..n)
                        .map(|_| Err(LogError::Append(err.to_string())))
                        .collect(),
                )
            }
        };
        // Publishers are answered first: fan-out to many subscribers takes
        // time and the events are already stored. Subscribers that connect in
        // between read them from the log and skip the queued copies by id.
        for (job, result) in jobs.into_iter().zip(results) {
            if let Err(err) = &result {
                if !matches!(err, LogError::Conflict { .. }) {
                    tracing::error!(error = %err, "log append failed");
                    metrics::counter!("spout_log_errors_total").increment(1);
                }
            }
            let _ = job.reply.send(result);
        }
        // Whatever is in the log is fanned out, even if a later step of the
        // commit failed: subscribers must never miss a stored event.
        if !events.is_empty() {
            fanout.send(events);
        }
        commits.increment(1);
        latency.record(started.elapsed().as_secs_f64());
        shared.publish_gauges();
    }
    shared.stopped.store(true, Ordering::Release);
}

/// The outcome of one group commit: what reached the log (for fan-out), and
/// per job its ids or its error.
type Committed = (Vec<Arc<Event>>, Vec<Result<Vec<u64>, LogError>>);

/// Where an event of a request ends up.
enum Slot {
    /// A new event: the next id.
    New,
    /// Its key names a stored (or earlier in this commit) event with the
    /// same content.
    Known(u64),
    /// Its key repeats the key of event `j` of the same request.
    SameAs(usize),
}

/// Writes every job's events as one batch. A job whose key conflicts gets
/// [`LogError::Conflict`] and stores nothing; the others are committed. Ids
/// advance as soon as the batch is in the tree, so a later failure (fsync,
/// say) can never lead to an id being reused; and no id is handed out that
/// the mark has not reserved durably.
fn commit(shared: &Shared, jobs: &mut [Job]) -> Committed {
    let time_ms = now_ms();
    let mut next = shared.head.load(Ordering::Acquire) + 1;
    // An atomic, not the mark's lock: the background thread holds that lock
    // while it fsyncs the durable watermark, and commits must not wait.
    let mut reserved = shared.reserved.load(Ordering::Acquire);
    let mut prev = shared.stored_last.load(Ordering::Acquire);
    // Finished blocks: (key, block), in id order.
    let mut blocks: Vec<([u8; 8], Vec<u8>)> = Vec::new();
    let mut block: Option<block::BlockWriter> = None;
    let mut block_first = next;
    let mut dedupe_batch = sled::Batch::default();
    // Keys assigned in this commit: key → (id, digest).
    let mut fresh_keys: HashMap<Vec<u8>, (u64, Digest)> = HashMap::new();
    let mut events = Vec::new();
    let mut results = Vec::with_capacity(jobs.len());
    let mut bytes = 0u64;
    'jobs: for job in jobs.iter_mut() {
        // Plan the request first, so a conflict leaves no trace of it.
        let mut plan = Vec::with_capacity(job.events.len());
        let mut pending: HashMap<Vec<u8>, (usize, Digest)> = HashMap::new();
        let mut digests = Vec::with_capacity(job.events.len());
        let mut new_count = 0u64;
        for (j, ne) in job.events.iter().enumerate() {
            let dks = dedupe_keys(&ne.topic, ne.key.as_deref(), wire_id_of(ne));
            if dks.iter().all(Option::is_none) {
                plan.push(Slot::New);
                digests.push(None);
                new_count += 1;
                continue;
            }
            let digest = record::digest_new(ne);
            let mut slot = None;
            for dk in dks.iter().flatten() {
                let found = if let Some((i, d)) = pending.get(dk) {
                    Some((Slot::SameAs(*i), Some(*d)))
                } else if let Some((id, d)) = fresh_keys.get(dk) {
                    Some((Slot::Known(*id), Some(*d)))
                } else {
                    match shared.dedupe.get(dk) {
                        Ok(v) => v.map(|v| (Slot::Known(key_id(&v)), dedupe_digest(&v))),
                        Err(e) => {
                            results.push(Err(e.into()));
                            continue 'jobs;
                        }
                    }
                };
                if let Some((s, stored)) = found {
                    if stored.is_some_and(|d| d != digest) {
                        let id = match s {
                            Slot::Known(id) => id,
                            _ => 0,
                        };
                        results.push(Err(LogError::Conflict {
                            what: describe_key(dk),
                            id,
                        }));
                        continue 'jobs;
                    }
                    slot = Some(s);
                    break;
                }
            }
            let slot = slot.unwrap_or(Slot::New);
            if matches!(slot, Slot::New) {
                for dk in dks.into_iter().flatten() {
                    pending.insert(dk, (j, digest));
                }
                new_count += 1;
            }
            plan.push(slot);
            digests.push(Some(digest));
        }
        // Ids past the reservation are reserved (and fsynced) before use.
        if new_count > 0 && next + new_count - 1 > reserved {
            let want = next + new_count - 1 + mark::RESERVE_BLOCK;
            if let Err(e) = shared.reserve(want) {
                results.push(Err(e));
                continue;
            }
            reserved = want;
        }
        let mut ids: Vec<u64> = Vec::with_capacity(job.events.len());
        for ((ne, slot), digest) in job.events.drain(..).zip(plan).zip(digests) {
            let id = match slot {
                Slot::Known(id) => id,
                Slot::SameAs(j) => ids[j],
                Slot::New => {
                    let id = next;
                    if let Some(d) = digest {
                        for dk in dedupe_keys(&ne.topic, ne.key.as_deref(), wire_id_of(&ne))
                            .into_iter()
                            .flatten()
                        {
                            dedupe_batch.insert(dk.clone(), &dedupe_value(id, &d));
                            fresh_keys.insert(dk, (id, d));
                        }
                    }
                    let event = Event::new(id, time_ms, ne);
                    if block.as_ref().is_some_and(|b| b.is_full()) {
                        if let Some(full) = block.take() {
                            let full = full.finish();
                            bytes += full.len() as u64;
                            blocks.push((id_key(block_first), full));
                        }
                    }
                    let w = block.get_or_insert_with(|| {
                        block_first = id;
                        block::BlockWriter::new(id, prev)
                    });
                    w.push(&event);
                    prev = id;
                    events.push(Arc::new(event));
                    next += 1;
                    id
                }
            };
            ids.push(id);
        }
        results.push(Ok(ids));
    }
    let Some(last_block) = block else {
        return (events, results);
    };
    let last_block = last_block.finish();
    bytes += last_block.len() as u64;
    blocks.push((id_key(block_first), last_block));
    // One block and no keys, the usual commit: a single insert is atomic in
    // sled on its own. A batch costs far more here: sled seals its log
    // buffer twice per batch (`pin_log`) and its IO threads write and sync
    // each seal, which made that the fixed cost of every commit.
    // Several blocks go in as one batch, so a crash keeps a request whole
    // or not at all. The events and their dedupe entries go in together:
    // sled's IO threads write buffers out on their own, so a crash between
    // two separate batches could keep an event and lose its key, and a
    // retry (a redelivered broker message) would then store it twice.
    let batch_of = |blocks: &[([u8; 8], Vec<u8>)]| {
        let mut batch = sled::Batch::default();
        for (key, value) in blocks {
            batch.insert(&key[..], value.as_slice());
        }
        batch
    };
    let stored = match (blocks.as_slice(), fresh_keys.is_empty()) {
        ([(key, value)], true) => shared
            .events
            .insert(key, value.as_slice())
            .map(|_| ())
            .map_err(|e| e.to_string()),
        (blocks, true) => shared
            .events
            .apply_batch(batch_of(blocks))
            .map_err(|e| e.to_string()),
        (blocks, false) => {
            use sled::Transactional;
            let batch = batch_of(blocks);
            (&shared.events, &shared.dedupe)
                .transaction(|(events, dedupe)| {
                    events.apply_batch(&batch)?;
                    dedupe.apply_batch(&dedupe_batch)?;
                    Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
                })
                .map_err(|e| format!("{e:?}"))
        }
    };
    if let Err(msg) = stored {
        let results = results
            .into_iter()
            .map(|r| r.and_then(|_| Err(LogError::Append(msg.clone()))))
            .collect();
        return (Vec::new(), results);
    }
    shared.head.store(next - 1, Ordering::Release);
    shared.stored_last.store(next - 1, Ordering::Release);
    shared
        .count
        .fetch_add(events.len() as u64, Ordering::Relaxed);
    shared.bytes.fetch_add(bytes, Ordering::Relaxed);
    let finish = || -> Result<(), LogError> {
        if shared.fsync == Fsync::Always {
            shared.db.flush()?;
        }
        Ok(())
    };
    if let Err(e) = finish() {
        let msg = e.to_string();
        let results = results
            .into_iter()
            .map(|r| r.and_then(|_| Err(LogError::Append(msg.clone()))))
            .collect();
        return (events, results);
    }
    (events, results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Data;
    use crate::{repair, Sink};

    fn config(dir: &std::path::Path, fsync: Fsync) -> LogConfig {
        LogConfig {
            path: dir.to_path_buf(),
            fsync,
            ..LogConfig::default()
        }
    }

    /// Opens the log in `dir`. A log closed just before may still be
    /// releasing sled's file lock (its threads drop the database a moment
    /// later; CI saw it under load): that is retried for a few seconds.
    fn open_with_sink(dir: &std::path::Path, fsync: Fsync, sink: Sink) -> (SledLog, Arc<FanOut>) {
        let fanout = FanOut::start(sink).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match SledLog::open(&config(dir, fsync), fanout.clone()) {
                Ok((log, _)) => return (log, fanout),
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("cannot open the log: {e}"),
            }
        }
    }

    /// A fan-out sink that records the ids it is handed, in order.
    fn id_sink() -> (Arc<Mutex<Vec<u64>>>, Sink) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink: Sink = {
            let seen = seen.clone();
            Arc::new(move |events: &[Arc<Event>]| {
                seen.lock().unwrap().extend(events.iter().map(|e| e.id));
            })
        };
        (seen, sink)
    }

    /// Opens a log whose fan-out goes nowhere.
    fn open_quiet(dir: &std::path::Path, fsync: Fsync) -> SledLog {
        open_with_sink(dir, fsync, Arc::new(|_: &[Arc<Event>]| {})).0
    }

    /// Why opening the log in `dir` fails.
    fn open_err(dir: &std::path::Path, fsync: Fsync) -> LogError {
        let fanout = FanOut::start(Arc::new(|_: &[Arc<Event>]| {})).unwrap();
        SledLog::open(&config(dir, fsync), fanout).err().unwrap()
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

    fn collect(log: &SledLog, after: u64) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        log.scan(after, log.head(), usize::MAX, &mut |id, v| {
            out.push((id, String::from_utf8_lossy(v.data).into_owned()));
            Ok(true)
        })
        .unwrap();
        out
    }

    #[tokio::test]
    async fn ids_increase_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (seen, sink) = id_sink();
        let (log, fanout) = open_with_sink(dir.path(), Fsync::Always, sink);
        assert_eq!(
            log.append(vec![ev("a", "1", None), ev("b", "2", None)])
                .await
                .unwrap(),
            [1, 2]
        );
        assert_eq!(log.append(vec![ev("a", "3", None)]).await.unwrap(), [3]);
        log.close().unwrap(); // joins the appender
        fanout.close(); // drains the fan-out: every sink call is done
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
            log.append(vec![ev("t", "19", Some("k19"))]).await.unwrap(),
            [19]
        );
        assert_eq!(
            log.append(vec![ev("t", "new", Some("k1"))]).await.unwrap(),
            [23]
        );
        let bytes_before = log.bytes().unwrap();
        let cfg = crate::config::RetentionConfig {
            max_events: Some(1),
            ..cfg
        };
        retention::enforce(&log.shared, &cfg, now_ms()).unwrap();
        assert_eq!(collect(&log, 0), [(23, "new".to_string())]);
        assert!(log.bytes().unwrap() < bytes_before);
        log.close().unwrap();
        drop(log);
        // Counts survive a reopen.
        let log = open_quiet(dir.path(), Fsync::Never);
        assert_eq!((log.count(), log.head(), log.trimmed()), (1, 23, 22));
        log.close().unwrap();
    }

    #[tokio::test]
    async fn erased_events_leave_their_ids_and_blocks_behind_through_retention_repair_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_quiet(dir.path(), Fsync::Never);
        // One block of 10: erase 3..=5 and 9 (and the key of 4).
        let batch = (1..=10)
            .map(|i| {
                let topic = if (3..=5).contains(&i) || i == 9 {
                    "x"
                } else {
                    "t"
                };
                ev(topic, &i.to_string(), Some(&format!("k{i}")))
            })
            .collect();
        log.append(batch).await.unwrap();
        log.append(vec![ev("t", "11", None)]).await.unwrap();
        let bytes = log.bytes().unwrap();
        assert_eq!(log.erase(&|v: &View<'_>| v.topic == "x").unwrap(), 4);
        assert_eq!(log.erase(&|v: &View<'_>| v.topic == "x").unwrap(), 0);
        assert_eq!(log.count(), 7);
        assert!(log.bytes().unwrap() < bytes);
        let ids =
            |log: &SledLog| -> Vec<u64> { collect(log, 0).into_iter().map(|(id, _)| id).collect() };
        assert_eq!(ids(&log), [1, 2, 6, 7, 8, 10, 11]);
        // A scan resuming inside the erased run goes on after it.
        assert_eq!(collect(&log, 3)[0].0, 6);
        // The erased event's key is free: a new event, a new id.
        assert_eq!(
            log.append(vec![ev("x", "4", Some("k4"))]).await.unwrap(),
            [12]
        );
        // A kept event's key still dedupes.
        assert_eq!(
            log.append(vec![ev("t", "2", Some("k2"))]).await.unwrap(),
            [2]
        );
        log.close().unwrap();
        drop(log);

        // Reopen: the chain checks out, counts exclude the erased.
        let log = open_quiet(dir.path(), Fsync::Never);
        assert_eq!((log.count(), log.head()), (8, 12));
        assert_eq!(ids(&log), [1, 2, 6, 7, 8, 10, 11, 12]);
        // Retention down to 5 events: the front goes, erased records with it.
        let cfg = crate::config::RetentionConfig {
            max_age: None,
            max_events: Some(5),
            max_bytes: None,
            interval: std::time::Duration::from_secs(3600),
        };
        assert_eq!(retention::enforce(&log.shared, &cfg, now_ms()).unwrap(), 3);
        assert_eq!(ids(&log), [7, 8, 10, 11, 12]);
        assert_eq!(log.trimmed(), 6);
        log.close().unwrap();
        drop(log);

        // Repair keeps erased slots as they are.
        let report = repair(dir.path()).unwrap();
        assert_eq!(report.kept, 5, "{report:?}");
        let log = open_quiet(dir.path(), Fsync::Never);
        assert_eq!(ids(&log), [7, 8, 10, 11, 12]);
        assert_eq!(log.count(), 5);
        assert_eq!(log.append(vec![ev("t", "13", None)]).await.unwrap(), [13]);
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
        let total = log.bytes().unwrap();
        let cfg = crate::config::RetentionConfig {
            max_age: None,
            max_events: None,
            max_bytes: Some(bytesize::ByteSize::b(total / 2)),
            interval: std::time::Duration::from_secs(3600),
        };
        let removed = retention::enforce(&log.shared, &cfg, now_ms()).unwrap();
        assert!(
            removed > 0 && log.bytes().unwrap() <= total / 2,
            "{} > {}",
            log.bytes().unwrap(),
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
        assert_eq!(
            (log.count(), log.bytes().unwrap(), log.earliest()),
            (0, 0, 51)
        );
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
        let end = log.scan(1000, n as u64, 100, &mut |_, _| Ok(true)).unwrap();
        assert_eq!(end, 1100);
        log.close().unwrap();
    }

    #[tokio::test]
    async fn idempotency_keys_return_the_first_id_and_refuse_other_content() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_quiet(dir.path(), Fsync::Never);
        let ids = log
            .append(vec![
                ev("a", "1", Some("k")),
                ev("a", "1", Some("k")),
                ev("b", "other topic", Some("k")),
            ])
            .await
            .unwrap();
        assert_eq!(ids, [1, 1, 2]);
        assert_eq!(
            log.append(vec![ev("a", "1", Some("k"))]).await.unwrap(),
            [1]
        );
        // The same key with other content: the whole request is refused.
        let err = log
            .append(vec![ev("c", "fine", None), ev("a", "changed", Some("k"))])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, LogError::Conflict { id: 1, what } if what.contains("`k` on topic `a`")),
            "{err}"
        );
        // Inside one request too.
        let err = log
            .append(vec![ev("d", "x", Some("j")), ev("d", "y", Some("j"))])
            .await
            .unwrap_err();
        assert!(matches!(err, LogError::Conflict { .. }), "{err}");
        assert_eq!(log.count(), 2, "nothing of a conflicting request is stored");
        // A request in the same group commit as a conflicting one is unaffected.
        let (a, b) = tokio::join!(
            log.append(vec![ev("a", "other", Some("k"))]),
            log.append(vec![ev("e", "ok", None)])
        );
        assert!(a.is_err());
        assert_eq!(b.unwrap(), [3]);
        log.close().unwrap();
    }

    #[tokio::test]
    async fn ids_reserved_by_a_run_that_crashed_are_never_given_again() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_quiet(dir.path(), Fsync::Batch);
        assert_eq!(log.append(vec![ev("t", "1", None)]).await.unwrap(), [1]);
        log.close().unwrap();
        drop(log);
        // A clean close: the next id follows at once.
        let state = Mark::read(dir.path()).unwrap().unwrap();
        assert!(state.clean);
        assert_eq!((state.reserved, state.durable), (1, 1));
        // What a crash leaves: ids reserved up to 70,000, not closed.
        let mut m = Mark::create(
            dir.path(),
            State {
                reserved: 70_000,
                clean: false,
                ..state
            },
        )
        .unwrap();
        m.write(State {
            reserved: 70_000,
            clean: false,
            ..state
        })
        .unwrap();
        drop(m);
        let log = open_quiet(dir.path(), Fsync::Batch);
        assert_eq!(log.head(), 70_000, "every id a client may have seen");
        assert_eq!(
            log.append(vec![ev("t", "2", None)]).await.unwrap(),
            [70_001]
        );
        // Replay across the gap is seamless, also from inside it.
        assert_eq!(
            collect(&log, 0),
            [(1, "1".to_string()), (70_001, "2".into())]
        );
        assert_eq!(collect(&log, 5_000), [(70_001, "2".to_string())]);
        // The new run reserved ahead before handing 70,001 out.
        let reserved = Mark::read(dir.path()).unwrap().unwrap().reserved;
        assert!(reserved >= 70_001, "{reserved}");
        log.close().unwrap();
    }

    #[tokio::test]
    async fn a_damaged_or_lost_file_is_refused_and_repair_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_quiet(dir.path(), Fsync::Always);
        for i in 0..30 {
            let batch = (0..10)
                .map(|j| {
                    ev(
                        "t",
                        &format!("event {} {}", i * 10 + j, "x".repeat(40)),
                        Some(&format!("k{i}-{j}")),
                    )
                })
                .collect();
            log.append(batch).await.unwrap();
        }
        log.close().unwrap();
        drop(log);
        let pristine = dir.path().join("pristine");
        std::fs::create_dir(&pristine).unwrap();
        for f in ["conf", "db", mark::FILE] {
            std::fs::copy(dir.path().join(f), pristine.join(f)).unwrap();
        }
        // Flip one byte inside event 150's text in sled's file.
        let db = dir.path().join("db");
        let mut bytes = std::fs::read(&db).unwrap();
        let at = memchr::memmem::rfind(&bytes, b"event 150 ").unwrap();
        bytes[at + 2] ^= 0x20;
        std::fs::write(&db, &bytes).unwrap();
        let err = open_err(dir.path(), Fsync::Always);
        let msg = err.to_string();
        assert!(
            msg.contains("is damaged") && msg.contains("spout repair"),
            "{msg}"
        );
        // Nothing was changed: the damaged file is as it was.
        assert_eq!(std::fs::read(&db).unwrap(), bytes);
        let report = repair(dir.path()).unwrap();
        println!("{report}");
        let lost: u64 = report.lost.iter().map(|(a, b)| b - a + 1).sum();
        assert_eq!(report.kept + lost, 300, "{report}");
        assert!(report.reserved >= 300);
        let log = open_quiet(dir.path(), Fsync::Always);
        let got = collect(&log, 0);
        assert_eq!(got.len() as u64, report.kept);
        // Every kept event is intact: its text names its own id.
        for (id, text) in &got {
            assert!(
                text.starts_with(&format!("event {} ", id - 1)),
                "{id}: {text}"
            );
        }
        // Keys survived: a retry of a kept event returns its id.
        let retry = ev("t", &format!("event 0 {}", "x".repeat(40)), Some("k0-0"));
        assert_eq!(log.append(vec![retry]).await.unwrap(), [1]);
        let next = log.append(vec![ev("t", "new", None)]).await.unwrap()[0];
        assert!(next > 300, "{next}");
        log.close().unwrap();
        drop(log);

        // sled's file cut to nothing: ids must not restart at 1.
        let cut = pristine;
        std::fs::write(cut.join("db"), []).unwrap();
        let err = open_err(&cut, Fsync::Always);
        assert!(err.to_string().contains("1..300"), "{err}");
        let report = repair(&cut).unwrap();
        assert_eq!((report.kept, report.lost.clone()), (0, vec![(1, 300)]));
        let log = open_quiet(&cut, Fsync::Always);
        assert!(log.append(vec![ev("t", "new", None)]).await.unwrap()[0] > 300);
        log.close().unwrap();
    }

    #[tokio::test]
    async fn a_block_damaged_after_start_is_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_quiet(dir.path(), Fsync::Never);
        log.append((1..=5).map(|i| ev("t", &i.to_string(), None)).collect())
            .await
            .unwrap();
        log.append(vec![ev("t", "6", None)]).await.unwrap();
        let (k, v) = log.shared.events.first().unwrap().unwrap();
        let mut bad = v.to_vec();
        let n = bad.len();
        bad[n - 1] ^= 1;
        log.shared.events.insert(k, bad).unwrap();
        let err = log.scan(0, 6, 100, &mut |_, _| Ok(true)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("events 1..5") && msg.contains("spout repair"),
            "{msg}"
        );
        // Blocks after it still read.
        assert_eq!(collect(&log, 5), [(6, "6".to_string())]);
        log.close().unwrap();
    }

    /// 16 publishers × 50 appends on two workers, in each fsync mode.
    /// Every id is given once, each publisher's ids rise, the
    /// fan-out sees every event once in id order, commits were shared, and
    /// all of it is there after a reopen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_are_all_committed_in_order() {
        for fsync in [Fsync::Batch, Fsync::Never, Fsync::Always] {
            let dir = tempfile::tempdir().unwrap();
            let (seen, sink) = id_sink();
            let (log, _fanout) = open_with_sink(dir.path(), fsync, sink);
            let log = Arc::new(log);
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
                assert!(
                    ids.windows(2).all(|w| w[0] < w[1]),
                    "{fsync:?}: per-publisher order"
                );
                all.extend(ids);
            }
            all.sort_unstable();
            let expected: Vec<u64> = (1..=800).collect();
            assert_eq!(all, expected, "{fsync:?}");
            // Group commit: one block per commit, and waiting publishers shared commits.
            let blocks = log.shared.events.len();
            assert!(
                blocks < 800,
                "{fsync:?}: {blocks} commits for 800 concurrent appends"
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while seen.lock().unwrap().len() < 800 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(*seen.lock().unwrap(), expected, "{fsync:?}: fan-out order");
            log.close().unwrap();
            assert!(matches!(
                log.append(vec![ev("t", "late", None)]).await,
                Err(LogError::Closed)
            ));
            drop(log);
            let log = open_quiet(dir.path(), fsync);
            assert_eq!(collect(&log, 0).len(), 800, "{fsync:?}: after reopen");
            log.close().unwrap();
        }
    }
}
