//! Offset mode: assembling a file from chunks that arrive in any order.
//!
//! The whole-file blake3 is computed in order as the contiguous prefix from byte 0
//! grows, so verify never re-reads the file. Chunks past the prefix are held (as the
//! request's own `Bytes`, no copy) until the prefix reaches them: memory is bounded
//! by what the client keeps in flight, not by the file size.
//!
//! Overlaps are allowed when the overlapping bytes are identical to the accepted
//! ones. They are compared with the held chunk, with the stored file (store mode),
//! or, for bytes already hashed in sink mode, with the blake3 of each accepted
//! piece the new chunk covers whole. A sink cannot compare a chunk that covers only
//! part of a piece it no longer holds; that is answered as a conflict.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;

use bytes::Bytes;

/// How many stored bytes one comparison reads at a time (store mode).
const COMPARE_BUFFER: usize = 1024 * 1024;

/// Why a chunk cannot be accepted.
#[derive(Debug)]
pub(crate) enum Conflict {
    /// Bytes differ from the accepted ones, at or after this offset.
    Differs {
        /// The first offset of the accepted piece where they differ.
        at: u64,
    },
    /// The chunk covers only part of a piece a sink no longer holds.
    Unverifiable {
        /// Where that piece starts.
        at: u64,
    },
    /// The stored file could not be read.
    Io(io::Error),
}

/// The accepted bytes of one file in offset mode.
pub(crate) struct Assembly {
    /// `[0, prefix)` is accepted and hashed.
    prefix: u64,
    /// blake3 of `[0, prefix)`.
    hasher: blake3::Hasher,
    /// Accepted pieces past the prefix, not yet hashed, by offset; never
    /// overlapping, never empty.
    ahead: BTreeMap<u64, Bytes>,
    /// Sink mode only: the length and blake3 of every hashed piece, by offset, to
    /// recognise a retry of bytes no longer held. `None` in store mode, where the
    /// file itself is compared.
    hashed: Option<BTreeMap<u64, (u64, blake3::Hash)>>,
}

impl Assembly {
    pub(crate) fn new(sink: bool) -> Self {
        Self {
            prefix: 0,
            hasher: blake3::Hasher::new(),
            ahead: BTreeMap::new(),
            hashed: sink.then(BTreeMap::new),
        }
    }

    /// Bytes in the contiguous prefix from 0.
    pub(crate) fn prefix(&self) -> u64 {
        self.prefix
    }

    /// blake3 of the prefix.
    pub(crate) fn hash(&self) -> blake3::Hash {
        self.hasher.finalize()
    }

    /// Compares `chunk` at `offset` with the accepted bytes it overlaps; on
    /// success returns the ranges it would add (empty: an identical retry).
    pub(crate) fn check(
        &self,
        offset: u64,
        chunk: &[u8],
        file: Option<&File>,
    ) -> Result<Vec<Range<u64>>, Conflict> {
        let end = offset + chunk.len() as u64;
        let at = |pos: u64| (pos - offset) as usize;
        // The part below the prefix: hashed already.
        if offset < self.prefix {
            let stop = end.min(self.prefix);
            match (file, &self.hashed) {
                (Some(file), _) => compare_stored(file, offset, &chunk[..at(stop)])?,
                (None, Some(hashed)) => {
                    for (&start, &(len, hash)) in hashed.range(..stop).rev() {
                        let piece_end = start + len;
                        if piece_end <= offset {
                            break;
                        }
                        if start < offset || piece_end > end {
                            return Err(Conflict::Unverifiable { at: start });
                        }
                        if blake3::hash(&chunk[at(start)..at(piece_end)]) != hash {
                            return Err(Conflict::Differs { at: start });
                        }
                    }
                }
                (None, None) => return Err(Conflict::Unverifiable { at: offset }),
            }
        }
        // The part from the prefix on: compare with held pieces, collect the gaps.
        let mut gaps = Vec::new();
        let mut cursor = offset.max(self.prefix);
        if cursor >= end {
            return Ok(gaps);
        }
        let before = self
            .ahead
            .range(..cursor)
            .next_back()
            .filter(|(start, bytes)| *start + bytes.len() as u64 > cursor);
        for (&start, bytes) in before.into_iter().chain(self.ahead.range(cursor..end)) {
            if start > cursor {
                gaps.push(cursor..start);
            }
            let lo = start.max(cursor);
            let hi = (start + bytes.len() as u64).min(end);
            let held = &bytes[(lo - start) as usize..(hi - start) as usize];
            if held != &chunk[at(lo)..at(hi)] {
                return Err(Conflict::Differs { at: start });
            }
            cursor = hi;
        }
        if cursor < end {
            gaps.push(cursor..end);
        }
        Ok(gaps)
    }

