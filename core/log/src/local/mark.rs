//! The id high-water mark: a small file beside sled's that makes ids
//! impossible to reuse, whatever crashes or whatever happens to sled's file.
//!
//! Ids are reserved durably ahead of use, as database sequences do: before
//! the appender hands out an id above `reserved`, it raises `reserved` by a
//! block ([`RESERVE_BLOCK`]) and fsyncs this file. After any crash the next
//! id is above `reserved`, so above every id any publisher or subscriber
//! could have seen; an unflushed window that a crash loses becomes a gap,
//! never a reuse. A clean close writes `reserved = head`, so a clean restart
//! leaves no gap.
//!
//! The file also records what start-up checks sled against: `durable` (every
//! event up to this id that was stored had reached the disk: recorded after
//! a flush) and `trimmed` (retention's floor, raised before it deletes).
//! Losing sled's file therefore cannot reset ids or hide missing events.
//!
//! Layout: two 128-byte slots; each write goes to the slot the previous one
//! did not use and is fsynced, so a torn write leaves the other intact. A
//! slot: `magic "SPMK"`, `version u8 = 1`, `clean u8`, 2 spare bytes,
//! `generation u64`, `reserved u64`, `durable u64`, `trimmed u64`,
//! `legacy u64`, sled's `db` file identity (`len`, `mtime`, `ino`, u64
//! each; all little-endian), `crc32c u32` of the bytes before it; the newest valid
//! slot wins.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The file's name inside the data directory.
pub const FILE: &str = "spout.mark";
/// Ids reserved per fsync of the mark. A crash may skip up to this many.
pub const RESERVE_BLOCK: u64 = 1 << 16;

const MAGIC: [u8; 4] = *b"SPMK";
const VERSION: u8 = 1;
const SLOT: u64 = 128;
const BODY: usize = 72;

/// What the mark file says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct State {
    /// Every id ever handed out is at or below this.
    pub reserved: u64,
    /// Every stored event up to this id had been flushed to disk.
    pub durable: u64,
    /// Retention may have deleted every event up to this id.
    pub trimmed: u64,
    /// Events up to this id may sit in version 1 blocks (written before
    /// blocks were checksummed), which only sled can find.
    pub legacy: u64,
    /// sled's `db` file as a clean close left it (length, modification
    /// time in ns, inode; zeros when unknown): if it still looks the same,
    /// start-up need not keep a copy before sled opens it.
    pub db: FileId,
    /// The last writer closed the log cleanly (`reserved` is then exact).
    pub clean: bool,
}

/// What identifies a file's contents cheaply: length, mtime (ns), inode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileId {
    /// Length in bytes.
    pub len: u64,
    /// Modification time, ns since the epoch.
    pub mtime: u64,
    /// Inode number.
    pub ino: u64,
}

impl FileId {
    /// The identity of `path` now (zeros when it cannot be read).
    pub fn of(path: &Path) -> FileId {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).map_or(FileId::default(), |m| FileId {
            len: m.len(),
            mtime: (m.mtime() as u64)
                .wrapping_mul(1_000_000_000)
                .wrapping_add(m.mtime_nsec() as u64),
            ino: m.ino(),
        })
    }
}

/// Why the mark file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MarkError {
    /// Reading or writing it failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// It exists but neither slot holds a valid record.
    #[error("{path} is damaged (no slot passes its checksum)")]
    Damaged {
        /// The file.
        path: PathBuf,
    },
}

/// The open mark file and its last written state.
pub struct Mark {
    file: File,
    path: PathBuf,
    generation: u64,
    state: State,
}

