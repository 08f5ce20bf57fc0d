//! The streaming multipart parser on arbitrary bytes, pushed in arbitrary pieces:
//! it must never panic or loop, and feeding the same bytes whole or in pieces
//! must give the same fields.
//! The body is `idb_fuzz::multipart`, which `tests/fuzz_corpus.rs` replays.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| idb_fuzz::multipart(data));
