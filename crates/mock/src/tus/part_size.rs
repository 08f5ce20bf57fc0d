//! The service's S3 part-size rule ([`crate::TusProfile::S3`]).

/// The smallest S3 part (and partial of a concatenation, but the last): 5 MiB.
pub const S3_MIN_PART: u64 = 5 * 1024 * 1024;

/// The largest S3 part (and partial of a concatenation): 5 GiB.
pub const S3_MAX_PART: u64 = 5 * 1024 * 1024 * 1024;

/// The most parts of one S3 object (and partials of one concatenation): 10000.
pub const S3_MAX_PARTS: u64 = 10_000;

/// The part size the service's server cuts PATCH bodies of an upload of
/// `length` bytes into: `max(5 MiB, ceil(length / 10000))`, at most 5 GiB.
/// An upload whose length is deferred (`None`) gets the smallest part.
///
/// A body of at least this many bytes is stored whole (its short last piece
/// merged into the part before it); a shorter one is dropped whole unless it
/// ends the file or the length is deferred. (The service's server takes the
/// whole length as the part size of a file under 5 MiB: the same bodies are
/// kept and dropped.)
pub fn s3_part_size(length: Option<u64>) -> u64 {
    let by_count = length.map_or(0, |l| l.div_ceil(S3_MAX_PARTS));
    by_count.clamp(S3_MIN_PART, S3_MAX_PART)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_follows_the_services_rule() {
        assert_eq!(s3_part_size(None), S3_MIN_PART);
        assert_eq!(s3_part_size(Some(1)), S3_MIN_PART);
        assert_eq!(s3_part_size(Some(S3_MIN_PART * S3_MAX_PARTS)), S3_MIN_PART);
        assert_eq!(
            s3_part_size(Some(S3_MIN_PART * S3_MAX_PARTS + 1)),
            S3_MIN_PART + 1
        );
        assert_eq!(s3_part_size(Some(u64::MAX)), S3_MAX_PART);
    }
}