impl Mark {
    /// Reads the mark in `dir` without creating it: `Ok(None)` when there
    /// is no file (a new or a pre-mark data directory).
    pub fn read(dir: &Path) -> Result<Option<State>, MarkError> {
        let path = dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => decode(&bytes)
                .map(|(_, s)| Some(s))
                .ok_or(MarkError::Damaged { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(MarkError::Io { path, source }),
        }
    }

    /// Opens (or creates) the mark in `dir` and writes `state` to it.
    pub fn create(dir: &Path, state: State) -> Result<Mark, MarkError> {
        let path = dir.join(FILE);
        let io_err = |source| MarkError::Io {
            path: path.clone(),
            source,
        };
        let existing = std::fs::read(&path).ok();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        let generation = existing.as_deref().and_then(decode).map_or(0, |(g, _)| g);
        let mut mark = Mark {
            file,
            path: path.clone(),
            generation,
            state,
        };
        mark.write(state)?;
        // The file's directory entry must be durable too.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(mark)
    }

    /// The last state written.
    pub fn state(&self) -> State {
        self.state
    }

    /// Writes `state` to the older slot and fsyncs it.
    pub fn write(&mut self, state: State) -> Result<(), MarkError> {
        let generation = self.generation + 1;
        let slot = encode(generation, &state);
        let at = (generation % 2) * SLOT;
        self.file
            .write_all_at(&slot, at)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| MarkError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.generation = generation;
        self.state = state;
        Ok(())
    }
}

fn encode(generation: u64, s: &State) -> [u8; SLOT as usize] {
    let mut b = [0u8; SLOT as usize];
    b[..4].copy_from_slice(&MAGIC);
    b[4] = VERSION;
    b[5] = u8::from(s.clean);
    b[8..16].copy_from_slice(&generation.to_le_bytes());
    b[16..24].copy_from_slice(&s.reserved.to_le_bytes());
    b[24..32].copy_from_slice(&s.durable.to_le_bytes());
    b[32..40].copy_from_slice(&s.trimmed.to_le_bytes());
    b[40..48].copy_from_slice(&s.legacy.to_le_bytes());
    b[48..56].copy_from_slice(&s.db.len.to_le_bytes());
    b[56..64].copy_from_slice(&s.db.mtime.to_le_bytes());
    b[64..72].copy_from_slice(&s.db.ino.to_le_bytes());
    let crc = crc32c::crc32c(&b[..BODY]);
    b[BODY..BODY + 4].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode_slot(b: &[u8]) -> Option<(u64, State)> {
    let b = b.get(..BODY + 4)?;
    let crc = u32::from_le_bytes(b[BODY..].try_into().ok()?);
    if b[..4] != MAGIC || b[4] != VERSION || crc != crc32c::crc32c(&b[..BODY]) {
        return None;
    }
    let u = |at: usize| b[at..at + 8].try_into().ok().map(u64::from_le_bytes);
    Some((
        u(8)?,
        State {
            reserved: u(16)?,
            durable: u(24)?,
            trimmed: u(32)?,
            legacy: u(40)?,
            db: FileId {
                len: u(48)?,
                mtime: u(56)?,
                ino: u(64)?,
            },
            clean: b[5] == 1,
        },
    ))
}

/// The newest valid slot of a mark file's bytes.
fn decode(bytes: &[u8]) -> Option<(u64, State)> {
    let a = decode_slot(bytes);
    let b = bytes.get(SLOT as usize..).and_then(decode_slot);
    match (a, b) {
        (Some(a), Some(b)) => Some(if a.0 >= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_slot_wins_and_a_torn_slot_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Mark::read(dir.path()).unwrap().is_none());
        let s1 = State {
            reserved: 100,
            durable: 7,
            trimmed: 0,
            legacy: 0,
            db: FileId::default(),
            clean: false,
        };
        let mut m = Mark::create(dir.path(), s1).unwrap();
        let s2 = State {
            reserved: 200,
            ..s1
        };
        m.write(s2).unwrap();
        drop(m);
        assert_eq!(Mark::read(dir.path()).unwrap(), Some(s2));
        // Tear the newest slot: the previous state is read back.
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let newest = if decode_slot(&bytes[..128]).unwrap().1 == s2 {
            0
        } else {
            128
        };
        bytes[newest + 20] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(Mark::read(dir.path()).unwrap(), Some(s1));
        // Reopening continues after the surviving generation.
        let mut m = Mark::create(dir.path(), s2).unwrap();
        m.write(State { clean: true, ..s2 }).unwrap();
        assert!(Mark::read(dir.path()).unwrap().unwrap().clean);
        // Both slots damaged, or the file cut short: an error, not zero.
        std::fs::write(&path, [0u8; 10]).unwrap();
        assert!(matches!(
            Mark::read(dir.path()),
            Err(MarkError::Damaged { .. })
        ));
        std::fs::write(&path, []).unwrap();
        assert!(matches!(
            Mark::read(dir.path()),
            Err(MarkError::Damaged { .. })
        ));
    }
}
