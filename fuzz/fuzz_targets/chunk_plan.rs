//! Chunk plans under any sequence of chunk sizes, from any start: contiguous,
//! non-empty, ending exactly at the size.
//! The body is `idb_fuzz::chunk_plan`, which `tests/fuzz_corpus.rs` replays.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| idb_fuzz::chunk_plan(data));
