//! What the server has acknowledged of one file: a contiguous prefix, plus chunks
//! acknowledged beyond it out of order (offset servers only).

use std::collections::BTreeMap;

use idb_read::Chunk;

#[derive(Debug, Default)]
pub(crate) struct Acked {
    /// Bytes `0..prefix` are on the server.
    pub(crate) prefix: u64,
    /// Ranges `start..end` acknowledged beyond the prefix.
    beyond: BTreeMap<u64, u64>,
    /// The prefix comes from a journal and the server has not confirmed anything
    /// since: it may hold more than the journal says (the journal lags).
    pub(crate) from_journal: bool,
}

impl Acked {
    /// A prefix the journal says the server holds.
    pub(crate) fn from_journal(prefix: u64) -> Self {
        Self {
            prefix,
            beyond: BTreeMap::new(),
            from_journal: true,
        }
    }

    /// The server acknowledged `len` bytes at `offset`.
    pub(crate) fn add(&mut self, offset: u64, len: u64) {
        self.from_journal = false;
        self.beyond.insert(offset, offset + len);
        while let Some(end) = self.beyond.remove(&self.prefix) {
            self.prefix = self.prefix.max(end);
        }
        // Drop ranges the prefix swallowed.
        self.beyond.retain(|&start, _| start > self.prefix);
    }

    /// The parts of `chunk` not acknowledged yet, as zero-copy slices of it.
    pub(crate) fn missing(&self, chunk: &Chunk) -> Vec<Chunk> {
        let mut pieces = Vec::new();
        let mut at = chunk.offset.max(self.prefix);
        let end = chunk.end();
        let piece = |from: u64, to: u64| Chunk {
            offset: from,
            bytes: chunk
                .bytes
                .slice((from - chunk.offset) as usize..(to - chunk.offset) as usize),
            hash: None,
        };
        if at == chunk.offset && self.beyond.is_empty() {
            return vec![chunk.clone()];
        }
        for (&start, &stop) in self.beyond.range(..end) {
            if stop <= at {
                continue;
            }
            if start > at {
                pieces.push(piece(at, start));
            }
            at = at.max(stop);
        }
        if at < end {
            pieces.push(piece(at, end));
        }
        pieces
    }

    /// The server says it holds exactly `offset` bytes.
    pub(crate) fn reset_to(&mut self, offset: u64) {
        self.prefix = offset;
        self.beyond.clear();
        self.from_journal = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_grows_only_when_contiguous() {
        let mut acked = Acked::default();
        acked.add(10, 10);
        assert_eq!(acked.prefix, 0);
        acked.add(0, 10);
        assert_eq!(acked.prefix, 20);
        acked.add(30, 5);
        acked.add(20, 10);
        assert_eq!(acked.prefix, 35);
        assert!(acked.beyond.is_empty());
        acked.reset_to(12);
        assert_eq!(acked.prefix, 12);
    }

    #[test]
    fn a_journal_prefix_is_trusted_only_until_the_server_speaks() {
        let mut acked = Acked::from_journal(100);
        assert!(acked.from_journal);
        acked.add(100, 10);
        assert!(!acked.from_journal);
        let mut acked = Acked::from_journal(100);
        acked.reset_to(150);
        assert!(!acked.from_journal);
    }

    fn chunk(offset: u64, len: usize) -> Chunk {
        let bytes: Vec<u8> = (0..len).map(|i| (offset as usize + i) as u8).collect();
        Chunk {
            offset,
            bytes: bytes.into(),
            hash: None,
        }
    }

    #[test]
    fn missing_pieces_skip_acknowledged_ranges() {
        let spans = |acked: &Acked, c: &Chunk| -> Vec<(u64, u64)> {
            let pieces = acked.missing(c);
            for p in &pieces {
                // Each piece holds the chunk's own bytes for its range.
                assert_eq!(
                    p.bytes,
                    c.bytes
                        .slice((p.offset - c.offset) as usize..(p.end() - c.offset) as usize)
                );
            }
            pieces.iter().map(|p| (p.offset, p.end())).collect()
        };
        let mut acked = Acked::default();
        assert_eq!(spans(&acked, &chunk(0, 100)), [(0, 100)]);
        acked.add(0, 10);
        acked.add(30, 10);
        acked.add(60, 5);
        assert_eq!(
            spans(&acked, &chunk(0, 100)),
            [(10, 30), (40, 60), (65, 100)]
        );
        assert_eq!(spans(&acked, &chunk(30, 10)), Vec::<(u64, u64)>::new());
        assert_eq!(spans(&acked, &chunk(35, 10)), [(40, 45)]);
        assert_eq!(spans(&acked, &chunk(5, 3)), Vec::<(u64, u64)>::new());
    }
}
