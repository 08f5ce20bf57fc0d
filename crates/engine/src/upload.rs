//! Running uploads: files checked first, then up to `parallel` at once, largest
//! first, sharing one connection pool, byte budget and concurrency limit.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use idb_read::ChunkMemory;
use idb_wire::VerifyReceipt;

use crate::chunking::ChunkSizer;
use crate::client::DatafileClient;
use crate::congestion::Congestion;
use crate::file_upload::Ended;
use crate::journal::{Journal, Key};
use crate::journal_writer::{JournalWriter, Unsaved};
use crate::name_lock::NameLocks;
use crate::negotiate::Negotiated;
use crate::preflight::{CheckedFile, check_all};
use crate::receipts::{DamagedReceipts, ReceiptRecord};
use crate::retry::Backoff;
use crate::run::Run;
use crate::state::StateDir;
use crate::stop::{Cancel, Stop, StopKind};
use crate::{Error, Event, EventSink, MAX_CHUNK_SIZE, UploadConfig, bytes_text};

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
        self.0.iter().map(CheckedFile::size).sum()
    }

    /// Each file's path and size, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = (&std::path::Path, u64)> {
        self.0.iter().map(|f| (f.path.as_path(), f.size()))
    }
}

/// What a receipt says of a file before its turn ([`Uploader::known_by_receipts`]).
#[derive(Debug, Clone)]
pub enum Known {
    /// The receipt describes this very file (path, size, times, inode): it is
    /// skipped without being read.
    Same(Box<ReceiptRecord>),
    /// A receipt of its name and size, of a file that looks different (touched,
    /// copied, moved): at its turn the file is read and skipped if its blake3 is
    /// the receipt's.
    SameSize(Box<ReceiptRecord>),
    /// A receipt of its name, of another size: the name is in the dataset
    /// with other bytes, which the chunked API refuses to replace.
    OtherBytes(Box<ReceiptRecord>),
}

/// What the receipts say of the files before their turn
/// ([`Uploader::known_by_receipts`]).
#[derive(Debug, Clone)]
pub struct KnownByReceipts {
    /// For each file, in the order given, the receipt of its name a run would
    /// judge it by, if any.
    pub known: Vec<Option<Known>>,
    /// The damaged lines of the receipts file, if any (to warn of: a file
    /// whose receipt was there is uploaded).
    pub damaged: Option<DamagedReceipts>,
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
    /// Not uploaded: a receipt in the state directory says this very file was
    /// verified earlier (see [`crate::UploadConfig::force`]).
    Skipped {
        /// The receipt (as saved again when the file was recognized by its hash:
        /// the file's metadata now, the rest as verified).
        receipt: Box<ReceiptRecord>,
        /// Whether the file was read to be recognized (its metadata differ from
        /// the receipt's: touched, copied or moved, same size and blake3).
        hashed: bool,
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
    /// Bytes from the start of the file the server confirmed holding in this run
    /// (all of them once verified; after a failure or an interruption, what it
    /// surely holds: a resumed journal's offset counts once the server accepted
    /// a chunk at it, a chunk whose answer was lost once a later one was
    /// accepted).
    pub acked: u64,
    /// Whether its journal is kept in the state directory: the same command
    /// resumes it (from the journal's offset, which the server may confirm or
    /// refuse).
    pub resumable: bool,
    /// What happened.
    pub outcome: FileOutcome,
}

/// The result of a run, file by file, in the order given.
#[derive(Debug)]
pub struct Report {
    /// One entry per file.
    pub files: Vec<FileReport>,
    /// The most chunk bytes (read ahead and in flight) alive at once, counted by
    /// the chunks themselves: never above the configured memory budget.
    pub peak_chunk_bytes: u64,
    /// Bytes read from the files (a resumed upload reads only what it sends).
    pub bytes_read: u64,
    /// The chunk size the adaptation ended at.
    pub final_chunk_size: u64,
}

impl Report {
    /// Whether every file was verified in this run.
    pub fn all_verified(&self) -> bool {
        self.files
            .iter()
            .all(|f| matches!(f.outcome, FileOutcome::Verified { .. }))
    }

