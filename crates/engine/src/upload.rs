//! Running uploads: one file after another, each setup, ordered transfers, verify.

use std::path::PathBuf;

use idb_read::{Chunk, ChunkPlan, HashState, ReadError, Reader};
use idb_wire::{
    MultipartBody, Outcome, Phase, VerifyReceipt, setup_body, summarize_body, transfer_body,
    verify_body,
};

use crate::client::{Answer, DatafileClient};
use crate::preflight::{CheckedFile, check_all};
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
    /// What happened.
    pub outcome: FileOutcome,
}

/// The result of a run, file by file, in the order given.
#[derive(Debug)]
pub struct Report {
    /// One entry per file.
    pub files: Vec<FileReport>,
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

/// Where a call stands, for error messages.
#[derive(Clone, Copy)]
struct Call {
    phase: Phase,
    offset: u64,
    len: u64,
}

impl Uploader {
    /// Checks the configuration and builds the HTTP client.
    pub fn new(config: UploadConfig) -> Result<Self, Error> {
        if config.chunk_size == 0 || config.chunk_size > MAX_CHUNK_SIZE {
            return Err(Error::Config(format!(
                "the chunk size must be 1 byte to 1 GiB (got {} bytes)",
                config.chunk_size
            )));
        }
        let client = DatafileClient::new(&config)?;
        Ok(Self { config, client })
    }

    /// Checks every file before anything is sent: it exists, is a regular readable
    /// file of at most 2 TiB, has a valid name, and no two share a name. Returns
    /// every problem found.
    pub fn check(&self, paths: &[PathBuf]) -> Result<CheckedFiles, Vec<Error>> {
        check_all(paths, self.config.read_mode).map(CheckedFiles)
    }

    /// Uploads the files one after another. A 401 or 404 stops the run (the rest
    /// are [`FileOutcome::NotStarted`]); any other error fails only its file.
    pub async fn upload(&self, files: CheckedFiles, events: &dyn EventSink) -> Report {
        let mut reports = Vec::with_capacity(files.len());
        let mut stopped = false;
        for file in files.0 {
            let path = file.path();
            let size = file.source.size();
            let outcome = if stopped {
                FileOutcome::NotStarted
            } else {
                match self.upload_file(file, events).await {
                    Ok(outcome) => {
                        events.emit(Event::FileVerified {
                            path: path.clone(),
                            size,
                        });
                        outcome
                    }
                    Err(error) => {
                        stopped = error.is_fatal_for_run();
                        events.emit(Event::FileFailed { path: path.clone() });
                        FileOutcome::Failed(error)
                    }
                }
            };
            reports.push(FileReport {
                path,
                size,
                outcome,
            });
        }
        Report { files: reports }
    }

