//! The engine side: an `idb_engine::Uploader` with the CLI's defaults, its
//! settings recorded, its acknowledgements and retries taken from its events, its
//! calls' times from its log, and every file's hashes checked.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail, ensure};
use idb_engine::{
    DatasetKey, Error, Event, EventSink, FileOutcome, Protocol, Token, UploadConfig, Uploader,
    VerifyReceipt,
};
use serde::Serialize;

use crate::call_log;
use crate::calls::TokenRefused;
use crate::data::Upload;
use crate::timeline::Timeline;
use crate::{EngineDefaults, ProgressSink};

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
    /// Whether the resume journal is kept, in a fresh temporary state directory
    /// per repetition (the CLI always keeps one).
    pub journal: bool,
    /// How often, at most, the journal is written, seconds.
    pub journal_interval_s: f64,
    /// How files are read (`Auto`: memory-mapped when possible).
    pub read_mode: String,
    /// Attempts per call.
    pub max_attempts: u32,
    /// Seconds without progress before a call is retried.
    pub idle_timeout_s: f64,
    /// The protocol asked for: `auto` (tus when the server serves it),
    /// `chunked` or `tus`.
    pub protocol: String,
    /// tus: whether a file goes as partial uploads in parallel, joined at the
    /// end, when the server serves concatenation.
    pub tus_concat: bool,
    /// tus: whether PATCH bodies carry `Upload-Checksum` when the server
    /// serves the checksum extension.
    pub tus_checksum: bool,
    /// tus: the part size PATCH bodies are whole multiples of (`None`: the
    /// service's rule, `max(5 MiB, ceil(size / 10000))`).
    pub tus_part_size: Option<u64>,
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
            journal_interval_s: config.journal_interval.as_secs_f64(),
            read_mode: format!("{:?}", config.read_mode),
            max_attempts: config.retry.max_attempts,
            idle_timeout_s: config.idle_timeout.as_secs_f64(),
            protocol: config.protocol.as_str().to_owned(),
            tus_concat: config.tus_concat,
            tus_checksum: config.tus_checksum,
            tus_part_size: config.tus_part_size,
        }
    }
}

/// The engine's configuration for `dataset` on `base`: the library's defaults,
/// then the CLI's (`defaults`), then `tweak` (what a side varies on purpose).
pub(crate) fn config(
    base: &str,
    dataset: &str,
    token: Token,
    defaults: &EngineDefaults,
    tweak: &dyn Fn(&mut UploadConfig),
) -> anyhow::Result<UploadConfig> {
    let mut config = UploadConfig::new(
        base.parse().context("the server's URL")?,
        DatasetKey::new(dataset)?,
        token,
    );
    defaults.apply(&mut config);
    // A run stopped from outside (BenchConfig::cancel) stops its engine at
    // once: what calls in flight carried is not measured anyway.
    config.cancel_grace = std::time::Duration::ZERO;
    tweak(&mut config);
    Ok(config)
}

/// The settings a side runs with, for the record (no server needed); `journal`
/// says whether it keeps a state directory.
pub(crate) fn settings(
    defaults: &EngineDefaults,
    tweak: &dyn Fn(&mut UploadConfig),
    journal: bool,
) -> anyhow::Result<EngineSettings> {
    let mut settings = EngineSettings::of(&config(
        "http://127.0.0.1:9",
        "IDB-SETTINGS",
        Token::new("settings")?,
        defaults,
        tweak,
    )?);
    settings.journal = journal;
    Ok(settings)
}

/// Feeds the engine's events to a side's timeline, counts retries and
/// realignments, and keeps the protocol the run chose.
struct Watcher<'a> {
    timeline: &'a Timeline,
    /// Where each retry is told as it happens (a far end that stops
    /// answering is retried for minutes), and what the run is called there.
    progress: (&'a dyn ProgressSink, &'a str),
    retries: AtomicU64,
    realigned: AtomicU64,
    /// The protocol of the run's `ProtocolChosen` event (sent once, before
    /// any file; none when `chunked` was asked for). Held only to set or read.
    chosen: Mutex<Option<Protocol>>,
}

