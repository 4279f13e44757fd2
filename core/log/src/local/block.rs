//! A block: the events of one group commit (or a slice of one), stored as a
//! single sled value under the big-endian id of its first event.
//!
//! Writing one sled entry per commit instead of one per event is what makes
//! appends cheap: sled's cost is per insert, not per byte. Ids inside a block
//! are contiguous (`first`, `first + 1`, …), so a block needs no per-event key.
//!
//! Layout (version 2, integers little-endian):
//! `magic "SPB\x02"`, `count u32`, `len u32` (bytes of the records that
//! follow), `first u64` (the id of its first event, also the sled key),
//! `prev u64` (the id of the last event stored before this block: the
//! chain that lets start-up and repair notice a block that went missing),
//! `crc u32` (CRC-32C of every header field after the magic but itself, and
//! of the records), then `count` times `len u32` + a record (see
//! [`super::record`]).
//!
//! The magic and the self-contained header make a block findable and
//! checkable in sled's raw files without sled (see [`super::inventory`]), so
//! `spout repair` can salvage intact blocks from a database sled itself can
//! no longer open. Version 1 blocks (`1u8`, `count u32`, records; written by
//! Spout before 2026-12) are still read, without a checksum.

use super::record::{self, RecordError};
use crate::event::Event;

/// The first bytes of every version 2 block.
pub const MAGIC: [u8; 4] = *b"SPB\x02";
const V1: u8 = 1;
const V1_HEADER: usize = 5;
/// Bytes before the first record of a version 2 block.
pub const HEADER: usize = 32;

/// Most events per block; a larger commit is split into several blocks.
pub const MAX_EVENTS: usize = 1024;
/// Bytes after which a block is closed and the next one started.
pub const MAX_BYTES: usize = 1 << 20;

/// Why a stored block cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// A record inside is unreadable (its length runs past the block, …).
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The checksum does not match the bytes: they changed after writing.
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum {
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the bytes as read.
        computed: u32,
    },
    /// The header names another first id than the key it is stored under.
    #[error("block stored under id {key} says it starts at {first}")]
    Misplaced {
        /// The sled key.
        key: u64,
        /// The id in the header.
        first: u64,
    },
}

/// What a block's header says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Events in the block.
    pub count: u32,
    /// The id of its first event (`None` in version 1 blocks, which rely on
    /// their key).
    pub first: Option<u64>,
    /// The id of the last event stored before it (`None` in version 1).
    pub prev: Option<u64>,
}

/// Builds one block from events with contiguous ids.
pub struct BlockWriter {
    buf: Vec<u8>,
    count: u32,
}

impl BlockWriter {
    /// An empty block whose first event will be `first`, following the
    /// stored event `prev` (0: none).
    pub fn new(first: u64, prev: u64) -> BlockWriter {
        let mut buf = Vec::with_capacity(4096);
        buf.extend_from_slice(&MAGIC);
        buf.extend_from_slice(&[0; 8]); // count, len: set by finish
        buf.extend_from_slice(&first.to_le_bytes());
        buf.extend_from_slice(&prev.to_le_bytes());
        buf.extend_from_slice(&[0; 4]); // crc
        BlockWriter { buf, count: 0 }
    }

    /// Appends one event's record.
    pub fn push(&mut self, e: &Event) {
        self.push_record_with(|out| record::encode_into(out, e));
    }

    /// Appends an already encoded record (used when retention rewrites a block).
    pub fn push_record(&mut self, rec: &[u8]) {
        self.push_record_with(|out| out.extend_from_slice(rec));
    }

    fn push_record_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        write(&mut self.buf);
        let len = (self.buf.len() - at - 4) as u32;
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.count += 1;
    }

    /// Whether the block should be closed before another event is added.
    pub fn is_full(&self) -> bool {
        self.count as usize >= MAX_EVENTS || self.buf.len() >= MAX_BYTES
    }

    /// The finished block bytes, checksummed.
    pub fn finish(mut self) -> Vec<u8> {
        let len = (self.buf.len() - HEADER) as u32;
        self.buf[4..8].copy_from_slice(&self.count.to_le_bytes());
        self.buf[8..12].copy_from_slice(&len.to_le_bytes());
        let crc = checksum(&self.buf);
        self.buf[28..32].copy_from_slice(&crc.to_le_bytes());
        self.buf
    }
}

