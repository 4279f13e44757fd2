//! One subscriber's SSE response body: replay, live events, catch-up, end.
//!
//! The stream keeps a `cursor`, the highest log id it has accounted for, and
//! writes an event only if its id is above the cursor. That one rule makes
//! every seam exact:
//! - Resume: the subscriber is registered in the hub *first*, then the log is
//!   read from `Last-Event-ID` up to its head at that moment; queued live
//!   events at or below that head are skipped, later ones follow. No gap, no
//!   duplicate.
//! - Lag: when the hub could not queue an event it raises a flag; the stream
//!   drops what it holds and re-reads the log from its cursor, then goes live
//!   again. A client that stays behind past `catchup_timeout` gets
//!   `event: overflow` and is closed, so it reconnects with its Last-Event-ID.
//!
//! Whatever is ready is written at once: several frames become one chunk.

use crate::event::DataRef;
use crate::hub::{Item, Subscription};
use crate::log::{EventLog, LogError};
use crate::plugin::wire::BatchBuilder;
use crate::sse;
use crate::topic::any_matches;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use metrics::Counter;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Items taken from the queue per poll (and so frames per write, at most).
const RECV_BATCH: usize = 128;
/// Log records examined per catch-up read.
const CATCHUP_SCAN: usize = 4096;
/// Bytes of frames rendered per catch-up read before it yields them.
const CATCHUP_BYTES: usize = 256 * 1024;

/// Where the stream is reading from.
enum Mode {
    /// From the hub's queue.
    Live,
    /// From the log, up to `target`; `read` is the read in flight.
    CatchUp {
        target: u64,
        read: Option<JoinHandle<Result<Chunk, LogError>>>,
    },
}

/// What one catch-up read produced.
struct Chunk {
    frames: BytesMut,
    events: u64,
    /// Every id up to here has been looked at.
    cursor: u64,
}

/// The SSE body of one `GET /events` response.
pub struct EventStream {
    sub: Subscription,
    log: EventLog,
    prelude: Option<Bytes>,
    cursor: u64,
    mode: Mode,
    /// Since when the stream has been behind (catching up), if it is.
    behind_since: Option<Instant>,
    catchup_timeout: Duration,
    batch: Vec<Item>,
    done: bool,
    replayed: Counter,
    on_end: Option<OnEnd>,
}

/// Runs when the stream is dropped (the connection ended): the auth
/// plugin's `on-disconnect` hook.
pub type OnEnd = Box<dyn FnOnce() + Send>;

impl Drop for EventStream {
    fn drop(&mut self) {
        if let Some(f) = self.on_end.take() {
            f();
        }
    }
}

/// How a new stream starts.
pub struct StreamStart {
    /// Bytes written first: `retry:`, `connected`, maybe `reset`.
    pub prelude: Bytes,
    /// Events up to and including this id are not sent.
    pub cursor: u64,
    /// Read the log from `cursor` up to this id before going live.
    pub replay_until: Option<u64>,
    /// Close the stream with `overflow` if it stays behind this long.
    pub catchup_timeout: Duration,
}

impl EventStream {
    /// A stream for a registered subscription.
    pub fn new(sub: Subscription, log: EventLog, start: StreamStart) -> EventStream {
        let mode = match start.replay_until {
            Some(target) if target > start.cursor => Mode::CatchUp { target, read: None },
            _ => Mode::Live,
        };
        EventStream {
            sub,
            log,
            prelude: Some(start.prelude),
            cursor: start.cursor,
            // The initial replay is not "falling behind": only lag that
            // happens after the stream started counts toward overflow.
            behind_since: None,
            mode,
            catchup_timeout: start.catchup_timeout,
            // Grows on first use: idle streams should cost as little memory as possible.
            batch: Vec::new(),
            done: false,
            replayed: metrics::counter!("spout_events_replayed_total"),
            on_end: None,
        }
    }

    /// Calls `f` when the stream ends, however it ends.
    pub fn on_end(mut self, f: OnEnd) -> EventStream {
        self.on_end = Some(f);
        self
    }

    fn finish(&mut self, frame: Bytes) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.done = true;
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn start_read(&self, target: u64) -> JoinHandle<Result<Chunk, LogError>> {
        let log = self.log.clone();
        let sub = self.sub.subscriber.clone();
        let after = self.cursor;
        tokio::task::spawn_blocking(move || {
            let mut frames = BytesMut::new();
            let mut events = 0u64;
            let user = sub.user.as_deref();
            let filter = sub.filter.as_ref().filter(|g| g.is_active());
            let selectors = sub.selectors();
            // With filters, frames are rendered one by one, then the group's
            // filters decide over the chunk which of them are written.
            let mut batch = BatchBuilder::default();
            let mut ends = Vec::new();
            let cursor = log.scan(after, target, CATCHUP_SCAN, |id, view| {
                let wanted = match &sub.mercure {
                    Some(access) => access.admits_view(&view, user),
                    None => any_matches(&selectors, view.topic) && view.visible_to(user),
                };
                if wanted {
                    let data: DataRef<'_> = view
                        .data_ref()
                        .map_err(|source| LogError::Corrupt { id, source })?;
                    sse::put_event_with(&mut frames, id, view.wire_id, view.retry, view.kind, data);
                    if filter.is_some() {
                        batch.push(id, view.time_ms, view.topic, view.kind, view.data, view.to);
                        ends.push(frames.len());
                    }
                    events += 1;
                }
                Ok(frames.len() < CATCHUP_BYTES)
            })?;
            if let Some(group) = filter {
                let keep = group.evaluate(&batch);
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
                frames,
                events,
                cursor,
            })
        })
    }
}

