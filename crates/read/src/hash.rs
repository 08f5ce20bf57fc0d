//! The whole-file blake3 as a state that can be saved and resumed.
//!
//! blake3 is a tree hash over 1 KiB chunks. Everything hashed so far is kept as
//! the chaining values of the complete subtrees it makes up (at most one per bit
//! of the chunk count, so a few dozen for 2 TiB), plus the bytes of an unfinished
//! chunk. That is small enough to write into a resume journal, and a resumed
//! upload goes on from it without reading again what it already sent; the final
//! hash is still exactly `blake3::hash` of the whole file.
//!
//! The rules of the tree (section 2.1 of the blake3 paper) that this relies on:
//! a subtree of `2^k` chunks starting at a chunk index divisible by `2^k` is a
//! node of the tree of any longer input, provided it does not hold the input's
//! last chunk; the last chunk is merged at the end, right to left, the final merge
//! being the root. So the last chunk of the file is never folded in before
//! [`HashState::finalize`].

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};
use blake3::{CHUNK_LEN, Hasher};

/// blake3's chunk length, as a file offset.
const CHUNK: u64 = CHUNK_LEN as u64;

/// The running blake3 of a file of known size, in order from byte 0, and how far
/// it got. A new [`crate::Reader`] continues it, hashing any stretch it skips.
///
/// Cheap to clone (a few hundred bytes to a couple of KiB), so a reader can hand
/// out the state after each chunk; [`HashState::encode`] and
/// [`HashState::decode`] save and restore it.
#[derive(Clone, PartialEq, Eq)]
pub struct HashState {
    /// The whole file's size: where its last chunk starts decides what may be
    /// folded in early.
    size: u64,
    /// Bytes `0..hashed` are folded into `stack`: a multiple of the chunk length,
    /// never past the start of the file's last chunk.
    hashed: u64,
    /// Chaining values of the complete subtrees covering `0..hashed`, leftmost
    /// (largest) first: one per set bit of `hashed / CHUNK`, largest bit first.
    stack: Vec<ChainingValue>,
    /// Bytes `hashed..hashed + pending.len()`: part of a chunk, or the file's
    /// last chunk (up to a whole one).
    pending: Vec<u8>,
}

impl std::fmt::Debug for HashState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashState")
            .field("size", &self.size)
            .field("upto", &self.upto())
            .finish()
    }
}

