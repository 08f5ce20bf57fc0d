//! Where an upload's bytes live in a store directory: staged under
//! `+incoming/` until verify, then at `<dataset>/<filename>`. (The saved state,
//! `+state.json`, is `persist.rs`'s.) `+` cannot occur in a dataset key, so these
//! names never collide with a dataset's directory.

use std::path::{Path, PathBuf};

/// The staging directory under the store root.
const INCOMING_DIR: &str = "+incoming";

/// Where an open upload's bytes are staged until verify.
pub(crate) fn incoming_path(root: &Path, dataset: &str, filename: &str) -> PathBuf {
    root.join(INCOMING_DIR).join(dataset).join(filename)
}

/// The directory of a dataset's verified files.
pub(crate) fn dataset_dir(root: &Path, dataset: &str) -> PathBuf {
    root.join(dataset)
}
