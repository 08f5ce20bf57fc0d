//! The service's S3 part-size rule ([`crate::TusProfile::S3`]): the contract's
//! own, shared with the engine (`idb_wire::tus`).

pub use idb_wire::tus::{S3_MAX_PART, S3_MAX_PARTS, S3_MIN_PART, s3_part_size};
