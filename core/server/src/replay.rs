//! Catch-up reads: what a stream that resumes (`Last-Event-ID`) or fell
//! behind reads from the log before it goes live.
//!
//! After a deploy every client reconnects at once, most of them from the
//! same id. Each stream reading the log on its own would run thousands of
//! blocking scans side by side (starving the async workers that write live
//! events) and hold thousands of copies of the same frames. So reads here
//! are
//! - few at a time: at most [`Replay::READS`] scans run at once, on the
//!   blocking pool, whatever the number of streams;
//! - shared: streams with the same selectors (no filter, no batching or
//!   compression, no protocol rule) reading from the same id get the same
//!   read — one scan, one rendered chunk, one copy of its bytes (`Bytes` is
//!   reference-counted) — whether they ask while it runs or within [`KEEP`]
//!   of its start (in cluster mode only while it runs: another node's
//!   erase could not make this one forget). The user does not split the
//!   read: a shared chunk notes which of its frames are addressed to one
//!   user (`to`), and only a chunk that holds such frames is copied, per
//!   user, without the others'.
//!
//! A read goes up to the log's head when it starts (at most [`SCAN`] records
//! and [`CHUNK_BYTES`] of frames), which may be past a stream's own target:
//! the stream's cursor rule skips live events at or below what it wrote, so
//! over-reading is exact. Erasing events forgets every kept read.

use crate::event::{DataRef, Event};
use crate::hub::Subscriber;
use crate::log::{EventLog, LogError};
use crate::plugin::wire::BatchBuilder;
use crate::shape::Shape;
use crate::sse;
use crate::visibility::{Audience, Facts};
use bytes::{Bytes, BytesMut};
use futures_util::future::{BoxFuture, FutureExt, Shared};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Log records examined per read.
pub const SCAN: usize = 4096;
/// Bytes of frames rendered per read before it stops.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// How long after its start a shared read stays available to later streams
/// (on a single node).
pub const KEEP: Duration = Duration::from_secs(2);
/// How long a read may run and still be joined.
const IN_FLIGHT_MAX: Duration = Duration::from_secs(10);
/// Shared reads kept at most (each at most [`CHUNK_BYTES`] of frames).
const KEPT_MAX: usize = 256;

/// What one catch-up read produced.
#[derive(Debug, Default)]
pub struct Chunk {
    /// Rendered frames, ready to write.
    frames: Bytes,
    /// Events in `frames`.
    events: u64,
    /// Every id up to here has been looked at.
    pub cursor: u64,
    /// In a shared chunk: the byte ranges of frames addressed to one user,
    /// and that user (in order).
    addressed: Vec<(std::ops::Range<usize>, Box<str>)>,
}

impl Chunk {
    /// The frames `user` gets out of this chunk, and how many events they
    /// hold: the chunk itself unless it holds frames addressed to others.
    pub fn frames_for(&self, user: Option<&str>) -> (Bytes, u64) {
        let others = self
            .addressed
            .iter()
            .filter(|(_, to)| Some(&**to) != user)
            .count();
        if others == 0 {
            return (self.frames.clone(), self.events);
        }
        let mut out = BytesMut::with_capacity(self.frames.len());
        let mut at = 0;
        for (range, to) in &self.addressed {
            if Some(&**to) != user {
                out.extend_from_slice(&self.frames[at..range.start]);
                at = range.end;
            }
        }
        out.extend_from_slice(&self.frames[at..]);
        (out.freeze(), self.events - others as u64)
    }
}

/// Why a catch-up read failed (the stream logs it and ends).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The log could not be read.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The blocking read did not complete (it panicked or was cancelled).
    #[error("catch-up read did not complete: {0}")]
    Task(String),
}

/// A read's outcome, as every stream sharing it sees it.
pub type ReadResult = Result<Arc<Chunk>, Arc<ReplayError>>;

/// A read in flight or done, that any number of streams may await.
type SharedRead = Shared<BoxFuture<'static, ReadResult>>;

/// Streams that may share a read: the same selectors, from the same id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    after: u64,
    selectors: Box<str>,
}

struct Kept {
    read: SharedRead,
    since: Instant,
}

/// The server's catch-up reader (cheap to clone).
#[derive(Clone)]
pub struct Replay {
    inner: Arc<Inner>,
}

