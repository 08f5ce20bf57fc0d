//! One file's upload: setup, chunks from the reader sent in order (one at a time
//! on a strict server, a window of them on an offset server), retries, realigning
//! to the server's offset, verify.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use idb_read::{Chunk, ChunkPlan, HashState, ReadError, Reader};
use idb_wire::{Outcome, Phase, VerifyReceipt, summarize_body};

use crate::budget::ByteBudget;
use crate::chunking::ChunkSizer;
use crate::client::{Answer, Transport};
use crate::congestion::Congestion;
use crate::journal::{Entry, JOURNAL_VERSION, Journal, Loaded};
use crate::preflight::CheckedFile;
use crate::protocol::{CallError, FileRef, Protocol, WriteMode};
use crate::retry::Backoff;
use crate::stop::Stop;
use crate::{Error, Event, EventSink, FileOutcome, RestartReason, UploadConfig};

/// Chunks in flight per file on a server that writes at offsets, unless the user
/// says otherwise.
pub const DEFAULT_OFFSET_WINDOW: usize = 4;

/// Growth of the chunk size (over the chunk just acknowledged) that makes the
/// chunks already read ahead at the old size worth dropping.
const REPLAN_GROWTH: u64 = 4;

/// Attempts before a server that never answered in this run is called unreachable.
const FIRST_CONTACT_ATTEMPTS: u32 = 3;

/// Restarts of one file's chunk stream (realign, 413, incomplete verify) before
/// the engine stops trusting the exchange.
const MAX_RESTARTS: u32 = 32;

/// Everything the files of one run share.
pub(crate) struct Run<'a, P> {
    pub(crate) protocol: &'a P,
    pub(crate) config: &'a UploadConfig,
    pub(crate) events: &'a dyn EventSink,
    pub(crate) sizer: ChunkSizer,
    pub(crate) budget: ByteBudget,
    pub(crate) congestion: Congestion,
    pub(crate) backoff: Backoff,
    /// Set when an error makes every other file pointless (401, 404): files stop
    /// taking new chunks, let the calls in flight finish, and report what the
    /// server acknowledged.
    pub(crate) stop: Stop,
    /// Whether any call of the run got an answer (any status) from the server.
    pub(crate) contacted: AtomicBool,
    /// Where uploads record how far the server got (`None`: not recorded).
    pub(crate) journal: Option<Journal>,
    /// Lets one call at a time fetch a new token after a 401.
    pub(crate) token_lock: tokio::sync::Mutex<()>,
}

/// Why a call with retries did not succeed.
enum Failure {
    /// The server answered something that sending again will not change.
    Answer(Answer),
    /// Gave up, or the file changed.
    Error(Error),
}

/// How one chunk's sending ended.
enum ChunkEnd {
    Acked {
        offset: u64,
        len: u64,
        elapsed: Duration,
    },
    Realign {
        expected: u64,
    },
    TooLarge {
        len: u64,
    },
    SessionLost,
    Failed(Error),
}

/// How one pass over the reader ended.
enum PumpEnd {
    Done,
    /// Start a new reader from the acknowledged offset.
    Restart,
    /// The chunk size grew well past the chunks read ahead: read on from the
    /// acknowledged offset at the new size (not a failure; not counted).
    Replan,
    /// The server has no open upload of this file: set up again from byte 0.
    SessionLost,
    Stopped,
    Failed(Error),
}

/// What the server has acknowledged of a file: a contiguous prefix, plus chunks
/// acknowledged beyond it out of order (offset servers only).
#[derive(Debug, Default)]
struct Acked {
    prefix: u64,
    beyond: BTreeMap<u64, u64>,
    /// The prefix comes from a journal and the server has not confirmed anything
    /// since: it may hold more than the journal says.
    from_journal: bool,
}

