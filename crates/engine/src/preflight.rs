//! Checks every file before anything is sent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use idb_read::{ReadMode, SourceFile};
use idb_wire::validate_filename;

use crate::{Error, NameProblem};

// The reader and the protocol must agree on the limit they each enforce.
const _: () = assert!(idb_read::MAX_FILE_SIZE == idb_wire::MAX_FILE_SIZE);

/// A file that passed the checks: open (and mapped), with its name in the dataset.
pub(crate) struct CheckedFile {
    pub(crate) source: SourceFile,
    pub(crate) filename: String,
}

impl CheckedFile {
    pub(crate) fn path(&self) -> PathBuf {
        self.source.path().to_path_buf()
    }
}

/// Checks one file: a readable regular file of at most 2 TiB with a valid name.
fn check(path: &Path, mode: ReadMode) -> Result<CheckedFile, Error> {
    let bad_name = |problem| Error::BadName {
        path: path.to_path_buf(),
        problem,
    };
    // The name first: a bad name is the cheapest thing to report.
    let filename = match path.file_name() {
        Some(name) => name
            .to_str()
            .ok_or_else(|| bad_name(NameProblem::NotUtf8))?
            .to_owned(),
        // `..` or `/`: let the opener say what it is (a directory).
        None => String::new(),
    };
    let source = SourceFile::open(path, mode)?;
    validate_filename(&filename).map_err(|e| bad_name(NameProblem::Invalid(e)))?;
    Ok(CheckedFile { source, filename })
}

/// Checks all files; on any problem, returns every problem found (so the user can
/// fix them all at once).
pub(crate) fn check_all(paths: &[PathBuf], mode: ReadMode) -> Result<Vec<CheckedFile>, Vec<Error>> {
    let mut checked = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for path in paths {
        match check(path, mode) {
            Ok(file) => {
                if let Some(other) = seen.get(&file.filename) {
                    errors.push(Error::BadName {
                        path: path.clone(),
                        problem: NameProblem::Duplicate {
                            other: other.clone(),
                        },
                    });
                } else {
                    seen.insert(file.filename.clone(), path.clone());
                    checked.push(file);
                }
            }
            Err(error) => errors.push(error),
        }
    }
    if errors.is_empty() {
        Ok(checked)
    } else {
        Err(errors)
    }
}
