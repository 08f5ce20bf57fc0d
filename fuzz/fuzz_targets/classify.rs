//! Classifying any answer (status, body, Retry-After) of any phase, and reading
//! a verify receipt: never a panic; success only for 2xx, and for every 2xx but
//! a web page answering setup.
//! The body is `idb_fuzz::classify_answer`, which `tests/fuzz_corpus.rs` replays.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| idb_fuzz::classify_answer(data));
