//! What one file's upload works with once its turn came: the open file, and
//! what the upload knows as it goes.

use std::path::PathBuf;
use std::time::Duration;

use idb_read::{HashState, SourceFile};
use idb_wire::WriteMode;
use tokio::time::Instant;

use crate::Error;
use crate::acked::Acked;
use crate::journal::Entry;
use crate::protocol::FileRef;

/// A file whose turn came: open, and still the file that was checked.
pub(crate) struct OpenFile {
    /// The path as given.
    pub(crate) path: PathBuf,
    /// Its name in the dataset.
    pub(crate) filename: String,
    pub(crate) size: u64,
    pub(crate) source: SourceFile,
    /// When its upload gives up, if it has a deadline.
    pub(crate) deadline: Option<Deadline>,
}

/// A file's deadline ([`crate::UploadConfig::file_deadline`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    /// When it passes.
    pub(crate) at: Instant,
    /// How long it was, from the file's turn.
    pub(crate) after: Duration,
}

impl OpenFile {
    /// The error to end with if the file's deadline is passed at `when`.
    pub(crate) fn past_deadline(&self, when: Instant) -> Option<Error> {
        let deadline = self.deadline.filter(|d| when >= d.at)?;
        Some(Error::FileDeadline {
            path: self.path.clone(),
            deadline: deadline.after,
        })
    }

    pub(crate) fn file_ref(&self) -> FileRef<'_> {
        FileRef {
            filename: &self.filename,
            size: self.size,
        }
    }
}

/// What one upload knows as it goes.
pub(crate) struct FileState {
    /// What the server acknowledged.
    pub(crate) acked: Acked,
    /// The whole-file hash as far as the reader got (always a state of this very
    /// file, so it may run ahead of what was acknowledged).
    pub(crate) hash: HashState,
    /// The journal entry kept up to date (`None` without a journal).
    pub(crate) record: Option<Entry>,
    /// Whether the server has an open upload of this file from this run's point
    /// of view (set up, or resumed): only then is a journal worth keeping.
    pub(crate) session: bool,
    /// Whether a journal file of this upload is on disk (found at the start).
    pub(crate) on_disk: bool,
    /// How the server writes chunks (as its setup, or the journal, said).
    pub(crate) mode: WriteMode,
}
