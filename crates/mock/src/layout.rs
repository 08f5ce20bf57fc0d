//! Where an upload's bytes live in a store directory: staged under
//! `+incoming/` until verify, then at `<dataset>/<filename>`; and the store's
//! lock file, `+lock` (`store_lock.rs`). (The saved state, `+state.json`, is
//! `persist.rs`'s.) `+` cannot occur in a dataset key, so these
//! names never collide with a dataset's directory.

use std::path::{Path, PathBuf};

/// The staging directory under the store root.
const INCOMING_DIR: &str = "+incoming";

/// The file in a store directory that a running server holds locked (its pid
/// inside), so a second server on the same store refuses to start.
pub const STORE_LOCK_FILE: &str = "+lock";

/// The lock file of a store.
pub(crate) fn lock_path(root: &Path) -> PathBuf {
    root.join(STORE_LOCK_FILE)
}

/// Where an open upload's bytes are staged until verify.
pub(crate) fn incoming_path(root: &Path, dataset: &str, filename: &str) -> PathBuf {
    root.join(INCOMING_DIR).join(dataset).join(filename)
}

/// The directory of a dataset's verified files.
pub(crate) fn dataset_dir(root: &Path, dataset: &str) -> PathBuf {
    root.join(dataset)
}
