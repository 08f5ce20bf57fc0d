//! The reader thread: reads ahead of the network through a bounded channel.

use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::{ChunkPlan, ReadError, SourceFile, Span};

/// The default prefetch depth: chunks read ahead of the one being sent.
pub const DEFAULT_PREFETCH: usize = 4;

/// Bytes per block when hashing a stretch that is not sent (a resumed upload's
/// prefix, for the whole-file hash).
const HASH_BLOCK: u64 = 8 * 1024 * 1024;

/// One chunk, ready to send.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Byte offset in the file: the `previous_size` of its transfer call.
    pub offset: u64,
    /// The bytes: a zero-copy view of the mapping (or an owned buffer when the file
    /// is read with positional reads). Cloning is cheap; retries send a clone.
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

/// How the reader thread works.
#[derive(Debug, Clone)]
pub struct ReaderConfig {
    /// Chunks read ahead: the channel's capacity. Memory held by the reader is at
    /// most `(prefetch + 1) x chunk` (plus what the consumer keeps).
    pub prefetch: usize,
    /// Keep the running blake3 of the whole file ([`HashState`]).
    pub file_hash: bool,
    /// Also hash each chunk on its own ([`Chunk::hash`]); costs a second pass.
    pub chunk_hashes: bool,
    /// Release a mapped chunk's pages from this process once its last view is
    /// dropped (keeps resident memory bounded; the page cache keeps the data).
    pub release_pages: bool,
}

impl Default for ReaderConfig {
    fn default() -> Self {
        Self {
            prefetch: DEFAULT_PREFETCH,
            file_hash: true,
            chunk_hashes: false,
            release_pages: true,
        }
    }
}

/// The running blake3 of a file's bytes, in order from byte 0, and how far it got.
/// A new [`Reader`] continues it, hashing any stretch it skips.
#[derive(Clone, Debug, Default)]
pub struct HashState {
    hasher: blake3::Hasher,
    upto: u64,
}

impl HashState {
    /// Nothing hashed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes hashed so far (all of `0..upto`).
    pub fn upto(&self) -> u64 {
        self.upto
    }

    /// The file's blake3, if all `size` bytes were hashed.
    pub fn finalize(&self, size: u64) -> Option<blake3::Hash> {
        (self.upto == size).then(|| self.hasher.finalize())
    }

    /// Hashes the part of `bytes` (which start at `offset`) not hashed yet.
    fn absorb(&mut self, offset: u64, bytes: &[u8]) {
        let end = offset + bytes.len() as u64;
        if offset <= self.upto && self.upto < end {
            self.hasher.update(&bytes[(self.upto - offset) as usize..]);
            self.upto = end;
        }
    }

    /// Hashes whatever of `source` is not hashed yet, reading it from the file
    /// (when a plan ended before the hash reached the end, as a resumed upload
    /// whose server already held everything). Blocking: call it off async threads.
    pub fn complete(&mut self, source: &SourceFile) -> Result<(), ReadError> {
        self.catch_up(source, source.size(), true)
    }

    /// Hashes `self.upto..to` from the file without sending it.
    fn catch_up(&mut self, source: &SourceFile, to: u64, release: bool) -> Result<(), ReadError> {
        while self.upto < to {
            let len = (to - self.upto).min(HASH_BLOCK);
            let bytes = source.read(
                Span {
                    offset: self.upto,
                    len,
                },
                release,
            )?;
            self.absorb(self.upto, &bytes);
        }
        Ok(())
    }
}

type Item = Result<Chunk, ReadError>;

/// Threads reading a [`ChunkPlan`] of a [`SourceFile`] ahead of their consumer.
///
/// Before each chunk the file's identity is checked; after the last one, again.
/// A change or a read error is delivered in place of the next chunk, and reading
/// stops. With hashing on and a prefetch depth of 2 or more, reading (with its
/// page faults) and hashing run on two threads, overlapping; otherwise one thread
/// does both. Either way at most `prefetch` chunks (at least one) are held ahead
/// of the consumer. Dropping the reader (or [`Reader::finish`]) stops the threads
/// at their next hand-over.
pub struct Reader {
    /// The bounded channel's receiving side: the backpressure that keeps reading
    /// from outrunning the network. Dropping it is how the threads learn to stop.
    chunks: Receiver<Item>,
    /// The thread that ends with the hash state, and the reading thread when it is
    /// a separate one.
    threads: Option<(JoinHandle<HashState>, Option<JoinHandle<()>>)>,
}

/// Bytes between the page touches of the prefetcher: the page size.
const PAGE: usize = 4096;

