//! One file's upload, from its turn to its end: its receipt (a file verified
//! earlier is skipped), the name's lock, opening the file (it must still be the
//! one checked), resuming from its journal or `setup`, pumping its chunks (again
//! from where the server is after a realign), `verify`, the end-to-end
//! comparison of the server's hash with what was read, and its receipt.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use idb_read::{ChunkPlan, Delivery, HashState, Reader, SourceFile};
use idb_wire::{Outcome, Phase, VerifyReceipt, WriteMode};
use tokio::time::Instant;

use crate::calls::Failure;
use crate::client::Answer;
use crate::journal::Key;
use crate::name_lock::{Holder, LockError, NameLock};
use crate::open_file::{Deadline, FileState, OpenFile};
use crate::preflight::CheckedFile;
use crate::protocol::Protocol;
use crate::pump::{PumpEnd, REPLAN_GROWTH, says_nothing};
use crate::receipts::{RECEIPT_VERSION, ReceiptRecord, unix_now};
use crate::resume::{Opened, Opening, Start, absolute};
use crate::run::Run;
use crate::stop::{self, StopKind};
use crate::{DEFAULT_OFFSET_WINDOW, Error, Event, FileOutcome, RestartReason, bytes_text};

/// Restarts of one file's chunk stream (realign, 413, incomplete verify, a lost
/// session) without the server confirming more of the file than ever before,
/// after which the engine stops trusting the exchange. (A long upload meeting
/// a realign now and then, each after progress, never runs out.)
const MAX_RESTARTS: u32 = 32;

/// The restarts of one file's chunk stream since the server last confirmed
/// more of it than ever before.
#[derive(Default)]
struct Restarts {
    count: u32,
    /// The most bytes the server confirmed at any restart.
    high_water: u64,
    /// When the server was last found holding fewer bytes than it
    /// acknowledged ([`RestartReason::ServerLostBytes`]) in this run, and the
    /// bytes it had confirmed then.
    went_back: Option<(std::time::Instant, u64)>,
}

impl Restarts {
    /// Counts one restart with the server confirming `confirmed` bytes now;
    /// the count since the last progress past the high-water mark.
    fn count(&mut self, confirmed: u64) -> u32 {
        if confirmed > self.high_water {
            self.high_water = confirmed;
            self.count = 0;
        }
        self.count += 1;
        self.count
    }
}

/// How long after the server was found behind what it acknowledged a second
/// time counts as the same trouble (see [`went_back`]).
const WENT_BACK_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

/// A start over because the server holds fewer bytes than it acknowledged
/// (`confirmed` of them, now): the second in a row fails the file. A server
/// that lost bytes (a crash) does so once; again before the upload got back
/// past where it was the first time, or within [`WENT_BACK_WINDOW`], is most
/// likely another upload of the same name (from another machine, or with
/// another state directory), whose own setup reset the server's copy: each
/// start over would undo the other's progress in turn, for as long as both
/// run. (A loss long after, beyond the first one's point, is a new one.)
fn went_back(
    f: &OpenFile,
    reason: &RestartReason,
    confirmed: u64,
    restarts: &mut Restarts,
) -> Result<(), Error> {
    if *reason != RestartReason::ServerLostBytes {
        return Ok(());
    }
    let now = std::time::Instant::now();
    if let Some((at, then)) = restarts.went_back
        && (confirmed <= then || now.duration_since(at) < WENT_BACK_WINDOW)
    {
        return Err(Error::ServerWentBack {
            path: f.path.clone(),
        });
    }
    restarts.went_back = Some((now, confirmed));
    Ok(())
}

