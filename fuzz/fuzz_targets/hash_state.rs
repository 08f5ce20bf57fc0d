//! Saved hash states as the journal holds them: any text is refused or read into
//! a state that saves back to itself and can be continued to the end of its file
//! without a panic.
#![no_main]

use idb_read::HashState;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, Vec<u8>)| {
    let (text, tail) = input;
    let Ok(mut state) = HashState::decode(text) else {
        return;
    };
    assert_eq!(HashState::decode(&state.encode()).as_ref(), Ok(&state));
    let upto = state.upto();
    let left = (state.size() - upto).min(tail.len() as u64) as usize;
    state.absorb(upto, &tail[..left]);
    assert_eq!(state.finalize().is_some(), state.upto() == state.size());
});
