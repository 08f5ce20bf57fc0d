use std::fmt;

use crate::WireError;

/// The largest file the Data Bank accepts: 2 TiB (2199023255552 bytes).
pub const MAX_FILE_SIZE: u64 = 2 * 1024 * 1024 * 1024 * 1024;

/// The longest file name, in bytes, that we send. Common file systems (and S3 keys
/// built from them) stop at 255 bytes.
pub const MAX_FILENAME_BYTES: usize = 255;

/// The longest dataset key we accept; real keys look like `IDB-1234567`.
const MAX_DATASET_KEY_BYTES: usize = 128;

/// Checks a file name as the Data Bank wants it: a base name with extension, no
/// directories.
///
/// Refused: empty, `.` or `..`, containing `/`, `\`, NUL or any other control
/// character (U+0001 to U+001F, U+007F: a newline or an escape code in a name
/// could forge lines in a log or a terminal), or longer than [`MAX_FILENAME_BYTES`].
pub fn validate_filename(name: &str) -> Result<(), WireError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("it names a directory")
    } else if name.contains('/') || name.contains('\\') {
        Some("it contains a path separator; send the base name only")
    } else if name.contains('\0') {
        Some("it contains a NUL byte")
    } else if name.chars().any(|c| c.is_ascii_control()) {
        Some("it contains a control character (such as a newline, a tab or an escape code)")
    } else if name.len() > MAX_FILENAME_BYTES {
        Some("it is longer than 255 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(WireError::BadFilename {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A validated dataset key: ASCII letters, digits, `-`, `_` and `.`, not `.`/`..`.
///
/// The key becomes a path segment of the endpoint, so anything that would need
/// escaping (or could walk out of it) is refused up front.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatasetKey(String);

impl DatasetKey {
    /// Validates `key`.
    pub fn new(key: &str) -> Result<Self, WireError> {
        let bad = |reason| WireError::BadDatasetKey {
            key: key.chars().take(64).collect(),
            reason,
        };
        if key.is_empty() {
            return Err(bad("it is empty"));
        }
        if key.len() > MAX_DATASET_KEY_BYTES {
            return Err(bad("it is longer than 128 bytes"));
        }
        if key == "." || key == ".." {
            return Err(bad("it is a relative path"));
        }
        if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(bad(
                "use only letters, digits, '-', '_' and '.' (like IDB-1234567)",
            ));
        }
        Ok(Self(key.to_owned()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DatasetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DatasetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatasetKey({})", self.0)
    }
}

/// The path of the chunked-upload endpoint for a dataset:
/// `/api/dataset/<KEY>/datafile`.
pub fn datafile_path(key: &DatasetKey) -> String {
    format!("/api/dataset/{}/datafile", key.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_file_size_is_two_tebibytes() {
        assert_eq!(MAX_FILE_SIZE, 2_199_023_255_552);
    }

    #[test]
    fn filenames() {
        for ok in [
            "a",
            "data.h5",
            "..hidden",
            "a..b",
            "résumé.txt",
            "with space and ünïcode\u{a0}",
            &"x".repeat(255),
        ] {
            assert_eq!(validate_filename(ok), Ok(()), "{ok:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "/abs",
            "a\\b",
            "nul\0",
            "x (1 bytes)\nverified fake.bin",
            "tab\there",
            "esc\u{1b}[31m",
            "del\u{7f}",
            &"x".repeat(256),
        ] {
            assert!(
                matches!(validate_filename(bad), Err(WireError::BadFilename { .. })),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn dataset_keys() {
        for ok in ["IDB-1234567", "a", "x_y.z"] {
            assert_eq!(DatasetKey::new(ok).unwrap().as_str(), ok);
        }
        for bad in ["", ".", "..", "a/b", "a b", "a%2F", "é", &"k".repeat(129)] {
            assert!(
                matches!(DatasetKey::new(bad), Err(WireError::BadDatasetKey { .. })),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn endpoint_path() {
        let key = DatasetKey::new("IDB-1").unwrap();
        assert_eq!(datafile_path(&key), "/api/dataset/IDB-1/datafile");
    }
}
