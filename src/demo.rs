//! `idb demo`: the whole path on one machine, with nothing to set up.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use idb_engine::{Cancel, DatasetKey, Protocol, Token, UploadConfig, Uploader};
use idb_harness::generate_data_until;
use idb_mock::{DEFAULT_MAX_CHUNK, MockConfig, MockServer};

use crate::cli::DemoArgs;
use crate::console::{Console, Verbosity};
use crate::exit::Exit;
use crate::progress::Progress;
use crate::signals::{Signals, Stop};
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
    for note in args.transfer.unused() {
        eprintln!("{note}");
    }
    if args.transfer.protocol == Protocol::Auto && args.transfer.tus_given() {
        eprintln!(
            "note: the demo's mock serves tus only with --protocol tus; without it the tus \
             options do nothing"
        );
    }
    let cancel = Cancel::new();
    // The generation of the file stops on this.
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = Signals::install();
    let mut demo = std::pin::pin!(demo(&args, &cancel, &stop));
    let stopped = tokio::select! {
        exit = &mut demo => return exit,
        stop = signals.next() => Exit::Signal(stop),
        () = crate::console::stdout_gone() => Exit::OutputClosed,
    };
    let why = match stopped {
        Exit::Signal(Stop::Interrupt) => "by Ctrl-C",
        Exit::Signal(Stop::Terminate) => "by SIGTERM",
        Exit::Signal(Stop::Hangup) => "by SIGHUP",
        _ => "as standard output was closed",
    };
    eprintln!(
        "stopping {why}: removing the demo's file and the mock's store (a second Ctrl-C or \
         SIGTERM quits at once)"
    );
    cancel.cancel();
    stop.store(true, Ordering::Relaxed);
    tokio::select! {
        _ = &mut demo => {}
        second = signals.second() => {
            eprintln!(
                "quit at once: idb-demo-* and idb-mock-* directories may be left in {}",
                std::env::temp_dir().display()
            );
            std::process::exit(i32::from(second.exit_code()));
        }
    }
    eprintln!("stopped {why}; the demo's temporary data was removed");
    Ok(stopped)
}

/// The demo until it ends, or until `cancel` (the upload) and `stop` (the
/// file's generation) tell it to; what it made is removed when it returns.
async fn demo(args: &DemoArgs, cancel: &Cancel, stop: &Arc<AtomicBool>) -> anyhow::Result<Exit> {
    // A fresh random token, as a real dataset would have; it is never shown.
    let token = format!("demo{:032x}", rand::random::<u128>());
    let mock = MockConfig::new()
        .dataset(DATASET, &token)
        .latency(Duration::from_millis(args.latency_ms))
        .max_chunk(args.transfer.max_chunk().max(DEFAULT_MAX_CHUNK))
        .tus(args.transfer.protocol == Protocol::Tus);
    let server = MockServer::start(mock).await?;
    let config = UploadConfig::new(
        server.url().parse()?,
        DatasetKey::new(DATASET)?,
        Token::new(&token)?,
    );
    // Checked before the file is made: a wrong option is said at once.
    let uploader = match Uploader::new(args.transfer.apply(config)) {
        Ok(uploader) => uploader,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(Exit::BadInput);
        }
    };
    eprintln!("mock Data Bank listening on {}", server.url());

    let dir = tempfile::Builder::new().prefix("idb-demo-").tempdir()?;
    let dir_path = dir.path().to_path_buf();
    eprintln!("generating a {} test file", human(args.size));
    let size = args.size;
    let stopping = Arc::clone(stop);
    let generated = tokio::task::spawn_blocking(move || {
        generate_data_until(&dir_path, "demo.bin", size, "demo", &stopping)
    })
    .await??;
    let Some(data) = generated else {
        return Ok(Exit::Success);
    };
    let path = data.path;

    let files = match uploader.check(std::slice::from_ref(&path)) {
        Ok(files) => files,
        Err(problems) => bail!("the generated file is unusable: {}", problems[0]),
    };
    let console = Arc::new(Console::new(Verbosity::Normal, false, cancel.clone()).starting_over());
    let progress = Progress::new(Arc::clone(&console), files.len(), args.size);
    let started = Instant::now();
    let report = uploader.upload_until(files, &progress, cancel).await;
    let elapsed = started.elapsed();
    progress.finish();
    if console.stdout_closed() {
        return Ok(Exit::OutputClosed);
    }
    if cancel.is_cancelled() {
        // Stopped by a signal: said by the caller (no resume hints: a demo
        // starts over).
        return Ok(Exit::Success);
    }
    let exit = summarize(&report, &progress.tally(), &TokenSource::Env, &console);
    if exit != Exit::Success {
        return Ok(exit);
    }

    let stored = server
        .stored_file(DATASET, "demo.bin")
        .context("the mock has no stored copy")?;
    let comparing = Arc::clone(stop);
    let identical =
        tokio::task::spawn_blocking(move || same_contents(&path, &stored, &comparing)).await??;
    server.shutdown().await;
    match identical {
        // Stopped meanwhile: said by the caller.
        None => return Ok(Exit::Success),
        Some(false) => bail!("the server's copy differs from the file sent"),
        Some(true) => {}
    }
    if stop.load(Ordering::Relaxed) {
        return Ok(Exit::Success);
    }
    let seconds = elapsed.as_secs_f64();
    let how = match (args.transfer.chunk_size, report.final_chunk_size) {
        // No chunk was sent, whatever the sizes were set to.
        _ if args.size == 0 => "(an empty file: no chunk to send)".to_owned(),
        (first, last) if last == 0 || last == first => format!("with {} chunks", human(first)),
        (first, last) => format!("with chunks of {} growing to {}", human(first), human(last)),
    };
    let rate = match args.size {
        0 => String::new(),
        size => format!("({}/s) ", human((size as f64 / seconds.max(1e-9)) as u64)),
    };
    let line = format!(
        "uploaded {} in {seconds:.2} s {rate}{how}; the server's copy is byte-identical\n",
        human(args.size),
    );
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(line.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(Exit::Success),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Exit::OutputClosed),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to standard output")),
    }
}

/// Whether `a` and `b` hold the same bytes; `None` when told to stop first.
fn same_contents(a: &Path, b: &Path, stop: &AtomicBool) -> anyhow::Result<Option<bool>> {
    let (mut a, mut b) = (File::open(a)?, File::open(b)?);
    if a.metadata()?.len() != b.metadata()?.len() {
        return Ok(Some(false));
    }
    let (mut x, mut y) = (vec![0u8; BLOCK], vec![0u8; BLOCK]);
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let n = a.read(&mut x)?;
        if n == 0 {
            return Ok(Some(true));
        }
        b.read_exact(&mut y[..n])?;
        if x[..n] != y[..n] {
            return Ok(Some(false));
        }
    }
}
