//! Which blocks a data directory holds, found without sled, and whether
//! their chain is whole.
//!
//! sled recovers a damaged file by keeping the part before the damage and
//! overwriting the rest, silently. So start-up first reads sled's raw files
//! itself ([`carve_dir`]): version 2 blocks carry a magic, their first id,
//! the id stored before them and a checksum (see [`super::block`]), so each
//! intact block is recognised wherever sled put it. If that inventory shows
//! a missing range below what the mark file says was durable, Spout refuses
//! to start *before* sled touches the files, and `spout repair` can still
//! salvage every intact block after the damage.
//!
//! The inventory may also hold stale copies (sled is log-structured and
//! keeps old page versions until it reclaims them); they are harmless:
//! an id is never given to two events, so a copy holds the same event.

use super::block::{self, Header, MAGIC};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Bytes read from a file at a time.
const CHUNK: usize = 8 << 20;
/// Larger "blocks" are taken for garbage (a real block is at most
/// `block::MAX_BYTES` plus one event).
const MAX_CARVE: usize = 256 << 20;

/// One block as its header describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    /// Its first id.
    pub first: u64,
    /// Events in it.
    pub count: u32,
    /// The id of the event stored before it.
    pub prev: u64,
}

impl BlockInfo {
    /// Its last id.
    pub fn last(&self) -> u64 {
        self.first + u64::from(self.count) - 1
    }

    /// From a verified version 2 header.
    pub fn from_header(h: &Header) -> Option<BlockInfo> {
        Some(BlockInfo {
            first: h.first?,
            count: h.count,
            prev: h.prev?,
        })
    }
}

/// The files of a sled database that can hold values: `db` and `blobs/*`.
pub fn sled_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let db = dir.join("db");
    if db.is_file() {
        files.push(db);
    }
    if let Ok(entries) = std::fs::read_dir(dir.join("blobs")) {
        let mut blobs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        blobs.sort();
        files.extend(blobs);
    }
    files
}

/// Calls `visit` with every intact version 2 block in sled's files in `dir`.
/// Returns how many places looked like a block but failed its checks (a
/// damaged block, a torn write, or an overwritten stale copy).
pub fn carve_dir(dir: &Path, visit: &mut dyn FnMut(BlockInfo, &[u8])) -> io::Result<u64> {
    let mut bad = 0;
    for file in sled_files(dir) {
        bad += carve_file(&file, visit)?;
    }
    Ok(bad)
}

/// Calls `visit` with every intact version 2 block in one file; returns the
/// number of block-like places that failed their checks.
pub fn carve_file(path: &Path, visit: &mut dyn FnMut(BlockInfo, &[u8])) -> io::Result<u64> {
    let mut file = std::fs::File::open(path)?;
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = 0usize;
    let mut eof = false;
    let mut want = 0usize;
    let mut bad = 0u64;
    loop {
        if !eof && buf.len() - pos < CHUNK.max(want) {
            buf.drain(..pos);
            pos = 0;
            let target = CHUNK.max(want) * 2;
            while buf.len() < target {
                let start = buf.len();
                buf.resize(target, 0);
                let n = file.read(&mut buf[start..])?;
                buf.truncate(start + n);
                if n == 0 {
                    eof = true;
                    break;
                }
            }
        }
        want = 0;
        let Some(i) = memchr::memmem::find(&buf[pos..], &MAGIC) else {
            if eof {
                return Ok(bad);
            }
            pos = buf.len().saturating_sub(MAGIC.len() - 1).max(pos);
            continue;
        };
        let at = pos + i;
        let avail = buf.len() - at;
        if avail < block::HEADER {
            if eof {
                return Ok(bad + 1);
            }
            (pos, want) = (at, block::HEADER);
            continue;
        }
        let len = u32::from_le_bytes([buf[at + 8], buf[at + 9], buf[at + 10], buf[at + 11]]);
        let total = block::HEADER + len as usize;
        if total > MAX_CARVE || (avail < total && eof) {
            bad += 1;
            pos = at + 1;
            continue;
        }
        if avail < total {
            (pos, want) = (at, total);
            continue;
        }
        match block::carve(&buf[at..at + total])
            .and_then(|(h, n)| Some((BlockInfo::from_header(&h)?, n)))
        {
            Some((info, n)) => {
                visit(info, &buf[at..at + n]);
                pos = at + n;
            }
            None => {
                bad += 1;
                pos = at + 1;
            }
        }
    }
}

/// Blocks indexed for chain walks: for each last id, the smallest `prev`
/// among the blocks ending there (a block retention shortened ends where
/// its original did, with a later `prev`).
#[derive(Debug, Default)]
pub struct Chain {
    by_last: BTreeMap<u64, u64>,
}

impl Chain {
    /// Adds a block.
    pub fn add(&mut self, b: BlockInfo) {
        let prev = self.by_last.entry(b.last()).or_insert(b.prev);
        *prev = (*prev).min(b.prev);
    }

    /// The highest last id of any block.
    #[cfg(test)]
    pub fn top(&self) -> Option<u64> {
        self.by_last.keys().next_back().copied()
    }

    /// Walks from `from` (an id that must be stored, or 0) back to `floor`
    /// (ids at or below it may be gone) and returns the inclusive id ranges
    /// that no block covers although a later block names them as stored
    /// before it.
    pub fn missing(&self, from: u64, floor: u64) -> Vec<(u64, u64)> {
        let mut lost = Vec::new();
        let mut p = from;
        while p > floor {
            if let Some(prev) = self.by_last.get(&p) {
                if *prev >= p {
                    // A header pointing forward is garbage; stop here.
                    lost.push((floor + 1, p));
                    break;
                }
                p = *prev;
                continue;
            }
            let below = self
                .by_last
                .range(..p)
                .next_back()
                .map_or(floor, |(last, _)| *last)
                .max(floor);
            lost.push((below + 1, p));
            p = below;
        }
        lost.reverse();
        lost
    }
}

/// Formats id ranges for messages: `5..9, 12`.
pub fn ranges(r: &[(u64, u64)]) -> String {
    r.iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}..{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(first: u64, count: u32, prev: u64) -> BlockInfo {
        BlockInfo { first, count, prev }
    }

    #[test]
    fn chain_walks_gaps_and_finds_holes() {
        let mut c = Chain::default();
        // 1..10, 11..20, then a crash gap: 70000.. follows 20.
        for x in [b(1, 10, 0), b(11, 10, 10), b(70_000, 5, 20)] {
            c.add(x);
        }
        assert_eq!(c.top(), Some(70_004));
        assert!(c.missing(70_004, 0).is_empty());
        assert!(c.missing(20, 0).is_empty());
        // Retention shortened 11..20 to 16..20; the original is gone.
        let mut c2 = Chain::default();
        for x in [b(16, 5, 15), b(21, 3, 20)] {
            c2.add(x);
        }
        assert!(c2.missing(23, 15).is_empty());
        assert_eq!(c2.missing(23, 0), [(1, 15)]);
        // A block in the middle is missing.
        let mut c3 = Chain::default();
        for x in [b(1, 10, 0), b(21, 10, 20), b(31, 10, 30)] {
            c3.add(x);
        }
        assert_eq!(c3.missing(40, 0), [(11, 20)]);
        // The durable head itself is missing, with something below it.
        assert_eq!(c3.missing(55, 0), [(11, 20), (41, 55)]);
        // Nothing at all.
        assert_eq!(Chain::default().missing(30, 0), [(1, 30)]);
        assert_eq!(ranges(&[(1, 1), (3, 9)]), "1, 3..9");
    }
}