    /// Whether every file is in the dataset: verified in this run, or skipped
    /// because a receipt says it was verified earlier.
    pub fn all_done(&self) -> bool {
        self.files.iter().all(|f| {
            matches!(
                f.outcome,
                FileOutcome::Verified { .. } | FileOutcome::Skipped { .. }
            )
        })
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

    /// For each file (in the order given), the receipt of its name in the state
    /// directory that a run would judge it by, if any, as [`Known`]: what
    /// `idb upload --dry-run` says would be skipped. Reads no file.
    pub fn known_by_receipts(&self, files: &CheckedFiles) -> Result<KnownByReceipts, Error> {
        let (Some(dir), false) = (&self.config.state_dir, self.config.force) else {
            return Ok(KnownByReceipts {
                known: files.0.iter().map(|_| None).collect(),
                damaged: None,
            });
        };
        let read =
            StateDir::new(dir.clone()).read_receipts(&self.config.server, &self.config.dataset)?;
        let receipts: HashMap<String, ReceiptRecord> = read
            .receipts
            .into_iter()
            .map(|r| (r.filename.clone(), r))
            .collect();
        let known = files
            .0
            .iter()
            .map(|c| {
                let receipt = receipts.get(&c.filename)?;
                let path = crate::resume::absolute(&c.path);
                Some(if receipt.size != c.size() {
                    Known::OtherBytes(Box::new(receipt.clone()))
                } else if receipt.vouches_for(&path, &c.identity) {
                    Known::Same(Box::new(receipt.clone()))
                } else {
                    Known::SameSize(Box::new(receipt.clone()))
                })
            })
            .collect();
        Ok(KnownByReceipts {
            known,
            damaged: read.damaged,
        })
    }

    /// The round-trip time to the server, from a second `HEAD` of its address
    /// (the first opens the connection): no token is sent, nothing of the
    /// dataset is touched. For estimates (`idb upload --dry-run`).
    pub async fn round_trip(&self) -> Result<Duration, Error> {
        let unreachable = |e: crate::client::Transport| Error::Unreachable {
            server: self.config.server.clone(),
            last: match e {
                // A refused certificate is said as in an upload.
                crate::client::Transport::Http {
                    certificate: Some(problem),
                    ..
                } => {
                    return Error::UntrustedCertificate {
                        server: self.config.server.clone(),
                        problem,
                    };
                }
                crate::client::Transport::Http { reason, .. } => reason,
                crate::client::Transport::Idle(after) => {
                    format!("no answer in {}s", after.as_secs())
                }
            },
        };
        self.client
            .head(&self.config.server)
            .await
            .map_err(unreachable)?;
        self.client
            .head(&self.config.server)
            .await
            .map_err(unreachable)
    }

    /// Checks every file before anything is sent, from metadata alone (no file
    /// is opened): it exists, is a regular readable file of at most 2 TiB, has a
    /// valid name, and no two share a name. Returns every problem found.
    pub fn check(&self, paths: &[PathBuf]) -> Result<CheckedFiles, Vec<Error>> {
        check_all(paths).map(CheckedFiles)
    }

    /// Uploads the files, up to `parallel` at once, largest first; each file is
    /// opened when its turn comes and closed when it ends. A 401 or 404 stops the
    /// run: files in progress finish their calls in flight and report what the
    /// server holds ([`FileOutcome::Interrupted`]), the rest are
    /// [`FileOutcome::NotStarted`]. Any other error fails only its file.
    pub async fn upload(&self, files: CheckedFiles, events: &dyn EventSink) -> Report {
        self.upload_until(files, events, &Cancel::new()).await
    }

    /// [`Uploader::upload`], until `cancel` fires: then no file starts and no
    /// chunk is taken any more, the calls in flight get up to
    /// [`UploadConfig::cancel_grace`] to be answered (so what they carried
    /// counts), the rest are abandoned, and the files in progress are
    /// [`FileOutcome::Interrupted`] with the journal written, so the same upload
    /// resumes later.
    pub async fn upload_until(
        &self,
        files: CheckedFiles,
        events: &dyn EventSink,
        cancel: &Cancel,
    ) -> Report {
        let protocol = Negotiated::new(&self.client, &self.config, events);
        let config = &self.config;
        let InState {
            journal,
            locks,
            receipts,
        } = self.state_dir(events);
        let run = Run {
            protocol: &protocol,
            config,
            events,
            sizer: Arc::new(ChunkSizer::new(
                config.chunk_size,
                config.max_chunk_size.max(config.chunk_size),
                // Every file at once with a chunk in flight and one read
                // ahead fits the memory budget.
                config.memory / (2 * config.parallel.max(1) as u64),
            )),
            memory: ChunkMemory::new(config.memory),
            congestion: Congestion::new(
                config.parallel * config.window.unwrap_or(crate::DEFAULT_OFFSET_WINDOW),
            ),
            partials_started: AtomicBool::new(false),
            backoff: Backoff::new(config.retry.clone()),
            stop: Stop::default(),
            journal,
            receipts,
            locks,
            unlocked: AtomicBool::new(false),
            token_lock: tokio::sync::Mutex::new(()),
        };
        let files = files.0;
        let mut outcomes: Vec<Option<(FileOutcome, Ended)>> = files.iter().map(|_| None).collect();
        let mut order: Vec<usize> = (0..files.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(files[i].size()));
        let mut pending = order.into_iter();
        // The files being uploaded; at most `parallel` at once, so at most that
        // many are open.
        let mut active = FuturesUnordered::new();
        // A cancel first drains (no new chunks, calls in flight may finish, so
        // their bytes count), then, after the grace, stops at once.
        let (mut cancelled, mut hard_stopped) = (false, false);
        let grace = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(grace);
        // Journal writes that failed are told as they happen (a full disk
        // met an hour into one file is said then, not when the file ends).
        let mut look = tokio::time::interval(JOURNAL_FAILURES_LOOK);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            while active.len() < config.parallel && !run.stop.is_set() {
                let Some(i) = pending.next() else { break };
                let (run, file) = (&run, &files[i]);
                active.push(async move { (i, run.upload_file(file).await) });
            }
            let finished = tokio::select! {
                // A cancel first: a file polled before it could get as far as
                // sending a chunk of a run that was cancelled before it began.
                biased;
                () = cancel.fired(), if !cancelled => {
                    cancelled = true;
                    // The process may be ended before the next interval.
                    if let Some((_, writer)) = &run.journal {
                        writer.hurry();
                    }
                    if config.cancel_grace.is_zero() {
                        hard_stopped = true;
                        run.stop.set(StopKind::Now);
                    } else {
                        run.stop.set(StopKind::Drain);
                        grace.as_mut().reset(tokio::time::Instant::now() + config.cancel_grace);
                    }
                    continue;
                }
                () = &mut grace, if cancelled && !hard_stopped => {
                    hard_stopped = true;
                    run.stop.set(StopKind::Now);
                    continue;
                }
                finished = active.next() => finished,
                _ = look.tick() => {
                    run.report_journal_failures();
                    continue;
                }
            };
            let Some((i, (result, ended))) = finished else {
                break;
            };
            let path = files[i].path.clone();
            let size = files[i].size();
            outcomes[i] = Some((
                match result {
                    Ok(outcome) => {
                        match &outcome {
                            FileOutcome::Verified { blake3, receipt } => {
                                events.emit(Event::FileVerified {
                                    path,
                                    size,
                                    blake3: blake3.clone(),
                                    server_checked: receipt.is_some(),
                                });
                            }
                            FileOutcome::Skipped { receipt, .. } => {
                                events.emit(Event::FileSkipped {
                                    path,
                                    size,
                                    verified_at: receipt.verified_at,
                                });
                            }
                            _ => {}
                        }
                        outcome
                    }
                    Err(error) => {
                        if error.is_fatal_for_run() {
                            run.stop.set(StopKind::Drain);
                        }
                        events.emit(Event::FileFailed {
                            path,
                            error: error.to_string(),
                            acked: ended.acked,
                            resumable: ended.resumable,
                        });
                        FileOutcome::Failed(error)
                    }
                },
                ended,
            ));
            run.report_journal_failures();
        }
        drop(active);
        let Run {
            journal,
            memory,
            sizer,
            ..
        } = run;
        let mut unsaved = HashSet::new();
        let mut store = None;
        if let Some((journal, writer)) = journal {
            let failures;
            (failures, unsaved) = writer.close().await;
            for failure in failures {
                events.emit(failure_event(failure));
            }
            store = Some(journal);
        }
        let (server, dataset) = (self.config.server.as_str(), self.config.dataset.as_str());
        let files = files
            .iter()
            .zip(outcomes)
            .map(|(f, done)| {
                let (outcome, ended) = done.unwrap_or((FileOutcome::NotStarted, Ended::default()));
                // Its journal is what the next run resumes from: when its
                // latest write failed (a full disk, a directory removed), an
                // older one left on disk still resumes it (a journal may lag
                // the server); with none, the next run starts it over.
                let key = Key::of(server, dataset, &f.filename);
                let saved =
                    !unsaved.contains(&key) || store.as_ref().is_some_and(|j| j.path(key).exists());
                FileReport {
                    path: f.path.clone(),
                    size: f.size(),
                    acked: ended.acked,
                    resumable: ended.resumable && saved,
                    outcome,
                }
            })
            .collect();
        Report {
            files,
            peak_chunk_bytes: memory.peak_bytes(),
            bytes_read: memory.bytes_read(),
            final_chunk_size: sizer.current(),
        }
    }

