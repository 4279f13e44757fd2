//! Erasure: removing stored events on request (an operator's
//! `DELETE /api/history`), without giving their ids to anything else.
//!
//! An erased event's record is replaced by an empty one in its block, so
//! the block keeps its contiguous ids and its place in the chain that
//! start-up and repair check; readers skip empty records (no valid record
//! is empty). The rewritten blocks and the removed idempotency keys are one
//! sled transaction, flushed before the call returns.

use super::{block, guarded, key_id, LogError, Shared};
use crate::record::{self, View};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::sync::atomic::Ordering;

/// One rewritten block: its key, new bytes, the dedupe keys to remove,
/// the events erased in it and the bytes freed.
struct Change {
    key: sled::IVec,
    block: Vec<u8>,
    keys: Vec<Vec<u8>>,
    erased: u64,
    freed: u64,
}

/// Blocks rewritten per transaction: bounds the memory one erase holds.
const BLOCKS_PER_TX: usize = 64;

/// Erases every stored event `matches` selects; returns how many.
pub(super) fn erase(
    shared: &Shared,
    matches: &(dyn Fn(&View<'_>) -> bool + Sync),
) -> Result<u64, LogError> {
    // One rewriter at a time: retention rewrites the oldest block too.
    let _rewriting = shared.rewrite.lock().unwrap_or_else(|e| e.into_inner());
    guarded(&shared.dir, "erasing events", || {
        let mut erased = 0u64;
        let mut from: Option<sled::IVec> = None;
        loop {
            let mut changes: Vec<Change> = Vec::new();
            let range = match &from {
                Some(k) => shared.events.range::<&[u8], _>((
                    std::ops::Bound::Excluded(&k[..]),
                    std::ops::Bound::Unbounded,
                )),
                None => shared.events.iter(),
            };
            let mut last = None;
            for item in range {
                let (k, v) = item?;
                last = Some(k.clone());
                if let Some(change) = rewrite(shared, &k, &v, matches)? {
                    changes.push(change);
                    if changes.len() == BLOCKS_PER_TX {
                        break;
                    }
                }
            }
            let done = changes.len() < BLOCKS_PER_TX;
            erased += apply(shared, changes)?;
            if done {
                break;
            }
            from = last;
        }
        if erased > 0 {
            shared.db.flush()?;
            shared.publish_gauges();
            metrics::counter!("spout_log_erased_total").increment(erased);
        }
        Ok(erased)
    })
}

/// The block under `k` with the matching events' records emptied, the
/// dedupe keys pointing at them, how many events and bytes went; `None`
/// when nothing in it matches.
fn rewrite(
    shared: &Shared,
    k: &sled::IVec,
    v: &[u8],
    matches: &(dyn Fn(&View<'_>) -> bool + Sync),
) -> Result<Option<Change>, LogError> {
    let first = key_id(k);
    let h = block::verify(first, v).map_err(|e| {
        super::damaged(
            &shared.dir,
            format!("erasure found the block starting at event {first} unreadable ({e})"),
        )
    })?;
    let mut hit = false;
    for (i, rec) in block::records(v).enumerate() {
        let id = first + i as u64;
        let rec = rec.map_err(|source| LogError::Corrupt { id, source })?;
        if rec.is_empty() {
            continue;
        }
        let view = record::decode(rec).map_err(|source| LogError::Corrupt { id, source })?;
        if matches(&view) {
            hit = true;
            break;
        }
    }
    if !hit {
        return Ok(None);
    }
    let prev = h.prev.unwrap_or(first.saturating_sub(1));
    let mut w = block::BlockWriter::new(first, prev);
    let mut keys = Vec::new();
    let mut n = 0u64;
    for (i, rec) in block::records(v).enumerate() {
        let id = first + i as u64;
        let rec = rec.map_err(|source| LogError::Corrupt { id, source })?;
        if rec.is_empty() {
            w.push_record(rec);
            continue;
        }
        let view = record::decode(rec).map_err(|source| LogError::Corrupt { id, source })?;
        if matches(&view) {
            for dk in super::dedupe_keys(view.topic, view.key, view.wire_id)
                .into_iter()
                .flatten()
            {
                if shared.dedupe.get(&dk)?.is_some_and(|d| key_id(&d) == id) {
                    keys.push(dk);
                }
            }
            w.push_record(&[]);
            n += 1;
        } else {
            w.push_record(rec);
        }
    }
    let new = w.finish();
    let freed = (v.len() - new.len()) as u64;
    Ok(Some(Change {
        key: k.clone(),
        block: new,
        keys,
        erased: n,
        freed,
    }))
}

/// Writes rewritten blocks and removes their dedupe keys in one
/// transaction; returns the events erased.
fn apply(shared: &Shared, changes: Vec<Change>) -> Result<u64, LogError> {
    if changes.is_empty() {
        return Ok(0);
    }
    (&shared.events, &shared.dedupe)
        .transaction(|(events, dedupe)| {
            for c in &changes {
                events.insert(&c.key, c.block.as_slice())?;
                for dk in &c.keys {
                    dedupe.remove(dk.as_slice())?;
                }
            }
            Ok::<(), ConflictableTransactionError<sled::Error>>(())
        })
        .map_err(|e| match e {
            TransactionError::Abort(e) | TransactionError::Storage(e) => LogError::from(e),
        })?;
    let (events, bytes) = changes
        .iter()
        .fold((0, 0), |(e, b), c| (e + c.erased, b + c.freed));
    shared.count.fetch_sub(events, Ordering::Relaxed);
    shared.bytes.fetch_sub(bytes, Ordering::Relaxed);
    Ok(events)
}