impl Acked {
    fn add(&mut self, offset: u64, len: u64) {
        self.beyond.insert(offset, offset + len);
        while let Some(end) = self.beyond.remove(&self.prefix) {
            self.prefix = self.prefix.max(end);
        }
        // Drop ranges the prefix swallowed.
        self.beyond.retain(|&start, _| start > self.prefix);
    }

    /// The parts of `chunk` not acknowledged yet, as zero-copy slices of it.
    fn missing(&self, chunk: &Chunk) -> Vec<Chunk> {
        let mut pieces = Vec::new();
        let mut at = chunk.offset.max(self.prefix);
        let end = chunk.end();
        let piece = |from: u64, to: u64| Chunk {
            offset: from,
            bytes: chunk
                .bytes
                .slice((from - chunk.offset) as usize..(to - chunk.offset) as usize),
            hash: None,
        };
        if at == chunk.offset && self.beyond.is_empty() {
            return vec![chunk.clone()];
        }
        for (&start, &stop) in self.beyond.range(..end) {
            if stop <= at {
                continue;
            }
            if start > at {
                pieces.push(piece(at, start));
            }
            at = at.max(stop);
        }
        if at < end {
            pieces.push(piece(at, end));
        }
        pieces
    }

    /// The server says it holds exactly `offset` bytes.
    fn reset_to(&mut self, offset: u64) {
        self.prefix = offset;
        self.beyond.clear();
    }
}