struct Inner {
    log: EventLog,
    /// [`KEEP`], or zero in cluster mode.
    keep: Duration,
    /// `spout_replay_reads_total`: scans run.
    scans: metrics::Counter,
    /// `spout_replay_reads_shared_total`: reads served by another's scan.
    joined: metrics::Counter,
    reads: Arc<Semaphore>,
    kept: Mutex<HashMap<Key, Kept>>,
}

/// Who reads: a subscriber and, for a shaped stream, its shape.
pub struct Reader {
    /// The subscriber whose audience decides what is read.
    pub subscriber: Arc<Subscriber>,
    /// Batching/compression: the chunk is rendered through it.
    pub shape: Option<Arc<Shape>>,
}

impl Replay {
    /// Scans that run at once, at most.
    pub const READS: usize = 2;

    /// A reader of `log`.
    pub fn new(log: EventLog) -> Replay {
        Replay {
            inner: Arc::new(Inner {
                keep: if log.redis().is_some() {
                    Duration::ZERO
                } else {
                    KEEP
                },
                log,
                scans: metrics::counter!("spout_replay_reads_total"),
                joined: metrics::counter!("spout_replay_reads_shared_total"),
                reads: Arc::new(Semaphore::new(Self::READS)),
                kept: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The log read from.
    pub fn log(&self) -> &EventLog {
        &self.inner.log
    }

    /// Forgets every kept read (events were erased: they must not be
    /// replayed from memory).
    pub fn forget(&self) {
        self.inner
            .kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Reads what `reader` should get after `after`, up to the log's head
    /// (within one chunk's bounds); shared with other streams of the same
    /// audience where it can be.
    pub fn read(&self, reader: Reader, after: u64) -> BoxFuture<'static, ReadResult> {
        let Some(key) = shareable(&reader, after) else {
            return self.scan(reader, after, false).boxed();
        };
        let now = Instant::now();
        let mut kept = self.inner.kept.lock().unwrap_or_else(|e| e.into_inner());
        let keep = self.inner.keep;
        // Joinable: started less than `keep` ago, or still running (a read
        // nobody polled to its end any more is given up after a while).
        let usable = |k: &Kept| {
            let age = now.duration_since(k.since);
            age < keep || (k.read.peek().is_none() && age < IN_FLIGHT_MAX)
        };
        if let Some(k) = kept.get(&key).filter(|k| usable(k)) {
            self.inner.joined.increment(1);
            return k.read.clone().boxed();
        }
        kept.retain(|_, k| usable(k));
        let read = self.scan(reader, after, true).boxed().shared();
        if kept.len() < KEPT_MAX {
            kept.insert(
                key,
                Kept {
                    read: read.clone(),
                    since: now,
                },
            );
        }
        read.boxed()
    }

    /// One scan on the blocking pool, after a permit; `shared`: for every
    /// user (see [`Chunk::frames_for`]).
    fn scan(
        &self,
        reader: Reader,
        after: u64,
        shared: bool,
    ) -> impl std::future::Future<Output = ReadResult> {
        let inner = self.inner.clone();
        async move {
            let permit = inner
                .reads
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| Arc::new(ReplayError::Task(e.to_string())))?;
            let log = inner.log.clone();
            let chunk = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                scan(&log, &reader, after, shared)
            })
            .await
            .map_err(|e| Arc::new(ReplayError::Task(e.to_string())))?;
            inner.scans.increment(1);
            chunk
                .map(Arc::new)
                .map_err(|e| Arc::new(ReplayError::Log(e)))
        }
    }
}

/// The sharing key, if `reader`'s chunk is the same for every stream with
/// the same selectors (but for frames addressed to one user).
fn shareable(reader: &Reader, after: u64) -> Option<Key> {
    let sub = &reader.subscriber;
    let filtered = sub.filter.as_ref().is_some_and(|g| g.is_active());
    if filtered || reader.shape.is_some() || sub.admission.is_some() {
        return None;
    }
    let selectors = sub.selectors();
    let mut names: Vec<&str> = selectors.iter().map(|s| s.as_str()).collect();
    names.sort_unstable();
    Some(Key {
        after,
        selectors: names.join("\n").into(),
    })
}

/// Reads from `after` up to the head as it is now: the frames `reader`
/// gets, filtered by its group and rendered through its shape — or, when
/// `shared`, the frames every user of its selectors may get, each addressed
/// one noted.
fn scan(log: &EventLog, reader: &Reader, after: u64, shared: bool) -> Result<Chunk, LogError> {
    let sub = &reader.subscriber;
    let target = log.head();
    let mut frames = BytesMut::new();
    let user = sub.user.as_deref();
    let filter = sub.filter.as_ref().filter(|g| g.is_active());
    let selectors = sub.selectors();
    // With filters, frames are rendered one by one, then the group's
    // filters decide over the chunk which of them are written. A shaped
    // stream keeps the events instead and renders them last.
    let mut batch = BatchBuilder::default();
    let mut ends = Vec::new();
    let mut shaped: Vec<Arc<Event>> = Vec::new();
    let mut shaped_bytes = 0;
    let mut events = 0u64;
    let mut addressed = Vec::new();
    let audience = Audience {
        selectors: &selectors,
        user,
        admission: sub.admission.as_ref(),
    };
    let shape = reader.shape.as_ref();
    let cursor = log.scan(after, target, SCAN, |id, view| {
        let facts = Facts::of_view(&view);
        let admitted = if shared {
            // As its addressee would see it.
            Audience {
                user: facts.to,
                ..audience.clone()
            }
            .admits(&facts)
        } else {
            audience.admits(&facts)
        };
        if admitted {
            let start = frames.len();
            if shape.is_some() {
                let e = view
                    .to_event(id)
                    .map_err(|source| LogError::Corrupt { id, source })?;
                shaped_bytes += e.frame().len();
                shaped.push(Arc::new(e));
            } else {
                let data: DataRef<'_> = view
                    .data_ref()
                    .map_err(|source| LogError::Corrupt { id, source })?;
                sse::put_event_with(&mut frames, id, view.wire_id, view.retry, view.kind, data);
                if let (true, Some(to)) = (shared, view.to) {
                    addressed.push((start..frames.len(), to.into()));
                }
            }
            if filter.is_some() {
                batch.push(id, view.time_ms, view.topic, view.kind, view.data, view.to);
                ends.push(frames.len());
            }
            events += 1;
        }
        Ok(frames.len() + shaped_bytes < CHUNK_BYTES)
    })?;
    let keep = filter.map(|group| group.evaluate(&batch));
    if let Some(shape) = shape {
        if let Some(keep) = keep {
            let mut k = keep.into_iter();
            shaped.retain(|_| k.next().unwrap_or(true));
        }
        return Ok(Chunk {
            events: shaped.len() as u64,
            frames: shape.render(&shaped).freeze(),
            cursor,
            addressed,
        });
    }
    if let Some(keep) = keep {
        let mut kept = BytesMut::with_capacity(frames.len());
        let mut start = 0;
        events = 0;
        for (end, k) in ends.into_iter().zip(keep) {
            if k {
                kept.extend_from_slice(&frames[start..end]);
                events += 1;
            }
            start = end;
        }
        frames = kept;
    }
    Ok(Chunk {
        frames: frames.freeze(),
        events,
        cursor,
        addressed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_chunk_is_copied_only_for_users_it_holds_others_frames_for() {
        let frames = Bytes::from_static(
            b"id: 1\ndata: a\n\nid: 2\ndata: ann\n\nid: 3\ndata: c\n\nid: 4\ndata: bob\n\n",
        );
        let chunk = Chunk {
            frames: frames.clone(),
            events: 4,
            cursor: 4,
            addressed: vec![(15..32, "ann".into()), (47..64, "bob".into())],
        };
        let (anon, n) = chunk.frames_for(None);
        assert_eq!(
            (&anon[..], n),
            (&b"id: 1\ndata: a\n\nid: 3\ndata: c\n\n"[..], 2)
        );
        let (ann, n) = chunk.frames_for(Some("ann"));
        assert_eq!(
            (&ann[..], n),
            (
                &b"id: 1\ndata: a\n\nid: 2\ndata: ann\n\nid: 3\ndata: c\n\n"[..],
                3
            )
        );
        let plain = Chunk {
            frames: frames.clone(),
            events: 4,
            cursor: 4,
            addressed: Vec::new(),
        };
        let (same, n) = plain.frames_for(Some("ann"));
        assert_eq!(n, 4);
        assert_eq!(
            same.as_ptr(),
            frames.as_ptr(),
            "no copy without addressed frames"
        );
    }
}
