//! Chunk plans: which bytes go in which `transfer` call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// One chunk of a plan: `len` bytes at `offset` (the call's `previous_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Byte offset in the file.
    pub offset: u64,
    /// Length in bytes, never 0.
    pub len: u64,
}

impl Span {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// Decides how long the next chunk is. The plan clamps the answer to `1..=remaining`,
/// so no policy can produce an empty, overlapping or overlong chunk.
pub trait ChunkPolicy: Send {
    /// The length wanted for the chunk at `offset`, with `remaining` bytes left.
    fn next_len(&mut self, offset: u64, remaining: u64) -> u64;
}

/// Every chunk the same size (the last one shorter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedChunks(pub u64);

impl ChunkPolicy for FixedChunks {
    fn next_len(&mut self, _: u64, _: u64) -> u64 {
        self.0
    }
}

/// A chunk size another thread may change while the plan runs (the engine adapts
/// it to the network); chunks planned after the change use the new size.
#[derive(Debug, Clone)]
pub struct SharedChunkSize(pub Arc<AtomicU64>);

impl SharedChunkSize {
    /// A shared size starting at `bytes`.
    pub fn new(bytes: u64) -> Self {
        Self(Arc::new(AtomicU64::new(bytes)))
    }

    /// Sets the size for chunks planned from now on.
    pub fn set(&self, bytes: u64) {
        self.0.store(bytes, Ordering::Relaxed);
    }

    /// The current size.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl ChunkPolicy for SharedChunkSize {
    fn next_len(&mut self, _: u64, _: u64) -> u64 {
        self.get()
    }
}

impl<F: FnMut(u64, u64) -> u64 + Send> ChunkPolicy for F {
    fn next_len(&mut self, offset: u64, remaining: u64) -> u64 {
        self(offset, remaining)
    }
}

/// The chunks of a file from some offset to its end, produced one at a time.
///
/// Invariants, whatever the policy: the first chunk starts at the plan's start
/// offset, chunks are contiguous and non-empty, and they end exactly at the file's
/// size; a plan over 0 bytes has no chunk. Replanning from an acknowledged offset is
/// [`ChunkPlan::starting_at`] with that offset.
pub struct ChunkPlan {
    size: u64,
    next: u64,
    policy: Box<dyn ChunkPolicy>,
}

impl std::fmt::Debug for ChunkPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkPlan")
            .field("size", &self.size)
            .field("next", &self.next)
            .finish()
    }
}

impl ChunkPlan {
    /// Fixed-size chunks over a whole file of `size` bytes.
    pub fn fixed(size: u64, chunk: u64) -> Self {
        Self::starting_at(0, size, FixedChunks(chunk))
    }

    /// Chunks from `offset` to `size` under `policy`. An `offset` past the end is
    /// treated as the end (an empty plan).
    pub fn starting_at(offset: u64, size: u64, policy: impl ChunkPolicy + 'static) -> Self {
        Self {
            size,
            next: offset.min(size),
            policy: Box::new(policy),
        }
    }

    /// The file size the plan covers up to.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Where the next chunk starts (the size, once the plan is done).
    pub fn next_offset(&self) -> u64 {
        self.next
    }
}

impl Iterator for ChunkPlan {
    type Item = Span;

    fn next(&mut self) -> Option<Span> {
        let remaining = self.size - self.next;
        if remaining == 0 {
            return None;
        }
        let len = self
            .policy
            .next_len(self.next, remaining)
            .clamp(1, remaining);
        let span = Span {
            offset: self.next,
            len,
        };
        self.next += len;
        Some(span)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Checks every invariant of a plan's output from `start` over `size`.
    fn check(spans: &[Span], start: u64, size: u64) -> Result<(), TestCaseError> {
        if start >= size {
            prop_assert!(spans.is_empty());
            return Ok(());
        }
        prop_assert_eq!(spans[0].offset, start);
        for pair in spans.windows(2) {
            prop_assert_eq!(pair[0].end(), pair[1].offset, "contiguous, no overlap");
        }
        prop_assert!(spans.iter().all(|s| s.len > 0), "none empty");
        prop_assert_eq!(spans.last().unwrap().end(), size, "covers exactly");
        Ok(())
    }

    /// A policy cycling through arbitrary sizes, 0 and huge ones included.
    fn cycling(sizes: Vec<u64>) -> impl ChunkPolicy {
        let mut i = 0;
        move |_, _| {
            i += 1;
            sizes[(i - 1) % sizes.len()]
        }
    }

    proptest! {
        #[test]
        fn plans_cover_the_file_exactly(
            size in 0u64..200_000,
            sizes in proptest::collection::vec(prop_oneof![0u64..5000, Just(u64::MAX)], 1..6),
        ) {
            let spans: Vec<_> = ChunkPlan::starting_at(0, size, cycling(sizes)).collect();
            check(&spans, 0, size)?;
        }

        #[test]
        fn replanning_from_any_acknowledged_offset_keeps_the_invariants(
            size in 1u64..100_000,
            first in proptest::collection::vec(1u64..5000, 1..4),
            second in proptest::collection::vec(0u64..7000, 1..4),
            acked in 0usize..64,
        ) {
            let spans: Vec<_> = ChunkPlan::starting_at(0, size, cycling(first)).collect();
            // Any offset the server may have acknowledged: a chunk boundary.
            let offset = spans.get(acked).map_or(size, |s| s.offset);
            let replanned: Vec<_> = ChunkPlan::starting_at(offset, size, cycling(second)).collect();
            check(&replanned, offset, size)?;
        }

        #[test]
        fn a_shared_size_changes_later_chunks_only(size in 1u64..50_000, a in 1u64..3000, b in 1u64..3000) {
            let shared = SharedChunkSize::new(a);
            let mut plan = ChunkPlan::starting_at(0, size, shared.clone());
            let first = plan.next().unwrap();
            shared.set(b);
            let mut spans = vec![first];
            spans.extend(plan);
            check(&spans, 0, size)?;
            prop_assert_eq!(first.len, a.min(size));
            if spans.len() > 2 {
                prop_assert_eq!(spans[1].len, b);
            }
        }
    }

    #[test]
    fn empty_file_has_no_chunk() {
        assert_eq!(ChunkPlan::fixed(0, 8).count(), 0);
        assert_eq!(ChunkPlan::starting_at(10, 5, FixedChunks(1)).count(), 0);
    }

    #[test]
    fn fixed_plan() {
        let spans: Vec<_> = ChunkPlan::fixed(10, 4).map(|s| (s.offset, s.len)).collect();
        assert_eq!(spans, [(0, 4), (4, 4), (8, 2)]);
    }
}