impl Reader {
    /// Starts reading `plan`, continuing the whole-file hash `state`.
    pub fn spawn(
        source: &SourceFile,
        plan: ChunkPlan,
        state: HashState,
        config: &ReaderConfig,
    ) -> Self {
        let hashing = config.file_hash || config.chunk_hashes;
        let spawn = |name: &str| std::thread::Builder::new().name(name.into());
        let (source, config) = (source.clone(), config.clone());
        if !hashing || config.prefetch < 2 {
            let (tx, chunks) = crossbeam_channel::bounded(config.prefetch);
            let thread = spawn("idb-reader")
                .spawn(move || {
                    let mut stage = HashStage {
                        state,
                        source: &source,
                        config: &config,
                    };
                    read_ahead(&source, plan, &config, &tx, false, |item| {
                        stage.process(item)
                    });
                    stage.state
                })
                .expect("the OS can start a thread");
            return Self {
                chunks,
                threads: Some((thread, None)),
            };
        }
        // Two stages: the reader hands each chunk (pages already faulted in) to the
        // hasher through a rendezvous channel; the hasher holds one, the reader one,
        // so the output channel holds `prefetch - 2`.
        let (tx, chunks) = crossbeam_channel::bounded(config.prefetch - 2);
        let (to_hasher, from_reader) = crossbeam_channel::bounded::<Item>(0);
        let (reader_source, reader_config) = (source.clone(), config.clone());
        let reader = spawn("idb-reader")
            .spawn(move || {
                read_ahead(
                    &reader_source,
                    plan,
                    &reader_config,
                    &to_hasher,
                    true,
                    |item| item,
                );
            })
            .expect("the OS can start a thread");
        let hasher = spawn("idb-hasher")
            .spawn(move || {
                let mut stage = HashStage {
                    state,
                    source: &source,
                    config: &config,
                };
                for item in from_reader {
                    let item = stage.process(item);
                    let failed = item.is_err();
                    if tx.send(item).is_err() || failed {
                        break;
                    }
                }
                stage.state
            })
            .expect("the OS can start a thread");
        Self {
            chunks,
            threads: Some((hasher, Some(reader))),
        }
    }

    /// The next chunk, waiting for it; `None` once the plan is done.
    pub fn recv(&self) -> Option<Item> {
        self.chunks.recv().ok()
    }

    /// The next chunk if one is ready: `Ok(None)` once the plan is done,
    /// `Err(())` if the reader is still working on it.
    #[allow(clippy::result_unit_err)]
    pub fn try_recv(&self) -> Result<Option<Item>, ()> {
        match self.chunks.try_recv() {
            Ok(item) => Ok(Some(item)),
            Err(TryRecvError::Disconnected) => Ok(None),
            Err(TryRecvError::Empty) => Err(()),
        }
    }

    /// A handle on the channel, for waiting on another thread.
    pub fn receiver(&self) -> Receiver<Item> {
        self.chunks.clone()
    }

    /// Stops the threads (if still running) and returns the whole-file hash state
    /// as far as it got: it covers every chunk handed out and may cover a few read
    /// ahead but never delivered.
    pub fn finish(mut self) -> HashState {
        let (last, reader) = self.threads.take().expect("finish runs once");
        // Disconnect: a thread blocked on a full channel wakes with an error and
        // returns (the hasher's return drops its receiver, which stops the reader).
        drop(std::mem::replace(
            &mut self.chunks,
            crossbeam_channel::never(),
        ));
        let state = last.join().unwrap_or_default();
        if let Some(reader) = reader {
            let _ = reader.join();
        }
        state
    }
}

/// Hashing a chunk into the file's running hash (and its own, if asked).
struct HashStage<'a> {
    state: HashState,
    source: &'a SourceFile,
    config: &'a ReaderConfig,
}

impl HashStage<'_> {
    fn process(&mut self, item: Item) -> Item {
        let mut chunk = item?;
        if self.config.file_hash {
            if self.state.upto < chunk.offset {
                self.state
                    .catch_up(self.source, chunk.offset, self.config.release_pages)?;
            }
            self.state.absorb(chunk.offset, &chunk.bytes);
        }
        if self.config.chunk_hashes {
            chunk.hash = Some(blake3::hash(&chunk.bytes));
        }
        Ok(chunk)
    }
}

/// Walks the plan: checks the identity, reads each chunk, asks the kernel for the
/// next ones, and passes each through `stage` to `tx`. With `touch`, a mapped
/// chunk's pages are faulted in here, so the hashing thread does not wait for them
/// (measured: worth it only when a hasher runs beside; alone, touching just moves
/// the faults). Ends after the plan (with a final identity check), at the first
/// error, or when `tx`'s receiver is gone.
fn read_ahead(
    source: &SourceFile,
    plan: ChunkPlan,
    config: &ReaderConfig,
    tx: &Sender<Item>,
    touch: bool,
    mut stage: impl FnMut(Item) -> Item,
) {
    for span in plan {
        let chunk = source.check_identity().and_then(|()| {
            let bytes = source.read(span, config.release_pages)?;
            // Ask for the next chunks now, so the disk works while this one is
            // hashed and sent.
            source.prefetch(span.end(), span.len * config.prefetch.max(1) as u64);
            if touch && source.is_mapped() {
                // Fault the pages in here, off the hashing thread.
                let touched = bytes.iter().step_by(PAGE).fold(0u8, |acc, b| acc ^ b);
                std::hint::black_box(touched);
            }
            Ok(Chunk {
                offset: span.offset,
                bytes,
                hash: None,
            })
        });
        let chunk = stage(chunk);
        let failed = chunk.is_err();
        if tx.send(chunk).is_err() || failed {
            return;
        }
    }
    if let Err(e) = source.check_identity() {
        let _ = tx.send(Err(e));
    }
}
