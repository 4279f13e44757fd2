//! A block: the events of one group commit (or a slice of one), stored as a
//! single sled value under the big-endian id of its first event.
//!
//! Writing one sled entry per commit instead of one per event is what makes
//! appends cheap: sled's cost is per insert, not per byte. Ids inside a block
//! are contiguous (`first`, `first + 1`, …), so a block needs no per-event key.
//!
//! Layout: `version u8 = 1`, `count u32 LE`, then `count` times
//! `len u32 LE` + a record (see [`super::record`]).

use super::record::{self, RecordError};
use crate::event::Event;

const VERSION: u8 = 1;
const HEADER: usize = 5;

/// Most events per block; a larger commit is split into several blocks.
pub const MAX_EVENTS: usize = 1024;
/// Bytes after which a block is closed and the next one started.
pub const MAX_BYTES: usize = 1 << 20;

/// Builds one block from events with contiguous ids.
pub struct BlockWriter {
    buf: Vec<u8>,
    count: u32,
}

impl BlockWriter {
    /// An empty block.
    pub fn new() -> BlockWriter {
        let mut buf = Vec::with_capacity(4096);
        buf.push(VERSION);
        buf.extend_from_slice(&0u32.to_le_bytes());
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

    /// Whether the block holds no event.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The finished block bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[1..HEADER].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }
}

/// The number of events a block holds, from its header alone.
pub fn count(block: &[u8]) -> Result<usize, RecordError> {
    match block {
        [VERSION, a, b, c, d, ..] => Ok(u32::from_le_bytes([*a, *b, *c, *d]) as usize),
        [v, ..] if *v != VERSION => Err(RecordError::Version(*v)),
        _ => Err(RecordError::Truncated),
    }
}

/// Iterates the encoded records of a block, in id order.
pub fn records(block: &[u8]) -> impl Iterator<Item = Result<&[u8], RecordError>> {
    let n = count(block);
    let mut rest = block.get(HEADER..).unwrap_or(&[]);
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
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if rest.len() < 4 + len {
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

    #[test]
    fn round_trip() {
        let mut w = BlockWriter::new();
        for (i, t) in ["a", "", "ccc"].iter().enumerate() {
            w.push(&ev(i as u64 + 10, t));
        }
        let block = w.finish();
        assert_eq!(count(&block), Ok(3));
        let datas: Vec<Vec<u8>> = records(&block)
            .map(|r| record::decode(r.unwrap()).unwrap().data.to_vec())
            .collect();
        assert_eq!(datas, [b"a".to_vec(), b"".to_vec(), b"ccc".to_vec()]);
    }

    #[test]
    fn damage_is_reported_not_misread() {
        let mut w = BlockWriter::new();
        w.push(&ev(1, "hello"));
        w.push(&ev(2, "world"));
        let block = w.finish();
        let cut = &block[..block.len() - 3];
        let got: Vec<_> = records(cut).collect();
        assert!(got[0].is_ok());
        assert_eq!(got[1], Err(RecordError::Truncated));
        assert_eq!(got.len(), 2);
        assert_eq!(
            records(&[9, 0, 0, 0, 0]).next(),
            Some(Err(RecordError::Version(9)))
        );
        assert_eq!(count(&[]), Err(RecordError::Truncated));
    }
}
