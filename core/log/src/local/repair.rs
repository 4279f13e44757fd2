//! `spout repair DIR` (and `spout serve --recover`): rebuild a damaged log
//! from every intact event, and move the id high-water mark above every id
//! ever used.
//!
//! The damaged files are first moved aside (`DIR/damaged-TIME/`), never
//! deleted. Events come from two places: blocks found intact in sled's raw
//! files (checksummed, see `inventory`), which works even when sled
//! cannot open its database; and whatever a copy of the database, opened by
//! sled, still reads (this also recovers version 1 blocks, plugin key-value
//! stores, tail positions and tickets). A fresh database is then written
//! with those events (retention's floor applied), their idempotency keys
//! rebuilt, and a mark above every id seen, so no id is ever given again.
//! The ranges no block covers any more are reported: events there are lost
//! (or were never written: a crash's gap looks the same from outside).

use super::inventory::{self, BlockInfo, Chain};
use super::mark::{self, Mark, State};
use super::{block, dedupe_keys, dedupe_value, guarded, id_key, key_id, meta_u64, LogError};
use super::{record, META_TRIMMED};
use std::path::{Path, PathBuf};

/// Extra ids skipped when the mark itself was lost: the last reservation
/// reached at most one block past the highest id found.
const LOST_MARK_MARGIN: u64 = 4 * mark::RESERVE_BLOCK;

/// What a repair did.
#[derive(Debug, Clone, Default)]
pub struct RepairReport {
    /// The data directory.
    pub dir: PathBuf,
    /// Where the damaged files went (`None` when there was nothing to repair).
    pub moved_to: Option<PathBuf>,
    /// Events kept in the rebuilt log.
    pub kept: u64,
    /// First and last kept id.
    pub first: Option<u64>,
    /// Last kept id.
    pub last: Option<u64>,
    /// Id ranges (inclusive) whose events are gone.
    pub lost: Vec<(u64, u64)>,
    /// Ids up to here may have been used: the next event gets a higher one.
    pub reserved: u64,
    /// Blocks sled returned that failed their checks (first id, why).
    pub damaged_blocks: Vec<(u64, String)>,
    /// Other things worth knowing (trees that could not be read, …).
    pub notes: Vec<String>,
}

impl std::fmt::Display for RepairReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(moved) = &self.moved_to else {
            return write!(f, "{}: no log to repair", self.dir.display());
        };
        writeln!(f, "repaired the log in {}", self.dir.display())?;
        match (self.first, self.last) {
            (Some(a), Some(b)) => writeln!(f, "  kept {} events (ids {a}..{b})", self.kept)?,
            _ => writeln!(f, "  kept no events")?,
        }
        if self.lost.is_empty() {
            writeln!(f, "  lost: nothing")?;
        } else {
            writeln!(
                f,
                "  lost: events {} (ids in these ranges are never given again)",
                inventory::ranges(&self.lost)
            )?;
        }
        for (first, why) in &self.damaged_blocks {
            writeln!(f, "  damaged block at id {first}: {why}")?;
        }
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        writeln!(f, "  the next event gets an id above {}", self.reserved)?;
        write!(f, "  the damaged files are kept in {}", moved.display())
    }
}

/// Names of sled's files in a data directory (`conf`, `db`, `blobs`,
/// `snap.*`) and the mark.
pub(super) fn storage_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            matches!(name.as_ref(), "conf" | "db" | "blobs" | mark::FILE)
                || name.starts_with("snap.")
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

fn io_err(dir: &Path, what: &str, e: std::io::Error) -> LogError {
    LogError::Damaged {
        path: dir.to_path_buf(),
        detail: format!("repair could not {what}: {e}"),
    }
}

pub(super) fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(from, to).map(|_| ())
    }
}

