//! The state directory's files: a journal and a dataset's receipts holding
//! any bytes are read without a panic (see `idb_fuzz::state_files`).
//! The body is `idb_fuzz::state_files`, which `tests/fuzz_corpus.rs` replays.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| idb_fuzz::state_files(data));