/// Why a saved [`HashState`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the saved hash state is not valid: {0}")]
pub struct BadHashState(&'static str);

impl HashState {
    /// Nothing hashed yet of a file of `size` bytes.
    pub fn new(size: u64) -> Self {
        Self {
            size,
            hashed: 0,
            stack: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// The state of a file of `size` bytes hashed again from `file`, up to
    /// `upto` (positional reads through one buffer of at most 8 MiB, so memory
    /// stays small whatever the length); `Ok(None)` if `stopped` said so
    /// between two reads. A failed read gives its offset; a file shorter than
    /// `upto` fails with [`std::io::ErrorKind::UnexpectedEof`]. Blocking.
    pub fn read_again(
        file: &std::fs::File,
        size: u64,
        upto: u64,
        stopped: &dyn Fn() -> bool,
    ) -> Result<Option<Self>, (u64, std::io::Error)> {
        use std::os::unix::fs::FileExt;
        const STEP: u64 = 8 << 20;
        let mut again = Self::new(size);
        let mut buffer = vec![0u8; STEP.min(upto) as usize];
        while again.upto() < upto {
            if stopped() {
                return Ok(None);
            }
            let at = again.upto();
            let want = (upto - at).min(STEP) as usize;
            file.read_exact_at(&mut buffer[..want], at)
                .map_err(|e| (at, e))?;
            again.absorb(at, &buffer[..want]);
        }
        Ok(Some(again))
    }

    /// The size of the file this hashes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes hashed so far (all of `0..upto`).
    pub fn upto(&self) -> u64 {
        self.hashed + self.pending.len() as u64
    }

    /// Where the file's last chunk starts (0 for files of at most one chunk).
    fn last_chunk_start(&self) -> u64 {
        self.size.saturating_sub(1) / CHUNK * CHUNK
    }

    /// Hashes the part of `bytes` (which start at `offset`) not hashed yet. Bytes
    /// that would leave a gap (`offset > upto`) or go past the size are a caller
    /// bug: they are ignored in release builds.
    pub fn absorb(&mut self, offset: u64, bytes: &[u8]) {
        let end = offset + bytes.len() as u64;
        let upto = self.upto();
        debug_assert!(offset <= upto, "a gap in the hashed bytes");
        debug_assert!(end <= self.size, "bytes past the end of the file");
        if offset > upto || end <= upto || end > self.size {
            return;
        }
        let mut data = &bytes[(upto - offset) as usize..];
        // First complete the unfinished chunk, if there is one.
        if !self.pending.is_empty() {
            let room = CHUNK_LEN.saturating_sub(self.pending.len());
            let take = room.min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == CHUNK_LEN && self.hashed < self.last_chunk_start() {
                let cv = subtree(self.hashed, &self.pending);
                self.push(cv, 1);
                self.pending.clear();
            }
        }
        // Then whole subtrees, as large as alignment and the data allow, so that
        // blake3 hashes many chunks at once (SIMD); the last chunk is kept back.
        let last = self.last_chunk_start();
        while !data.is_empty() {
            debug_assert!(self.pending.is_empty());
            let at = self.hashed;
            let whole = (data.len() as u64 / CHUNK) * CHUNK;
            let foldable = whole.min(last.saturating_sub(at)) / CHUNK;
            if foldable == 0 {
                self.pending.extend_from_slice(data);
                break;
            }
            // The largest power of two of chunks that fits and that `at` is aligned to.
            let mut chunks = 1u64 << (63 - foldable.leading_zeros());
            if at > 0 {
                chunks = chunks.min(1 << (at / CHUNK).trailing_zeros());
            }
            let len = (chunks * CHUNK) as usize;
            let cv = subtree(at, &data[..len]);
            self.push(cv, chunks);
            data = &data[len..];
        }
    }

    /// Adds the subtree of `chunks` chunks (a power of two) that starts at
    /// `self.hashed`, merging it with the subtrees it completes.
    fn push(&mut self, cv: ChainingValue, chunks: u64) {
        let mut count = self.hashed / CHUNK;
        let (mut cv, mut size) = (cv, chunks);
        // `count` is a multiple of `size`; its lowest set bit is the size of the
        // subtree on top of the stack. Equal sizes are siblings: merge them.
        while count & size != 0 {
            let left = self.stack.pop().expect("a set bit has its subtree");
            cv = merge_subtrees_non_root(&left, &cv, Mode::Hash);
            count -= size;
            size *= 2;
        }
        self.stack.push(cv);
        self.hashed += chunks * CHUNK;
    }

    /// The file's blake3, once all of it is hashed.
    pub fn finalize(&self) -> Option<blake3::Hash> {
        if self.upto() != self.size {
            return None;
        }
        if self.stack.is_empty() {
            // At most one chunk: the chunk itself is the root.
            return Some(blake3::hash(&self.pending));
        }
        let mut right = subtree(self.hashed, &self.pending);
        let (root_left, rest) = self.stack.split_first().expect("not empty");
        for left in rest.iter().rev() {
            right = merge_subtrees_non_root(left, &right, Mode::Hash);
        }
        Some(merge_subtrees_root(root_left, &right, Mode::Hash))
    }

    /// The state as text: `size:hashed:chaining values:pending bytes`, in hex.
    pub fn encode(&self) -> String {
        let mut cvs = String::with_capacity(self.stack.len() * 64);
        for cv in &self.stack {
            cvs.push_str(&hex(cv));
        }
        format!("{}:{}:{cvs}:{}", self.size, self.hashed, hex(&self.pending))
    }

    /// Reads what [`HashState::encode`] wrote, checking that it is a consistent
    /// state (it cannot check the chaining values themselves: that is what the
    /// end-to-end comparison with the server's hash is for).
    pub fn decode(text: &str) -> Result<Self, BadHashState> {
        let mut parts = text.split(':');
        let mut next = |what: &'static str| parts.next().ok_or(BadHashState(what));
        let size: u64 = next("no size")?
            .parse()
            .map_err(|_| BadHashState("the size is not a number"))?;
        let hashed: u64 = next("no offset")?
            .parse()
            .map_err(|_| BadHashState("the offset is not a number"))?;
        let cvs = unhex(next("no chaining values")?).ok_or(BadHashState("bad hex"))?;
        let pending = unhex(next("no pending bytes")?).ok_or(BadHashState("bad hex"))?;
        if parts.next().is_some() {
            return Err(BadHashState("too many fields"));
        }
        let state = Self {
            size,
            hashed,
            stack: cvs
                .chunks(32)
                .map(|cv| cv.try_into().unwrap_or([0; 32]))
                .collect(),
            pending,
        };
        let last = state.last_chunk_start();
        if !hashed.is_multiple_of(CHUNK) || hashed > last {
            return Err(BadHashState(
                "the offset is not a chunk boundary before the end",
            ));
        }
        if !cvs.len().is_multiple_of(32)
            || state.stack.len() != (hashed / CHUNK).count_ones() as usize
        {
            return Err(BadHashState("the chaining values do not match the offset"));
        }
        let room = if hashed == last {
            (size - last) as usize
        } else {
            CHUNK_LEN - 1
        };
        if state.pending.len() > room {
            return Err(BadHashState("too many pending bytes"));
        }
        Ok(state)
    }
}

/// The chaining value of the complete subtree `bytes` starting at `offset`.
fn subtree(offset: u64, bytes: &[u8]) -> ChainingValue {
    let mut hasher = Hasher::new();
    hasher.set_input_offset(offset);
    hasher.update(bytes);
    hasher.finalize_non_root()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut out = vec![0; len];
        blake3::Hasher::new_derive_key("idb-read hash tests")
            .update(&seed.to_le_bytes())
            .finalize_xof()
            .fill(&mut out);
        out
    }

    /// Hashes `bytes` in pieces cut at `cuts` (sorted offsets).
    fn in_pieces(bytes: &[u8], cuts: &[usize]) -> HashState {
        let mut state = HashState::new(bytes.len() as u64);
        let mut at = 0;
        for &cut in cuts.iter().chain([&bytes.len()]) {
            let cut = cut.clamp(at, bytes.len());
            state.absorb(at as u64, &bytes[at..cut]);
            at = cut;
        }
        state
    }

    /// Sizes around the places the tree changes shape.
    fn size() -> impl Strategy<Value = usize> {
        prop_oneof![
            0usize..3 * CHUNK_LEN,
            (1usize..40).prop_map(|k| k * CHUNK_LEN),
            (1usize..40).prop_map(|k| k * CHUNK_LEN + 1),
            (1usize..40).prop_map(|k| k * CHUNK_LEN - 1),
            0usize..300_000,
        ]
    }

    proptest! {
        #[test]
        fn any_pieces_give_blake3_of_the_whole(
            len in size(),
            cuts in proptest::collection::vec(0usize..300_000, 0..8),
            seed in any::<u64>(),
        ) {
            let bytes = data(len, seed);
            let mut cuts = cuts;
            cuts.sort_unstable();
            let state = in_pieces(&bytes, &cuts);
            prop_assert_eq!(state.upto(), len as u64);
            prop_assert_eq!(state.finalize(), Some(blake3::hash(&bytes)));
        }

        /// A state saved at any stop point, restored and continued, ends at
        /// `blake3::hash` of the file: what resuming an upload relies on.
        #[test]
        fn a_saved_state_resumes_to_the_same_hash(
            len in size(),
            stop in 0usize..300_000,
            cuts in proptest::collection::vec(0usize..300_000, 0..4),
            seed in any::<u64>(),
        ) {
            let bytes = data(len, seed);
            let stop = stop.min(len);
            let mut first: Vec<usize> = cuts.iter().copied().filter(|&c| c < stop).collect();
            first.sort_unstable();
            let mut state = HashState::new(len as u64);
            let mut at = 0;
            for cut in first.into_iter().chain([stop]) {
                state.absorb(at as u64, &bytes[at..cut]);
                at = cut;
            }
            prop_assert_eq!(state.upto(), stop as u64);
            let text = state.encode();
            let mut resumed = HashState::decode(&text).unwrap();
            prop_assert_eq!(&resumed, &state);
            // Overlapping bytes already hashed are skipped, as a reader restarting
            // a little before the stop point would send them.
            let from = stop.saturating_sub(100);
            resumed.absorb(from as u64, &bytes[from..]);
            prop_assert_eq!(resumed.finalize(), Some(blake3::hash(&bytes)));
        }
    }

    #[test]
    fn nothing_final_until_the_end() {
        let bytes = data(5000, 1);
        let mut state = HashState::new(5000);
        state.absorb(0, &bytes[..4999]);
        assert_eq!(state.finalize(), None);
        state.absorb(4999, &bytes[4999..]);
        assert_eq!(state.finalize(), Some(blake3::hash(&bytes)));
        assert_eq!(HashState::new(0).finalize(), Some(blake3::hash(b"")));
    }

    #[test]
    fn the_saved_form_is_small_for_huge_files() {
        let mut state = HashState::new(2 << 40);
        let bytes = data(3 << 20, 2);
        state.absorb(0, &bytes);
        let text = state.encode();
        assert!(text.len() < 200, "{text}");
        assert_eq!(HashState::decode(&text).unwrap(), state);
    }

    #[test]
    fn inconsistent_saved_states_are_refused() {
        let bytes = data(10_000, 3);
        let mut state = HashState::new(10_000);
        state.absorb(0, &bytes[..7000]);
        let good = state.encode();
        let fields: Vec<&str> = good.split(':').collect();
        let bad = [
            String::new(),
            "x:0::".to_owned(),
            format!("{}:{}:{}:{}:", fields[0], fields[1], fields[2], fields[3]),
            // An offset that is not a chunk boundary.
            format!("{}:1000:{}:{}", fields[0], fields[2], fields[3]),
            // Chaining values that do not match the offset.
            format!("{}:{}::{}", fields[0], fields[1], fields[3]),
            // Odd hex.
            format!("{}:{}:{}:{}0", fields[0], fields[1], fields[2], fields[3]),
            // More pending bytes than a chunk.
            format!(
                "{}:{}:{}:{}",
                fields[0],
                fields[1],
                fields[2],
                "00".repeat(1024)
            ),
            // Past the end.
            format!("1000:{}:{}:{}", fields[1], fields[2], fields[3]),
        ];
        for text in bad {
            assert!(HashState::decode(&text).is_err(), "{text:.80}");
        }
        assert_eq!(HashState::decode(&good).unwrap(), state);
    }
}
