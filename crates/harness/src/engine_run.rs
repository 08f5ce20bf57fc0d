//! The engine side: an `idb_engine::Uploader` with its settings recorded, retries
//! counted from its events, and every file's hashes checked.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail, ensure};
use idb_engine::{DatasetKey, Event, EventSink, FileOutcome, Token, UploadConfig, Uploader};
use serde::Serialize;

use crate::data::DataFile;

/// The engine settings a side ran with, as recorded in `results.json`.
#[derive(Debug, Clone, Serialize)]
pub struct EngineSettings {
    /// Bytes per transfer call at the start.
    pub chunk_size: u64,
    /// The ceiling of the adaptive chunk size.
    pub max_chunk_size: u64,
    /// Files uploaded at once.
    pub parallel: usize,
    /// Chunks of one file in flight (`None`: the engine chooses by server mode).
    pub window: Option<usize>,
    /// Chunk bytes the run may hold in flight.
    pub memory: u64,
    /// Chunks each reader runs ahead at most.
    pub prefetch: usize,
    /// Bytes each reader runs ahead at most.
    pub read_ahead_bytes: u64,
    /// Whether the resume journal is kept (the CLI always keeps one).
    pub journal: bool,
    /// How files are read (`Auto`: memory-mapped when possible).
    pub read_mode: String,
    /// Attempts per call.
    pub max_attempts: u32,
    /// Seconds without progress before a call is retried.
    pub idle_timeout_s: f64,
}

impl EngineSettings {
    fn of(config: &UploadConfig) -> Self {
        Self {
            chunk_size: config.chunk_size,
            max_chunk_size: config.max_chunk_size,
            parallel: config.parallel,
            window: config.window,
            memory: config.memory,
            prefetch: config.reader.prefetch,
            read_ahead_bytes: config.reader.read_ahead_bytes,
            journal: config.state_dir.is_some(),
            read_mode: format!("{:?}", config.read_mode),
            max_attempts: config.retry.max_attempts,
            idle_timeout_s: config.idle_timeout.as_secs_f64(),
        }
    }
}

/// The engine's configuration for `dataset` on `base`: defaults, then `tweak`.
pub(crate) fn config(
    base: &str,
    dataset: &str,
    token: &str,
    tweak: impl FnOnce(&mut UploadConfig),
) -> anyhow::Result<UploadConfig> {
    let mut config = UploadConfig::new(
        base.parse().context("the mock's URL")?,
        DatasetKey::new(dataset)?,
        Token::new(token)?,
    );
    tweak(&mut config);
    Ok(config)
}

/// The settings `tweak` leads to, for the record (no server needed).
pub(crate) fn settings(tweak: impl FnOnce(&mut UploadConfig)) -> anyhow::Result<EngineSettings> {
    Ok(EngineSettings::of(&config(
        "http://127.0.0.1:9",
        "IDB-SETTINGS",
        "settings",
        tweak,
    )?))
}

/// Counts the engine's retries and realignments.
#[derive(Default)]
struct Counts {
    retries: AtomicU64,
    realigned: AtomicU64,
}

impl EventSink for Counts {
    fn emit(&self, event: Event) {
        match event {
            Event::Retry { .. } => self.retries.fetch_add(1, Ordering::Relaxed),
            Event::Realigned { .. } => self.realigned.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }
}

/// An engine ready to run: built and files checked, so the timed part is the
/// upload alone.
pub(crate) struct Prepared {
    uploader: Uploader,
    files: idb_engine::CheckedFiles,
}

/// What a finished engine run reports.
pub(crate) struct EngineRun {
    pub(crate) retries: u64,
    pub(crate) realigned: u64,
    pub(crate) final_chunk_size: u64,
    pub(crate) peak_chunk_bytes: u64,
}

/// Builds the uploader and checks the files (untimed).
pub(crate) fn prepare(config: UploadConfig, files: &[DataFile]) -> anyhow::Result<Prepared> {
    let uploader = Uploader::new(config).context("cannot build the engine")?;
    let paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    let checked = match uploader.check(&paths) {
        Ok(checked) => checked,
        Err(problems) => bail!(
            "the generated files do not pass the checks: {}",
            problems[0]
        ),
    };
    Ok(Prepared {
        uploader,
        files: checked,
    })
}

/// Uploads; fails unless every file was verified with the expected blake3.
pub(crate) async fn upload(prepared: Prepared, files: &[DataFile]) -> anyhow::Result<EngineRun> {
    let counts = Counts::default();
    let report = prepared.uploader.upload(prepared.files, &counts).await;
    for (line, file) in report.files.iter().zip(files) {
        ensure!(
            line.path == file.path,
            "the engine reported files out of order"
        );
        match &line.outcome {
            FileOutcome::Verified { blake3, receipt } => {
                ensure!(
                    *blake3 == file.blake3,
                    "{}: the engine read different bytes than were generated",
                    file.name
                );
                let receipt = receipt
                    .as_ref()
                    .with_context(|| format!("{}: the mock sent no receipt", file.name))?;
                ensure!(
                    receipt.blake3 == file.blake3 && receipt.size == file.size,
                    "{}: the mock received different bytes",
                    file.name
                );
            }
            other => bail!("{}: the engine did not verify it: {other:?}", file.name),
        }
    }
    ensure!(
        report.files.len() == files.len(),
        "the engine reported {} files of {}",
        report.files.len(),
        files.len()
    );
    Ok(EngineRun {
        retries: counts.retries.load(Ordering::Relaxed),
        realigned: counts.realigned.load(Ordering::Relaxed),
        final_chunk_size: report.final_chunk_size,
        peak_chunk_bytes: report.peak_chunk_bytes,
    })
}