/// CRC-32C of a version 2 block: its header after the magic (without the
/// CRC field itself) and its records.
fn checksum(block: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&block[4..28]);
    crc32c::crc32c_append(crc, &block[HEADER..])
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Reads a block's header without checking its contents.
pub fn header(block: &[u8]) -> Result<Header, RecordError> {
    match block {
        [V1, a, b, c, d, ..] => Ok(Header {
            count: u32::from_le_bytes([*a, *b, *c, *d]),
            first: None,
            prev: None,
        }),
        b if b.len() >= HEADER && b[..4] == MAGIC => Ok(Header {
            count: le32(&b[4..]),
            first: Some(le64(&b[12..])),
            prev: Some(le64(&b[20..])),
        }),
        [V1, ..] => Err(RecordError::Truncated),
        b if b.starts_with(&MAGIC) => Err(RecordError::Truncated),
        [v, ..] => Err(RecordError::Version(*v)),
        [] => Err(RecordError::Truncated),
    }
}

/// The number of events a block holds, from its header alone.
pub fn count(block: &[u8]) -> Result<usize, RecordError> {
    header(block).map(|h| h.count as usize)
}

/// Checks a block stored under `key`: its checksum (version 2), that it
/// starts where its key says, and that every record is framed within it.
/// Returns its header.
pub fn verify(key: u64, block: &[u8]) -> Result<Header, BlockError> {
    let h = header(block)?;
    if block.starts_with(&MAGIC) {
        let len = le32(&block[8..]) as usize;
        if block.len() != HEADER + len {
            return Err(RecordError::Truncated.into());
        }
        let stored = le32(&block[28..]);
        let computed = checksum(block);
        if stored != computed {
            return Err(BlockError::Checksum { stored, computed });
        }
        if let Some(first) = h.first.filter(|f| *f != key) {
            return Err(BlockError::Misplaced { key, first });
        }
    }
    for rec in records(block) {
        rec?;
    }
    Ok(h)
}

/// Finds a whole version 2 block at the start of `bytes` (which may go on
/// past it), checksum included: how repair and start-up recognise blocks in
/// sled's raw files. Returns the header and the block's length.
pub fn carve(bytes: &[u8]) -> Option<(Header, usize)> {
    if bytes.len() < HEADER || bytes[..4] != MAGIC {
        return None;
    }
    let len = le32(&bytes[8..]) as usize;
    let total = HEADER.checked_add(len)?;
    let block = bytes.get(..total)?;
    if le32(&block[28..]) != checksum(block) {
        return None;
    }
    let h = header(block).ok()?;
    if h.count == 0 || records(block).any(|r| r.is_err()) {
        return None;
    }
    Some((h, total))
}

/// Iterates the encoded records of a block, in id order.
pub fn records(block: &[u8]) -> impl Iterator<Item = Result<&[u8], RecordError>> {
    let n = count(block);
    let start = if block.starts_with(&MAGIC) {
        HEADER
    } else {
        V1_HEADER
    };
    let mut rest = block.get(start..).unwrap_or(&[]);
    let mut left = n.clone().ok();
    let mut error = n.err();
    std::iter::from_fn(move || {
        if let Some(e) = error.take() {
            left = Some(0);
            return Some(Err(e));
        }
        let remaining = left.as_mut()?;
        if *remaining == 0 {
            return None;
        }
        *remaining -= 1;
        if rest.len() < 4 {
            *remaining = 0;
            return Some(Err(RecordError::Truncated));
        }
        let len = le32(rest) as usize;
        if rest.len() - 4 < len {
            *remaining = 0;
            return Some(Err(RecordError::Truncated));
        }
        let rec = &rest[4..4 + len];
        rest = &rest[4 + len..];
        Some(Ok(rec))
    })
}

