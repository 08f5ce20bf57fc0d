//! Running uploads: files checked first, then up to `parallel` at once, largest
//! first, sharing one connection pool, byte budget and concurrency limit.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use idb_wire::VerifyReceipt;

use crate::budget::ByteBudget;
use crate::chunking::ChunkSizer;
use crate::client::DatafileClient;
use crate::congestion::Congestion;
use crate::journal::Journal;
use crate::preflight::{CheckedFile, check_all};
use crate::retry::Backoff;
use crate::sender::Run;
use crate::stop::Stop;
use crate::{Error, Event, EventSink, MAX_CHUNK_SIZE, UploadConfig};

/// Files that passed every check, ready to upload (see [`Uploader::check`]).
pub struct CheckedFiles(Vec<CheckedFile>);

impl CheckedFiles {
    /// How many files.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Their total size in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.0.iter().map(|f| f.source.size()).sum()
    }
}

/// What happened to one file.
#[derive(Debug)]
pub enum FileOutcome {
    /// Uploaded and verified.
    Verified {
        /// blake3 of the bytes sent, as hex.
        blake3: String,
        /// The server's receipt, when it sends one (the mock does).
        receipt: Option<VerifyReceipt>,
    },
    /// Not uploaded, and why.
    Failed(Error),
    /// Stopped part way because another file's error stopped the run; the server
    /// holds the first [`FileReport::acked`] bytes.
    Interrupted,
    /// Not tried, because an earlier error stopped the run.
    NotStarted,
}

/// One file's line in a [`Report`].
#[derive(Debug)]
pub struct FileReport {
    /// The local file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Bytes from the start of the file the server acknowledged (all of them once
    /// verified; what it holds after a failure or an interruption).
    pub acked: u64,
    /// What happened.
    pub outcome: FileOutcome,
}

/// The result of a run, file by file, in the order given.
#[derive(Debug)]
pub struct Report {
    /// One entry per file.
    pub files: Vec<FileReport>,
    /// The most chunk bytes the run held in flight at once (never above the
    /// configured memory budget).
    pub peak_in_flight_bytes: u64,
    /// The chunk size the adaptation ended at.
    pub final_chunk_size: u64,
}

impl Report {
    /// Whether every file was verified.
    pub fn all_verified(&self) -> bool {
        self.files
            .iter()
            .all(|f| matches!(f.outcome, FileOutcome::Verified { .. }))
    }

    /// The error that stopped the run (401, 404), if one did.
    pub fn fatal_error(&self) -> Option<&Error> {
        self.files.iter().find_map(|f| match &f.outcome {
            FileOutcome::Failed(e) if e.is_fatal_for_run() => Some(e),
            _ => None,
        })
    }
}

/// Uploads files into one dataset.
pub struct Uploader {
    config: UploadConfig,
    client: DatafileClient,
}

impl Uploader {
    /// Checks the configuration and builds the HTTP client.
    pub fn new(config: UploadConfig) -> Result<Self, Error> {
        config.validate()?;
        let client = DatafileClient::new(&config)?;
        Ok(Self { config, client })
    }

    /// Checks every file before anything is sent: it exists, is a regular readable
    /// file of at most 2 TiB, has a valid name, and no two share a name. Returns
    /// every problem found.
    pub fn check(&self, paths: &[PathBuf]) -> Result<CheckedFiles, Vec<Error>> {
        check_all(paths, self.config.read_mode).map(CheckedFiles)
    }

    /// Uploads the files, up to `parallel` at once, largest first. A 401 or 404
    /// stops the run: files in progress finish their calls in flight and report
    /// what the server holds ([`FileOutcome::Interrupted`]), the rest are
    /// [`FileOutcome::NotStarted`]. Any other error fails only its file.
    pub async fn upload(&self, files: CheckedFiles, events: &dyn EventSink) -> Report {
        let config = &self.config;
        let run = Run {
            protocol: &self.client,
            config,
            events,
            sizer: ChunkSizer::new(
                config.chunk_size,
                config.max_chunk_size.max(config.chunk_size),
            ),
            budget: ByteBudget::new(config.memory),
            congestion: Congestion::new(
                config.parallel * config.window.unwrap_or(crate::DEFAULT_OFFSET_WINDOW),
            ),
            backoff: Backoff::new(config.retry.clone()),
            stop: Stop::default(),
            contacted: AtomicBool::new(false),
            journal: config.journal_dir.clone().map(Journal::new),
            token_lock: tokio::sync::Mutex::new(()),
        };
        let files = files.0;
        let mut outcomes: Vec<Option<(FileOutcome, u64)>> = files.iter().map(|_| None).collect();
        let mut order: Vec<usize> = (0..files.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(files[i].source.size()));
        let mut pending = order.into_iter();
        // The files being uploaded; at most `parallel` at once.
        let mut active = FuturesUnordered::new();
        loop {
            while active.len() < config.parallel && !run.stop.is_set() {
                let Some(i) = pending.next() else { break };
                let (run, file) = (&run, &files[i]);
                active.push(async move { (i, run.upload_file(file).await) });
            }
            let Some((i, (result, acked))) = active.next().await else {
                break;
            };
            let path = files[i].path();
            let size = files[i].source.size();
            outcomes[i] = Some((
                match result {
                    Ok(outcome) => {
                        if matches!(outcome, FileOutcome::Verified { .. }) {
                            events.emit(Event::FileVerified { path, size });
                        }
                        outcome
                    }
                    Err(error) => {
                        if error.is_fatal_for_run() {
                            run.stop.set();
                        }
                        events.emit(Event::FileFailed { path });
                        FileOutcome::Failed(error)
                    }
                },
                acked,
            ));
        }
        let files = files
            .iter()
            .zip(outcomes)
            .map(|(f, done)| {
                let (outcome, acked) = done.unwrap_or((FileOutcome::NotStarted, 0));
                FileReport {
                    path: f.path(),
                    size: f.source.size(),
                    acked,
                    outcome,
                }
            })
            .collect();
        Report {
            files,
            peak_in_flight_bytes: run.budget.peak(),
            final_chunk_size: run.sizer.current(),
        }
    }
}

impl UploadConfig {
    fn validate(&self) -> Result<(), Error> {
        let bad = |what: String| Err(Error::Config(what));
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK_SIZE {
            return bad(format!(
                "the chunk size must be 1 byte to 1 GiB (got {} bytes)",
                self.chunk_size
            ));
        }
        if self.max_chunk_size > MAX_CHUNK_SIZE {
            return bad(format!(
                "the maximum chunk size must be at most 1 GiB (got {} bytes)",
                self.max_chunk_size
            ));
        }
        let largest = self.max_chunk_size.max(self.chunk_size);
        if self.memory < largest {
            return bad(format!(
                "the memory budget ({} bytes) must hold at least one chunk of the largest size ({largest} bytes); \
                 raise --memory or lower --max-chunk-size",
                self.memory
            ));
        }
        if self.parallel == 0 || self.window == Some(0) {
            return bad("--parallel and --window must be at least 1".into());
        }
        if self.idle_timeout.is_zero() {
            return bad("the idle timeout must be more than 0 seconds".into());
        }
        Ok(())
    }
}
