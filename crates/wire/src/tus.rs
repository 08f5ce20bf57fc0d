//! Protocol 2: the tus 1.0 names both sides use, the service's part-size rule,
//! and the registration call's body.

use serde::Deserialize as _;

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

impl RegistrationLookup {
    /// Reads a lookup's answer, as leniently as a verify's: `None` unless it
    /// is a JSON object saying `registered` true or false. A receipt that is
    /// not a whole one (a server of its own shape) is dropped, and the size it
    /// gives, if any, returned beside ([`VerifyReceipt::reported_size`]'s
    /// forms), so that the caller can still compare it with what it sent.
    pub fn parse(body: &[u8]) -> Option<(Self, Option<u64>)> {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        let registered = value.get("registered")?.as_bool()?;
        let given = value.get("receipt").filter(|r| !r.is_null());
        let receipt = given.and_then(|r| crate::VerifyReceipt::deserialize(r).ok());
        let reported_size = given
            .filter(|_| receipt.is_none())
            .and_then(crate::VerifyReceipt::size_in);
        Some((
            Self {
                registered,
                receipt,
            },
            reported_size,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_answer_is_read_leniently() {
        let parse = |body: &str| RegistrationLookup::parse(body.as_bytes());
        let hash = "a".repeat(64);
        let whole = format!(
            r#"{{"registered": true, "receipt": {{"filename": "f", "size": 5, "blake3": "{hash}"}}}}"#
        );
        let (lookup, size) = parse(&whole).unwrap();
        assert!(lookup.registered);
        assert_eq!(lookup.receipt.unwrap().size, 5);
        assert_eq!(size, None);
        // A receipt with a size only, as a number or a string: the size is kept.
        for receipt in [r#"{"size": 7}"#, r#"{"filename": "f", "size": "7"}"#] {
            let body = format!(r#"{{"registered": true, "receipt": {receipt}}}"#);
            assert_eq!(
                parse(&body),
                Some((
                    RegistrationLookup {
                        registered: true,
                        receipt: None
                    },
                    Some(7)
                ))
            );
        }
        // A receipt that says nothing usable, or none at all.
        for body in [
            r#"{"registered": true, "receipt": {"name": "x"}}"#,
            r#"{"registered": true, "receipt": []}"#,
            r#"{"registered": true, "receipt": null}"#,
            r#"{"registered": true}"#,
        ] {
            assert_eq!(
                parse(body),
                Some((
                    RegistrationLookup {
                        registered: true,
                        receipt: None
                    },
                    None
                )),
                "{body}"
            );
        }
        assert!(!parse(r#"{"registered": false}"#).unwrap().0.registered);
        // Not an answer to a lookup.
        for body in ["", "[]", "{}", r#"{"registered": "yes"}"#, "<html>"] {
            assert_eq!(parse(body), None, "{body}");
        }
    }

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