impl<P: Protocol> Run<'_, P> {
    /// Uploads one file: the outcome ([`FileOutcome::Verified`], or
    /// [`FileOutcome::Interrupted`] if the run was stopped), and how it ended.
    pub(crate) async fn upload_file(&self, c: &CheckedFile) -> (Result<FileOutcome, Error>, Ended) {
        if let Some(receipt) = self
            .receipts
            .get(&c.filename)
            .filter(|_| !self.config.force)
        {
            // Boxed: the common path (no receipt) keeps a small future.
            match Box::pin(self.known(c, receipt)).await {
                Ok(Some(outcome @ FileOutcome::Skipped { .. })) => {
                    return (Ok(outcome), Ended::acked(c.size()));
                }
                Ok(Some(outcome)) => return (Ok(outcome), Ended::default()),
                Ok(None) => {}
                Err(e) => return (Err(e), Ended::default()),
            }
        }
        let key = Key::of(
            self.config.server.as_str(),
            self.config.dataset.as_str(),
            &c.filename,
        );
        let lock = match self.lock(c, key) {
            Ok(lock) => lock,
            Err(e) => return (Err(e), Ended::default()),
        };
        // Chunks are planned in whole parts of the protocol's (1 until the
        // protocol is known; `transfer` plans again if it differs then).
        let granule = self.protocol.granule(crate::protocol::FileRef {
            filename: &c.filename,
            size: c.size(),
        });
        let opening = Opening {
            checked: c.clone(),
            mode: self.config.read_mode,
            reader: self.config.reader.clone(),
            memory: self.memory.clone(),
            sizer: Arc::clone(&self.sizer),
            journal: self.journal.as_ref().map(|(journal, _)| journal.clone()),
            template: self.journal.as_ref().map(|_| self.journal_entry(c)),
            granule,
            // The file's deadline runs from here: its upload begins.
            deadline: self.config.file_deadline.map(|after| Deadline {
                at: Instant::now() + after,
                after,
            }),
        };
        let opened = match tokio::task::spawn_blocking(move || opening.run()).await {
            Ok(Ok(opened)) => opened,
            Ok(Err(e)) => return (Err(e), Ended::default()),
            Err(e) => return (Err(blocking_failed(&c.path, e)), Ended::default()),
        };
        let Opened {
            file,
            start,
            mut state,
            reader,
            planned_chunk,
            note,
            saved,
        } = opened;
        if let Some(note) = note {
            self.emit(note);
        }
        // A stop from outside ends the upload wherever it is waiting; what it
        // learnt so far is in `state`.
        // A verify in flight is let finish: it decides whether the file is in
        // the dataset, and abandoned it would leave that unknown.
        let mut stop = self.stop.watch();
        let verifying = AtomicBool::new(false);
        let result = tokio::select! {
            // A stop first: no setup goes out once the run is told to stop.
            biased;
            _ = wait_for_now(&mut stop, &verifying) => Ok(FileOutcome::Interrupted),
            // The file's deadline abandons its calls in flight, but for a
            // verify; no call starts after it (see `retrying`).
            error = past_deadline(&file, &verifying) => Err(error),
            result = self.transfer(&file, &mut state, Planned { reader, chunk: planned_chunk, granule }, (start, saved), &verifying) => result,
        };
        // The receipt records the file as it was read: as opened, with any
        // change of its status alone that its bytes settled.
        let identity = file.source.settled();
        let resumable = self.end_file(c, identity, key, &state, &result, lock);
        // A verified file is on the server whole (a guess its verify settled too).
        let acked = match &result {
            Ok(FileOutcome::Verified { .. }) => c.size(),
            _ => state.acked.confirmed(),
        };
        (result, Ended { acked, resumable })
    }

    /// Whether `receipt` (of this file's name) says this very file was verified:
    /// by its metadata alone, or, when they differ but the size is the same, by
    /// its blake3 (the file is read, off the async threads). `Some(Skipped)` if
    /// so, `Some(Interrupted)` if the run was stopped while it was read, `None`
    /// to upload it.
    async fn known(
        &self,
        c: &CheckedFile,
        receipt: &ReceiptRecord,
    ) -> Result<Option<FileOutcome>, Error> {
        if receipt.size != c.size() {
            return Ok(None);
        }
        let path = absolute(&c.path);
        if receipt.vouches_for(&path, &c.identity) {
            return Ok(Some(FileOutcome::Skipped {
                receipt: Box::new(receipt.clone()),
                hashed: false,
            }));
        }
        let (mut stop, verifying) = (self.stop.watch(), AtomicBool::new(false));
        let blake3 = tokio::select! {
            biased;
            _ = wait_for_now(&mut stop, &verifying) => return Ok(Some(FileOutcome::Interrupted)),
            blake3 = self.hash_whole(c) => blake3?,
        };
        if !blake3.eq_ignore_ascii_case(&receipt.blake3) {
            return Ok(None);
        }
        // Saved again as it is now, so the next run knows it without reading it.
        let moved = receipt.moved_to(&path, &c.identity);
        if let Some((_, writer)) = &self.journal {
            writer.record(moved.clone());
        }
        Ok(Some(FileOutcome::Skipped {
            receipt: Box::new(moved),
            hashed: true,
        }))
    }

    /// The blake3 of the whole file (as hex), read by a reader's threads under
    /// the run's memory budget; the file must still be the one checked.
    async fn hash_whole(&self, c: &CheckedFile) -> Result<String, Error> {
        let (checked, mode, memory) = (c.clone(), self.config.read_mode, self.memory.clone());
        let config = idb_read::ReaderConfig {
            file_hash: true,
            ..self.config.reader.clone()
        };
        // An empty plan: the reader hashes the whole file as a stretch to catch
        // up on, and ends.
        let reader = tokio::task::spawn_blocking(move || {
            let source = SourceFile::open_expecting(&checked.path, mode, &checked.identity)?;
            let hash = HashState::new(checked.size());
            Ok::<_, Error>(Reader::start(
                &source,
                std::iter::empty(),
                hash,
                &config,
                &memory,
            ))
        })
        .await
        .map_err(|e| blocking_failed(&c.path, e))??;
        match reader.next().await? {
            Delivery::End(state) => state.finalize().map(|h| h.to_hex().to_string()),
            Delivery::Chunk { .. } => None,
        }
        .ok_or_else(|| {
            Error::File(idb_read::ReadError::ReaderFailed {
                path: c.path.clone(),
                reason: "the reader ended before hashing the whole file".into(),
            })
        })
    }

    /// Takes the name's lock (with a journal; without one, nothing is locked).
    fn lock(&self, c: &CheckedFile, key: Key) -> Result<Option<NameLock>, Error> {
        let Some(locks) = &self.locks else {
            return Ok(None);
        };
        let busy = |pid| Error::Busy {
            path: c.path.clone(),
            filename: c.filename.clone(),
            dataset: self.config.dataset.clone(),
            pid,
        };
        match locks.lock(key) {
            Ok(lock) => Ok(Some(lock)),
            Err(LockError::Held(Holder::Process(pid))) => Err(busy(pid)),
            Err(LockError::Held(Holder::ThisProcess)) => Err(busy(Some(std::process::id()))),
            // A file system without locks (some NFS setups): upload unlocked, as
            // without a state directory, rather than fail every file; said once.
            Err(LockError::Io(e)) => {
                if !self
                    .unlocked
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    self.emit(Event::StateDirUnusable {
                        dir: locks.path().to_path_buf(),
                        reason: format!("cannot lock names in it ({e})"),
                    });
                }
                Ok(None)
            }
        }
    }

    /// The file's end, for the journal: an unfinished upload keeps its entry
    /// (written now), a verified one leaves a receipt and loses its entry; the
    /// name's lock goes after that. Whether the entry was kept (the next run
    /// resumes from it).
    fn end_file(
        &self,
        c: &CheckedFile,
        identity: idb_read::Identity,
        key: Key,
        state: &FileState,
        result: &Result<FileOutcome, Error>,
        lock: Option<NameLock>,
    ) -> bool {
        let Some((_, writer)) = &self.journal else {
            return false;
        };
        let resumable = match result {
            Ok(FileOutcome::Verified { .. }) => false,
            Ok(_) => true,
            Err(e) => e.worth_resuming(),
        };
        let keep = state.record.clone().filter(|_| resumable && state.session);
        let receipt = match (result, &state.record) {
            (Ok(FileOutcome::Verified { blake3, receipt }), Some(record)) => Some(ReceiptRecord {
                version: RECEIPT_VERSION,
                server: record.server.clone(),
                dataset: record.dataset.clone(),
                filename: c.filename.clone(),
                path: record.path.clone(),
                size: c.size(),
                modified: identity.modified,
                changed: identity.changed,
                device: identity.device,
                inode: identity.inode,
                blake3: blake3.clone(),
                server_receipt: receipt.clone(),
                verified_at: unix_now(),
            }),
            _ => None,
        };
        let kept = keep.is_some();
        writer.end(key, keep, receipt, state.on_disk, lock);
        kept
    }

    /// Setup (or resume), then chunks until verified. `reader` was started
    /// (reading ahead) at the given chunk size while the file was opened.
    async fn transfer(
        &self,
        f: &OpenFile,
        state: &mut FileState,
        planned: Planned,
        (start, saved): (Start, Option<crate::tus::TusRecord>),
        verifying: &AtomicBool,
    ) -> Result<FileOutcome, Error> {
        // A stopping run asks the server nothing new.
        if self.stop.is_set() {
            return Ok(FileOutcome::Interrupted);
        }
        // The protocol, asked of the server by the run's first file.
        self.retrying(f, Phase::Setup, 0, || self.protocol.prepare())
            .await
            .map_err(|failed| self.failure(f, Phase::Setup, 0, failed.failure))?;
        self.partials_begin();
        // A journal of tus keeps where the upload lives; one of protocol 1
        // keeps nothing else.
        let journal = if saved.is_some() {
            crate::Protocol::Tus
        } else {
            crate::Protocol::Chunked
        };
        let run = self.protocol.speaks();
        let switched = matches!(start, Start::Resume { .. }) && journal != run;
        if let Some(saved) = saved.filter(|_| !switched) {
            self.protocol.restore(f.file_ref(), saved);
        }
        let Planned {
            reader,
            chunk: planned_chunk,
            granule,
        } = planned;
        let mut mode = match start {
            // What the reader read ahead from the journal's offset is read
            // again from the start (see `switched` below).
            Start::Resume { .. } if switched => {
                if self.stop.is_set() {
                    return Ok(FileOutcome::Interrupted);
                }
                self.start_over(f, state, RestartReason::ProtocolChanged { journal, run })
                    .await?
            }
            Start::Resume { offset, mode } => {
                self.emit(Event::Resumed {
                    path: f.path.clone(),
                    offset,
                });
                mode
            }
            // A stopping run opens no new upload on the server.
            Start::Fresh if self.stop.is_set() => return Ok(FileOutcome::Interrupted),
            Start::Fresh => self.begin(f, state).await?,
        };
        self.emit(Event::FileStarted {
            path: f.path.clone(),
            size: f.size,
        });
        // The setup's round trip may have grown the chunk size well past what
        // was read ahead meanwhile: read on at the new size from the start,
        // rather than spend a round trip on each chunk read ahead.
        // (A file read in place already holds all its bytes.)
        let grown = f.size > planned_chunk
            && self.sizer.current() >= planned_chunk.saturating_mul(REPLAN_GROWTH);
        // Chunks read ahead before the protocol was known may not be whole
        // parts (tus): read on from the start in parts.
        let regrained = self.protocol.granule(f.file_ref()) != granule;
        let mut reader = Some(reader).filter(|_| !grown && !regrained && !switched);
        let mut restarts = Restarts::default();
        loop {
            let current = match reader.take() {
                Some(reader) => reader,
                None => self.start_reader(f, state).await?,
            };
            // A strict server takes one chunk at a time: more in flight would
            // only arrive out of order. A file sent as tus partials may have
            // the run's whole window: that starts low and grows while answers
            // stay fast (see `Run::partials_begin`).
            let window = match mode {
                WriteMode::Offset if self.protocol.partials() => self.congestion.max(),
                WriteMode::Offset => self.config.window.unwrap_or(DEFAULT_OFFSET_WINDOW),
                WriteMode::Strict => 1,
            };
            let end = self.pump(f, &current, window, state).await;
            drop(current);
            // A stopping run sends no new call and reads nothing more: what
            // the server holds is in `state` (a guess is not applied). That
            // holds for a file whose bytes are all acknowledged too: its verify
            // (or tus join and registration) is left to the next run, which
            // goes straight to it, rather than cut short by the grace's end
            // and left in doubt; but only with a journal for the next run to go
            // on from (without one it would send the file again).
            let stopping = match end {
                PumpEnd::Failed(_) => false,
                PumpEnd::Done => self.verify_left_to_next_run(),
                _ => self.stop.is_set(),
            };
            if stopping {
                return Ok(FileOutcome::Interrupted);
            }
            match end {
                PumpEnd::Done => {}
                PumpEnd::Replan => continue,
                PumpEnd::Stopped => return Ok(FileOutcome::Interrupted),
                PumpEnd::Failed(e) => return Err(e),
                PumpEnd::Realign { to } => {
                    self.restarted(f, state, &mut restarts)?;
                    self.realign(f, state, to);
                    self.ask_offset(f, state).await?;
                    continue;
                }
                // Not counted as a restart: the next answer either confirms
                // it (progress) or starts the file over (counted).
                PumpEnd::Guess { offset, to, status } => {
                    self.emit(Event::AnswerLost {
                        path: f.path.clone(),
                        offset,
                        to,
                        status,
                    });
                    state.acked.guess(to);
                    self.record_progress(state);
                    continue;
                }
                PumpEnd::Shrink => {
                    self.restarted(f, state, &mut restarts)?;
                    self.ask_offset(f, state).await?;
                    continue;
                }
                PumpEnd::StartOver(reason) => {
                    self.restarted(f, state, &mut restarts)?;
                    went_back(f, &reason, state.acked.confirmed(), &mut restarts)?;
                    mode = self.start_over(f, state, reason).await?;
                    continue;
                }
            }
            // Never verify a file that changed under us: what the server holds
            // would mix two versions. (Its status alone changed: its bytes
            // tell, hashed again off the runtime, until a stop.)
            if let idb_read::Look::StatusChanged(status) = f.source.look()? {
                let (source, hashed, stop) =
                    (f.source.clone(), state.hash.clone(), self.stop.watch());
                // A stop ends the hashing when the verify is left to the next
                // run anyway (a journal), or at once; without a journal the
                // verify goes out within the grace, and the hashing with it.
                let journal = self.journal.is_some();
                let stopped = move || match *stop.borrow() {
                    Some(StopKind::Now) => true,
                    Some(StopKind::Drain) => journal,
                    None => false,
                };
                let settled =
                    tokio::task::spawn_blocking(move || source.settle(&hashed, status, &stopped))
                        .await
                        .map_err(|e| blocking_failed(&f.path, e))??;
                if !settled || self.verify_left_to_next_run() {
                    return Ok(FileOutcome::Interrupted);
                }
            }
            verifying.store(true, Ordering::Relaxed);
            // Tus: the partials joined and the whole upload seen by HEAD; the
            // registration it leads to is journaled before it goes out.
            let prepared = self
                .retrying(f, Phase::Verify, f.size, || {
                    self.protocol.prepare_finish(f.file_ref())
                })
                .await;
            match prepared {
                Ok(done) => {
                    if done.value.is_some()
                        && let Err(reason) = self.record_now(state).await
                    {
                        // Not sent: a journal kept now must not say it may
                        // have been (the next run would ask, and a server
                        // that cannot say would leave it unsettled).
                        self.protocol.registration_not_sent(f.file_ref());
                        self.record_progress(state);
                        return Err(Error::RegistrationNotRecorded {
                            path: f.path.clone(),
                            filename: f.filename.clone(),
                            reason,
                        });
                    }
                }
                Err(_) if self.stop.is_now() => return Ok(FileOutcome::Interrupted),
                Err(failed) => {
                    verifying.store(false, Ordering::Relaxed);
                    match failed.failure {
                        // An upload sent in order that holds less: go on from there.
                        Failure::Answer(Answer {
                            outcome: Outcome::Incomplete { received, .. },
                            ..
                        }) if mode == WriteMode::Strict && received < f.size => {
                            self.restarted(f, state, &mut restarts)?;
                            self.realign(f, state, received);
                            continue;
                        }
                        Failure::Answer(Answer {
                            outcome: Outcome::Incomplete { .. } | Outcome::NoSession,
                            ..
                        }) => {
                            self.restarted(f, state, &mut restarts)?;
                            if self.stop.is_set() {
                                return Ok(FileOutcome::Interrupted);
                            }
                            mode = self
                                .start_over(f, state, RestartReason::ServerForgot)
                                .await?;
                            continue;
                        }
                        failure => return Err(self.failure(f, Phase::Verify, f.size, failure)),
                    }
                }
            }
            let verified = self
                .retrying(f, Phase::Verify, f.size, || {
                    self.protocol.finish(f.file_ref())
                })
                .await;
            verifying.store(false, Ordering::Relaxed);
            match verified {
                Ok(done) => {
                    tracing::info!(
                        file = %f.filename,
                        ms = done.elapsed.as_millis() as u64,
                        chunk_size = self.sizer.current(),
                        "verify answered"
                    );
                    self.sizer.observe_small_call(done.elapsed);
                    state.session = false;
                    return self.compare(f, state, done.value);
                }
                // The run had to stop while the verify was out: it ends here.
                Err(_) if self.stop.is_now() => return Ok(FileOutcome::Interrupted),
                Err(failed) => {
                    let reason = match &failed.failure {
                        // The server lost bytes it had acknowledged (all of them
                        // were): what it kept cannot be told apart from someone
                        // else's bytes, so send everything again.
                        Failure::Answer(Answer {
                            outcome: Outcome::Incomplete { received, .. },
                            ..
                        }) if *received < f.size => RestartReason::ServerLostBytes,
                        Failure::Answer(Answer {
                            outcome: Outcome::NoSession,
                            ..
                        }) => RestartReason::ServerForgot,
                        // A refusal that says nothing after a verify that may
                        // have gone through (its answer lost in this run, or a
                        // resumed upload whose last run may have been stopped
                        // during its verify): the file may be in the dataset
                        // already, and starting over could add it twice. (A 5xx
                        // is an answer: the server said the verify failed.)
                        // (Tus settles its own doubt: a registration that may
                        // have gone is asked of the server's lookup first.)
                        Failure::Answer(answer)
                            if says_nothing(answer)
                                && self.protocol.speaks() != crate::Protocol::Tus
                                && (failed.answer_lost || state.acked.from_journal) =>
                        {
                            return Err(Error::VerifyUnsettled {
                                path: f.path.clone(),
                                status: answer.status,
                                resumed: !failed.answer_lost,
                            });
                        }
                        // The last chunk was a guess (see `refused_chunk`), and
                        // this verify was refused at its first attempt.
                        Failure::Answer(answer)
                            if says_nothing(answer) && state.acked.guessing() =>
                        {
                            RestartReason::AnswerLostUnconfirmed {
                                status: answer.status,
                            }
                        }
                        _ => {
                            // A tus registration refused outright is no longer
                            // in doubt (the protocol says so in what it saves):
                            // the journal must not keep it as maybe sent.
                            self.record_progress(state);
                            return Err(self.failure(f, Phase::Verify, f.size, failed.failure));
                        }
                    };
                    self.restarted(f, state, &mut restarts)?;
                    if self.stop.is_set() {
                        return Ok(FileOutcome::Interrupted);
                    }
                    went_back(f, &reason, state.acked.confirmed(), &mut restarts)?;
                    mode = self.start_over(f, state, reason).await?;
                }
            }
        }
    }

    /// Counts a restart of the chunk stream; too many without progress fail
    /// the file.
    fn restarted(
        &self,
        f: &OpenFile,
        state: &FileState,
        restarts: &mut Restarts,
    ) -> Result<(), Error> {
        let count = restarts.count(state.acked.confirmed());
        if count > MAX_RESTARTS {
            return Err(Error::TooManyRestarts {
                path: f.path.clone(),
                restarts: count,
            });
        }
        Ok(())
    }

    /// The server holds `to` bytes: go on from there.
    fn realign(&self, f: &OpenFile, state: &mut FileState, to: u64) {
        self.emit(Event::Realigned {
            path: f.path.clone(),
            from: state.acked.prefix,
            to,
        });
        state.acked.reset_to(to);
        self.record_progress(state);
    }

    /// A protocol that can say where the server is (tus) settles it before a
    /// restart; protocol 1 cannot, and the offset from its 409 stands.
    async fn ask_offset(&self, f: &OpenFile, state: &mut FileState) -> Result<(), Error> {
        let asked = self
            .retrying(f, Phase::Transfer, state.acked.prefix, || {
                self.protocol.query_offset(f.file_ref())
            })
            .await
            .map_err(|failed| {
                self.failure(f, Phase::Transfer, state.acked.prefix, failed.failure)
            })?;
        if let Some(offset) = asked.value {
            state.acked.reset_to(offset);
        }
        Ok(())
    }

    /// A reader from the acknowledged offset, continuing the hash.
    async fn start_reader(&self, f: &OpenFile, state: &FileState) -> Result<Reader, Error> {
        let plan = ChunkPlan::starting_at(
            state.acked.prefix,
            f.size,
            self.sizer.policy(self.protocol.granule(f.file_ref())),
        );
        let (source, hash) = (f.source.clone(), state.hash.clone());
        let (config, memory) = (self.config.reader.clone(), self.memory.clone());
        tokio::task::spawn_blocking(move || Reader::start(&source, plan, hash, &config, &memory))
            .await
            .map_err(|e| blocking_failed(&f.path, e))
    }

    /// `setup`: opens the upload on the server.
    async fn begin(&self, f: &OpenFile, state: &mut FileState) -> Result<WriteMode, Error> {
        let done = self
            .retrying(f, Phase::Setup, 0, || self.protocol.begin(f.file_ref()))
            .await
            .map_err(|failed| self.failure(f, Phase::Setup, 0, failed.failure))?;
        self.sizer.observe_setup(done.elapsed);
        let mode = done.value;
        tracing::info!(
            file = %f.filename,
            size = f.size,
            ?mode,
            ms = done.elapsed.as_millis() as u64,
            "setup answered"
        );
        state.session = true;
        state.mode = mode;
        state.acked.reset_to(0);
        if let Some(entry) = &mut state.record {
            entry.offset_mode = mode == WriteMode::Offset;
        }
        self.record_progress(state);
        Ok(mode)
    }

    /// The server has no open upload of this file (it forgot, or a resumed
    /// journal outlived it), or lost bytes it had acknowledged: begin again from
    /// byte 0, and say why.
    async fn start_over(
        &self,
        f: &OpenFile,
        state: &mut FileState,
        reason: RestartReason,
    ) -> Result<WriteMode, Error> {
        self.emit(Event::Restarted {
            path: f.path.clone(),
            reason,
        });
        // The journal of the old upload stays until the new setup succeeds: a
        // setup refused meanwhile (a passing 404) loses nothing, and the next
        // run tries the old upload again.
        self.begin(f, state).await
    }

    /// Whether a stopping run leaves a file whose bytes are all on the server
    /// to the next run: it sends no new call, when a journal lets the next
    /// run go straight to the verify (without one, the verify goes out within
    /// the grace, rather than the whole file again next time).
    fn verify_left_to_next_run(&self) -> bool {
        self.stop.is_set() && self.journal.is_some()
    }

    /// Compares the server's receipt (when it sends one) with what was read.
    fn compare(
        &self,
        f: &OpenFile,
        state: &FileState,
        receipt: Option<VerifyReceipt>,
    ) -> Result<FileOutcome, Error> {
        let blake3 = state
            .hash
            .finalize()
            .map(|h| h.to_hex().to_string())
            .ok_or_else(|| {
                Error::File(idb_read::ReadError::ReaderFailed {
                    path: f.path.clone(),
                    reason: "the reader ended before hashing the whole file".into(),
                })
            })?;
        if let Some(receipt) = &receipt {
            // The bytes may be whole, but not under the name asked for (a
            // server that changes names): another file of that name may be
            // what they replaced.
            if receipt.filename != f.filename {
                // Shown (escaped by `Debug`), so cut as any server text is.
                return Err(Error::NameMismatch {
                    path: f.path.clone(),
                    sent: f.filename.clone(),
                    verified: crate::server_text::cut_to_limit(&receipt.filename, false),
                });
            }
            let what = if receipt.size != f.size {
                Some(format!(
                    "it has {}, we sent {}",
                    bytes_text(receipt.size),
                    f.size
                ))
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
                    path: f.path.clone(),
                    what,
                });
            }
        }
        Ok(FileOutcome::Verified { blake3, receipt })
    }
}