impl Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(prelude) = this.prelude.take() {
                return Poll::Ready(Some(Ok(Frame::data(prelude))));
            }
            if let Some((event, reason)) = this.sub.subscriber.ended() {
                let frame = sse::control_frame(
                    event,
                    &serde_json::json!({ "reason": reason, "last_id": this.cursor }),
                );
                return this.finish(frame);
            }
            if this.sub.subscriber.is_closing() {
                return this.finish(sse::control_frame(
                    "shutdown",
                    &serde_json::json!({ "last_id": this.cursor }),
                ));
            }
            if let Some(since) = this.behind_since {
                if since.elapsed() > this.catchup_timeout {
                    tracing::info!(connection = %this.sub.subscriber.conn_id, cursor = this.cursor, "subscriber could not catch up; closing with overflow");
                    this.sub.count_overflow();
                    return this.finish(sse::control_frame(
                        "overflow",
                        &serde_json::json!({ "last_id": this.cursor }),
                    ));
                }
            }
            match &mut this.mode {
                Mode::CatchUp { target, read } => {
                    let target = *target;
                    if read.is_none() {
                        // Retention may have removed events this stream has not
                        // sent yet: say so instead of skipping them silently.
                        let trimmed = this.log.trimmed();
                        if trimmed > this.cursor {
                            let reset = sse::control_frame(
                                "reset",
                                &serde_json::json!({ "requested": this.cursor, "earliest": trimmed + 1 }),
                            );
                            this.cursor = trimmed;
                            return Poll::Ready(Some(Ok(Frame::data(reset))));
                        }
                        let handle = this.start_read(target);
                        this.mode = Mode::CatchUp {
                            target,
                            read: Some(handle),
                        };
                    }
                    let Mode::CatchUp {
                        read: Some(handle), ..
                    } = &mut this.mode
                    else {
                        continue;
                    };
                    let result = ready!(Pin::new(handle).poll(cx));
                    let chunk = match result {
                        Ok(Ok(chunk)) => chunk,
                        Ok(Err(err)) => {
                            tracing::error!(error = %err, "catch-up read failed; closing stream");
                            this.done = true;
                            continue;
                        }
                        Err(err) => {
                            tracing::error!(error = %err, "catch-up task failed; closing stream");
                            this.done = true;
                            continue;
                        }
                    };
                    this.cursor = chunk.cursor.max(this.cursor);
                    this.mode = if this.cursor >= target {
                        Mode::Live
                    } else {
                        Mode::CatchUp { target, read: None }
                    };
                    if chunk.events > 0 {
                        this.replayed.increment(chunk.events);
                        return Poll::Ready(Some(Ok(Frame::data(chunk.frames.freeze()))));
                    }
                }
                Mode::Live => {
                    this.batch.clear();
                    let n = ready!(this.sub.rx.poll_recv_many(cx, &mut this.batch, RECV_BATCH));
                    if n == 0 {
                        this.done = true;
                        continue;
                    }
                    if this.sub.subscriber.take_lagged() {
                        // Something was dropped before (some of) these items:
                        // re-read the log from the cursor instead.
                        this.behind_since.get_or_insert_with(Instant::now);
                        this.mode = Mode::CatchUp {
                            target: this.log.head(),
                            read: None,
                        };
                        continue;
                    }
                    this.behind_since = None;
                    if let Some(bytes) = coalesce(&this.batch, &mut this.cursor) {
                        return Poll::Ready(Some(Ok(Frame::data(bytes))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

static HEARTBEAT: Bytes = Bytes::from_static(sse::HEARTBEAT);

/// Turns queued items into one write, skipping events at or below the cursor.
/// A single frame is passed on without copying.
fn coalesce(items: &[Item], cursor: &mut u64) -> Option<Bytes> {
    let mut parts = items.iter().filter_map(|item| match item {
        Item::Event(e) if e.id > *cursor => {
            *cursor = e.id;
            Some(e.frame())
        }
        Item::Event(_) => None,
        Item::Heartbeat => Some(&HEARTBEAT),
        Item::Wake => None,
    });
    let first = parts.next()?.clone();
    let Some(second) = parts.next() else {
        return Some(first);
    };
    let mut buf = BytesMut::with_capacity(first.len() * 4 + second.len());
    buf.extend_from_slice(&first);
    buf.extend_from_slice(second);
    for part in parts {
        buf.extend_from_slice(part);
    }
    Some(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Data, Event, NewEvent};
    use std::sync::Arc;

    fn item(id: u64) -> Item {
        Item::Event(Arc::new(Event::new(
            id,
            0,
            NewEvent {
                topic: "t".into(),
                kind: None,
                data: Data::Text(id.to_string()),
                to: None,
                key: None,
                extra: None,
            },
        )))
    }

    #[test]
    fn ready_frames_become_one_write_without_repeats() {
        let mut cursor = 2;
        let items = [item(1), item(2), item(3), Item::Heartbeat, item(4)];
        let out = coalesce(&items, &mut cursor).unwrap();
        assert_eq!(&out[..], b"id: 3\ndata: 3\n\n:\n\nid: 4\ndata: 4\n\n");
        assert_eq!(cursor, 4);
        // Nothing new: nothing to write.
        assert!(coalesce(&[item(4), Item::Wake], &mut cursor).is_none());
        // A single frame is passed through without copying.
        let single = [item(5)];
        let out = coalesce(&single, &mut cursor).unwrap();
        let Item::Event(e) = &single[0] else {
            unreachable!()
        };
        assert_eq!(out.as_ptr(), e.frame().as_ptr());
    }
}
