//! The log's background thread: it flushes sled on the `batch` schedule
//! (and records what is durable in the mark), and keeps the log within its
//! retention bounds.
//!
//! It deletes the oldest events in small batches, so appends (on their own
//! thread) are never blocked for long, and records the highest removed id so
//! a client resuming from before it is told to reset instead of silently
//! missing events.

use super::{block, guarded, id_key, key_id, LogError, Shared, META_TRIMMED};
use crate::config::RetentionConfig;
use crate::event::now_ms;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs until `stop` is dropped: flushes sled every `flush` (when set,
/// recording what is durable in the mark) and enforces the bounds every
/// `cfg.interval`.
pub(super) fn run(
    shared: Arc<Shared>,
    cfg: RetentionConfig,
    flush: Option<Duration>,
    stop: mpsc::Receiver<()>,
) {
    let mut last_durable_write = Instant::now();
    let mut next_enforce = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_enforce {
            match enforce(&shared, &cfg, now_ms()) {
                Ok(0) => {}
                Ok(removed) => tracing::debug!(removed, "retention removed old events"),
                Err(err) => tracing::error!(error = %err, "retention failed"),
            }
            next_enforce = now + cfg.interval;
        }
        if flush.is_some() {
            if let Err(err) = shared.flush(&mut last_durable_write) {
                tracing::error!(error = %err, "flushing the log failed");
            }
        }
        let wait = match flush {
            Some(f) => f.min(next_enforce.saturating_duration_since(Instant::now())),
            None => next_enforce.saturating_duration_since(Instant::now()),
        };
        match stop.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

/// Whether the oldest remaining record must go, given the log's totals.
fn over_bounds(cfg: &RetentionConfig, count: u64, bytes: u64, time_ms: u64, now: u64) -> bool {
    cfg.max_events.is_some_and(|m| count > m)
        || cfg.max_bytes.is_some_and(|m| bytes > m.as_u64())
        || cfg
            .max_age
            .is_some_and(|age| time_ms.saturating_add(age.as_millis() as u64) < now)
}

/// Deletes the oldest events until every bound holds; returns how many.
///
/// Works one block at a time from the front: a block whose events must all
/// go is deleted; one that keeps some is rewritten without its oldest events
/// (the delete and the rewrite are one atomic sled batch).
pub(super) fn enforce(shared: &Shared, cfg: &RetentionConfig, now: u64) -> Result<u64, LogError> {
    guarded(&shared.dir, "enforcing retention", || {
        enforce_inner(shared, cfg, now)
    })
}

fn enforce_inner(shared: &Shared, cfg: &RetentionConfig, now: u64) -> Result<u64, LogError> {
    let _rewriting = shared.rewrite.lock().unwrap_or_else(|e| e.into_inner());
    let mut removed = 0u64;
    loop {
        let Some((k, v)) = shared.events.first()? else {
            return Ok(removed);
        };
        let first = key_id(&k);
        if let Err(e) = block::verify(first, &v) {
            return Err(super::damaged(
                &shared.dir,
                format!("retention found the block starting at event {first} unreadable ({e})"),
            ));
        }
        let floor = shared.trimmed.load(Ordering::Acquire);
        let mut count = shared.count.load(Ordering::Relaxed);
        let mut bytes = shared.bytes.load(Ordering::Relaxed);
        let mut dedupe = sled::Batch::default();
        let mut drop_n = 0u64;
        // Erased records dropped with the block front (already uncounted),
        // and those seen since the last dropped event: they go with the
        // next dropped event, or stay in front of the first kept one.
        let mut gone = 0u64;
        let mut pending = 0u64;
        // Filled only once the first kept event is known (see below).
        let mut keep: Option<block::BlockWriter> = None;
        for (i, rec) in block::records(&v).enumerate() {
            let id = first + i as u64;
            let rec = rec.map_err(|source| LogError::Corrupt { id, source })?;
            if let Some(keep) = &mut keep {
                keep.push_record(rec);
                continue;
            }
            if rec.is_empty() {
                pending += 1;
                continue;
            }
            let view = super::decode(rec).map_err(|source| LogError::Corrupt { id, source })?;
            // Ids at or below the floor are gone already (a crash between
            // recording the floor and deleting can leave them behind).
            if id > floor && !over_bounds(cfg, count, bytes, view.time_ms, now) {
                // The shortened block follows the last removed event.
                let start = id - pending;
                let mut w = block::BlockWriter::new(start, start - 1);
                for _ in 0..pending {
                    w.push_record(&[]);
                }
                w.push_record(rec);
                keep = Some(w);
                continue;
            }
            for dk in super::dedupe_keys(view.topic, view.key, view.wire_id)
                .into_iter()
                .flatten()
            {
                if shared.dedupe.get(&dk)?.is_some_and(|v| key_id(&v) == id) {
                    dedupe.remove(dk);
                }
            }
            count = count.saturating_sub(1);
            bytes = bytes.saturating_sub(block::footprint(rec));
            drop_n += 1;
            gone += pending;
            pending = 0;
        }
        if keep.is_none() {
            // A block whose remaining records are all erased goes whole.
            gone += pending;
        }
        if drop_n + gone == 0 {
            return Ok(removed);
        }
        let last = first + drop_n + gone - 1;
        // Record the new floor before deleting (in the mark too, which
        // start-up checks sled against), so a crash in between can only make
        // a resume report a reset it did not strictly need.
        shared.update_mark(|s| s.trimmed = s.trimmed.max(last))?;
        shared.meta.insert(META_TRIMMED, &id_key(last))?;
        shared.trimmed.fetch_max(last, Ordering::AcqRel);
        let mut batch = sled::Batch::default();
        batch.remove(&k);
        let mut new_len = 0u64;
        if let Some(keep) = keep {
            let rest = keep.finish();
            new_len = rest.len() as u64;
            batch.insert(&id_key(last + 1), rest);
        }
        shared.events.apply_batch(batch)?;
        shared.dedupe.apply_batch(dedupe)?;
        shared.count.fetch_sub(drop_n, Ordering::Relaxed);
        shared
            .bytes
            .fetch_sub(v.len() as u64 - new_len, Ordering::Relaxed);
        shared.publish_gauges();
        metrics::counter!("spout_log_retention_removed_total").increment(drop_n);
        removed += drop_n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bounds() {
        let cfg = RetentionConfig {
            max_age: Some(Duration::from_secs(10)),
            max_events: Some(5),
            max_bytes: Some(bytesize::ByteSize::b(100)),
            interval: Duration::from_secs(1),
        };
        assert!(!over_bounds(&cfg, 5, 100, 50_000, 60_000));
        assert!(over_bounds(&cfg, 6, 100, 50_000, 60_000));
        assert!(over_bounds(&cfg, 5, 101, 50_000, 60_000));
        assert!(over_bounds(&cfg, 5, 100, 49_999, 60_000));
        let none = RetentionConfig {
            max_age: None,
            max_events: None,
            max_bytes: None,
            interval: Duration::from_secs(1),
        };
        assert!(!over_bounds(&none, u64::MAX, u64::MAX, 0, u64::MAX));
    }
}
