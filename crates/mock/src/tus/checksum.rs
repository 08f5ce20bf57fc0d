//! The checksum extension: `Upload-Checksum: <algorithm> <base64 digest>` of a
//! PATCH body, checked before the body is applied (460 when it differs).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::digest;

/// The algorithms served, as `Tus-Checksum-Algorithm` lists them. (The
/// service also lists md5 and crc32, which the mock does not compute.)
pub(crate) const ALGORITHMS: &str = "sha1,sha256,sha384,sha512";

/// An expected digest and the running digest of the body.
pub(crate) struct Checksum {
    expected: Vec<u8>,
    running: digest::Context,
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
        let algorithm = match name.to_ascii_lowercase().as_str() {
            "sha1" => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            "sha256" => &digest::SHA256,
            "sha384" => &digest::SHA384,
            "sha512" => &digest::SHA512,
            _ => {
                return Err(ChecksumProblem::Unsupported(
                    name.chars().take(32).collect(),
                ));
            }
        };
        let expected = STANDARD
            .decode(encoded.trim())
            .map_err(|_| ChecksumProblem::Malformed)?;
        Ok(Self {
            expected,
            running: digest::Context::new(algorithm),
        })
    }

    /// Adds the next bytes of the body.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.running.update(bytes);
    }

    /// Whether the body so far has the expected digest.
    pub(crate) fn matches(self) -> bool {
        self.running.finish().as_ref() == self.expected.as_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_of_the_body_matches_and_another_does_not() {
        // sha1("abc") = a9993e36 4706816a ba3e2571 7850c26c 9cd0d89d
        let mut good = Checksum::parse("sha1 qZk+NkcGgWq6PiVxeFDCbJzQ2J0=").unwrap();
        good.update(b"ab");
        good.update(b"c");
        assert!(good.matches());
        let mut bad = Checksum::parse("sha1 qZk+NkcGgWq6PiVxeFDCbJzQ2J0=").unwrap();
        bad.update(b"abd");
        assert!(!bad.matches());
        assert!(matches!(
            Checksum::parse("md5 AAAA"),
            Err(ChecksumProblem::Unsupported(_))
        ));
        assert!(matches!(
            Checksum::parse("sha1"),
            Err(ChecksumProblem::Malformed)
        ));
    }
}
