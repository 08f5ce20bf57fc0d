//! Urlencoded bodies and the server's reading of a call's fields: never a panic,
//! and anything accepted satisfies the protocol's rules.
//! The body is `idb_fuzz::forms`, which `tests/fuzz_corpus.rs` replays.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| idb_fuzz::forms(data));