impl EventSink for Watcher<'_> {
    fn emit(&self, event: Event) {
        match event {
            Event::FileStarted { .. } => self.timeline.setup_answered(),
            Event::ChunkAcked { len, .. } => self.timeline.acked(len),
            Event::Retry { ref path, .. } => {
                self.retries.fetch_add(1, Ordering::Relaxed);
                let (progress, what) = self.progress;
                let name = path.file_name().unwrap_or(path.as_os_str());
                if let Some(note) = event.retry_note(&name.to_string_lossy()) {
                    progress.note(&format!("{what}: {note}"));
                }
            }
            Event::Realigned { .. } => {
                self.realigned.fetch_add(1, Ordering::Relaxed);
            }
            Event::ProtocolChosen { protocol, .. } => {
                *self.chosen.lock().unwrap_or_else(|e| e.into_inner()) = Some(protocol);
            }
            _ => {}
        }
    }
}

/// An engine ready to run: built and files checked, so the timed part is the
/// upload alone.
pub(crate) struct Prepared {
    uploader: Uploader,
    files: idb_engine::CheckedFiles,
    /// The protocol asked for.
    protocol: Protocol,
}

/// What a finished engine run reports.
pub(crate) struct EngineRun {
    pub(crate) retries: u64,
    pub(crate) realigned: u64,
    pub(crate) final_chunk_size: u64,
    /// The engine's own time of every call (`None`: not recordable here).
    pub(crate) calls_ms: Option<Vec<f64>>,
    /// The protocol it spoke (`None`: it never chose, having sent nothing).
    pub(crate) protocol: Option<Protocol>,
}

/// Builds the uploader and checks the files (untimed).
pub(crate) fn prepare(config: UploadConfig, files: &[Upload]) -> anyhow::Result<Prepared> {
    let protocol = config.protocol;
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
        protocol,
    })
}

/// Uploads, recording on `timeline`; fails unless every file was verified with
/// the expected blake3, by the engine's reading and by the server's receipt.
pub(crate) async fn upload(
    prepared: Prepared,
    files: &[Upload],
    timeline: &Timeline,
    (progress, cancel): ((&dyn ProgressSink, &str), &idb_engine::Cancel),
) -> anyhow::Result<EngineRun> {
    let watcher = Watcher {
        timeline,
        progress,
        retries: AtomicU64::new(0),
        realigned: AtomicU64::new(0),
        chosen: Mutex::new(None),
    };
    let watch = call_log::watch(files.iter().map(|f| f.name.clone()));
    let prepared_protocol = prepared.protocol;
    let report = prepared
        .uploader
        .upload_until(prepared.files, &watcher, cancel)
        .await;
    if cancel.is_cancelled() {
        bail!(crate::STOPPED);
    }
    let calls_ms = watch.finish();
    ensure!(
        report.files.len() == files.len(),
        "the engine reported {} files of {}",
        report.files.len(),
        files.len()
    );
    // A failure that stops the run leaves the other files interrupted: it is
    // the one to tell (a refused token, for the CLI's exit 3, first).
    let failures = || {
        report
            .files
            .iter()
            .zip(files)
            .filter_map(|(line, file)| match &line.outcome {
                FileOutcome::Failed(error) => Some((error, file)),
                _ => None,
            })
    };
    if let Some((_, file)) = failures().find(|(e, _)| matches!(e, Error::Unauthorized { .. })) {
        return Err(TokenRefused {
            call: format!("the engine's upload of {}", file.name),
            status: 401,
        }
        .into());
    }
    if let Some((error, file)) = failures().next() {
        bail!("{}: the engine did not verify it: {error}", file.name);
    }
    for (line, file) in report.files.iter().zip(files) {
        ensure!(
            line.path == file.path,
            "the engine reported files out of order"
        );
        match &line.outcome {
            FileOutcome::Verified { blake3, receipt } => {
                ensure!(
                    *blake3 == file.data.blake3,
                    "{}: the engine read different bytes than were generated",
                    file.name
                );
                let receipt = receipt
                    .as_ref()
                    .with_context(|| format!("{}: the server sent no receipt", file.name))?;
                check_receipt(file, receipt)?;
            }
            // Told above, the one that stopped the run first.
            FileOutcome::Failed(_) => {}
            FileOutcome::Skipped { .. } => bail!(
                "{}: the engine skipped it, as verified by an earlier run (a receipt in its \
                 state directory): a bug, since every repetition has a fresh one",
                file.name
            ),
            FileOutcome::Interrupted | FileOutcome::NotStarted => bail!(
                "{}: the engine stopped before it was verified, with no error of its own",
                file.name
            ),
        }
    }
    Ok(EngineRun {
        retries: watcher.retries.load(Ordering::Relaxed),
        realigned: watcher.realigned.load(Ordering::Relaxed),
        final_chunk_size: report.final_chunk_size,
        calls_ms,
        protocol: watcher
            .chosen
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .or((prepared_protocol == Protocol::Chunked).then_some(Protocol::Chunked)),
    })
}

