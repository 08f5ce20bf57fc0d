use thiserror::Error;

/// Everything that can be wrong with bytes or names handed to this crate.
///
/// Each variant names the rule that was broken, so the mock can answer 400 with it
/// and the engine can tell the user what to fix.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// A file name the Data Bank would not accept.
    #[error("file name {name:?} is not allowed: {reason}")]
    BadFilename {
        /// The offending name (lossily decoded).
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A dataset key that cannot be a Data Bank dataset key.
    #[error("dataset key {key:?} is not valid: {reason}")]
    BadDatasetKey {
        /// The offending key.
        key: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A token that cannot be sent in an `Authorization` header.
    #[error("the token is not valid: {reason}")]
    BadToken {
        /// Which rule it breaks (never the token itself).
        reason: &'static str,
    },
    /// A declared size above the protocol's limit.
    #[error("file size {size} is over the Data Bank limit of {limit} bytes (2 TiB)")]
    TooLarge {
        /// The declared size.
        size: u64,
        /// [`crate::MAX_FILE_SIZE`].
        limit: u64,
    },
    /// A required form field is absent.
    #[error("missing form field {field:?}")]
    MissingField {
        /// The field's name.
        field: &'static str,
    },
    /// A form field is present but its value is unusable.
    #[error("form field {field:?} is not valid: {reason}")]
    BadField {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `phase` is not one of `setup`, `transfer`, `verify`.
    #[error("unknown phase {phase:?} (expected setup, transfer or verify)")]
    UnknownPhase {
        /// The value received (lossily decoded, truncated).
        phase: String,
    },
    /// A write mode name that is not `strict` or `offset`.
    #[error("unknown write mode {mode:?}; use strict or offset")]
    UnknownWriteMode {
        /// The name given (at most 64 characters of it).
        mode: String,
    },
    /// A `multipart/form-data` body that breaks the format.
    #[error("malformed multipart body: {reason}")]
    Multipart {
        /// What was wrong.
        reason: &'static str,
    },
    /// An `application/x-www-form-urlencoded` body that breaks the format.
    #[error("malformed urlencoded body: {reason}")]
    Urlencoded {
        /// What was wrong.
        reason: &'static str,
    },
}