impl<P: Protocol> Run<'_, P> {
    fn emit(&self, event: Event) {
        self.events.emit(event);
    }

    /// Sends a call until it succeeds, a non-retryable answer comes, or the retry
    /// policy gives up. Returns the result and how long the successful attempt took.
    async fn retrying<T, F, Fut>(
        &self,
        f: &CheckedFile,
        phase: Phase,
        offset: u64,
        mut call: F,
    ) -> Result<(T, Duration), Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let started = Instant::now();
        let policy = self.backoff.policy();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let t0 = Instant::now();
            let generation = self.protocol.token_generation();
            let result = call().await;
            if matches!(result, Ok(_) | Err(CallError::Refused(_))) {
                self.contacted.store(true, Ordering::Relaxed);
            }
            let (reason, retry_after) = match result {
                Ok(value) => return Ok((value, t0.elapsed())),
                Err(CallError::Transport(Transport::Idle(after))) => {
                    self.sizer.after_timeout();
                    (format!("nothing moved for {}s", after.as_secs()), None)
                }
                Err(CallError::Transport(Transport::Http(e))) => {
                    // A mapped chunk of a file truncated meanwhile fails to send
                    // (the kernel answers EFAULT): name the real cause.
                    f.source
                        .check_identity()
                        .map_err(|e| Failure::Error(e.into()))?;
                    let reason = error_chain(&e);
                    // A server never reached in this run is more likely a wrong
                    // address than a blip: say so after a few quick attempts.
                    if !self.contacted.load(Ordering::Relaxed) && attempt >= FIRST_CONTACT_ATTEMPTS
                    {
                        return Err(Failure::Error(Error::Unreachable {
                            server: self.config.server.clone(),
                            last: reason,
                        }));
                    }
                    (reason, None)
                }
                Err(CallError::Refused(answer)) => match answer.outcome {
                    Outcome::Retry { after } => (format!("HTTP {}", answer.status), after),
                    // A new token is in place (fetched now or by another call since
                    // this one went out): send again at once.
                    Outcome::Unauthorized if self.refresh_token(generation).await => continue,
                    _ => return Err(Failure::Answer(answer)),
                },
            };
            self.congestion.on_trouble();
            if attempt >= policy.max_attempts || started.elapsed() >= policy.deadline {
                return Err(Failure::Error(Error::GaveUp {
                    path: f.path(),
                    phase,
                    offset,
                    attempts: attempt,
                    last: reason,
                }));
            }
            let delay = self.backoff.delay(attempt, retry_after);
            self.emit(Event::Retry {
                path: f.path(),
                phase,
                offset,
                attempt,
                reason,
                delay,
            });
            // The backoff itself: behaviour, not a wait for something to happen.
            tokio::time::sleep(delay).await;
        }
    }

    /// After a 401 on a call sent with token `generation`: is a different token
    /// in place now? Fetches one through the configured refresh if no other call
    /// did meanwhile.
    async fn refresh_token(&self, generation: u64) -> bool {
        let Some(refresh) = &self.config.token_refresh else {
            return false;
        };
        let _one_at_a_time = self.token_lock.lock().await;
        if self.protocol.token_generation() != generation {
            return true;
        }
        let Some(token) = refresh.fetch() else {
            return false;
        };
        match self.protocol.replace_token(&token) {
            Ok(true) => {
                self.emit(Event::TokenRefreshed);
                true
            }
            _ => false,
        }
    }

    /// The error for a non-retryable answer.
    fn refusal(
        &self,
        f: &CheckedFile,
        phase: Phase,
        offset: u64,
        len: u64,
        answer: Answer,
    ) -> Error {
        let path = f.path();
        let dataset = self.config.dataset.clone();
        match answer.outcome {
            Outcome::Unauthorized => Error::Unauthorized { dataset },
            Outcome::NotFound => Error::DatasetNotFound {
                dataset,
                server: self.config.server.clone(),
            },
            Outcome::AlreadyExists => Error::AlreadyExists {
                path,
                filename: f.filename.clone(),
                dataset,
            },
            Outcome::TooLarge if phase == Phase::Transfer => Error::ChunkTooLarge { path, len },
            Outcome::Realign { expected_offset } => Error::OffsetConflict {
                path,
                sent: offset,
                expected: expected_offset,
            },
            Outcome::Incomplete { received, expected } => Error::Incomplete {
                path,
                received,
                expected,
            },
            Outcome::NoSession => Error::SessionLost { path },
            Outcome::Ok | Outcome::Retry { .. } | Outcome::TooLarge | Outcome::Rejected => {
                let message = match (answer.status, &answer.location) {
                    (300..=399, Some(location)) => {
                        format!(
                            "the server redirects to {location}; use that address as the server"
                        )
                    }
                    _ => summarize_body(&answer.body),
                };
                Error::Rejected {
                    path,
                    phase,
                    offset,
                    status: answer.status,
                    message,
                }
            }
        }
    }

    fn failure(&self, f: &CheckedFile, phase: Phase, offset: u64, failure: Failure) -> Error {
        match failure {
            Failure::Error(e) => e,
            Failure::Answer(answer) => self.refusal(f, phase, offset, 0, answer),
        }
    }

    /// Uploads one file: the outcome ([`FileOutcome::Verified`], or
    /// [`FileOutcome::Interrupted`] if the run was stopped), and how many bytes
    /// from the start the server acknowledged, whatever happened.
    pub(crate) async fn upload_file(&self, f: &CheckedFile) -> (Result<FileOutcome, Error>, u64) {
        let mut acked = Acked::default();
        let result = self.upload_file_into(f, &mut acked).await;
        (result, acked.prefix)
    }

    async fn upload_file_into(
        &self,
        f: &CheckedFile,
        acked: &mut Acked,
    ) -> Result<FileOutcome, Error> {
        let size = f.source.size();
        let file = FileRef {
            filename: &f.filename,
            size,
        };
        let mut record = self.journal_entry(f);
        // Resume where a journal says the server got, or begin (setup) afresh.
        let mut mode = match self.resume_point(f, record.as_ref()) {
            Some((offset, mode, chunk_size)) => {
                acked.reset_to(offset);
                acked.from_journal = true;
                // The size the last run had adapted to (a resume has no setup to
                // measure the round trip with).
                self.sizer.at_least(chunk_size);
                self.emit(Event::Resumed {
                    path: f.path(),
                    offset,
                });
                mode
            }
            None => self.begin(f, file, &mut record).await?,
        };
        self.emit(Event::FileStarted {
            path: f.path(),
            size,
        });

        let mut hash = HashState::new();
        let mut restarts = 0;
        loop {
            if restarts > 0 {
                // A protocol that can say where the server is (tus) settles it here;
                // protocol 1 cannot, and the offset from its 409 stands.
                let asked = self.retrying(f, Phase::Transfer, acked.prefix, || {
                    self.protocol.query_offset(file)
                });
                match asked.await {
                    Ok((Some(offset), _)) => acked.reset_to(offset),
                    Ok((None, _)) => {}
                    Err(failure) => {
                        return Err(self.failure(f, Phase::Transfer, acked.prefix, failure));
                    }
                }
            }
            let window = self.config.window.unwrap_or(match mode {
                WriteMode::Offset => DEFAULT_OFFSET_WINDOW,
                WriteMode::Strict => 1,
            });
            let plan = ChunkPlan::starting_at(acked.prefix, size, self.sizer.policy());
            let reader = Reader::spawn(&f.source, plan, hash, &self.config.reader);
            let end = self
                .pump(f, file, &reader, window, acked, &mut record)
                .await;
            // Joining the reader's threads may wait on a read: not on the runtime.
            hash = tokio::task::spawn_blocking(move || reader.finish())
                .await
                .unwrap_or_default();
            let session_lost = match end {
                PumpEnd::Done => false,
                PumpEnd::Stopped => return Ok(FileOutcome::Interrupted),
                PumpEnd::Failed(e) => return Err(e),
                PumpEnd::Restart => false,
                PumpEnd::SessionLost => true,
                PumpEnd::Replan => continue,
            };
            if !matches!(end, PumpEnd::Done) {
                restarts += 1;
                if restarts > MAX_RESTARTS {
                    return Err(Error::TooManyRestarts {
                        path: f.path(),
                        restarts,
                    });
                }
                if session_lost {
                    mode = self.start_over(f, file, acked, &mut record).await?;
                }
                continue;
            }
            // Never verify a file that changed under us: what the server holds
            // would mix two versions.
            f.source.check_identity()?;
            if hash.upto() < size {
                // The server held everything already (a resume at the end): hash
                // the file from disk so the end-to-end comparison still covers it.
                let source = f.source.clone();
                hash = tokio::task::spawn_blocking(move || hash.complete(&source).map(|()| hash))
                    .await
                    .map_err(|e| Error::Config(format!("the hashing thread failed: {e}")))??;
            }
            let verified = self
                .retrying(f, Phase::Verify, size, || self.protocol.finish(file))
                .await;
            match verified {
                Ok((receipt, elapsed)) => {
                    self.sizer.observe_small_call(elapsed);
                    let outcome = self.compare(f, hash, receipt)?;
                    if let (Some(journal), Some(entry)) = (&self.journal, &record) {
                        // Verified: nothing left to resume. A journal that cannot
                        // be removed only costs a 409 on a later run.
                        let _ = journal.remove(&entry.server, &entry.dataset, &entry.filename);
                    }
                    return Ok(outcome);
                }
                // The server lost bytes it had acknowledged: send them again.
                Err(Failure::Answer(Answer {
                    outcome: Outcome::Incomplete { received, .. },
                    ..
                })) if received < size && restarts < MAX_RESTARTS => {
                    restarts += 1;
                    self.emit(Event::Realigned {
                        path: f.path(),
                        from: acked.prefix,
                        to: received,
                    });
                    acked.reset_to(received);
                }
                Err(Failure::Answer(Answer {
                    outcome: Outcome::NoSession,
                    ..
                })) if restarts < MAX_RESTARTS => {
                    restarts += 1;
                    mode = self.start_over(f, file, acked, &mut record).await?;
                }
                Err(failure) => return Err(self.failure(f, Phase::Verify, size, failure)),
            }
        }
    }

    /// `setup`: opens the upload on the server; records it in the journal.
    async fn begin(
        &self,
        f: &CheckedFile,
        file: FileRef<'_>,
        record: &mut Option<Entry>,
    ) -> Result<WriteMode, Error> {
        let (mode, elapsed) = self
            .retrying(f, Phase::Setup, 0, || self.protocol.begin(file))
            .await
            .map_err(|x| self.failure(f, Phase::Setup, 0, x))?;
        self.sizer.observe_small_call(elapsed);
        if let Some(entry) = record {
            entry.acked = 0;
            entry.offset_mode = mode == WriteMode::Offset;
            self.save_journal(f, entry).await;
        }
        Ok(mode)
    }

    /// The server has no open upload of this file (it forgot, or a resumed
    /// journal outlived it): begin again from byte 0, and say so.
    async fn start_over(
        &self,
        f: &CheckedFile,
        file: FileRef<'_>,
        acked: &mut Acked,
        record: &mut Option<Entry>,
    ) -> Result<WriteMode, Error> {
        self.emit(Event::Restarted {
            path: f.path(),
            reason: RestartReason::ServerForgot,
        });
        acked.reset_to(0);
        self.begin(f, file, record).await
    }

    /// The journal entry this upload will keep up to date (`None` without a journal).
    fn journal_entry(&self, f: &CheckedFile) -> Option<Entry> {
        self.journal.as_ref()?;
        let identity = f.source.identity();
        Some(Entry {
            version: JOURNAL_VERSION,
            server: self.config.server.to_string(),
            dataset: self.config.dataset.to_string(),
            filename: f.filename.clone(),
            path: absolute(f.source.path()),
            size: identity.size,
            modified: identity.modified,
            device: identity.device,
            inode: identity.inode,
            acked: 0,
            chunk_size: self.sizer.current(),
            offset_mode: false,
        })
    }

    /// Where a journal says this upload can go on, if it says so for this very file.
    fn resume_point(
        &self,
        f: &CheckedFile,
        record: Option<&Entry>,
    ) -> Option<(u64, WriteMode, u64)> {
        let (journal, entry) = (self.journal.as_ref()?, record?);
        match journal.load(&entry.server, &entry.dataset, &entry.filename) {
            Loaded::Nothing => None,
            Loaded::Found(found) if found.describes(&entry.path, &f.source.identity()) => {
                let mode = if found.offset_mode {
                    WriteMode::Offset
                } else {
                    WriteMode::Strict
                };
                Some((found.acked, mode, found.chunk_size))
            }
            Loaded::Found(_) => {
                self.emit(Event::Restarted {
                    path: f.path(),
                    reason: RestartReason::FileChanged,
                });
                None
            }
            Loaded::Unusable(reason) => {
                self.emit(Event::JournalIgnored {
                    path: f.path(),
                    reason,
                });
                None
            }
        }
    }

    /// Records progress; a journal that cannot be written is reported, not fatal
    /// (the upload goes on; only resuming it would start earlier).
    async fn save_journal(&self, f: &CheckedFile, entry: &Entry) {
        let Some(journal) = self.journal.clone() else {
            return;
        };
        let entry = entry.clone();
        let saved = tokio::task::spawn_blocking(move || journal.save(&entry)).await;
        let error = match saved {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        self.emit(Event::JournalIgnored {
            path: f.path(),
            reason: format!("cannot write the journal: {error}"),
        });
    }

    /// Compares the server's receipt (when it sends one) with what was read.
    fn compare(
        &self,
        f: &CheckedFile,
        hash: HashState,
        receipt: Option<VerifyReceipt>,
    ) -> Result<FileOutcome, Error> {
        let size = f.source.size();
        let blake3 = hash
            .finalize(size)
            .map(|h| h.to_hex().to_string())
            .ok_or_else(|| Error::Config("the reader did not hash the whole file".into()))?;
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
                return Err(Error::IntegrityMismatch {
                    path: f.path(),
                    what,
                });
            }
        }
        Ok(FileOutcome::Verified { blake3, receipt })
    }

    /// Sends the reader's chunks, keeping up to `window` in flight, until the
    /// reader is done or something asks for a restart.
    async fn pump(
        &self,
        f: &CheckedFile,
        file: FileRef<'_>,
        reader: &Reader,
        window: usize,
        acked: &mut Acked,
        record: &mut Option<Entry>,
    ) -> PumpEnd {
        // Chunks being sent. On a restart no new chunk is taken, but the ones in
        // flight are let finish, so what the server holds is known exactly.
        let mut in_flight = FuturesUnordered::new();
        let mut reader_done = false;
        let mut sent_end = acked.prefix;
        let mut restart = false;
        // The server said it has no open upload of this file: start over.
        let mut session_lost = false;
        // The chunk size outgrew the chunks read ahead.
        let mut replan = false;
        // The offset the server named in a 409, applied once the calls are done.
        let mut realign_to: Option<u64> = None;
        loop {
            while !restart
                && !replan
                && !session_lost
                && !reader_done
                && in_flight.len() < window
                && !self.stop.is_set()
            {
                match next_chunk(reader).await {
                    None => reader_done = true,
                    Some(Err(e)) => return PumpEnd::Failed(e.into()),
                    Some(Ok(chunk)) => {
                        sent_end = sent_end.max(chunk.end());
                        // After a restart on an offset server, parts of this range
                        // may be acknowledged already: send only what is missing.
                        for piece in acked.missing(&chunk) {
                            in_flight.push(self.send_chunk(f, file, piece));
                        }
                    }
                }
            }
            let Some(end) = in_flight.next().await else {
                if let Some(to) = realign_to {
                    self.emit(Event::Realigned {
                        path: f.path(),
                        from: acked.prefix,
                        to,
                    });
                    acked.reset_to(to);
                }
                return match (restart, reader_done) {
                    _ if session_lost => PumpEnd::SessionLost,
                    (true, _) => PumpEnd::Restart,
                    (false, false) if replan => PumpEnd::Replan,
                    (false, true) => PumpEnd::Done,
                    (false, false) => PumpEnd::Stopped,
                };
            };
            match end {
                ChunkEnd::Acked {
                    offset,
                    len,
                    elapsed,
                } => {
                    let before = acked.prefix;
                    acked.add(offset, len);
                    acked.from_journal = false;
                    self.sizer.after_chunk(len, elapsed);
                    // Chunks read ahead at a size far below the new one would each
                    // cost a round trip: drop them and read on at the new size.
                    if !reader_done && self.sizer.current() >= len.saturating_mul(REPLAN_GROWTH) {
                        replan = true;
                    }
                    self.emit(Event::ChunkAcked {
                        path: f.path(),
                        offset,
                        len,
                    });
                    if let Some(entry) = record.as_mut().filter(|_| acked.prefix > before) {
                        entry.acked = acked.prefix;
                        entry.chunk_size = self.sizer.current();
                        self.save_journal(f, entry).await;
                    }
                }
                ChunkEnd::Realign { expected } => {
                    // The server confirms `expected` bytes. More than was ever sent
                    // means someone else is uploading this file.
                    // A resumed upload's journal may lag the server by the chunks
                    // that were in flight when the last run died, whatever their size.
                    let resuming = acked.from_journal && expected <= file.size;
                    if expected > sent_end && !resuming {
                        return PumpEnd::Failed(Error::OffsetConflict {
                            path: f.path(),
                            sent: sent_end,
                            expected,
                        });
                    }
                    realign_to = Some(realign_to.map_or(expected, |to| to.min(expected)));
                    restart = true;
                }
                ChunkEnd::TooLarge { len } => {
                    if self.sizer.too_large(len).is_err() {
                        return PumpEnd::Failed(Error::ChunkTooLarge {
                            path: f.path(),
                            len,
                        });
                    }
                    restart = true;
                }
                ChunkEnd::SessionLost => session_lost = true,
                ChunkEnd::Failed(e) => return PumpEnd::Failed(e),
            }
        }
    }

    /// Sends one chunk with retries, holding its bytes in the budget and a slot
    /// of the run's concurrency limit.
    async fn send_chunk(&self, f: &CheckedFile, file: FileRef<'_>, chunk: Chunk) -> ChunkEnd {
        let len = chunk.bytes.len() as u64;
        let offset = chunk.offset;
        let _bytes = self.budget.acquire(len).await;
        let _slot = self.congestion.acquire().await;
        let result = self
            .retrying(f, Phase::Transfer, offset, || {
                // Retries send the same `Bytes` again: a cheap clone, no re-read.
                self.protocol.send(file, offset, chunk.bytes.clone())
            })
            .await;
        match result {
            Ok(((), elapsed)) => {
                self.congestion.on_success(len, elapsed);
                ChunkEnd::Acked {
                    offset,
                    len,
                    elapsed,
                }
            }
            Err(Failure::Answer(answer)) => match answer.outcome {
                Outcome::Realign { expected_offset } => ChunkEnd::Realign {
                    expected: expected_offset,
                },
                Outcome::TooLarge => ChunkEnd::TooLarge { len },
                Outcome::NoSession => ChunkEnd::SessionLost,
                _ => ChunkEnd::Failed(self.refusal(f, Phase::Transfer, offset, len, answer)),
            },
            Err(Failure::Error(e)) => ChunkEnd::Failed(e),
        }
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

/// `path` made absolute (against the current directory), so a journal written
/// from one directory is found from another.
fn absolute(path: &std::path::Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// An error and its sources on one line ("error sending request: connection
/// refused"), since reqwest's own message is only the outermost layer.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acked_prefix_grows_only_when_contiguous() {
        let mut acked = Acked::default();
        acked.add(10, 10);
        assert_eq!(acked.prefix, 0);
        acked.add(0, 10);
        assert_eq!(acked.prefix, 20);
        acked.add(30, 5);
        acked.add(20, 10);
        assert_eq!(acked.prefix, 35);
        assert!(acked.beyond.is_empty());
        acked.reset_to(12);
        assert_eq!(acked.prefix, 12);
    }

    fn chunk(offset: u64, len: usize) -> Chunk {
        let bytes: Vec<u8> = (0..len).map(|i| (offset as usize + i) as u8).collect();
        Chunk {
            offset,
            bytes: bytes.into(),
            hash: None,
        }
    }

    #[test]
    fn missing_pieces_skip_acknowledged_ranges() {
        let spans = |acked: &Acked, c: &Chunk| -> Vec<(u64, u64)> {
            let pieces = acked.missing(c);
            for p in &pieces {
                // Each piece holds the chunk's own bytes for its range.
                assert_eq!(
                    p.bytes,
                    c.bytes
                        .slice((p.offset - c.offset) as usize..(p.end() - c.offset) as usize)
                );
            }
            pieces.iter().map(|p| (p.offset, p.end())).collect()
        };
        let mut acked = Acked::default();
        assert_eq!(spans(&acked, &chunk(0, 100)), [(0, 100)]);
        acked.add(0, 10);
        acked.add(30, 10);
        acked.add(60, 5);
        assert_eq!(
            spans(&acked, &chunk(0, 100)),
            [(10, 30), (40, 60), (65, 100)]
        );
        assert_eq!(spans(&acked, &chunk(30, 10)), Vec::<(u64, u64)>::new());
        assert_eq!(spans(&acked, &chunk(35, 10)), [(40, 45)]);
        assert_eq!(spans(&acked, &chunk(5, 3)), Vec::<(u64, u64)>::new());
    }
}