    /// The journal, the name locks and the receipts of this dataset in the state
    /// directory, if one is configured and usable (otherwise the run goes on
    /// without, and says so).
    fn state_dir(&self, events: &dyn EventSink) -> InState {
        let Some(dir) = &self.config.state_dir else {
            return InState::default();
        };
        let state = StateDir::new(dir.clone());
        let journal = state.journal();
        let store = state.receipt_store();
        let (server, dataset) = (self.config.server.as_str(), self.config.dataset.as_str());
        let loaded = store.load(server, dataset).unwrap_or_else(|e| {
            events.emit(Event::ReceiptProblem {
                path: store.file(server, dataset),
                reason: format!(
                    "cannot read the receipts of earlier uploads ({e}): files verified \
                     earlier are not skipped (the server refuses names it holds)"
                ),
            });
            Default::default()
        });
        if let Some(damaged) = &loaded.damaged {
            events.emit(Event::ReceiptProblem {
                path: damaged.file.clone(),
                reason: damaged.reason(),
            });
        }
        let receipts = loaded.newest;
        match journal
            .create_dir()
            .and_then(|()| NameLocks::open(journal.dir()))
        {
            Ok(locks) => {
                let writer = JournalWriter::start(
                    journal.clone(),
                    store,
                    self.config.journal_interval,
                    self.config.journal_bytes,
                );
                InState {
                    journal: Some((journal, writer)),
                    locks: Some(locks),
                    receipts,
                }
            }
            Err(e) => {
                events.emit(Event::StateDirUnusable {
                    dir: journal.dir().to_path_buf(),
                    reason: e.to_string(),
                });
                InState {
                    receipts,
                    ..InState::default()
                }
            }
        }
    }
}

/// How often a run looks for journal writes that failed, to tell them.
const JOURNAL_FAILURES_LOOK: Duration = Duration::from_secs(1);

/// What a run uses of the state directory.
#[derive(Default)]
struct InState {
    journal: Option<(Journal, JournalWriter)>,
    locks: Option<NameLocks>,
    receipts: HashMap<String, ReceiptRecord>,
}

/// The event a failed write of the journal writer becomes.
fn failure_event(failure: crate::journal_writer::WriteFailure) -> Event {
    match failure.what {
        Unsaved::Journal => Event::JournalUnsaved {
            path: failure.path,
            reason: failure.reason,
        },
        Unsaved::Receipt => Event::ReceiptProblem {
            path: failure.path,
            reason: failure.reason,
        },
    }
}

impl<P> Run<'_, P> {
    /// Journal writes that failed since the last look, as events.
    fn report_journal_failures(&self) {
        if let Some((_, writer)) = &self.journal {
            for failure in writer.failures() {
                self.emit(failure_event(failure));
            }
        }
    }
}

