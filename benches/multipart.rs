//! Multipart bodies, both ends: building a `transfer` body around a chunk (the
//! engine, per call: the chunk is the middle segment, never copied) and parsing
//! one as it arrives in 64 KiB reads (the mock, per call: the boundary search
//! over the payload); and parsing a chunk of random bytes handed over as the
//! mock gets them from hyper, 256 KiB reads that are not copied (the search is
//! then all of the parser's work).
//!
//! `cargo bench --bench multipart`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use idb_wire::{Boundary, MultipartEvent, MultipartParser, transfer_body};

/// The engine's starting chunk size.
const CHUNK: usize = 8 << 20;

/// What one socket read hands the parser.
const READ: usize = 64 << 10;

/// What one read of hyper's hands the mock, about.
const HYPER_READ: usize = 256 << 10;

fn benches(c: &mut Criterion) {
    let boundary = Boundary::from_random(0x1db_b0d1);
    let chunk = Bytes::from(vec![0x5au8; CHUNK]);

    let mut group = c.benchmark_group("multipart-8MiB");
    group.throughput(Throughput::Bytes(CHUNK as u64));
    group.bench_function("build", |b| {
        b.iter(|| {
            let body = transfer_body(&boundary, "data.h5", 1 << 30, black_box(chunk.clone()));
            black_box(body.into_segments())
        })
    });
    let body: Vec<u8> = transfer_body(&boundary, "data.h5", 1 << 30, chunk.clone())
        .into_segments()
        .concat();
    group.bench_function("parse", |b| {
        b.iter(|| {
            let mut parser = MultipartParser::new(boundary.as_str());
            let mut payload = 0usize;
            for piece in body.chunks(READ) {
                parser.push(piece);
                while let Some(event) = parser.next_event().unwrap() {
                    if let MultipartEvent::Data(bytes) = event {
                        payload += bytes.len();
                    }
                }
            }
            parser.finish().unwrap();
            black_box(payload)
        })
    });
    let random = Bytes::from(random_bytes(CHUNK));
    let body = Bytes::from(
        transfer_body(&boundary, "data.h5", 1 << 30, random)
            .into_segments()
            .concat(),
    );
    group.bench_function("parse-random-uncopied", |b| {
        b.iter(|| {
            let mut parser = MultipartParser::new(boundary.as_str());
            let mut payload = 0usize;
            let mut at = 0;
            while at < body.len() {
                let end = (at + HYPER_READ).min(body.len());
                parser.push_bytes(body.slice(at..end));
                at = end;
                while let Some(event) = parser.next_event().unwrap() {
                    if let MultipartEvent::Data(bytes) = event {
                        payload += bytes.len();
                    }
                }
            }
            parser.finish().unwrap();
            black_box(payload)
        })
    });
    group.finish();
}

/// Bytes no search can skip by their value alone (a xorshift sequence).
fn random_bytes(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
