//! Checks every file before anything is sent, from metadata alone: no file is
//! opened here, so a run of any number of files uses no descriptors for them
//! until their turn comes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use idb_read::{Identity, SourceFile};
use idb_wire::validate_filename;

use crate::{Error, NameProblem};

// The reader and the protocol must agree on the limit they each enforce.
const _: () = assert!(idb_read::MAX_FILE_SIZE == idb_wire::MAX_FILE_SIZE);

/// A file that passed the checks: its name in the dataset, and what it was when
/// checked (its turn compares the file it opens with this).
#[derive(Debug, Clone)]
pub(crate) struct CheckedFile {
    pub(crate) path: PathBuf,
    pub(crate) filename: String,
    pub(crate) identity: Identity,
}

impl CheckedFile {
    pub(crate) fn size(&self) -> u64 {
        self.identity.size
    }
}

/// Checks one file: a readable regular file of at most 2 TiB with a valid name.
fn check(path: &Path) -> Result<CheckedFile, Error> {
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
        // `..` or `/`: let the inspection say what it is (a directory).
        None => String::new(),
    };
    let identity = SourceFile::inspect(path)?;
    validate_filename(&filename).map_err(|e| bad_name(NameProblem::Invalid(e)))?;
    Ok(CheckedFile {
        path: path.to_path_buf(),
        filename,
        identity,
    })
}

/// Checks all files; on any problem, returns every problem found (so the user can
/// fix them all at once).
pub(crate) fn check_all(paths: &[PathBuf]) -> Result<Vec<CheckedFile>, Vec<Error>> {
    let mut checked: Vec<CheckedFile> = Vec::with_capacity(paths.len());
    let mut errors = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(paths.len());
    for path in paths {
        match check(path) {
            Ok(file) => {
                if let Some(&other) = seen.get(&file.filename) {
                    errors.push(Error::BadName {
                        path: path.clone(),
                        problem: NameProblem::Duplicate {
                            other: checked[other].path.clone(),
                        },
                    });
                } else {
                    seen.insert(file.filename.clone(), checked.len());
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
