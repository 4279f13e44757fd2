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

use crate::event::Event;
use crate::hub::{Item, Subscription};
use crate::replay::{ReadResult, Reader, Replay};
use crate::shape::Shape;
use crate::sse;
use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use metrics::Counter;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Items taken from the queue per poll (and so frames per write, at most).
const RECV_BATCH: usize = 128;
/// One live write in this many records its publish→deliver latency.
const LATENCY_SAMPLE: u32 = 16;

/// Where the stream is reading from.
enum Mode {
    /// From the hub's queue.
    Live,
    /// From the log, up to `target`; `read` is the read in flight.
    CatchUp {
        target: u64,
        read: Option<BoxFuture<'static, ReadResult>>,
    },
}

/// The SSE body of one `GET /events` response.
pub struct EventStream {
    sub: Subscription,
    replay: Replay,
    prelude: Option<Bytes>,
    cursor: u64,
    mode: Mode,
    /// Since when the stream has been behind (catching up), if it is.
    behind_since: Option<Instant>,
    catchup_timeout: Duration,
    batch: Vec<Item>,
    done: bool,
    replayed: Counter,
    /// `spout_deliver_latency_seconds`: accept time → written (sampled).
    latency: metrics::Histogram,
    writes: u32,
    on_end: Option<OnEnd>,
    /// Batching/compression state; boxed so plain streams stay small.
    shaper: Option<Box<Shaper>>,
}

/// A shaped stream's window and the render in flight.
struct Shaper {
    shape: Arc<Shape>,
    /// Events of the open window (ids above the stream's cursor).
    pending: Vec<Arc<Event>>,
    /// When the open window closes (one timer per stream, reset per window).
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether a window is open (`deadline` counts).
    open: bool,
    /// Merging/encoding on a blocking thread (plugin calls).
    work: Option<JoinHandle<BytesMut>>,
}

impl Shaper {
    /// Closes the window: renders its events off the async workers.
    fn flush(&mut self) {
        self.open = false;
        let events = std::mem::take(&mut self.pending);
        self.render(events);
    }

    /// Renders every full window of `max` events now; the rest stays in a
    /// window that opens now.
    fn flush_full(&mut self, max: usize) {
        let full = self.pending.len() / max * max;
        let rest = self.pending.split_off(full);
        let events = std::mem::replace(&mut self.pending, rest);
        self.open = false;
        self.render(events);
    }

