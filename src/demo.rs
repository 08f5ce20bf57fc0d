//! `idb demo`: the whole path on one machine, with nothing to set up.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use idb_engine::{Cancel, DatasetKey, Token, UploadConfig, Uploader};
use idb_harness::generate_data;
use idb_mock::{DEFAULT_MAX_CHUNK, MockConfig, MockServer};

use crate::cli::DemoArgs;
use crate::console::{Console, Verbosity};
use crate::exit::Exit;
use crate::progress::Progress;
use crate::size::human;
use crate::token::TokenSource;
use crate::upload::summarize;

const DATASET: &str = "IDB-DEMO";
const BLOCK: usize = 1 << 20;

pub async fn run(args: DemoArgs) -> anyhow::Result<Exit> {
    if let Err(error) = args.transfer.check() {
        eprintln!("error: {error:#}");
        return Ok(Exit::BadInput);
    }
    // A fresh random token, as a real dataset would have; it is never shown.
    let token = format!("demo{:032x}", rand::random::<u128>());
    let mock = MockConfig::new()
        .dataset(DATASET, &token)
        .latency(Duration::from_millis(args.latency_ms))
        .max_chunk(args.transfer.max_chunk().max(DEFAULT_MAX_CHUNK));
    let server = MockServer::start(mock).await?;
    eprintln!("mock Data Bank listening on {}", server.url());

    let dir = tempfile::Builder::new().prefix("idb-demo-").tempdir()?;
    let dir_path = dir.path().to_path_buf();
    eprintln!("generating a {} test file", human(args.size));
    let size = args.size;
    let data =
        tokio::task::spawn_blocking(move || generate_data(&dir_path, "demo.bin", size, "demo"))
            .await??;
    let path = data.path;

    let config = UploadConfig::new(
        server.url().parse()?,
        DatasetKey::new(DATASET)?,
        Token::new(&token)?,
    );
    let uploader = Uploader::new(args.transfer.apply(config))?;
    let files = match uploader.check(std::slice::from_ref(&path)) {
        Ok(files) => files,
        Err(problems) => bail!("the generated file is unusable: {}", problems[0]),
    };
    let console = Arc::new(Console::new(Verbosity::Normal, false, Cancel::new()));
    let progress = Progress::new(Arc::clone(&console), files.len(), args.size);
    let started = Instant::now();
    let report = uploader.upload(files, &progress).await;
    let elapsed = started.elapsed();
    progress.finish();
    let exit = summarize(&report, &progress.tally(), &TokenSource::Env, &console);
    if exit != Exit::Success {
        return Ok(exit);
    }

    let stored = server
        .stored_file(DATASET, "demo.bin")
        .context("the mock has no stored copy")?;
    let identical = tokio::task::spawn_blocking(move || same_contents(&path, &stored)).await??;
    server.shutdown().await;
    if !identical {
        bail!("the server's copy differs from the file sent");
    }
    let seconds = elapsed.as_secs_f64();
    println!(
        "uploaded {} in {seconds:.2} s ({}/s) with {} chunks; the server's copy is byte-identical",
        human(args.size),
        human((args.size as f64 / seconds.max(1e-9)) as u64),
        human(args.transfer.chunk_size),
    );
    Ok(Exit::Success)
}

fn same_contents(a: &Path, b: &Path) -> anyhow::Result<bool> {
    let (mut a, mut b) = (File::open(a)?, File::open(b)?);
    if a.metadata()?.len() != b.metadata()?.len() {
        return Ok(false);
    }
    let (mut x, mut y) = (vec![0u8; BLOCK], vec![0u8; BLOCK]);
    loop {
        let n = a.read(&mut x)?;
        if n == 0 {
            return Ok(true);
        }
        b.read_exact(&mut y[..n])?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
    }
}