/// Whether the server's verify receipt is that of the generated bytes.
pub(crate) fn check_receipt(file: &Upload, receipt: &VerifyReceipt) -> anyhow::Result<()> {
    ensure!(
        receipt.size == file.data.size && receipt.blake3 == file.data.blake3,
        "{}: the server received different bytes ({} bytes, blake3 {}) than were sent ({} \
         bytes, blake3 {})",
        file.name,
        receipt.size,
        receipt.blake3,
        file.data.size,
        file.data.blake3
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use idb_mock::{MockConfig, MockServer};

    use super::*;
    use crate::data::{batch, generate};

    /// A far end that refuses the engine's token ends the side with
    /// [`TokenRefused`] (the CLI's exit 3), not a failure like any other.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_token_is_told_apart_from_other_failures() {
        let dir = tempfile::tempdir().unwrap();
        let data = generate(dir.path(), "f.bin", 3000, "refused").unwrap();
        let links = batch(dir.path(), "r", &[data]).unwrap();
        let server = MockServer::start(MockConfig::new().dataset("IDB-X", "right"))
            .await
            .unwrap();
        let refused = config(
            &server.url(),
            "IDB-X",
            Token::new("tok-not-this-one").unwrap(),
            &EngineDefaults::engine(),
            &|_| {},
        )
        .unwrap();
        let prepared = prepare(refused, &links.uploads).unwrap();
        let error = upload(
            prepared,
            &links.uploads,
            &Timeline::start(),
            ((&|_: &str| {}, "test"), &idb_engine::Cancel::new()),
        )
        .await
        .err()
        .expect("a wrong token fails the side");
        let refused = error
            .downcast_ref::<TokenRefused>()
            .unwrap_or_else(|| panic!("not a refused token: {error:#}"));
        assert_eq!(
            refused.call,
            format!("the engine's upload of {}", links.uploads[0].name)
        );
        assert!(!format!("{error:#}").contains("tok-not"), "{error:#}");
        server.shutdown().await;
    }

    /// Each retry of the engine is told as it happens (a far end that stops
    /// answering is retried for minutes), and a file that fails is told by
    /// its error's words, not a dump of its fields.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retries_are_told_as_they_happen_and_failures_in_words() {
        use idb_mock::{FaultConfig, FaultKind};
        let dir = tempfile::tempdir().unwrap();
        let data = generate(dir.path(), "f.bin", 3000, "retried").unwrap();
        let links = batch(dir.path(), "r", &[data]).unwrap();
        let server = MockServer::start(
            MockConfig::new()
                .dataset("IDB-X", "tok")
                .faults(FaultConfig::new(1.0, [FaultKind::ServerError])),
        )
        .await
        .unwrap();
        let two_quick_attempts = |c: &mut UploadConfig| {
            c.retry.max_attempts = 2;
            c.retry.base_delay = std::time::Duration::from_millis(1);
            c.retry.max_delay = std::time::Duration::from_millis(1);
        };
        let config = config(
            &server.url(),
            "IDB-X",
            Token::new("tok").unwrap(),
            &EngineDefaults::engine(),
            &two_quick_attempts,
        )
        .unwrap();
        let prepared = prepare(config, &links.uploads).unwrap();
        let lines = Mutex::new(Vec::new());
        let note = |line: &str| lines.lock().unwrap().push(line.to_owned());
        let error = upload(
            prepared,
            &links.uploads,
            &Timeline::start(),
            (
                (&note, "faults 0 ms 1/1: engine"),
                &idb_engine::Cancel::new(),
            ),
        )
        .await
        .err()
        .expect("every call faulted");
        let lines = lines.into_inner().unwrap();
        let name = &links.uploads[0].name;
        assert!(
            lines.iter().any(|l| l.starts_with(&format!(
                "faults 0 ms 1/1: engine: retrying setup of {name} at byte 0 in "
            )) && l.contains("(attempt 1 failed: ")),
            "{lines:?}"
        );
        let told = format!("{error:#}");
        assert!(
            told.starts_with(&format!("{name}: the engine did not verify it: ")),
            "{told}"
        );
        assert!(!told.contains(" {"), "a dump, not words: {told}");
        server.shutdown().await;
    }
}