    /// Accepts the `gaps` (from [`Assembly::check`]) of `chunk` at `offset`:
    /// writes them to `file` (store mode), holds them, and hashes whatever the
    /// prefix now reaches. Returns the new bytes. On a write error nothing is
    /// recorded.
    pub(crate) fn accept(
        &mut self,
        offset: u64,
        chunk: &Bytes,
        gaps: &[Range<u64>],
        file: Option<&File>,
    ) -> io::Result<u64> {
        let slice =
            |r: &Range<u64>| chunk.slice((r.start - offset) as usize..(r.end - offset) as usize);
        if let Some(file) = file {
            for gap in gaps {
                file.write_all_at(&slice(gap), gap.start)?;
            }
        }
        let mut new = 0;
        for gap in gaps {
            self.ahead.insert(gap.start, slice(gap));
            new += gap.end - gap.start;
        }
        while let Some(bytes) = self.ahead.remove(&self.prefix) {
            self.hasher.update(&bytes);
            let len = bytes.len() as u64;
            if let Some(hashed) = &mut self.hashed {
                hashed.insert(self.prefix, (len, blake3::hash(&bytes)));
            }
            self.prefix += len;
        }
        Ok(new)
    }
}

/// Compares `expected` with the file's bytes at `offset`.
fn compare_stored(file: &File, offset: u64, expected: &[u8]) -> Result<(), Conflict> {
    let mut stored = vec![0; expected.len().min(COMPARE_BUFFER)];
    let mut done = 0;
    while done < expected.len() {
        let n = (expected.len() - done).min(stored.len());
        let pos = offset + done as u64;
        file.read_exact_at(&mut stored[..n], pos)
            .map_err(Conflict::Io)?;
        if stored[..n] != expected[done..done + n] {
            return Err(Conflict::Differs { at: pos });
        }
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Bytes {
        (0..len)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<_>>()
            .into()
    }

    fn put(a: &mut Assembly, all: &Bytes, range: Range<usize>) -> Result<u64, Conflict> {
        let chunk = all.slice(range.clone());
        let gaps = a.check(range.start as u64, &chunk, None)?;
        Ok(a.accept(range.start as u64, &chunk, &gaps, None).unwrap())
    }

    #[test]
    fn out_of_order_pieces_hash_in_order() {
        let all = data(1000);
        for sink in [false, true] {
            let mut a = Assembly::new(sink);
            assert_eq!(put(&mut a, &all, 600..1000).unwrap(), 400);
            assert_eq!(a.prefix(), 0);
            assert_eq!(put(&mut a, &all, 200..600).unwrap(), 400);
            assert_eq!(a.prefix(), 0);
            assert_eq!(put(&mut a, &all, 0..200).unwrap(), 200);
            assert_eq!(a.prefix(), 1000);
            assert!(a.ahead.is_empty(), "nothing held after the prefix passed");
            assert_eq!(a.hash(), blake3::hash(&all));
        }
    }

    #[test]
    fn overlaps_count_once_and_must_match() {
        let all = data(1000);
        let mut a = Assembly::new(true);
        put(&mut a, &all, 100..300).unwrap();
        // Straddling a held piece: only the gaps are new.
        assert_eq!(put(&mut a, &all, 50..400).unwrap(), 150);
        // Identical retry of held bytes: nothing new.
        assert_eq!(put(&mut a, &all, 120..200).unwrap(), 0);
        let mut other = all.to_vec();
        other[250] ^= 1;
        let other = Bytes::from(other);
        assert!(matches!(
            a.check(200, &other[200..300], None),
            Err(Conflict::Differs { .. })
        ));
        put(&mut a, &all, 0..50).unwrap();
        assert_eq!(a.prefix(), 400);
        // Sink, hashed: pieces covered whole compare by hash...
        assert_eq!(put(&mut a, &all, 0..400).unwrap(), 0);
        assert!(matches!(
            a.check(0, &other[0..400], None),
            Err(Conflict::Differs { .. })
        ));
        // ...and part of a hashed piece cannot be compared.
        assert!(matches!(
            a.check(150, &all[150..200], None),
            Err(Conflict::Unverifiable { .. })
        ));
        put(&mut a, &all, 400..1000).unwrap();
        assert_eq!(a.hash(), blake3::hash(&all));
    }
}