impl UploadConfig {
    fn validate(&self) -> Result<(), Error> {
        let bad = |what: String| Err(Error::Config(what));
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK_SIZE {
            return bad(format!(
                "the chunk size must be 1 byte to 1 GiB (got {})",
                bytes_text(self.chunk_size)
            ));
        }
        if self.max_chunk_size > MAX_CHUNK_SIZE {
            return bad(format!(
                "the maximum chunk size must be at most 1 GiB (got {})",
                bytes_text(self.max_chunk_size)
            ));
        }
        let largest = self.max_chunk_size.max(self.chunk_size);
        if self.memory < largest {
            // The larger of the two sets the largest chunk.
            let lower = match self.chunk_size.cmp(&self.max_chunk_size) {
                std::cmp::Ordering::Greater => "--chunk-size",
                std::cmp::Ordering::Equal => "--chunk-size and --max-chunk-size",
                std::cmp::Ordering::Less => "--max-chunk-size",
            };
            return bad(format!(
                "the memory budget ({}) must hold at least one chunk of the largest size ({}); \
                 raise --memory or lower {lower}",
                bytes_text(self.memory),
                bytes_text(largest)
            ));
        }
        if self.parallel == 0 || self.window == Some(0) {
            return bad("--parallel and --window must be at least 1".into());
        }
        if let Some(window) = self.window.filter(|&w| w > crate::MAX_WINDOW) {
            return bad(format!(
                "--window {window} is more than {} chunks of a file in flight; give 1 to {}",
                crate::MAX_WINDOW,
                crate::MAX_WINDOW
            ));
        }
        if self.bandwidth == Some(0) {
            return bad(
                "the bandwidth cap must be at least 1 byte per second; leave it unset for no cap"
                    .into(),
            );
        }
        if self.idle_timeout.is_zero() || self.first_answer_timeout.is_zero() {
            return bad("the idle timeout must be more than 0 seconds".into());
        }
        if self.retry.deadline.is_zero() {
            return bad("the call deadline (--call-deadline) must be more than 0 seconds".into());
        }
        if self.file_deadline.is_some_and(|d| d.is_zero()) {
            return bad(
                "the file deadline (--file-deadline) must be more than 0 seconds; leave it out for no limit".into(),
            );
        }
        if let Some(part) = self.tus_part_size
            && (part == 0 || part > self.memory)
        {
            return bad(format!(
                "the tus part size ({}) must be at least 1 byte and fit the memory \
                 budget ({}, --memory)",
                bytes_text(part),
                bytes_text(self.memory)
            ));
        }
        if self.reader.prefetch == 0 || self.reader.read_ahead_bytes == 0 {
            return bad("the reader must read at least one chunk ahead".into());
        }
        Ok(())
    }
}
