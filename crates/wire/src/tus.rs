//! Protocol 2: the tus 1.0 names both sides use, the service's part-size rule,
//! and the registration call's body.

use crate::{Boundary, MultipartBody};

/// Where the tus endpoint lives under the server's base URL.
pub const TUS_PATH: &str = "/files/";

/// The only tus version spoken, sent in `Tus-Resumable` with every request but
/// OPTIONS.
pub const TUS_VERSION: &str = "1.0.0";

/// Request and response header names (lower case, as HTTP/2 sends them).
pub mod header {
    /// The protocol version of a request or answer.
    pub const TUS_RESUMABLE: &str = "tus-resumable";
    /// OPTIONS: the versions the server speaks.
    pub const TUS_VERSION: &str = "tus-version";
    /// OPTIONS: the extensions the server serves, comma-separated.
    pub const TUS_EXTENSION: &str = "tus-extension";
    /// OPTIONS: the largest upload the server takes.
    pub const TUS_MAX_SIZE: &str = "tus-max-size";
    /// OPTIONS: the checksum algorithms the server checks, comma-separated.
    pub const TUS_CHECKSUM_ALGORITHM: &str = "tus-checksum-algorithm";
    /// The upload's whole length.
    pub const UPLOAD_LENGTH: &str = "upload-length";
    /// How many bytes of the upload the server holds (PATCH: where the body goes).
    pub const UPLOAD_OFFSET: &str = "upload-offset";
    /// Creation: `key base64,key base64`.
    pub const UPLOAD_METADATA: &str = "upload-metadata";
    /// Creation: `partial`, or `final;<url> <url> ...`.
    pub const UPLOAD_CONCAT: &str = "upload-concat";
    /// PATCH: `<algorithm> <base64 digest>` of the body.
    pub const UPLOAD_CHECKSUM: &str = "upload-checksum";
    /// When an unfinished upload expires (an HTTP date).
    pub const UPLOAD_EXPIRES: &str = "upload-expires";
}

/// The content type of every PATCH body.
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// The status a checksum mismatch is answered with.
pub const CHECKSUM_MISMATCH: u16 = 460;

/// The smallest S3 part (and partial of a concatenation, but the last): 5 MiB.
pub const S3_MIN_PART: u64 = 5 * 1024 * 1024;

/// The largest S3 part (and partial of a concatenation): 5 GiB.
pub const S3_MAX_PART: u64 = 5 * 1024 * 1024 * 1024;

/// The most parts of one S3 object (and partials of one concatenation): 10000.
pub const S3_MAX_PARTS: u64 = 10_000;

/// The part size the service's server cuts PATCH bodies of an upload of
/// `length` bytes into: `max(5 MiB, ceil(length / 10000))`, at most 5 GiB.
/// An upload whose length is deferred (`None`) gets the smallest part.
pub fn s3_part_size(length: Option<u64>) -> u64 {
    let by_count = length.map_or(0, |l| l.div_ceil(S3_MAX_PARTS));
    by_count.clamp(S3_MIN_PART, S3_MAX_PART)
}

/// The registration call (protocol 2's last step): the finished tus upload at
/// `tus_url` becomes the file `filename` of `size` bytes in the dataset.
pub fn registration_body(
    boundary: &Boundary,
    tus_url: &str,
    filename: &str,
    size: u64,
) -> MultipartBody {
    let size = size.to_string();
    MultipartBody::encode(
        boundary,
        &[
            ("tus_url", tus_url),
            ("filename", filename),
            ("size", &size),
        ],
        None,
    )
}

/// The query parameter of the registration lookup (`GET` on the datafile
/// endpoint with `?tus_url=<url>`): has the upload been registered? A server
/// that cannot say answers anything but 200 with a [`RegistrationLookup`].
pub const LOOKUP_PARAM: &str = "tus_url";

/// The answer to a registration lookup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegistrationLookup {
    /// Whether a registration of the upload went through.
    pub registered: bool,
    /// The registration's receipt, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<crate::VerifyReceipt>,
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
