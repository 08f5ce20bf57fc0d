//! The file side of `idb`: what to read, in which pieces, and reading it ahead of
//! the network.
//!
//! `idb-read` owns:
//! - [`ChunkPlan`]: the `(offset, len)` pieces of a file under a [`ChunkPolicy`]
//!   that may change sizes as it goes. Offsets are the protocol's `previous_size`.
//! - [`SourceFile`]: a file checked by its metadata alone ([`SourceFile::inspect`],
//!   no descriptor used), then opened when its turn comes (regular, readable, at
//!   most 2 TiB, still the file that was checked) and memory-mapped when it can be.
//! - [`Reader`]: threads that walk a plan, check the identity before every chunk,
//!   ask the kernel for pages ahead, hash, and hand out [`Chunk`]s through a
//!   channel an async task awaits ([`Reader::next`], cancel-safe). Read-ahead is
//!   bounded in chunks and in bytes; the end of a plan is an explicit
//!   [`Delivery::End`], so a thread that dies is an error, never an end of file.
//!   A plan of one small chunk is read in place, without threads or a map.
//! - [`ChunkMemory`]: the run's memory for chunk bytes: a [`MemoryBudget`] every
//!   chunk is leased from before it is read and that gets the bytes back when the
//!   chunk's last view drops, and independent counters of chunk bytes alive and
//!   read. Chunk bytes are zero-copy views of the mapping; their pages are
//!   released from this process when the last view is dropped.
//! - [`HashState`]: the whole-file blake3 as the chaining values of the subtrees
//!   hashed so far: carried across readers, and small enough to save
//!   ([`HashState::encode`]) so a resumed upload hashes only what it sends.
//!
//! ```
//! use idb_read::{ChunkMemory, ChunkPlan, Delivery, HashState, Reader, ReaderConfig, SourceFile};
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("f");
//! # std::fs::write(&path, vec![7u8; 10_000]).unwrap();
//! let source = SourceFile::open(&path, Default::default())?;
//! let plan = ChunkPlan::fixed(source.size(), 4096);
//! let memory = ChunkMemory::new(64 << 20);
//! let config = ReaderConfig { in_place_max: 0, ..ReaderConfig::default() };
//! let reader = Reader::start(&source, plan, HashState::new(source.size()), &config, &memory);
//! let mut received = 0;
//! let state = loop {
//!     match reader.next_blocking()? {
//!         Delivery::Chunk { chunk, .. } => {
//!             assert_eq!(chunk.offset, received);
//!             received += chunk.bytes.len() as u64;
//!         }
//!         Delivery::End(state) => break state,
//!     }
//! };
//! assert_eq!(state.finalize(), Some(blake3::hash(&vec![7u8; 10_000])));
//! # Ok::<(), idb_read::ReadError>(())
//! ```
//!
//! No network code and no async runtime: the engine awaits the channel from its
//! tasks; every blocking wait (memory, a full channel) happens on the reader's
//! own threads or in [`Reader::start`].
#![deny(missing_docs)]

mod error;
mod hash;
mod identity;
mod mapped;
mod memory;
mod network_fs;
mod plan;
mod reader;
mod source;

pub use error::{Change, FileKind, ReadError};
pub use hash::{BadHashState, HashState};
pub use identity::Identity;
pub use mapped::mapped_path_at;
pub use memory::{ChunkMemory, Lease, MemoryBudget};
pub use network_fs::NetworkFs;
pub use plan::{ChunkPlan, ChunkPolicy, FixedChunks, SharedChunkSize, Span};
pub use reader::{
    Chunk, DEFAULT_IN_PLACE_MAX, DEFAULT_PREFETCH, DEFAULT_READ_AHEAD_BYTES, Delivery, Reader,
    ReaderConfig,
};
pub use source::{Look, MAX_FILE_SIZE, MAX_SETTLES, ReadMode, SourceFile, Status};