    /// Opens a window of `window` from now.
    fn open_window(&mut self, window: Duration) {
        let at = tokio::time::Instant::now() + window;
        match &mut self.deadline {
            Some(sleep) => sleep.as_mut().reset(at),
            None => self.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        self.open = true;
    }

    /// Whether the open window's time is up (registers the waker if not).
    fn window_closed(&mut self, cx: &mut Context<'_>) -> bool {
        match &mut self.deadline {
            Some(sleep) if self.open => sleep.as_mut().poll(cx).is_ready(),
            _ => false,
        }
    }

    /// The rendered frames once the render in flight is done; `None` when
    /// there is none.
    fn poll_work(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BytesMut, tokio::task::JoinError>>> {
        let Some(work) = &mut self.work else {
            return Poll::Ready(None);
        };
        let rendered = ready!(Pin::new(work).poll(cx));
        self.work = None;
        Poll::Ready(Some(rendered))
    }

    fn render(&mut self, events: Vec<Arc<Event>>) {
        if events.is_empty() {
            return;
        }
        let shape = self.shape.clone();
        let pool = shape.pool().clone();
        self.work = Some(pool.spawn_blocking(move || shape.render(&events)));
    }

    /// Takes live items into the window; true if a heartbeat should go out
    /// now (nothing pending to carry the connection's liveness).
    fn take(&mut self, items: &[Item], cursor: &mut u64) -> bool {
        let mut heartbeat = false;
        for item in items {
            match item {
                Item::Event(e) if e.id > *cursor => {
                    *cursor = e.id;
                    self.pending.push(e.clone());
                }
                Item::Heartbeat => heartbeat = true,
                Item::Event(_) | Item::Wake | Item::Control(_) => {}
            }
        }
        match self.shape.window() {
            None => self.flush(),
            Some(window) => {
                let max = self.shape.max();
                if self.pending.len() >= max {
                    self.flush_full(max);
                }
                if !self.pending.is_empty() && !self.open {
                    self.open_window(window);
                }
            }
        }
        heartbeat && self.pending.is_empty() && self.work.is_none()
    }
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
    pub fn new(sub: Subscription, replay: Replay, start: StreamStart) -> EventStream {
        let mode = match start.replay_until {
            Some(target) if target > start.cursor => Mode::CatchUp { target, read: None },
            _ => Mode::Live,
        };
        EventStream {
            sub,
            replay,
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
            latency: metrics::histogram!("spout_deliver_latency_seconds"),
            writes: 0,
            on_end: None,
            shaper: None,
        }
    }

    /// Batches and/or compresses what this stream sends (see [`crate::shape`]).
    pub fn shaped(mut self, shape: Option<Shape>) -> EventStream {
        self.shaper = shape.map(|shape| {
            Box::new(Shaper {
                shape: Arc::new(shape),
                pending: Vec::new(),
                deadline: None,
                open: false,
                work: None,
            })
        });
        self
    }

    /// Calls `f` when the stream ends, however it ends.
    pub fn on_end(mut self, f: OnEnd) -> EventStream {
        self.on_end = Some(f);
        self
    }

    /// Records how long ago the newest event of this write was accepted
    /// (the console's publish→deliver chart; ms-precise accept times).
    fn sample_latency(&self) {
        let newest = self.batch.iter().rev().find_map(|i| match i {
            Item::Event(e) => Some(e.time_ms),
            _ => None,
        });
        if let Some(t) = newest {
            let now_us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64);
            let age_us = now_us.saturating_sub(t * 1000);
            self.latency.record(age_us as f64 / 1e6);
        }
    }

    fn finish(&mut self, frame: Bytes) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.done = true;
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn start_read(&self) -> BoxFuture<'static, ReadResult> {
        let reader = Reader {
            subscriber: self.sub.subscriber.clone(),
            shape: self.shaper.as_ref().map(|s| s.shape.clone()),
        };
        self.replay.read(reader, self.cursor)
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
                // A shaped stream sends its open window before `shutdown`,
                // so `last_id` there is the last id the client got.
                if let Some(sh) = this.shaper.as_deref_mut() {
                    if sh.work.is_none() {
                        sh.flush();
                    }
                    if let Some(rendered) = ready!(sh.poll_work(cx)) {
                        if let Some(frames) = rendered.ok().filter(|f| !f.is_empty()) {
                            return Poll::Ready(Some(Ok(Frame::data(frames.freeze()))));
                        }
                        continue;
                    }
                }
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
            if let Some(sh) = this.shaper.as_deref_mut() {
                // A rendered window goes out before anything newer.
                match ready!(sh.poll_work(cx)) {
                    Some(Ok(frames)) if !frames.is_empty() => {
                        return Poll::Ready(Some(Ok(Frame::data(frames.freeze()))));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(err)) => {
                        tracing::error!(error = %err, "batch render failed; closing stream");
                        this.done = true;
                        continue;
                    }
                    None => {}
                }
                if sh.window_closed(cx) {
                    sh.flush();
                    continue;
                }
            }
            match &mut this.mode {
                Mode::CatchUp { target, read } => {
                    let target = *target;
                    if read.is_none() {
                        // Retention may have removed events this stream has not
                        // sent yet: say so instead of skipping them silently.
                        let trimmed = this.replay.log().trimmed();
                        if trimmed > this.cursor {
                            let reset = sse::control_frame(
                                "reset",
                                &serde_json::json!({ "requested": this.cursor, "earliest": trimmed + 1 }),
                            );
                            this.cursor = trimmed;
                            return Poll::Ready(Some(Ok(Frame::data(reset))));
                        }
                        let handle = this.start_read();
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
                    let chunk = match ready!(handle.as_mut().poll(cx)) {
                        Ok(chunk) => chunk,
                        Err(err) => {
                            tracing::error!(error = %err, "catch-up read failed; closing stream");
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
                    let (frames, events) = chunk.frames_for(this.sub.subscriber.user.as_deref());
                    if events > 0 {
                        this.replayed.increment(events);
                        return Poll::Ready(Some(Ok(Frame::data(frames))));
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
                        // re-read the log from the cursor instead (after the
                        // open window, whose events are older).
                        if let Some(sh) = this.shaper.as_deref_mut() {
                            sh.flush();
                        }
                        this.behind_since.get_or_insert_with(Instant::now);
                        this.mode = Mode::CatchUp {
                            target: this.replay.log().head(),
                            read: None,
                        };
                        continue;
                    }
                    this.behind_since = None;
                    if let Some(sh) = this.shaper.as_deref_mut() {
                        // Presence frames carry no id: they go out at once,
                        // not in the window.
                        let controls: Vec<&Bytes> = this
                            .batch
                            .iter()
                            .filter_map(|i| match i {
                                Item::Control(f) => Some(f),
                                _ => None,
                            })
                            .collect();
                        let controls = match controls.as_slice() {
                            [] => None,
                            [one] => Some((*one).clone()),
                            many => Some(Bytes::from(many.iter().fold(Vec::new(), |mut v, f| {
                                v.extend_from_slice(f);
                                v
                            }))),
                        };
                        let heartbeat = sh.take(&this.batch, &mut this.cursor);
                        if let Some(frames) = controls {
                            return Poll::Ready(Some(Ok(Frame::data(frames))));
                        }
                        if heartbeat {
                            return Poll::Ready(Some(Ok(Frame::data(HEARTBEAT.clone()))));
                        }
                        continue;
                    }
                    if let Some(bytes) = coalesce(&this.batch, &mut this.cursor) {
                        this.writes = this.writes.wrapping_add(1);
                        if this.writes % LATENCY_SAMPLE == 1 {
                            this.sample_latency();
                        }
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
        Item::Control(frame) => Some(frame),
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
