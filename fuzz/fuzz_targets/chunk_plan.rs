//! Chunk plans under any sequence of chunk sizes, from any start: contiguous,
//! non-empty, ending exactly at the size.
#![no_main]

use idb_read::{ChunkPlan, Span};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u32, u32, Vec<u32>)| {
    let (size, start, lens) = input;
    let (size, start) = (u64::from(size), u64::from(start));
    let mut i = 0;
    let policy = move |_: u64, _: u64| {
        i += 1;
        lens.get(i - 1).copied().map_or(4096, u64::from)
    };
    let spans: Vec<Span> = ChunkPlan::starting_at(start, size, policy).take(1 << 20).collect();
    let mut at = start.min(size);
    for span in &spans {
        assert_eq!(span.offset, at);
        assert!(span.len > 0);
        at = span.end();
    }
    if spans.len() < 1 << 20 {
        assert_eq!(at, size);
    }
});
