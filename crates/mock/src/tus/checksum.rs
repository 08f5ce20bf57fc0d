//! The checksum extension: `Upload-Checksum: <algorithm> <base64 digest>` of a
//! PATCH body, checked before the body is applied (460 when it differs).
//!
//! The algorithms are those the service's server (tus-ruby-server) offers,
//! with its digest formats: for sha1, the sha2 family and md5 the base64 of
//! the digest's bytes; for crc32 the base64 of the CRC-32 (IEEE, as zlib's)
//! written as a decimal number in ASCII, which is what that server compares
//! (`Base64.strict_encode64(crc.to_s)`): the crc32 of `abc`, 891568578, is
//! sent as `crc32 ODkxNTY4NTc4`. A client that sends the four bytes of the
//! CRC instead gets 460 there, and here.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use md5::Digest as _;
use ring::digest;

/// The algorithms served, as `Tus-Checksum-Algorithm` lists them (the
/// service's list, in its order).
pub(crate) const ALGORITHMS: &str = "sha1,sha256,sha384,sha512,md5,crc32";

/// An expected digest and the running digest of the body.
pub(crate) struct Checksum {
    expected: Vec<u8>,
    running: Running,
}

/// The digest being computed.
enum Running {
    /// sha1 and the sha2 family.
    Ring(digest::Context),
    Md5(md5::Md5),
    Crc32(crc32fast::Hasher),
}

/// Why an `Upload-Checksum` header cannot be used (400).
#[derive(Debug)]
pub(crate) enum ChecksumProblem {
    /// Not `<algorithm> <base64>`, or the digest is not base64.
    Malformed,
    /// An algorithm not in [`ALGORITHMS`].
    Unsupported(String),
}

impl Checksum {
    /// Parses an `Upload-Checksum` value.
    pub(crate) fn parse(value: &str) -> Result<Self, ChecksumProblem> {
        let (name, encoded) = value
            .trim()
            .split_once(' ')
            .ok_or(ChecksumProblem::Malformed)?;
        let ring = |algorithm| Running::Ring(digest::Context::new(algorithm));
        let running = match name.to_ascii_lowercase().as_str() {
            "sha1" => ring(&digest::SHA1_FOR_LEGACY_USE_ONLY),
            "sha256" => ring(&digest::SHA256),
            "sha384" => ring(&digest::SHA384),
            "sha512" => ring(&digest::SHA512),
            "md5" => Running::Md5(md5::Md5::new()),
            "crc32" => Running::Crc32(crc32fast::Hasher::new()),
            _ => {
                return Err(ChecksumProblem::Unsupported(
                    name.chars().take(32).collect(),
                ));
            }
        };
        let expected = STANDARD
            .decode(encoded.trim())
            .map_err(|_| ChecksumProblem::Malformed)?;
        Ok(Self { expected, running })
    }

    /// Adds the next bytes of the body.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match &mut self.running {
            Running::Ring(context) => context.update(bytes),
            Running::Md5(md5) => md5.update(bytes),
            Running::Crc32(crc) => crc.update(bytes),
        }
    }

    /// Whether the body so far has the expected digest.
    pub(crate) fn matches(self) -> bool {
        let expected = self.expected.as_slice();
        match self.running {
            Running::Ring(context) => context.finish().as_ref() == expected,
            Running::Md5(md5) => md5.finalize().as_slice() == expected,
            Running::Crc32(crc) => crc.finalize().to_string().as_bytes() == expected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(header: &str, body: &[u8]) -> bool {
        let mut checksum = Checksum::parse(header).unwrap();
        let (a, b) = body.split_at(body.len() / 2);
        checksum.update(a);
        checksum.update(b);
        checksum.matches()
    }

    #[test]
    fn sha1_of_the_body_matches_and_another_does_not() {
        // sha1("abc") = a9993e36 4706816a ba3e2571 7850c26c 9cd0d89d
        assert!(matches("sha1 qZk+NkcGgWq6PiVxeFDCbJzQ2J0=", b"abc"));
        assert!(!matches("sha1 qZk+NkcGgWq6PiVxeFDCbJzQ2J0=", b"abd"));
        assert!(matches!(
            Checksum::parse("adler32 AAAA"),
            Err(ChecksumProblem::Unsupported(_))
        ));
        assert!(matches!(
            Checksum::parse("sha1"),
            Err(ChecksumProblem::Malformed)
        ));
    }

    #[test]
    fn md5_is_the_base64_of_the_digest() {
        // md5("abc") = 90015098 3cd24fb0 d6963f7d 28e17f72
        assert!(matches("md5 kAFQmDzST7DWlj99KOF/cg==", b"abc"));
        assert!(!matches("md5 kAFQmDzST7DWlj99KOF/cg==", b"abd"));
    }

    #[test]
    fn crc32_is_the_base64_of_its_decimal_text_as_the_services_server_has_it() {
        // crc32("abc") = 0x352441c2 = 891568578; base64("891568578").
        assert!(matches("crc32 ODkxNTY4NTc4", b"abc"));
        assert!(!matches("crc32 ODkxNTY4NTc4", b"abd"));
        // The four big-endian bytes of the CRC (what some clients send) are
        // not that server's format.
        assert!(!matches("crc32 NSRBwg==", b"abc"));
    }
}
