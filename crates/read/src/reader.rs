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

/// A thread reading a [`ChunkPlan`] of a [`SourceFile`] ahead of its consumer.
///
/// Before each chunk it checks that the file is unchanged; after the last one it
/// checks again. A change or a read error is delivered in place of the next chunk,
/// and the thread stops. Dropping the reader (or [`Reader::finish`]) stops it at
/// its next hand-over.
pub struct Reader {
    /// The bounded channel's receiving side: `prefetch` chunks wait here at most,
    /// which is the backpressure that keeps the reader from outrunning the network.
    /// Dropping it is how the thread learns to stop.
    chunks: Receiver<Item>,
    thread: Option<JoinHandle<HashState>>,
}

impl Reader {
    /// Starts a reader thread over `plan`, continuing the whole-file hash `state`.
    pub fn spawn(
        source: &SourceFile,
        plan: ChunkPlan,
        state: HashState,
        config: &ReaderConfig,
    ) -> Self {
        let (tx, chunks) = crossbeam_channel::bounded(config.prefetch);
        let source = source.clone();
        let config = config.clone();
        let thread = std::thread::Builder::new()
            .name("idb-reader".into())
            .spawn(move || read_ahead(&source, plan, state, &config, &tx))
            .expect("the OS can start a thread");
        Self {
            chunks,
            thread: Some(thread),
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

    /// Stops the thread (if still running) and returns the whole-file hash state as
    /// far as the thread got: the hash covers every chunk handed out and may cover
    /// a few read ahead but never delivered.
    pub fn finish(mut self) -> HashState {
        let thread = self.thread.take().expect("finish runs once");
        // Disconnect: a thread blocked on a full channel wakes with an error and
        // returns. `self.chunks` is dropped with `self`; replace it to drop now.
        drop(std::mem::replace(
            &mut self.chunks,
            crossbeam_channel::never(),
        ));
        thread.join().unwrap_or_default()
    }
}

fn read_ahead(
    source: &SourceFile,
    plan: ChunkPlan,
    mut state: HashState,
    config: &ReaderConfig,
    tx: &Sender<Item>,
) -> HashState {
    let release = config.release_pages;
    for span in plan {
        let chunk = source.check_identity().and_then(|()| {
            if config.file_hash && state.upto < span.offset {
                state.catch_up(source, span.offset, release)?;
            }
            let bytes = source.read(span, release)?;
            // Ask for the next chunks now, so the disk works while this one is
            // hashed and sent.
            source.prefetch(span.end(), span.len * config.prefetch.max(1) as u64);
            if config.file_hash {
                state.absorb(span.offset, &bytes);
            }
            let hash = config.chunk_hashes.then(|| blake3::hash(&bytes));
            Ok(Chunk {
                offset: span.offset,
                bytes,
                hash,
            })
        });
        let failed = chunk.is_err();
        if tx.send(chunk).is_err() || failed {
            return state;
        }
    }
    if let Err(e) = source.check_identity() {
        let _ = tx.send(Err(e));
    }
    state
}
