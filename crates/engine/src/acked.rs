//! What the server has acknowledged of one file: a contiguous prefix, plus chunks
//! acknowledged beyond it out of order (offset servers only); how much of the
//! prefix the server confirmed in this run; and a guess being checked (a chunk
//! whose answer was lost, taken as received until the next chunk says so).

use std::collections::BTreeMap;

use idb_read::Chunk;

#[derive(Debug, Default)]
pub(crate) struct Acked {
    /// Bytes `0..prefix` are on the server.
    pub(crate) prefix: u64,
    /// Ranges `start..end` acknowledged beyond the prefix.
    beyond: BTreeMap<u64, u64>,
    /// The prefix comes from a journal and the server has not confirmed anything
    /// since: it may hold more than the journal says (the journal lags), or
    /// nothing at all (it forgot the upload).
    pub(crate) from_journal: bool,
    /// The prefix came from a journal and the server has not named its offset
    /// since: it may still hold more than this upload knows. Acknowledgements do
    /// not settle it (unlike [`Acked::from_journal`]): a server ahead of the
    /// journal takes a resumed chunk inside what it holds as an identical retry
    /// (200), and names its offset only at the chunk that crosses its end (so
    /// an offset inside that chunk is followed; see the pump).
    pub(crate) may_lag: bool,
    /// Bytes `0..confirmed` are on the server by its own word in this run: a
    /// setup (0), an offset it named, or an acknowledgement that follows on
    /// from them (a resumed offset counts once a chunk at it is accepted).
    confirmed: u64,
    /// A chunk whose answer was lost, taken as received (see [`Acked::guess`]).
    guess: Option<Guess>,
}

/// A chunk taken as received though its answer was lost: the prefix moved to
/// `to` on trust, until the server accepts a chunk at `to` or later.
#[derive(Debug, Clone, Copy)]
struct Guess {
    to: u64,
}

impl Acked {
    /// A prefix the journal says the server holds.
    pub(crate) fn from_journal(prefix: u64) -> Self {
        Self {
            prefix,
            beyond: BTreeMap::new(),
            from_journal: true,
            may_lag: true,
            confirmed: 0,
            guess: None,
        }
    }

    /// With the ranges `start..end` a journal says were acknowledged beyond the
    /// prefix (tus partials that ended out of order): a resumed upload sends
    /// only what they leave missing. Still [`Acked::from_journal`].
    pub(crate) fn with_beyond(mut self, ranges: impl IntoIterator<Item = (u64, u64)>) -> Self {
        for (start, end) in ranges {
            if end > start && end > self.prefix {
                self.beyond.insert(start.max(self.prefix), end);
            }
        }
        while let Some(end) = self.beyond.remove(&self.prefix) {
            self.prefix = end;
        }
        self
    }

    /// The server acknowledged `len` bytes at `offset`.
    pub(crate) fn add(&mut self, offset: u64, len: u64) {
        self.from_journal = false;
        // A chunk accepted at the guessed end or past it: the server held the
        // guessed chunk (a strict server takes a chunk only at its own size).
        if self.guess.is_some_and(|g| offset >= g.to) {
            self.guess = None;
        }
        // An acknowledgement at or below the prefix follows on from what the
        // server holds; one beyond it (offset servers) says nothing of the bytes
        // before it.
        let follows = offset <= self.prefix;
        self.beyond.insert(offset, offset + len);
        while let Some(end) = self.beyond.remove(&self.prefix) {
            self.prefix = self.prefix.max(end);
        }
        // Drop ranges the prefix swallowed.
        self.beyond.retain(|&start, _| start > self.prefix);
        if follows && self.guess.is_none() {
            self.confirmed = self.prefix;
        }
    }

    /// Takes the chunk `prefix..to`, whose answer was lost, as received: the
    /// prefix moves to `to` on trust (the journal saves it too: a run resuming
    /// there is refused if it is wrong, and starts over), and what was
    /// confirmed stays as it was until the server accepts a chunk at `to`
    /// ([`Acked::add`]).
    pub(crate) fn guess(&mut self, to: u64) {
        self.guess = Some(Guess { to });
        self.prefix = to;
        self.beyond.clear();
    }

    /// Whether a guess is being checked.
    pub(crate) fn guessing(&self) -> bool {
        self.guess.is_some()
    }

    /// Bytes from the start that the server confirmed in this run (or, resumed,
    /// once it accepted a chunk at the journal's offset): the only bytes an
    /// upload may call safely on the server.
    pub(crate) fn confirmed(&self) -> u64 {
        self.confirmed
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
        self.may_lag = false;
        self.confirmed = offset;
        self.guess = None;
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

    #[test]
    fn ranges_a_journal_saved_beyond_the_prefix_are_not_sent_again() {
        let acked = Acked::from_journal(10).with_beyond([(0, 5), (15, 20), (25, 30)]);
        assert_eq!(acked.prefix, 10);
        assert!(acked.from_journal && acked.may_lag);
        let chunk = Chunk {
            offset: 10,
            bytes: bytes::Bytes::from(vec![0u8; 20]),
            hash: None,
        };
        let missing: Vec<(u64, u64)> = acked
            .missing(&chunk)
            .iter()
            .map(|c| (c.offset, c.end()))
            .collect();
        assert_eq!(missing, [(10, 15), (20, 25)]);
        // A range that starts at the prefix extends it.
        assert_eq!(Acked::from_journal(10).with_beyond([(10, 15)]).prefix, 15);
    }

    #[test]
    fn a_journal_may_lag_until_the_server_names_its_offset() {
        let mut acked = Acked::from_journal(100);
        assert!(acked.may_lag);
        // An identical retry inside what the server holds is answered 200 too.
        acked.add(100, 10);
        assert!(acked.may_lag);
        acked.reset_to(150);
        assert!(!acked.may_lag);
        assert!(!Acked::default().may_lag);
    }

    #[test]
    fn only_what_the_server_said_is_confirmed() {
        // Resumed: nothing is confirmed until a chunk at the journal's offset is
        // accepted.
        let mut acked = Acked::from_journal(100);
        assert_eq!((acked.prefix, acked.confirmed()), (100, 0));
        acked.add(100, 10);
        assert_eq!(acked.confirmed(), 110);
        acked.reset_to(40);
        assert_eq!((acked.prefix, acked.confirmed()), (40, 40));
    }

    #[test]
    fn a_guess_is_trusted_only_once_a_chunk_after_it_is_accepted() {
        let mut acked = Acked::default();
        acked.add(0, 10);
        acked.guess(20);
        assert!(acked.guessing());
        assert_eq!(acked.prefix, 20);
        assert_eq!(acked.confirmed(), 10);
        acked.add(20, 10);
        assert!(!acked.guessing());
        assert_eq!((acked.prefix, acked.confirmed()), (30, 30));
        // A guess undone by the server naming where it is.
        acked.guess(40);
        acked.reset_to(30);
        assert!(!acked.guessing());
        assert_eq!(acked.confirmed(), 30);
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
