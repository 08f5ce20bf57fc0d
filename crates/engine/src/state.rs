//! The state directory: where runs keep what they know between runs.
//!
//! Layout (`UploadConfig::state_dir`): `journal/` holds one journal per
//! unfinished upload and `uploads.lock` (the name locks); `receipts/` one file of
//! receipts per (server, dataset).

use std::path::{Path, PathBuf};

use crate::journal::Journal;
use crate::receipts::Receipts;

/// A state directory (the CLI's `--state-dir`).
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The state directory at `root` (nothing is created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the journals and the name lock file are.
    pub fn journal_dir(&self) -> PathBuf {
        self.root.join("journal")
    }

    /// Where the receipts are.
    pub fn receipts_dir(&self) -> PathBuf {
        self.root.join("receipts")
    }

    pub(crate) fn journal(&self) -> Journal {
        Journal::new(self.journal_dir())
    }

    pub(crate) fn receipt_store(&self) -> Receipts {
        Receipts::new(self.receipts_dir())
    }
}

/// Creates `dir` (and its parents) if needed, readable by the user only.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if !dir.is_dir() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    }
    Ok(())
}
