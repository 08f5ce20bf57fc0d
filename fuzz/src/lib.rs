//! The fuzz targets' bodies, one function per target, each taking raw bytes.
//!
//! The libFuzzer binaries in `fuzz_targets/` call these, and so does the main
//! workspace's `tests/fuzz_corpus.rs` (which includes this file by path), which
//! replays every file of `fuzz/corpus/<target>/` on stable Rust, so `cargo test`
//! catches a regression on any input the corpus holds. Inputs are split by hand
//! (no `arbitrary`), so a corpus file means the same thing to both.
//!
//! Each function panics on a broken invariant, and only then.

use std::path::PathBuf;
use std::sync::OnceLock;

use bytes::Bytes;
use idb_read::{ChunkPlan, HashState, Span};
use idb_wire::{
    MAX_FILE_SIZE, MultipartEvent, MultipartParser, Outcome, Phase, PhaseRequest, VerifyReceipt,
    classify, parse_urlencoded, summarize_body, validate_filename,
};

/// A target's body: panics on a broken invariant.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus directory.
pub const TARGETS: [(&str, Target); 6] = [
    ("multipart", multipart),
    ("forms", forms),
    ("classify", classify_answer),
    ("chunk_plan", chunk_plan),
    ("hash_state", hash_state),
    ("state_files", state_files),
];

/// `data` split at its first NUL: the part before, and the rest after it.
fn split_at_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// A multipart body (after a first byte giving the piece size) parses the same
/// whole or pushed in pieces, copied or not.
pub fn multipart(data: &[u8]) {
    let Some((&step, body)) = data.split_first() else {
        return;
    };
    let whole = parse_multipart(body, body.len(), false);
    let pieces = parse_multipart(body, usize::from(step), false);
    assert_eq!(whole, pieces);
    let uncopied = parse_multipart(body, usize::from(step), true);
    assert_eq!(whole, uncopied);
}

/// Parses `body` pushed in pieces of `step` bytes (with `push_bytes` if
/// `uncopied`); the fields with data merged.
fn parse_multipart(body: &[u8], step: usize, uncopied: bool) -> Result<Vec<(String, Vec<u8>)>, ()> {
    let mut parser = MultipartParser::new("b0undary");
    let mut fields = Vec::new();
    let mut pieces = body.chunks(step.max(1));
    loop {
        loop {
            match parser.next_event() {
                Ok(Some(MultipartEvent::PartStart(h))) => fields.push((h.name, Vec::new())),
                Ok(Some(MultipartEvent::Data(d))) => {
                    fields.last_mut().ok_or(())?.1.extend_from_slice(&d)
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return Err(()),
            }
        }
        match pieces.next() {
            Some(piece) if uncopied => parser.push_bytes(Bytes::copy_from_slice(piece)),
            Some(piece) => parser.push(piece),
            None => break,
        }
    }
    parser.finish().map_err(|_| ())?;
    Ok(fields)
}

/// An urlencoded body that makes a request makes a valid one.
pub fn forms(body: &[u8]) {
    let Ok(pairs) = parse_urlencoded(body) else {
        return;
    };
    let fields = pairs
        .into_iter()
        .map(|(n, v)| (n, Bytes::from(v.to_vec())))
        .collect();
    if let Ok(request) = PhaseRequest::from_fields(&fields) {
        assert!(validate_filename(request.filename()).is_ok());
        if let PhaseRequest::Setup { filesize, .. } = request {
            assert!(filesize <= MAX_FILE_SIZE);
        }
    }
}

/// Any answer (phase byte, status as two bytes, `Retry-After` up to a NUL, the
/// body) is classified: success for a 2xx (but a web page answering setup),
/// and a short summary.
pub fn classify_answer(data: &[u8]) {
    let [phase, high, low, rest @ ..] = data else {
        return;
    };
    let phase = [Phase::Setup, Phase::Transfer, Phase::Verify][usize::from(*phase) % 3];
    let status = u16::from_be_bytes([*high, *low]);
    let (retry_after, body) = split_at_nul(rest);
    let retry_after = String::from_utf8_lossy(retry_after);
    let outcome = classify(phase, status, body, Some(&retry_after));
    // Success is a 2xx, but a web page answering setup is no Data Bank's.
    let success = (200..300).contains(&status);
    let page_for_setup = phase == Phase::Setup && idb_wire::looks_like_html(body);
    assert_eq!(outcome == Outcome::Ok, success && !page_for_setup);
    let _ = VerifyReceipt::parse(body);
    assert!(summarize_body(body).chars().count() <= 200);
}

/// A plan (size and start as 4 bytes each, then chunk lengths as 4 bytes each)
/// covers `start..size` in order, without gaps or empty spans.
pub fn chunk_plan(data: &[u8]) {
    let [a, b, c, d, e, f, g, h, rest @ ..] = data else {
        return;
    };
    let size = u64::from(u32::from_le_bytes([*a, *b, *c, *d]));
    let start = u64::from(u32::from_le_bytes([*e, *f, *g, *h]));
    let lens: Vec<u64> = rest
        .chunks_exact(4)
        .map(|w| u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]])))
        .collect();
    let mut i = 0;
    let policy = move |_: u64, _: u64| {
        i += 1;
        lens.get(i - 1).copied().unwrap_or(4096)
    };
    const MOST: usize = 1 << 20;
    let spans: Vec<Span> = ChunkPlan::starting_at(start, size, policy)
        .take(MOST)
        .collect();
    let mut at = start.min(size);
    for span in &spans {
        assert_eq!(span.offset, at);
        assert!(span.len > 0);
        at = span.end();
    }
    if spans.len() < MOST {
        assert_eq!(at, size);
    }
}

/// A saved hash state (text up to a NUL, then file bytes): refused, or read
/// into a state that saves back to itself and continues to its end.
pub fn hash_state(data: &[u8]) {
    let (text, tail) = split_at_nul(data);
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let Ok(mut state) = HashState::decode(text) else {
        return;
    };
    assert_eq!(HashState::decode(&state.encode()).as_ref(), Ok(&state));
    let upto = state.upto();
    let left = (state.size() - upto).min(tail.len() as u64) as usize;
    state.absorb(upto, &tail[..left]);
    assert_eq!(state.finalize().is_some(), state.upto() == state.size());
}

/// The state directory's files (a journal, and a dataset's receipts) hold any
/// bytes: reading them never panics, and what is read is of the right scope.
pub fn state_files(data: &[u8]) {
    let state = idb_engine::StateDir::new(state_root());
    let server: url::Url = "https://databank.example/".parse().expect("a URL");
    let dataset = idb_engine::DatasetKey::new("IDB-1").expect("a key");
    let journal = state.journal_dir().join(format!("{}.json", "0".repeat(32)));
    let receipts = state.receipts_file(&server, &dataset);
    for file in [&journal, &receipts] {
        std::fs::write(file, data).expect("the state directory is writable");
    }
    if let Ok(unfinished) = state.unfinished(&idb_engine::Scope::default()) {
        assert!(unfinished.len() <= 1);
    }
    if let Ok(receipts) = state.receipts(&server, &dataset) {
        for receipt in receipts {
            assert_eq!(
                (receipt.server.as_str(), receipt.dataset.as_str()),
                (server.as_str(), dataset.as_str())
            );
        }
    }
}

/// One state directory per process, reused by every input.
fn state_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("idb-fuzz-state-{}", std::process::id()));
        for dir in ["journal", "receipts"] {
            std::fs::create_dir_all(root.join(dir)).expect("a temporary directory");
        }
        root
    })
    .clone()
}
