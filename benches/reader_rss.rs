//! Peak resident memory while a 4 GiB file streams through the reader, against
//! the bounds the reader promises, for the whole process.
//!
//! Two tables:
//! - each way of reading, each chunk dropped as soon as it arrives (8 MiB chunks):
//!   bound `read-ahead + one chunk + 32 MiB`;
//! - the reader as the engine drives it: the consumer keeps the chunks "in flight"
//!   (`window` of them) while it takes the next, under a run memory budget
//!   (`--memory`): at the defaults (64 MiB chunks, the largest the engine adapts
//!   to, one in flight) the bound is 256 MiB for the process; for any setting,
//!   the memory budget plus 64 MiB.
//!
//! `cargo bench --bench reader_rss` prints the tables and writes them to
//! `target/criterion/reader-rss.md`. Linux only: it reads `/proc/self/status`
//! and resets the peak through `/proc/self/clear_refs`.

mod support;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use idb_read::{
    ChunkMemory, ChunkPlan, DEFAULT_READ_AHEAD_BYTES, Delivery, HashState, ReadMode, Reader,
    ReaderConfig, SourceFile,
};

const SIZE: u64 = 4 << 30;
const MIB: u64 = 1 << 20;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Streams the file in `chunk`-byte chunks, keeping the last `window` chunks
/// alive (0: each dropped on arrival), under a run budget of `memory` bytes.
/// (Unlike the engine, whose calls end by themselves, this consumer lets a chunk
/// go only when the next arrives: `memory` must hold `window + 1` chunks.)
/// Returns the peak RSS during the stream and the peak of chunk bytes alive.
fn peak_while_streaming(
    path: &Path,
    mode: ReadMode,
    config: &ReaderConfig,
    chunk: u64,
    window: usize,
    memory: u64,
) -> (u64, u64) {
    // "5" resets the peak (VmHWM) to the current RSS.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let source = SourceFile::open(path, mode).unwrap();
    let memory = ChunkMemory::new(memory);
    let reader = Reader::start(
        &source,
        ChunkPlan::fixed(SIZE, chunk),
        HashState::new(SIZE),
        config,
        &memory,
    );
    let mut in_flight = VecDeque::new();
    loop {
        match reader.next_blocking().unwrap() {
            Delivery::Chunk { chunk, .. } => {
                if window > 0 {
                    if in_flight.len() == window {
                        in_flight.pop_front();
                    }
                    in_flight.push_back(chunk);
                }
            }
            Delivery::End(state) => {
                assert!(state.finalize().is_some());
                break;
            }
        }
    }
    drop(in_flight);
    (status_kib("VmHWM:") * 1024, memory.peak_bytes())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` asks what is here: no criterion benches
    }
    let path = support::data_file("bench-4GiB.bin", SIZE);
    support::warm(&path);
    let baseline = status_kib("VmRSS:") * 1024;
    let mut text = format!(
        "4 GiB file in the page cache; process RSS before streaming {} MiB\n\n",
        baseline / MIB
    );

    let chunk = 8 * MIB;
    let bound = DEFAULT_READ_AHEAD_BYTES + chunk + 32 * MIB;
    text.push_str(&format!(
        "Each chunk dropped on arrival, 8 MiB chunks; bound = read-ahead ({} MiB) + one chunk + 32 MiB = {} MiB\n\n\
         | reader | peak RSS MiB | within bound |\n|---|---|---|\n",
        DEFAULT_READ_AHEAD_BYTES / MIB,
        bound / MIB
    ));
    let cases = [
        ("mmap, pages released on drop", ReadMode::Mmap, true),
        ("mmap, pages kept", ReadMode::Mmap, false),
        ("positional reads", ReadMode::Positional, true),
    ];
    for (name, mode, release_pages) in cases {
        let config = ReaderConfig {
            release_pages,
            ..ReaderConfig::default()
        };
        let (peak, _) = peak_while_streaming(&path, mode, &config, chunk, 0, u64::MAX);
        let within = if peak <= bound { "yes" } else { "no" };
        text.push_str(&format!("| {name} | {} | {within} |\n", peak / MIB));
    }

    text.push_str(
        "\nAs the engine holds chunks: `window` chunks in flight while the next is read; \
         mmap, pages released on drop\n\n\
         | case | chunk MiB | in flight | --memory MiB | peak chunk bytes MiB | peak RSS MiB | bound MiB | within bound |\n\
         |---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    let default_memory = idb_engine::DEFAULT_MEMORY;
    let engine_cases = [
        (
            "defaults, one file, strict server",
            64 * MIB,
            1,
            default_memory,
            256 * MIB,
        ),
        (
            "defaults, offset server (window 4)",
            64 * MIB,
            4,
            default_memory,
            default_memory + 64 * MIB,
        ),
        (
            "256 MiB chunks, the default --memory",
            256 * MIB,
            1,
            default_memory,
            default_memory + 64 * MIB,
        ),
        (
            "8 MiB chunks, window 6, --memory 64MiB",
            8 * MIB,
            6,
            64 * MIB,
            64 * MIB + 64 * MIB,
        ),
    ];
    for (name, chunk, window, memory, bound) in engine_cases {
        assert!(
            memory >= (window as u64 + 1) * chunk,
            "{name}: see peak_while_streaming"
        );
        let (peak, chunks) = peak_while_streaming(
            &path,
            ReadMode::Mmap,
            &ReaderConfig::default(),
            chunk,
            window,
            memory,
        );
        let within = if peak <= bound && chunks <= memory {
            "yes"
        } else {
            "no"
        };
        text.push_str(&format!(
            "| {name} | {} | {window} | {} | {} | {} | {} | {within} |\n",
            chunk / MIB,
            memory / MIB,
            chunks / MIB,
            peak / MIB,
            bound / MIB
        ));
    }
    println!("{text}");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../criterion");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("reader-rss.md"), &text).unwrap();
}