/// The reader a file's opening started, and how it planned its chunks.
pub(crate) struct Planned {
    reader: Reader,
    /// The chunk size then.
    chunk: u64,
    /// The protocol's granule then ([`Protocol::granule`]).
    granule: u64,
}

/// How one file's upload ended, beside its outcome.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Ended {
    /// Bytes from the start the server confirmed holding (see
    /// [`crate::FileReport::acked`]).
    pub(crate) acked: u64,
    /// Whether its journal was kept: the same command resumes it.
    pub(crate) resumable: bool,
}

impl Ended {
    fn acked(acked: u64) -> Self {
        Self {
            acked,
            resumable: false,
        }
    }
}

/// Resolves once the run is told to stop at once (a stop from outside), unless
/// a verify is in flight then: the upload ends by itself once it is answered.
async fn wait_for_now(
    stop: &mut tokio::sync::watch::Receiver<Option<StopKind>>,
    verifying: &AtomicBool,
) {
    let mut seen = None;
    loop {
        match stop::changed(stop, seen).await {
            StopKind::Now if !verifying.load(Ordering::Relaxed) => return,
            kind => seen = Some(kind),
        }
    }
}

/// Resolves with the file's [`Error::FileDeadline`] once its deadline passed,
/// unless a verify is in flight then: the verify is let finish, and the upload
/// ends by itself after it (no call starts past the deadline).
async fn past_deadline(file: &OpenFile, verifying: &AtomicBool) -> Error {
    let Some(deadline) = file.deadline else {
        return std::future::pending().await;
    };
    tokio::time::sleep_until(deadline.at).await;
    match file.past_deadline(deadline.at) {
        Some(error) if !verifying.load(Ordering::Relaxed) => error,
        _ => std::future::pending().await,
    }
}

/// A blocking task that panicked or was cancelled: an error with the file's name.
fn blocking_failed(path: &std::path::Path, e: tokio::task::JoinError) -> Error {
    Error::File(idb_read::ReadError::ReaderFailed {
        path: path.to_path_buf(),
        reason: format!("the thread opening or reading it failed: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;
    use crate::stop::Stop;

    #[test]
    fn a_stop_at_once_waits_for_a_verify_in_flight() {
        let stop = Stop::default();
        let verifying = AtomicBool::new(true);
        let mut watch = stop.watch();
        let mut waiting = Box::pin(wait_for_now(&mut watch, &verifying));
        stop.set(StopKind::Drain);
        assert!(
            waiting.as_mut().now_or_never().is_none(),
            "a drain is not a stop at once"
        );
        stop.set(StopKind::Now);
        assert!(
            waiting.as_mut().now_or_never().is_none(),
            "a verify in flight is let finish"
        );
        drop(waiting);
        // Without a verify in flight, a stop at once ends the upload.
        verifying.store(false, Ordering::Relaxed);
        assert!(
            wait_for_now(&mut stop.watch(), &verifying)
                .now_or_never()
                .is_some()
        );
    }
}
