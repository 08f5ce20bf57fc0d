//! Peak resident memory while a 4 GiB file streams through the reader and each
//! chunk is dropped as soon as it arrives, for each way of reading, against the
//! bound `prefetch x chunk + 32 MiB`.
//!
//! `cargo bench --bench reader_rss` prints a table and writes it to
//! `target/criterion/reader-rss.md`. Linux only: it reads `/proc/self/status`
//! and resets the peak through `/proc/self/clear_refs`.

mod support;

use std::path::{Path, PathBuf};

use idb_read::{ChunkPlan, HashState, ReadMode, Reader, ReaderConfig, SourceFile};

const SIZE: u64 = 4 << 30;
const CHUNK: u64 = 8 << 20;
const MIB: u64 = 1 << 20;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Streams the file and returns the peak RSS during the stream, in bytes.
fn peak_while_streaming(path: &Path, mode: ReadMode, config: &ReaderConfig) -> u64 {
    // "5" resets the peak (VmHWM) to the current RSS.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let source = SourceFile::open(path, mode).unwrap();
    let reader = Reader::spawn(
        &source,
        ChunkPlan::fixed(SIZE, CHUNK),
        HashState::new(),
        config,
    );
    while let Some(chunk) = reader.recv() {
        drop(chunk.unwrap());
    }
    assert!(reader.finish().finalize(SIZE).is_some());
    status_kib("VmHWM:") * 1024
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` asks what is here: no criterion benches
    }
    let path = support::data_file("bench-4GiB.bin", SIZE);
    support::warm(&path);
    let baseline = status_kib("VmRSS:") * 1024;
    let prefetch = ReaderConfig::default().prefetch as u64;
    // The target, for the whole process: nothing added for the baseline.
    let bound = prefetch * CHUNK + 32 * MIB;
    let cases = [
        ("mmap, pages released on drop", ReadMode::Mmap, true),
        ("mmap, pages kept", ReadMode::Mmap, false),
        ("positional reads", ReadMode::Positional, true),
    ];
    let mut text = format!(
        "4 GiB file, 8 MiB chunks, prefetch {prefetch}; process RSS before streaming {} MiB; \
         bound = prefetch x chunk + 32 MiB = {} MiB\n\n| reader | peak RSS MiB | within bound |\n|---|---|---|\n",
        baseline / MIB,
        bound / MIB
    );
    for (name, mode, release_pages) in cases {
        let config = ReaderConfig {
            release_pages,
            ..ReaderConfig::default()
        };
        let peak = peak_while_streaming(&path, mode, &config);
        let within = if peak <= bound { "yes" } else { "no" };
        text.push_str(&format!("| {name} | {} | {within} |\n", peak / MIB));
    }
    println!("{text}");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../criterion");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("reader-rss.md"), &text).unwrap();
}
