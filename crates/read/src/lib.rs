//! The file side of `idb`: what to read, in which pieces, and reading it ahead of
//! the network.
//!
//! `idb-read` owns:
//! - [`ChunkPlan`]: the `(offset, len)` pieces of a file under a [`ChunkPolicy`]
//!   that may change sizes as it goes. Offsets are the protocol's `previous_size`.
//! - [`SourceFile`]: a file opened for upload, checked (regular, readable, at most
//!   2 TiB) and memory-mapped when it can be, with the identity it had at open.
//! - [`Reader`]: a thread that walks a plan, checks the identity before every
//!   chunk, asks the kernel for pages ahead, hashes, and hands out [`Chunk`]s
//!   through a bounded crossbeam channel whose depth is the prefetch depth. Chunk
//!   bytes are zero-copy views of the mapping; their pages are released from this
//!   process when the last view is dropped, so resident memory stays bounded.
//! - [`HashState`]: the running blake3 of the whole file, carried across readers.
//!
//! ```
//! use idb_read::{ChunkPlan, HashState, Reader, ReaderConfig, SourceFile};
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("f");
//! # std::fs::write(&path, vec![7u8; 10_000]).unwrap();
//! let source = SourceFile::open(&path, Default::default())?;
//! let plan = ChunkPlan::fixed(source.size(), 4096);
//! let reader = Reader::spawn(&source, plan, HashState::new(), &ReaderConfig::default());
//! let mut received = 0;
//! while let Some(chunk) = reader.recv() {
//!     let chunk = chunk?;
//!     assert_eq!(chunk.offset, received);
//!     received += chunk.bytes.len() as u64;
//! }
//! let state = reader.finish();
//! assert_eq!(state.finalize(source.size()), Some(blake3::hash(&vec![7u8; 10_000])));
//! # Ok::<(), idb_read::ReadError>(())
//! ```
//!
//! No network code, no async: the engine bridges the channel into its tasks.
#![deny(missing_docs)]

mod error;
mod identity;
mod plan;
mod reader;
mod source;

pub use error::{Change, FileKind, ReadError};
pub use identity::Identity;
pub use plan::{ChunkPlan, ChunkPolicy, FixedChunks, SharedChunkSize, Span};
pub use reader::{Chunk, DEFAULT_PREFETCH, HashState, Reader, ReaderConfig};
pub use source::{MAX_FILE_SIZE, ReadMode, SourceFile};
