//! The reader: a plan's chunks read ahead of their consumer, bounded in chunks
//! and in bytes, hashed on the way, handed over through a channel an async task
//! can await.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

use crate::memory::{Lease, MemoryBudget};
use crate::{ChunkMemory, HashState, Look, ReadError, SourceFile, Span};

/// The default prefetch depth: chunks read ahead of the one being sent.
pub const DEFAULT_PREFETCH: usize = 4;

/// The default read-ahead in bytes: 64 MiB per file (one chunk at least, whatever
/// its size). With the chunks being sent, this is what one file holds in memory.
pub const DEFAULT_READ_AHEAD_BYTES: u64 = 64 * 1024 * 1024;

/// A file (or the rest of one) that fits in one chunk of at most this many bytes
/// is read in place, on the thread that starts the reader: no reading thread is
/// worth starting for it.
pub const DEFAULT_IN_PLACE_MAX: u64 = 1024 * 1024;

/// Bytes per block when hashing a stretch that is not sent (a resumed upload
/// whose saved hash state lags its offset).
const HASH_BLOCK: u64 = 8 * 1024 * 1024;

/// Bytes between the page touches of the prefetcher: the page size.
const PAGE: usize = 4096;

/// One chunk, ready to send.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Byte offset in the file: the `previous_size` of its transfer call.
    pub offset: u64,
    /// The bytes: a zero-copy view of the mapping (or an owned buffer when the file
    /// is read with positional reads). Cloning is cheap; retries send a clone.
    /// They hold their share of the run's [`ChunkMemory`] until the last view is
    /// dropped.
    pub bytes: Bytes,
    /// blake3 of `bytes`, when [`ReaderConfig::chunk_hashes`] is on.
    pub hash: Option<blake3::Hash>,
}

impl Chunk {
    /// One past the chunk's last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.bytes.len() as u64
    }
}

/// How a reader works.
#[derive(Debug, Clone)]
pub struct ReaderConfig {
    /// Chunks read ahead at most (at least one).
    pub prefetch: usize,
    /// Bytes read ahead at most: chunks read and not yet taken by the consumer.
    /// One chunk is always allowed, however large.
    pub read_ahead_bytes: u64,
    /// Keep the running blake3 of the whole file ([`HashState`]).
    pub file_hash: bool,
    /// Also hash each chunk on its own ([`Chunk::hash`]); costs a second pass.
    pub chunk_hashes: bool,
    /// Hand out the whole-file hash state after each chunk
    /// ([`Delivery::Chunk::hash_after`]), so the consumer can save it.
    pub hash_snapshots: bool,
    /// Release a mapped chunk's pages from this process once its last view is
    /// dropped (keeps resident memory bounded; the page cache keeps the data).
    pub release_pages: bool,
    /// Read a plan of one chunk of at most this many bytes in place (see
    /// [`DEFAULT_IN_PLACE_MAX`]); 0 never does.
    pub in_place_max: u64,
}

impl Default for ReaderConfig {
    fn default() -> Self {
        Self {
            prefetch: DEFAULT_PREFETCH,
            read_ahead_bytes: DEFAULT_READ_AHEAD_BYTES,
            file_hash: true,
            chunk_hashes: false,
            hash_snapshots: false,
            release_pages: true,
            in_place_max: DEFAULT_IN_PLACE_MAX,
        }
    }
}

/// What a reader hands out.
#[derive(Debug)]
pub enum Delivery {
    /// The next chunk of the plan.
    Chunk {
        /// The chunk.
        chunk: Chunk,
        /// The whole-file hash state once this chunk is hashed (with
        /// [`ReaderConfig::hash_snapshots`]).
        hash_after: Option<HashState>,
    },
    /// The plan is done and the file is unchanged; the whole-file hash state, which
    /// covers at least every byte handed out.
    End(HashState),
}

