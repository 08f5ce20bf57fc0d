use std::path::PathBuf;

/// Something that happened during a run, for a UI to show. The engine never
/// prints; it hands these to an [`EventSink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A file's upload begins (after `setup` succeeded).
    FileStarted {
        /// The local file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// The server acknowledged a chunk: bytes `offset..offset + len` are stored.
    ChunkAcked {
        /// The local file.
        path: PathBuf,
        /// The chunk's offset (`previous_size`).
        offset: u64,
        /// The chunk's length.
        len: u64,
    },
    /// `verify` succeeded: the file belongs to the dataset.
    FileVerified {
        /// The local file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// The file was not uploaded; the [`crate::Report`] has the error.
    FileFailed {
        /// The local file.
        path: PathBuf,
    },
}

/// Receives [`Event`]s. Called from the engine's tasks: keep it quick.
pub trait EventSink: Send + Sync {
    /// Handles one event.
    fn emit(&self, event: Event);
}

impl<F: Fn(Event) + Send + Sync> EventSink for F {
    fn emit(&self, event: Event) {
        self(event)
    }
}

/// An [`EventSink`] that drops everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl EventSink for NoEvents {
    fn emit(&self, _: Event) {}
}
