//! What every engine test needs: seeded data, files, a quick configuration, the
//! ways of reading a file (each test runs over all of them), and checks of what
//! the mock server holds.
#![allow(dead_code)] // each test binary uses its own part of it

use std::path::{Path, PathBuf};
use std::time::Duration;

use idb_engine::{
    DatasetKey, Error, Event, EventSink, FileOutcome, ReadMode, Report, RetryPolicy, Token,
    UploadConfig, Uploader,
};
use idb_mock::{MockConfig, MockServer, WriteMode};

pub mod raw_server;

pub const DS: &str = "IDB-E1";
pub const TOKEN: &str = "engine-token";

/// `len` seeded pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0; len];
    blake3::Hasher::new_derive_key("idb engine tests")
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `file-<i>.bin` of each size, seeded from `seed`.
pub fn write_files(dir: &Path, sizes: &[usize], seed: u64) -> Vec<(PathBuf, Vec<u8>)> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let bytes = data(n, seed + i as u64);
            (write(dir, &format!("file-{i}.bin"), &bytes), bytes)
        })
        .collect()
}

pub fn paths(files: &[(PathBuf, Vec<u8>)]) -> Vec<PathBuf> {
    files.iter().map(|(p, _)| p.clone()).collect()
}

pub fn name(path: &Path) -> &str {
    path.file_name().unwrap().to_str().unwrap()
}

/// A way the engine reads files. Every test runs over each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Memory maps and reader threads, even for small files.
    Mapped,
    /// Positional reads and reader threads, even for small files.
    Positional,
    /// What the CLI does: small files read in place, others mapped.
    Default,
}

pub const READS: [Read; 3] = [Read::Mapped, Read::Positional, Read::Default];

impl Read {
    pub fn apply(self, config: &mut UploadConfig) {
        match self {
            Read::Mapped => {
                config.read_mode = ReadMode::Mmap;
                config.reader.in_place_max = 0;
            }
            Read::Positional => {
                config.read_mode = ReadMode::Positional;
                config.reader.in_place_max = 0;
            }
            Read::Default => {}
        }
    }
}

/// Fixed chunks of `chunk` bytes, quick retries (the faults are many), a short
/// idle timeout (stalls end fast), a fixed jitter seed, files read as `read` says.
pub fn config(server: &MockServer, chunk: u64, read: Read) -> UploadConfig {
    let mut config = UploadConfig::new(
        server.url().parse().unwrap(),
        DatasetKey::new(DS).unwrap(),
        Token::new(TOKEN).unwrap(),
    )
    .fixed_chunk_size(chunk);
    quick(&mut config);
    read.apply(&mut config);
    config
}

/// Quick retries (the faults are many), a short idle timeout (stalls end
/// fast), a fixed jitter seed, and protocol 1 (these tests script or count
/// its calls; choosing a protocol is tested with the CLI's).
pub fn quick(config: &mut UploadConfig) {
    config.protocol = idb_engine::Protocol::Chunked;
    config.idle_timeout = Duration::from_millis(300);
    config.retry = RetryPolicy {
        max_attempts: 60,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(10),
        deadline: Duration::from_secs(120),
        seed: Some(7),
    };
}

pub async fn upload(config: UploadConfig, paths: &[PathBuf], events: &dyn EventSink) -> Report {
    let uploader = Uploader::new(config).unwrap();
    let files = uploader.check(paths).expect("the files pass the checks");
    uploader.upload(files, events).await
}

/// An event sink that expires every token of `server` once `n` chunks are
/// acknowledged: the run stops on the next call's 401.
pub fn expire_tokens_after(server: &MockServer, n: usize) -> impl Fn(Event) + Sync + '_ {
    let acks = std::sync::atomic::AtomicUsize::new(0);
    move |e| {
        if let Event::ChunkAcked { .. } = e
            && acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == n
        {
            server.expire_tokens();
        }
    }
}

/// A mock with [`DS`] and [`TOKEN`] in `mode`.
pub fn mock(mode: WriteMode) -> MockConfig {
    MockConfig::new().dataset(DS, TOKEN).mode(mode)
}

/// Every file verified, and the server's copy is exactly the local bytes.
pub fn assert_exact(server: &MockServer, report: &Report, files: &[(PathBuf, Vec<u8>)]) {
    assert!(report.all_verified(), "{report:#?}");
    for (path, bytes) in files {
        let stored = server.stored_file(DS, name(path)).expect("stored");
        assert!(
            std::fs::read(stored).unwrap() == *bytes,
            "{} differs",
            path.display()
        );
    }
}

/// In strict mode the server accepted each file's chunks in order, with no gap
/// and no overlap: each new chunk starts where the accepted bytes end.
pub fn assert_strictly_ordered(server: &MockServer, files: &[(PathBuf, Vec<u8>)]) {
    for (path, bytes) in files {
        let mut end = 0;
        for (offset, len) in server.accepted(DS, name(path)) {
            assert_eq!(
                offset,
                end,
                "{}: gap or overlap at {offset}",
                path.display()
            );
            end = offset + len;
        }
        assert_eq!(end, bytes.len() as u64, "{}", path.display());
    }
}

/// The error file `index` failed with.
pub fn failure(report: &Report, index: usize) -> &Error {
    match &report.files[index].outcome {
        FileOutcome::Failed(error) => error,
        other => panic!("file {index} should have failed, got {other:?}"),
    }
}

/// A runtime with two workers, for tests that are plain functions (proptest).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