    async fn upload_file(
        &self,
        f: CheckedFile,
        events: &dyn EventSink,
    ) -> Result<FileOutcome, Error> {
        let size = f.source.size();
        let path = f.path();
        let boundary = DatafileClient::boundary();
        let setup = setup_body(&boundary, &f.filename, size);
        self.send(
            &f,
            Call {
                phase: Phase::Setup,
                offset: 0,
                len: 0,
            },
            setup,
        )
        .await?;
        events.emit(Event::FileStarted {
            path: path.clone(),
            size,
        });

        let plan = ChunkPlan::fixed(size, self.config.chunk_size);
        let reader = Reader::spawn(&f.source, plan, HashState::new(), &self.config.reader);
        while let Some(chunk) = next_chunk(&reader).await {
            let chunk = chunk?;
            let (offset, len) = (chunk.offset, chunk.bytes.len() as u64);
            let body = transfer_body(&boundary, &f.filename, offset, chunk.bytes);
            self.send(
                &f,
                Call {
                    phase: Phase::Transfer,
                    offset,
                    len,
                },
                body,
            )
            .await?;
            events.emit(Event::ChunkAcked {
                path: path.clone(),
                offset,
                len,
            });
        }
        let blake3 = reader
            .finish()
            .finalize(size)
            .map(|h| h.to_hex().to_string());

        // Never verify a file that changed under us: what the server holds would
        // mix two versions. (The reader checked after its last chunk; this closes
        // the gap up to now.)
        f.source.check_identity()?;
        let verify = verify_body(&boundary, &f.filename);
        let answer = self
            .send(
                &f,
                Call {
                    phase: Phase::Verify,
                    offset: size,
                    len: 0,
                },
                verify,
            )
            .await?;
        let blake3 =
            blake3.ok_or_else(|| Error::Config("the reader did not hash the whole file".into()))?;
        let receipt = VerifyReceipt::parse(&answer.body);
        if let Some(receipt) = &receipt {
            let what = if receipt.size != size {
                Some(format!("it has {} bytes, we sent {size}", receipt.size))
            } else if !receipt.blake3.eq_ignore_ascii_case(&blake3) {
                Some(format!(
                    "its blake3 is {}, ours is {blake3}",
                    receipt.blake3
                ))
            } else {
                None
            };
            if let Some(what) = what {
                return Err(Error::IntegrityMismatch { path, what });
            }
        }
        Ok(FileOutcome::Verified { blake3, receipt })
    }

    /// Sends one call; anything but success becomes the matching [`Error`].
    async fn send(
        &self,
        f: &CheckedFile,
        call: Call,
        body: MultipartBody,
    ) -> Result<Answer, Error> {
        let path = || f.path();
        let answer = match self.client.call(call.phase, body).await {
            Ok(answer) => answer,
            Err(source) => {
                // A mapped chunk of a file truncated meanwhile fails to send (the
                // kernel answers EFAULT); name the real cause.
                f.source.check_identity()?;
                return Err(Error::Connection {
                    path: path(),
                    server: self.config.server.clone(),
                    phase: call.phase,
                    source,
                });
            }
        };
        let Call { phase, offset, len } = call;
        Err(match answer.outcome {
            Outcome::Ok => return Ok(answer),
            Outcome::Unauthorized => Error::Unauthorized {
                dataset: self.config.dataset.clone(),
            },
            Outcome::NotFound => Error::DatasetNotFound {
                dataset: self.config.dataset.clone(),
                server: self.config.server.clone(),
            },
            Outcome::AlreadyExists => Error::AlreadyExists {
                path: path(),
                filename: f.filename.clone(),
                dataset: self.config.dataset.clone(),
            },
            Outcome::TooLarge if phase == Phase::Transfer => {
                Error::ChunkTooLarge { path: path(), len }
            }
            Outcome::Realign { expected_offset } => Error::OffsetConflict {
                path: path(),
                sent: offset,
                expected: expected_offset,
            },
            Outcome::Incomplete { received, expected } => Error::Incomplete {
                path: path(),
                received,
                expected,
            },
            Outcome::NoSession => Error::SessionLost { path: path() },
            Outcome::Retry { .. } => Error::ServerError {
                path: path(),
                phase,
                offset,
                status: answer.status,
            },
            Outcome::TooLarge | Outcome::Rejected => {
                let message = match (answer.status, &answer.location) {
                    (300..=399, Some(location)) => format!(
                        "the server redirects to {location}; use that address as the server"
                    ),
                    _ => summarize_body(&answer.body),
                };
                Error::Rejected {
                    path: path(),
                    phase,
                    offset,
                    status: answer.status,
                    message,
                }
            }
        })
    }
}

/// The reader's next chunk, without blocking the async runtime: usually one is
/// already waiting (the reader runs ahead); otherwise wait on a blocking thread.
async fn next_chunk(reader: &Reader) -> Option<Result<Chunk, ReadError>> {
    if let Ok(ready) = reader.try_recv() {
        return ready;
    }
    let chunks = reader.receiver();
    tokio::task::spawn_blocking(move || chunks.recv().ok())
        .await
        .ok()
        .flatten()
}
