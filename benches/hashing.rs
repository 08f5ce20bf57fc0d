//! Chunk hashing: blake3 of one chunk at the sizes the engine sends (what the
//! reader's hashing thread and the mock do per chunk), and the whole-file state
//! the engine keeps across chunks (`HashState`, which the resume journal saves).
//!
//! And the tus `Upload-Checksum` algorithms the engine can send (crc32fast's
//! crc32, ring's sha1 and sha2), which decide its preference: the cheapest
//! first.
//!
//! `cargo bench --bench hashing`.

use std::hint::black_box;

use criterion::{Criterion, Throughput};
use idb_read::HashState;

const MIB: usize = 1 << 20;

fn benches(c: &mut Criterion) {
    let data = vec![0xa5u8; 64 * MIB];

    let mut group = c.benchmark_group("blake3-chunk");
    for size in [2 * MIB, 8 * MIB, 64 * MIB] {
        group.throughput(Throughput::Bytes(size as u64));
        group.sample_size(if size > 8 * MIB { 20 } else { 50 });
        group.bench_function(format!("{}MiB", size / MIB), |b| {
            b.iter(|| blake3::hash(black_box(&data[..size])))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("hash-state-64MiB");
    group
        .throughput(Throughput::Bytes(data.len() as u64))
        .sample_size(20);
    for chunk in [2 * MIB, 8 * MIB] {
        group.bench_function(format!("in-{}MiB-chunks", chunk / MIB), |b| {
            b.iter(|| {
                let mut state = HashState::new(data.len() as u64);
                for (i, piece) in data.chunks(chunk).enumerate() {
                    state.absorb((i * chunk) as u64, black_box(piece));
                }
                state.finalize().expect("the whole file was absorbed")
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("tus-checksum-8MiB");
    group
        .throughput(Throughput::Bytes(8 * MIB as u64))
        .sample_size(20);
    for (name, algorithm) in [
        ("sha1", &ring::digest::SHA1_FOR_LEGACY_USE_ONLY),
        ("sha256", &ring::digest::SHA256),
        ("sha384", &ring::digest::SHA384),
        ("sha512", &ring::digest::SHA512),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| ring::digest::digest(algorithm, black_box(&data[..8 * MIB])))
        });
    }
    group.bench_function("crc32", |b| {
        b.iter(|| crc32fast::hash(black_box(&data[..8 * MIB])))
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