/// What travels through the channel.
enum Message {
    Chunk {
        chunk: Chunk,
        hash_after: Option<HashState>,
        /// This chunk's share of the read-ahead; dropped when the consumer takes it.
        _read_ahead: Option<Lease>,
    },
    End(HashState),
    Failed(ReadError),
}

/// What the reading thread hands the hashing thread.
enum ToHasher {
    /// The hash state, caught up to the plan's start: comes first.
    Start(HashState),
    /// A chunk, and whether the file's status changed before it was read (the
    /// bytes hashed before it are then hashed again first).
    Chunk(Chunk, Lease, Look),
    /// The plan is read; as for a chunk, whether the status changed at the end.
    Done(Look),
    Failed(ReadError),
}

/// Reads a [`crate::ChunkPlan`] of a [`SourceFile`] ahead of its consumer.
///
/// Before each chunk the file's identity is checked; after the last one, again.
/// A change or a read error is delivered in place of the next chunk, and reading
/// stops. With hashing on and a prefetch depth of 2 or more, reading (with its
/// page faults) and hashing run on two threads, overlapping; otherwise one thread
/// does both; a plan of one small chunk is read in place by
/// [`Reader::start`]. Chunks read ahead and not yet taken are at most
/// [`ReaderConfig::prefetch`] and [`ReaderConfig::read_ahead_bytes`] (one chunk
/// at least); every chunk's bytes are leased from the run's [`ChunkMemory`]
/// before they are read.
///
/// The end of the plan is an explicit [`Delivery::End`]: a thread that panics,
/// cannot start or stops early is an error ([`ReadError::ReaderFailed`]), never
/// an end of file. Dropping the reader stops its threads at their next step.
pub struct Reader {
    path: PathBuf,
    /// The receiving side of a bounded channel: the backpressure (with the
    /// read-ahead budget) that keeps reading from outrunning the consumer.
    /// Dropping it is how the threads learn to stop.
    chunks: async_channel::Receiver<Message>,
    /// Set on drop, so a thread waiting for memory gives up.
    stop: Arc<AtomicBool>,
    /// The budgets a thread of this reader may wait on, woken on drop.
    budgets: Vec<MemoryBudget>,
    /// Whether [`Delivery::End`] was handed out.
    ended: AtomicBool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("path", &self.path).finish()
    }
}

