use std::fmt;
use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// What a path is when it is not a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A directory.
    Directory,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A block or character device.
    Device,
    /// Anything else.
    Other,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Directory => "a directory",
            FileKind::Fifo => "a FIFO (named pipe)",
            FileKind::Socket => "a socket",
            FileKind::Device => "a device",
            FileKind::Other => "not a regular file",
        })
    }
}

/// How a file differs from what it was when it was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// It grew (appended to).
    Grew {
        /// Size at open.
        from: u64,
        /// Size now.
        to: u64,
    },
    /// It shrank (truncated).
    Shrank {
        /// Size at open.
        from: u64,
        /// Size now.
        to: u64,
    },
    /// Same size, but written to (modification or change time moved).
    Modified,
    /// The path now names another file.
    Replaced,
    /// The path names nothing any more (the file was deleted or moved away).
    Removed,
    /// Its status alone changed this many times (and each time its bytes were
    /// read again): it is not let go on changing.
    StatusKeptChanging {
        /// The changes settled before it failed.
        times: u32,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Grew { from, to } => write!(f, "it grew from {from} to {to} bytes"),
            Change::Shrank { from, to } => write!(f, "it shrank from {from} to {to} bytes"),
            Change::Modified => f.write_str("it was written to"),
            Change::Replaced => f.write_str("it was replaced by another file"),
            Change::Removed => f.write_str("it was deleted or moved away"),
            Change::StatusKeptChanging { times } => write!(
                f,
                "its status (permissions, owner or links) changed more than {times} times, and \
                 each time what was read had to be read again"
            ),
        }
    }
}

/// Everything that can go wrong on the file side. Each variant names the file.
#[derive(Debug, Error)]
pub enum ReadError {
    /// No such file.
    #[error("{path}: no such file")]
    NotFound {
        /// The path.
        path: PathBuf,
    },
    /// A symbolic link whose target does not exist.
    #[error(
        "{path}: a broken symbolic link (its target {} does not exist); fix the link or give \
         the file itself",
        target.display()
    )]
    BrokenLink {
        /// The link.
        path: PathBuf,
        /// What it points to.
        target: PathBuf,
    },
    /// Not a regular file.
    #[error("{path}: {kind}, not a regular file; give the files themselves")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: FileKind,
    },
    /// It cannot be opened or examined.
    #[error("{path}: cannot read it: {source}")]
    Unreadable {
        /// The path.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Its size says 0 bytes, yet reading it gives bytes: a file whose size the
    /// system does not know (`/proc`, `/sys`), which would be sent empty.
    #[error(
        "{path}: its size says 0 bytes, but reading it gives bytes (a file of /proc or /sys, or \
         one being written?); upload a regular file that holds its bytes"
    )]
    SizeUnknown {
        /// The path.
        path: PathBuf,
    },
    /// Over the Data Bank's 2 TiB limit.
    #[error("{path}: {size} bytes is over the Data Bank's limit of 2 TiB (2199023255552 bytes)")]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The file changed after it was opened.
    #[error(
        "{path}: the file changed while it was being read ({change}); nothing of it was verified"
    )]
    Changed {
        /// The path.
        path: PathBuf,
        /// How.
        change: Change,
    },
    /// The file was deleted after the checks at the start, before its turn came.
    #[error("{path}: it disappeared since the check at the start; nothing of it was sent")]
    Vanished {
        /// The path.
        path: PathBuf,
    },
    /// The file changed after the checks at the start, before its turn came.
    #[error(
        "{path}: it changed since the check at the start ({change}); nothing of it was sent: \
         run the command again to upload it as it is now"
    )]
    ChangedSinceCheck {
        /// The path.
        path: PathBuf,
        /// How.
        change: Change,
    },
    /// The reading thread failed (it panicked, could not start, or ended without
    /// finishing): never taken for the end of the file.
    #[error("{path}: reading it failed: {reason}")]
    ReaderFailed {
        /// The path.
        path: PathBuf,
        /// What happened, for people.
        reason: String,
    },
    /// A read failed.
    #[error("{path}: read failed at byte {offset}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Memory-mapping was required ([`crate::ReadMode::Mmap`]) and failed.
    #[error("{path}: cannot memory-map it: {source}")]
    Map {
        /// The path.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}