/// Bytes a record occupies inside a block (its length prefix included).
pub fn footprint(rec: &[u8]) -> u64 {
    rec.len() as u64 + 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Data, NewEvent};

    fn ev(id: u64, text: &str) -> Event {
        Event::new(
            id,
            5,
            NewEvent {
                topic: "t".into(),
                kind: None,
                data: Data::Text(text.into()),
                to: None,
                key: None,
                extra: None,
            },
        )
    }

    fn block(first: u64, prev: u64, texts: &[&str]) -> Vec<u8> {
        let mut w = BlockWriter::new(first, prev);
        for (i, t) in texts.iter().enumerate() {
            w.push(&ev(first + i as u64, t));
        }
        w.finish()
    }

    #[test]
    fn round_trip() {
        let block = block(10, 7, &["a", "", "ccc"]);
        assert_eq!(count(&block), Ok(3));
        assert_eq!(
            verify(10, &block),
            Ok(Header {
                count: 3,
                first: Some(10),
                prev: Some(7)
            })
        );
        let datas: Vec<Vec<u8>> = records(&block)
            .map(|r| record::decode(r.unwrap()).unwrap().data.to_vec())
            .collect();
        assert_eq!(datas, [b"a".to_vec(), b"".to_vec(), b"ccc".to_vec()]);
    }

    #[test]
    fn damage_is_reported_not_misread() {
        let good = block(1, 0, &["hello", "world"]);
        let cut = &good[..good.len() - 3];
        let got: Vec<_> = records(cut).collect();
        assert!(got[0].is_ok());
        assert_eq!(got[1], Err(RecordError::Truncated));
        assert_eq!(got.len(), 2);
        assert_eq!(verify(1, cut), Err(RecordError::Truncated.into()));
        assert_eq!(
            records(&[9, 0, 0, 0, 0]).next(),
            Some(Err(RecordError::Version(9)))
        );
        assert_eq!(count(&[]), Err(RecordError::Truncated));
        // Every single flipped bit is caught by the checksum or the framing.
        for at in 4..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[at] ^= 1 << bit;
                assert!(
                    verify(1, &bad).is_err(),
                    "flip at {at} bit {bit} not caught"
                );
                assert!(carve(&bad).is_none(), "flip at {at} bit {bit} carved");
            }
        }
        assert!(matches!(
            verify(2, &good),
            Err(BlockError::Misplaced { key: 2, first: 1 })
        ));
    }

    #[test]
    fn carving_finds_a_block_inside_other_bytes() {
        let b = block(42, 41, &["x", "y"]);
        let mut file = vec![0xAAu8; 100];
        file.extend_from_slice(&b);
        file.extend_from_slice(&[0x55; 50]);
        let at = memchr::memmem::find(&file, &MAGIC).unwrap();
        let (h, len) = carve(&file[at..]).unwrap();
        assert_eq!(
            (h.first, h.prev, h.count, len),
            (Some(42), Some(41), 2, b.len())
        );
        assert!(
            carve(&file[at..at + len - 1]).is_none(),
            "a cut block is no block"
        );
    }

    #[test]
    fn version_1_blocks_still_read() {
        let mut v1 = vec![V1];
        v1.extend_from_slice(&1u32.to_le_bytes());
        let mut rec = Vec::new();
        record::encode_into(&mut rec, &ev(3, "old"));
        v1.extend_from_slice(&(rec.len() as u32).to_le_bytes());
        v1.extend_from_slice(&rec);
        assert_eq!(
            verify(3, &v1),
            Ok(Header {
                count: 1,
                first: None,
                prev: None
            })
        );
        let got: Vec<_> = records(&v1).map(|r| r.unwrap().to_vec()).collect();
        assert_eq!(got, [rec]);
    }
}
