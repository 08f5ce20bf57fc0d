//! Reader throughput over a 1 GiB file in the page cache, against a plain
//! sequential `read()` loop of the same file, in the same run.
//!
//! `cargo bench --bench reader` prints the criterion estimates, then a table of
//! ratios (reader / read loop) and writes it to `target/criterion/reader-summary.md`.
//!
//! Fairness: every variant touches every 4 KiB page of the file once (the read loop
//! by copying, the mapped reader through a one-byte-per-page probe, as the kernel's
//! send would), and the hashing variants hash every byte once.

mod support;

use std::fs::File;
use std::hint::black_box;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, Throughput};
use idb_read::{
    ChunkMemory, ChunkPlan, Delivery, HashState, ReadMode, Reader, ReaderConfig, SourceFile,
};

const SIZE: u64 = 1 << 30;
const CHUNK: u64 = 8 << 20;
const PAGE: usize = 4096;
const GROUP: &str = "read-1GiB";

fn probe(bytes: &[u8]) -> u8 {
    bytes.iter().step_by(PAGE).fold(0, |acc, b| acc ^ b)
}

fn read_loop(path: &Path, hash: bool) -> u8 {
    let mut file = File::open(path).unwrap();
    let mut buf = vec![0u8; CHUNK as usize];
    let mut hasher = blake3::Hasher::new();
    let mut acc = 0;
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        acc ^= probe(&buf[..n]);
        if hash {
            hasher.update(&buf[..n]);
        }
    }
    black_box(hasher.finalize());
    acc
}

fn reader(path: &Path, mode: ReadMode, hash: bool) -> u8 {
    let source = SourceFile::open(path, mode).unwrap();
    let config = ReaderConfig {
        file_hash: hash,
        ..ReaderConfig::default()
    };
    let reader = Reader::start(
        &source,
        ChunkPlan::fixed(SIZE, CHUNK),
        HashState::new(SIZE),
        &config,
        &ChunkMemory::new(idb_engine::DEFAULT_MEMORY),
    );
    let mut acc = 0;
    loop {
        match reader.next_blocking().unwrap() {
            Delivery::Chunk { chunk, .. } => acc ^= probe(&chunk.bytes),
            Delivery::End(state) => {
                black_box(state.finalize());
                return acc;
            }
        }
    }
}

const VARIANTS: [(&str, Option<ReadMode>, bool); 6] = [
    ("read-loop", None, false),
    ("reader-mmap", Some(ReadMode::Mmap), false),
    ("reader-pread", Some(ReadMode::Positional), false),
    ("read-loop+blake3", None, true),
    ("reader-mmap+blake3", Some(ReadMode::Mmap), true),
    ("reader-pread+blake3", Some(ReadMode::Positional), true),
];

fn bench(c: &mut Criterion, path: &Path) {
    let mut group = c.benchmark_group(GROUP);
    group
        .throughput(Throughput::Bytes(SIZE))
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    for (name, mode, hash) in VARIANTS {
        group.bench_function(name, |b| {
            b.iter(|| match mode {
                None => read_loop(path, hash),
                Some(mode) => reader(path, mode, hash),
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("blake3-64MiB");
    let buf = vec![0x5au8; 64 << 20];
    group
        .throughput(Throughput::Bytes(buf.len() as u64))
        .sample_size(20);
    group.bench_function("one-core", |b| b.iter(|| blake3::hash(black_box(&buf))));
    group.finish();
}

/// The mean time of one benchmark, from criterion's saved estimate.
fn mean_ns(out: &Path, group: &str, name: &str) -> f64 {
    let file = out.join(group).join(name).join("new/estimates.json");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["mean"]["point_estimate"].as_f64().unwrap()
}

fn summary(out: &Path) -> String {
    let gib_s = |ns: f64, bytes: u64| bytes as f64 / (1u64 << 30) as f64 / (ns / 1e9);
    let mut text =
        String::from("| variant | GiB/s | vs read loop (same hashing) |\n|---|---|---|\n");
    for (name, mode, hash) in VARIANTS {
        let ns = mean_ns(out, GROUP, name);
        let base = mean_ns(
            out,
            GROUP,
            if hash {
                "read-loop+blake3"
            } else {
                "read-loop"
            },
        );
        let ratio = if mode.is_none() {
            "1.00x (baseline)".to_owned()
        } else {
            format!("{:.2}x", base / ns)
        };
        text.push_str(&format!("| {name} | {:.2} | {ratio} |\n", gib_s(ns, SIZE)));
    }
    let hash_ns = mean_ns(out, "blake3-64MiB", "one-core");
    text.push_str(&format!(
        "\nblake3 on one core: {:.2} GiB/s\n",
        gib_s(hash_ns, 64 << 20)
    ));
    text
}

fn main() {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../criterion");
    let mut c = Criterion::default()
        .output_directory(&out)
        .configure_from_args();
    let path = support::data_file("bench-1GiB.bin", SIZE);
    support::warm(&path);
    bench(&mut c, &path);
    c.final_summary();
    // `cargo bench -- <filter>` runs part of the set; only a full run has a summary.
    if VARIANTS.iter().all(|(name, ..)| {
        out.join(GROUP)
            .join(name)
            .join("new/estimates.json")
            .exists()
    }) {
        let text = summary(&out);
        println!("\n{text}");
        std::fs::write(out.join("reader-summary.md"), &text).unwrap();
    }
}
