//! Every file of the fuzz corpus (`fuzz/corpus/<target>/`) through its target's
//! function, on stable Rust: an input that once found a bug, or a seed that
//! shows the format, is checked by `cargo test` from then on. The targets'
//! bodies are `fuzz/src/lib.rs`, shared with the libFuzzer binaries.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::path::Path;

#[test]
fn every_corpus_file_passes_its_target() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut replayed = 0;
    for (name, target) in targets::TARGETS {
        let dir = corpus.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("list the corpus").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{name} has no seed in {}", dir.display());
        for file in files {
            let input = std::fs::read(&file).expect("read a corpus file");
            let outcome = std::panic::catch_unwind(|| target(&input));
            assert!(outcome.is_ok(), "{name} fails on {}", file.display());
            replayed += 1;
        }
    }
    assert!(replayed >= targets::TARGETS.len());
    // The state-files target's scratch directory.
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("idb-fuzz-state-{}", std::process::id())),
    );
}
