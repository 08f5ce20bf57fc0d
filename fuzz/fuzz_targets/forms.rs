//! Urlencoded bodies and the server's reading of a call's fields: never a panic,
//! and anything accepted satisfies the protocol's rules.
#![no_main]

use bytes::Bytes;
use idb_wire::{MAX_FILE_SIZE, PhaseRequest, parse_urlencoded, validate_filename};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(pairs) = parse_urlencoded(body) else { return };
    let fields = pairs.into_iter().map(|(n, v)| (n, Bytes::from(v.to_vec()))).collect();
    if let Ok(request) = PhaseRequest::from_fields(&fields) {
        assert!(validate_filename(request.filename()).is_ok());
        if let PhaseRequest::Setup { filesize, .. } = request {
            assert!(filesize <= MAX_FILE_SIZE);
        }
    }
});