impl Reader {
    /// Starts reading `spans` (a plan, or any contiguous spans ending at the file
    /// size) of `source`, continuing the whole-file hash `hash` (any stretch
    /// between what it covers and the first span is read and hashed first).
    ///
    /// May block (a plan of one small chunk is read in place, which may wait for
    /// memory): call it off async runtime threads. Anything long (a hash to catch
    /// up, a larger plan) happens on the reader's threads, which dropping the
    /// reader stops.
    pub fn start(
        source: &SourceFile,
        spans: impl IntoIterator<Item = Span, IntoIter: Send + 'static>,
        hash: HashState,
        config: &ReaderConfig,
        memory: &ChunkMemory,
    ) -> Self {
        let mut spans = spans.into_iter().peekable();
        let stop = Arc::new(AtomicBool::new(false));
        let read_ahead = MemoryBudget::new(config.read_ahead_bytes);
        let first = spans.peek().copied();
        let start = first.map_or(source.size(), |s| s.offset);
        // In place only when nothing needs catching up first: a catch-up may read
        // much of the file, and only a reader thread can be stopped meanwhile.
        let caught_up = !config.file_hash || hash.upto() >= start;
        let one_small_chunk = caught_up
            && first.is_none_or(|s| s.end() == source.size() && s.len <= config.in_place_max);
        let job = Job {
            source: source.clone(),
            config: config.clone(),
            memory: memory.clone(),
            stop: Arc::clone(&stop),
        };
        let budgets = vec![read_ahead.clone(), memory.budget().clone()];
        let reader = |chunks| Self {
            path: source.path().to_path_buf(),
            chunks,
            stop: Arc::clone(&stop),
            budgets,
            ended: AtomicBool::new(false),
        };
        if one_small_chunk {
            let (tx, rx) = async_channel::unbounded();
            job.alone(spans, start, hash, None, &tx);
            return reader(rx);
        }
        let hashing = config.file_hash || config.chunk_hashes;
        let capacity = config.prefetch.max(1);
        if !hashing || config.prefetch < 2 {
            let (tx, rx) = async_channel::bounded(capacity);
            let failed = tx.clone();
            spawn_guarded("idb-reader", source.path(), &failed, move || {
                job.alone(spans, start, hash, Some(&read_ahead), &tx)
            });
            return reader(rx);
        }
        // Two stages: the reading thread hands each chunk (pages already faulted
        // in) to the hashing thread through a rendezvous channel; one chunk is
        // held by each, the rest wait in the output channel.
        let (tx, rx) = async_channel::bounded(capacity.saturating_sub(2).max(1));
        let (to_hasher, from_reader) = crossbeam_channel::bounded::<ToHasher>(0);
        let hasher_job = job.clone();
        let failed = tx.clone();
        spawn_guarded("idb-hasher", source.path(), &failed, move || {
            hasher_job.hash_stage(&from_reader, &tx);
        });
        let failed_to_hasher = to_hasher.clone();
        let spawned = std::thread::Builder::new()
            .name("idb-reader".into())
            .spawn(move || {
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    job.read_stage(spans, start, hash, &read_ahead, &to_hasher)
                }));
                if let Err(panic) = outcome {
                    let _ = to_hasher.send(ToHasher::Failed(failure(&job.source, panic)));
                }
            });
        if let Err(e) = spawned {
            let _ = failed_to_hasher.send(ToHasher::Failed(ReadError::ReaderFailed {
                path: source.path().to_path_buf(),
                reason: format!("cannot start a reading thread: {e}"),
            }));
        }
        reader(rx)
    }

    /// The next chunk, or the end, waiting for it without blocking a thread.
    /// Cancel-safe: a call dropped before it finishes loses nothing.
    pub async fn next(&self) -> Result<Delivery, ReadError> {
        let message = self.chunks.recv().await;
        self.deliver(message.ok())
    }

    /// [`Reader::next`] for threads that may block.
    pub fn next_blocking(&self) -> Result<Delivery, ReadError> {
        let message = self.chunks.recv_blocking();
        self.deliver(message.ok())
    }

    fn deliver(&self, message: Option<Message>) -> Result<Delivery, ReadError> {
        match message {
            // The chunk's read-ahead lease is dropped here: it is taken.
            Some(Message::Chunk {
                chunk, hash_after, ..
            }) => Ok(Delivery::Chunk { chunk, hash_after }),
            Some(Message::End(state)) => {
                self.ended.store(true, Ordering::Relaxed);
                Ok(Delivery::End(state))
            }
            Some(Message::Failed(e)) => Err(e),
            None => Err(ReadError::ReaderFailed {
                path: self.path.clone(),
                reason: if self.ended.load(Ordering::Relaxed) {
                    "a chunk was asked for after the end".into()
                } else {
                    "the reading thread stopped before the end".into()
                },
            }),
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for budget in &self.budgets {
            budget.wake();
        }
    }
}

