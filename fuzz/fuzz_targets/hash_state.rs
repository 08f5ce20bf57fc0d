//! Saved hash states as the journal holds them: any text is refused or read into
//! a state that saves back to itself and can be continued to the end of its file
//! without a panic.
//! The body is `idb_fuzz::hash_state`, which `tests/fuzz_corpus.rs` replays.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| idb_fuzz::hash_state(data));
