//! Classifying any answer (status, body, Retry-After) of any phase, and reading
//! a verify receipt: never a panic; success only for 2xx, and for every 2xx but
//! a web page answering setup.
#![no_main]

use idb_wire::{Outcome, Phase, VerifyReceipt, classify, summarize_body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, u16, &str, &[u8])| {
    let (phase, status, retry_after, body) = input;
    let phase = [Phase::Setup, Phase::Transfer, Phase::Verify][phase as usize % 3];
    let outcome = classify(phase, status, body, Some(retry_after));
    let success = (200..300).contains(&status);
    let page_for_setup = phase == Phase::Setup && idb_wire::looks_like_html(body);
    assert_eq!(outcome == Outcome::Ok, success && !page_for_setup);
    let _ = VerifyReceipt::parse(body);
    assert!(summarize_body(body).chars().count() <= 200);
});