/// Runs `work` on a new thread named `name`; a panic or a failure to start is
/// sent as [`Message::Failed`] through `failed`.
fn spawn_guarded(
    name: &str,
    path: &std::path::Path,
    failed: &async_channel::Sender<Message>,
    work: impl FnOnce() + Send + 'static,
) {
    let on_panic = failed.clone();
    let (thread, path) = (name.to_owned(), path.to_path_buf());
    let panic_path = path.clone();
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Err(panic) = catch_unwind(AssertUnwindSafe(work)) {
                let _ = on_panic.send_blocking(Message::Failed(ReadError::ReaderFailed {
                    path: panic_path,
                    reason: format!("the {thread} thread panicked: {}", panic_text(&panic)),
                }));
            }
        });
    if let Err(e) = spawned {
        let _ = failed.send_blocking(Message::Failed(ReadError::ReaderFailed {
            path,
            reason: format!("cannot start a thread: {e}"),
        }));
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

fn failure(source: &SourceFile, panic: Box<dyn std::any::Any + Send>) -> ReadError {
    ReadError::ReaderFailed {
        path: source.path().to_path_buf(),
        reason: format!("the reading thread panicked: {}", panic_text(&panic)),
    }
}

/// What every stage of one reader works with.
#[derive(Clone)]
struct Job {
    source: SourceFile,
    config: ReaderConfig,
    memory: ChunkMemory,
    stop: Arc<AtomicBool>,
}

impl Job {
    /// Reads `span`: checks the identity first, leases the bytes, asks the kernel
    /// for the chunks after it. `Ok(None)`: the reader was dropped meanwhile.
    fn read(&self, span: Span) -> Result<Option<(Chunk, Look)>, ReadError> {
        let look = self.source.look()?;
        let Some(lease) = self.memory.budget().acquire(span.len, &self.stop) else {
            return Ok(None);
        };
        let bytes = self
            .source
            .read(span, self.config.release_pages, Some(lease), &self.memory)?;
        // Ask for the next chunks now, so the disk works while this one is
        // hashed and sent.
        let ahead = span.len * self.config.prefetch.max(1) as u64;
        self.source.prefetch(span.end(), ahead);
        Ok(Some((
            Chunk {
                offset: span.offset,
                bytes,
                hash: None,
            },
            look,
        )))
    }

    /// After the file's status alone changed ([`Look::StatusChanged`]): what
    /// `state` hashed is hashed again from the file, and must be the same. The
    /// whole-file hash is what tells; without it, the change is taken as a
    /// write. `Ok(false)`: the reader was dropped meanwhile. Blocking.
    fn settle(&self, look: Look, state: &HashState) -> Result<bool, ReadError> {
        match look {
            Look::Same => Ok(true),
            Look::StatusChanged(status) if self.config.file_hash => {
                let stopped = || self.stop.load(Ordering::Relaxed);
                self.source.settle(state, status, &stopped)
            }
            Look::StatusChanged(_) => Err(ReadError::Changed {
                path: self.source.path().to_path_buf(),
                change: crate::Change::Modified,
            }),
        }
    }

    /// Hashes `state.upto()..to` from the file without handing it out (a resumed
    /// upload whose saved state lags where it goes on). `Ok(false)`: dropped.
    fn catch_up(&self, state: &mut HashState, to: u64) -> Result<bool, ReadError> {
        if !self.config.file_hash {
            return Ok(true);
        }
        let block = HASH_BLOCK.min(self.memory.budget().limit());
        while state.upto() < to {
            let span = Span {
                offset: state.upto(),
                len: (to - state.upto()).min(block),
            };
            let Some(lease) = self.memory.budget().acquire(span.len, &self.stop) else {
                return Ok(false);
            };
            let bytes =
                self.source
                    .read(span, self.config.release_pages, Some(lease), &self.memory)?;
            state.absorb(span.offset, &bytes);
        }
        Ok(true)
    }

    /// Hashes a chunk into the file's running hash (and its own, if asked).
    fn hash(&self, state: &mut HashState, chunk: &mut Chunk) -> Option<HashState> {
        if self.config.chunk_hashes {
            chunk.hash = Some(blake3::hash(&chunk.bytes));
        }
        if !self.config.file_hash {
            return None;
        }
        state.absorb(chunk.offset, &chunk.bytes);
        self.config.hash_snapshots.then(|| state.clone())
    }

    /// One thread reads and hashes: a reader thread of its own, or the caller's
    /// for a plan read in place (into an unbounded channel that holds at most its
    /// one small chunk and the end, with no read-ahead budget: nothing is ahead).
    fn alone(
        &self,
        spans: impl Iterator<Item = Span>,
        start: u64,
        mut state: HashState,
        read_ahead: Option<&MemoryBudget>,
        tx: &async_channel::Sender<Message>,
    ) {
        let result = (|| {
            if !self.catch_up(&mut state, start)? {
                return Ok(());
            }
            for span in spans {
                let ahead = match read_ahead {
                    None => None,
                    Some(budget) => match budget.acquire(span.len, &self.stop) {
                        Some(lease) => Some(lease),
                        None => return Ok(()),
                    },
                };
                let Some((mut chunk, look)) = self.read(span)? else {
                    return Ok(());
                };
                if !self.settle(look, &state)? {
                    return Ok(());
                }
                let hash_after = self.hash(&mut state, &mut chunk);
                let message = Message::Chunk {
                    chunk,
                    hash_after,
                    _read_ahead: ahead,
                };
                if tx.send_blocking(message).is_err() {
                    return Ok(());
                }
            }
            let look = self.source.look()?;
            if !self.settle(look, &state)? {
                return Ok(());
            }
            let _ = tx.send_blocking(Message::End(state));
            Ok(())
        })();
        if let Err(e) = result {
            let _ = tx.send_blocking(Message::Failed(e));
        }
    }

    /// The reading thread of two: catches the hash up, reads each chunk, faults
    /// its pages in (so the hashing thread does not wait for them), hands it on.
    fn read_stage(
        &self,
        spans: impl Iterator<Item = Span>,
        start: u64,
        mut state: HashState,
        read_ahead: &MemoryBudget,
        to_hasher: &crossbeam_channel::Sender<ToHasher>,
    ) {
        let result = (|| {
            if !self.catch_up(&mut state, start)? {
                return Ok(());
            }
            if to_hasher.send(ToHasher::Start(state)).is_err() {
                return Ok(());
            }
            for span in spans {
                let Some(ahead) = read_ahead.acquire(span.len, &self.stop) else {
                    return Ok(());
                };
                let Some((chunk, look)) = self.read(span)? else {
                    return Ok(());
                };
                if self.source.is_mapped() && !self.source.populate(span.offset, chunk.bytes.len())
                {
                    // Fault the pages in here, off the hashing thread.
                    let touched = chunk.bytes.iter().step_by(PAGE).fold(0u8, |acc, b| acc ^ b);
                    std::hint::black_box(touched);
                }
                if to_hasher.send(ToHasher::Chunk(chunk, ahead, look)).is_err() {
                    return Ok(());
                }
            }
            let look = self.source.look()?;
            let _ = to_hasher.send(ToHasher::Done(look));
            Ok(())
        })();
        if let Err(e) = result {
            let _ = to_hasher.send(ToHasher::Failed(e));
        }
    }

    /// The hashing thread of two: hashes each chunk and hands it out.
    fn hash_stage(
        &self,
        from_reader: &crossbeam_channel::Receiver<ToHasher>,
        tx: &async_channel::Sender<Message>,
    ) {
        let mut state = None;
        for message in from_reader {
            let out = match message {
                ToHasher::Start(start) => {
                    state = Some(start);
                    continue;
                }
                ToHasher::Chunk(mut chunk, ahead, look) => {
                    let state = state.as_mut().expect("the state comes first");
                    match self.settle(look, state) {
                        Ok(false) => return,
                        Ok(true) => {
                            let hash_after = self.hash(state, &mut chunk);
                            Message::Chunk {
                                chunk,
                                hash_after,
                                _read_ahead: Some(ahead),
                            }
                        }
                        Err(e) => Message::Failed(e),
                    }
                }
                ToHasher::Done(look) => match state.take() {
                    Some(state) => match self.settle(look, &state) {
                        Ok(false) => return,
                        Ok(true) => Message::End(state),
                        Err(e) => Message::Failed(e),
                    },
                    None => return,
                },
                ToHasher::Failed(e) => Message::Failed(e),
            };
            let last = !matches!(out, Message::Chunk { .. });
            if tx.send_blocking(out).is_err() || last {
                return;
            }
        }
    }
}
