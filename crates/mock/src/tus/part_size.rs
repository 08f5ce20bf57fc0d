//! The service's S3 part-size rule ([`crate::TusProfile::S3`]): the contract's
//! own, shared with the engine (`idb_wire::tus`).
//!
//! A body of at least one part is stored whole (its short last piece merged
//! into the part before it); a shorter one is dropped whole unless it ends the
//! file or the length is deferred. (The service's server takes the whole
//! length as the part size of a file under 5 MiB: the same bodies are kept and
//! dropped.)

pub use idb_wire::tus::{S3_MAX_PART, S3_MAX_PARTS, S3_MIN_PART, s3_part_size};