/// Rebuilds the log in `dir` from every intact event (see the module doc).
/// Safe to run on a healthy log (it is rebuilt as it is).
pub fn repair(dir: &Path) -> Result<RepairReport, LogError> {
    let mut report = RepairReport {
        dir: dir.to_path_buf(),
        ..RepairReport::default()
    };
    let files = storage_files(dir);
    if files.is_empty() {
        return Ok(report);
    }
    let old_mark = match Mark::read(dir) {
        Ok(m) => m,
        Err(e) => {
            report.notes.push(format!(
                "{e}; ids are moved {LOST_MARK_MARGIN} past the highest id found"
            ));
            None
        }
    };
    let stamp = chrono_stamp();
    let aside = dir.join(format!("damaged-{stamp}"));
    std::fs::create_dir_all(&aside)
        .map_err(|e| io_err(dir, "create the folder for the damaged files", e))?;
    for f in &files {
        if let Some(name) = f.file_name() {
            std::fs::rename(f, aside.join(name))
                .map_err(|e| io_err(dir, "move the damaged files aside", e))?;
        }
    }
    report.moved_to = Some(aside.clone());

    let db = guarded(dir, "creating the new database", || {
        Ok(sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()?)
    })?;
    // Intact blocks land here first (keyed by first id; copies of one block
    // overwrite each other with the same bytes), then are written in order.
    let found = db.open_tree("repair:found")?;
    let mut chain = Chain::default();
    let mut top = 0u64;
    let mut carve_error = None;
    let carved = inventory::carve_dir(&aside, &mut |info, bytes| {
        chain.add(info);
        top = top.max(info.last());
        if carve_error.is_none() {
            if let Err(e) = found.insert(id_key(info.first), bytes) {
                carve_error = Some(e);
            }
        }
    });
    if let Err(e) = carved {
        report
            .notes
            .push(format!("reading the damaged files failed part way: {e}"));
    }
    if let Some(e) = carve_error {
        return Err(e.into());
    }

    // What sled itself still reads, from a copy (sled rewrites a damaged
    // file when it opens it, and the originals must stay as they are).
    let mut trimmed = old_mark.map_or(0, |m| m.trimmed);
    let copy = aside.join("sled-copy");
    let mut copied = true;
    for f in storage_files(&aside) {
        let name = f.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        if name == mark::FILE {
            continue;
        }
        if let Err(e) = copy_tree(&f, &copy.join(&name)) {
            report.notes.push(format!(
                "could not copy {} to read it with sled: {e}",
                f.display()
            ));
            copied = false;
        }
    }
    let read_by_sled = if !copied {
        Err(LogError::Closed)
    } else {
        guarded(&copy, "opening a copy of the damaged database", || {
            let old = sled::Config::new().path(&copy).open()?;
            let events = old.open_tree("events")?;
            for item in events.iter() {
                let (k, v) = item?;
                let first = key_id(&k);
                match block::verify(first, &v) {
                    Ok(h) if h.count > 0 => {
                        let prev = h.prev.unwrap_or(first - 1);
                        let info = BlockInfo {
                            first,
                            count: h.count,
                            prev,
                        };
                        chain.add(info);
                        top = top.max(info.last());
                        if !found.contains_key(&k)? {
                            found.insert(k, v)?;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => report.damaged_blocks.push((first, e.to_string())),
                }
            }
            let meta = old.open_tree("meta")?;
            trimmed = trimmed.max(meta_u64(&meta, META_TRIMMED)?);
            for name in old.tree_names() {
                let skip: &[&[u8]] = &[b"events", b"dedupe", b"meta", b"__sled__default"];
                if skip.contains(&&name[..]) {
                    continue;
                }
                let from = old.open_tree(&name)?;
                let to = db.open_tree(&name)?;
                for item in from.iter() {
                    let (k, v) = item?;
                    to.insert(k, v)?;
                }
            }
            Ok(())
        })
    };
    match read_by_sled {
        Ok(()) => {}
        Err(LogError::Closed) => report
            .notes
            .push("sled was not asked to read the damaged database (it could not be copied)".into()),
        Err(e) => report.notes.push(format!(
            "sled could not read the damaged database ({e}); events were recovered from its raw files, plugin key-value stores, tail positions and tickets were not"
        )),
    }
    let _ = std::fs::remove_dir_all(&copy);

    // Rewrite the kept events in order as fresh, chained blocks.
    let events = db.open_tree("events")?;
    let dedupe = db.open_tree("dedupe")?;
    let mut written = trimmed;
    let mut count = 0u64;
    for item in found.iter() {
        let (k, v) = item?;
        let first = key_id(&k);
        let mut out: Option<(u64, block::BlockWriter)> = None;
        for (i, rec) in block::records(&v).enumerate() {
            let id = first + i as u64;
            let Ok(rec) = rec else { break };
            if id <= written {
                continue;
            }
            if rec.is_empty() {
                // An erased event keeps its place (and its id).
                let (_, w) = out.get_or_insert_with(|| (id, block::BlockWriter::new(id, written)));
                w.push_record(rec);
                written = id;
                continue;
            }
            let Ok(view) = record::decode(rec) else {
                report.damaged_blocks.push((id, "unreadable record".into()));
                continue;
            };
            let digest = record::digest_view(&view);
            for dk in dedupe_keys(view.topic, view.key, view.wire_id)
                .into_iter()
                .flatten()
            {
                dedupe.insert(dk, &dedupe_value(id, &digest))?;
            }
            let (_, w) = out.get_or_insert_with(|| (id, block::BlockWriter::new(id, written)));
            w.push_record(rec);
            written = id;
            count += 1;
            report.first.get_or_insert(id);
            report.last = Some(id);
        }
        if let Some((start, w)) = out {
            events.insert(id_key(start), w.finish())?;
        }
    }
    db.drop_tree("repair:found")?;
    let meta = db.open_tree("meta")?;
    meta.insert(META_TRIMMED, &id_key(trimmed))?;
    report.kept = count;

    let durable = old_mark.map_or(0, |m| m.durable);
    let mut lost = chain.missing(top, trimmed.max(old_mark.map_or(0, |m| m.legacy)));
    if durable > top.max(trimmed) {
        lost.push((top.max(trimmed) + 1, durable));
    }
    report.lost = lost;
    let mut reserved = top.max(durable).max(trimmed).max(written);
    match old_mark {
        Some(m) => reserved = reserved.max(m.reserved),
        None => reserved += LOST_MARK_MARGIN,
    }
    report.reserved = reserved;
    guarded(dir, "flushing the new database", || Ok(db.flush()?))?;
    drop(db);
    Mark::create(
        dir,
        State {
            reserved,
            durable: written,
            trimmed,
            legacy: 0,
            db: mark::FileId::default(),
            clean: true,
        },
    )
    .map_err(|e| {
        io_err(
            dir,
            "write the new mark",
            std::io::Error::other(e.to_string()),
        )
    })?;
    tracing::warn!(dir = %dir.display(), kept = report.kept, lost = %inventory::ranges(&report.lost), reserved, "log repaired");
    Ok(report)
}

/// `YYYYMMDDTHHMMSSZ` for the folder the damaged files move to.
fn chrono_stamp() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace([':', '-'], "")
}
