//! The whole pipeline on one machine: the engine (reader, hashing, HTTP client)
//! uploading a 256 MiB file from the page cache to an in-process mock in sink
//! mode (which parses and hashes every byte, keeping none), no latency. What it
//! measures is CPU and memory bandwidth: client and mock share the machine's
//! cores. `idb bench` measures the same path against ceilings and over latency;
//! this is the quick number to watch while changing the engine.
//!
//! `cargo bench --bench pipeline`.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use idb_engine::{DatasetKey, NoEvents, Token, UploadConfig, Uploader};
use idb_mock::{MockConfig, MockServer, Storage};

const SIZE: u64 = 256 << 20;
const DATASET: &str = "IDB-PIPELINE";
const TOKEN: &str = "pipeline-token";

/// What a variant changes in the engine's defaults.
type Tweak = fn(&mut UploadConfig);

/// Uploads `path` under a new name (a hard link: the mock refuses a name it has
/// verified) and returns the time of the upload alone.
fn upload_once(
    runtime: &tokio::runtime::Runtime,
    url: &str,
    links: &Path,
    source: &Path,
    n: u64,
    tweak: Tweak,
) -> Duration {
    let link: PathBuf = links.join(format!("pipeline-{n}.bin"));
    std::fs::hard_link(source, &link).expect("link the data file");
    let mut config = UploadConfig::new(
        url.parse().unwrap(),
        DatasetKey::new(DATASET).unwrap(),
        Token::new(TOKEN).unwrap(),
    );
    tweak(&mut config);
    let uploader = Uploader::new(config).expect("build the engine");
    let files = uploader
        .check(std::slice::from_ref(&link))
        .expect("the file checks");
    let started = Instant::now();
    let report = runtime.block_on(uploader.upload(files, &NoEvents));
    let took = started.elapsed();
    assert!(report.all_verified(), "{report:?}");
    std::fs::remove_file(&link).unwrap();
    took
}

fn main() {
    let source = support::data_file("pipeline-256MiB.bin", SIZE);
    support::warm(&source);
    let links = tempfile::tempdir_in(source.parent().unwrap()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mock = runtime
        .block_on(MockServer::start(
            MockConfig::new()
                .storage(Storage::Sink)
                .dataset(DATASET, TOKEN),
        ))
        .expect("start the mock");
    let url = mock.url();
    let mut c = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(15))
        .configure_from_args();
    let mut group = c.benchmark_group("pipeline-256MiB");
    group.throughput(Throughput::Bytes(SIZE));
    let variants: [(&str, Tweak); 2] = [
        ("engine-defaults", |_| {}),
        ("engine-fixed-8MiB", |c| {
            *c = c.clone().fixed_chunk_size(8 << 20)
        }),
    ];
    let mut n = 0;
    for (name, tweak) in variants {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        n += 1;
                        upload_once(&runtime, &url, links.path(), &source, n, tweak)
                    })
                    .sum()
            })
        });
    }
    group.finish();
    runtime.block_on(mock.shutdown());
    c.final_summary();
}
