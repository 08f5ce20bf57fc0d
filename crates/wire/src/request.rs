//! The three phases of a chunked upload, as the client encodes them and the server
//! reads them.

use std::fmt;

use bytes::Bytes;

use crate::multipart::{Boundary, MultipartBody};
use crate::{MAX_FILE_SIZE, WireError, validate_filename};

/// The most bytes a text field (`phase`, `filename`, sizes) may have; a server
/// refuses longer ones instead of buffering them.
pub const TEXT_FIELD_LIMIT: usize = 4096;

const PHASE: &str = "phase";
const FILENAME: &str = "filename";
const FILESIZE: &str = "filesize";
const PREVIOUS_SIZE: &str = "previous_size";
const BYTECHUNK: &str = "bytechunk";

/// The step a call performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Declares a file and its size.
    Setup,
    /// Sends one chunk at an offset.
    Transfer,
    /// Closes the file; only then does it belong to the dataset.
    Verify,
}

impl Phase {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::Transfer => "transfer",
            Phase::Verify => "verify",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The form fields of one call, in the order received. When a name repeats, the
/// last value wins (as in Rails).
#[derive(Debug, Clone, Default)]
pub struct Fields(Vec<(String, Bytes)>);

impl Fields {
    /// No fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a field.
    pub fn push(&mut self, name: impl Into<String>, value: Bytes) {
        self.0.push((name.into(), value));
    }

    /// The last value given for `name`.
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.0.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    fn text(&self, field: &'static str) -> Result<&str, WireError> {
        let value = self.get(field).ok_or(WireError::MissingField { field })?;
        std::str::from_utf8(value).map_err(|_| WireError::BadField {
            field,
            reason: "not UTF-8",
        })
    }

    fn number(&self, field: &'static str) -> Result<u64, WireError> {
        let text = self.text(field)?;
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(WireError::BadField {
                field,
                reason: "not a non-negative integer",
            });
        }
        text.parse().map_err(|_| WireError::BadField {
            field,
            reason: "too large a number",
        })
    }
}

impl FromIterator<(String, Bytes)> for Fields {
    fn from_iter<I: IntoIterator<Item = (String, Bytes)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// A validated call, as the server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhaseRequest {
    /// `phase=setup`.
    Setup {
        /// The base name.
        filename: String,
        /// The declared size, at most [`MAX_FILE_SIZE`].
        filesize: u64,
    },
    /// `phase=transfer`.
    Transfer {
        /// The base name.
        filename: String,
        /// Bytes sent before this chunk: its offset.
        previous_size: u64,
        /// The payload.
        chunk: Bytes,
    },
    /// `phase=verify`.
    Verify {
        /// The base name.
        filename: String,
    },
}

impl PhaseRequest {
    /// Reads and validates a call from its form fields. Unknown fields (such as the
    /// old sample client's `checksum`) are ignored.
    pub fn from_fields(fields: &Fields) -> Result<Self, WireError> {
        let phase = fields
            .get(PHASE)
            .ok_or(WireError::MissingField { field: PHASE })?;
        let filename = fields.text(FILENAME)?.to_owned();
        validate_filename(&filename)?;
        match phase.as_ref() {
            b"setup" => {
                let filesize = fields.number(FILESIZE)?;
                if filesize > MAX_FILE_SIZE {
                    return Err(WireError::TooLarge {
                        size: filesize,
                        limit: MAX_FILE_SIZE,
                    });
                }
                Ok(Self::Setup { filename, filesize })
            }
            b"transfer" => {
                let previous_size = fields.number(PREVIOUS_SIZE)?;
                let chunk = fields
                    .get(BYTECHUNK)
                    .cloned()
                    .ok_or(WireError::MissingField { field: BYTECHUNK })?;
                Ok(Self::Transfer {
                    filename,
                    previous_size,
                    chunk,
                })
            }
            b"verify" => Ok(Self::Verify { filename }),
            other => Err(WireError::UnknownPhase {
                phase: String::from_utf8_lossy(&other[..other.len().min(32)]).into_owned(),
            }),
        }
    }

    /// The phase of this call.
    pub fn phase(&self) -> Phase {
        match self {
            Self::Setup { .. } => Phase::Setup,
            Self::Transfer { .. } => Phase::Transfer,
            Self::Verify { .. } => Phase::Verify,
        }
    }

    /// The file name the call is about.
    pub fn filename(&self) -> &str {
        match self {
            Self::Setup { filename, .. }
            | Self::Transfer { filename, .. }
            | Self::Verify { filename } => filename,
        }
    }

    /// Whether `name` is the field that carries chunk bytes (and may therefore be
    /// larger than [`TEXT_FIELD_LIMIT`]).
    pub fn is_payload_field(name: &str) -> bool {
        name == BYTECHUNK
    }
}

/// The `setup` call: declares `filename` with `filesize` bytes.
pub fn setup_body(boundary: &Boundary, filename: &str, filesize: u64) -> MultipartBody {
    let size = filesize.to_string();
    MultipartBody::encode(
        boundary,
        &[(PHASE, "setup"), (FILENAME, filename), (FILESIZE, &size)],
        None,
    )
}

/// A `transfer` call: `chunk` at offset `previous_size`. The chunk becomes the
/// body's middle segment without a copy.
pub fn transfer_body(
    boundary: &Boundary,
    filename: &str,
    previous_size: u64,
    chunk: Bytes,
) -> MultipartBody {
    let offset = previous_size.to_string();
    // Field order as the sample client sends it: the offset arrives before the bytes,
    // so a server can check it before reading the payload.
    MultipartBody::encode(
        boundary,
        &[
            (FILENAME, filename),
            (PHASE, "transfer"),
            (PREVIOUS_SIZE, &offset),
        ],
        Some((BYTECHUNK, BYTECHUNK, chunk)),
    )
}

/// The `verify` call that closes `filename`.
pub fn verify_body(boundary: &Boundary, filename: &str) -> MultipartBody {
    MultipartBody::encode(boundary, &[(PHASE, "verify"), (FILENAME, filename)], None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MultipartEvent, MultipartParser, parse_urlencoded};

    fn fields(pairs: &[(&str, &[u8])]) -> Fields {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), Bytes::copy_from_slice(v)))
            .collect()
    }

    /// Parses an encoded body back into fields, as the mock does.
    fn decode(body: &MultipartBody) -> Fields {
        let boundary = body.content_type().split("boundary=").nth(1).unwrap();
        let mut parser = MultipartParser::new(boundary);
        for s in body.segments() {
            parser.push(s);
        }
        let mut out = Fields::new();
        let (mut name, mut value) = (String::new(), Vec::new());
        while let Some(event) = parser.next_event().unwrap() {
            match event {
                MultipartEvent::PartStart(h) => name = h.name,
                MultipartEvent::Data(d) => value.extend_from_slice(&d),
                MultipartEvent::PartEnd => {
                    out.push(name.clone(), std::mem::take(&mut value).into())
                }
                MultipartEvent::End => {}
            }
        }
        parser.finish().unwrap();
        out
    }

    #[test]
    fn each_phase_round_trips() {
        let b = Boundary::from_random(99);
        let cases = [
            (
                setup_body(&b, "a.bin", 10),
                PhaseRequest::Setup {
                    filename: "a.bin".into(),
                    filesize: 10,
                },
            ),
            (
                transfer_body(&b, "a.bin", 4, Bytes::from_static(b"xyz")),
                PhaseRequest::Transfer {
                    filename: "a.bin".into(),
                    previous_size: 4,
                    chunk: Bytes::from_static(b"xyz"),
                },
            ),
            (
                verify_body(&b, "a.bin"),
                PhaseRequest::Verify {
                    filename: "a.bin".into(),
                },
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(PhaseRequest::from_fields(&decode(&body)).unwrap(), expected);
        }
    }

    #[test]
    fn urlencoded_setup_like_the_sample_client() {
        let pairs = parse_urlencoded(b"filename=x.h5&phase=setup&filesize=2097152").unwrap();
        let request = PhaseRequest::from_fields(&pairs.into_iter().collect()).unwrap();
        assert_eq!(
            request,
            PhaseRequest::Setup {
                filename: "x.h5".into(),
                filesize: 2097152
            }
        );
        assert_eq!(request.phase(), Phase::Setup);
    }

    fn setup_of(filename: &[u8], filesize: &[u8]) -> Result<PhaseRequest, WireError> {
        PhaseRequest::from_fields(&fields(&[
            ("phase", b"setup"),
            ("filename", filename),
            ("filesize", filesize),
        ]))
    }

    #[test]
    fn setup_rules() {
        let max = MAX_FILE_SIZE.to_string();
        assert!(setup_of(b"f", max.as_bytes()).is_ok());
        let over = (MAX_FILE_SIZE + 1).to_string();
        assert!(matches!(
            setup_of(b"f", over.as_bytes()),
            Err(WireError::TooLarge { .. })
        ));
        for size in [
            &b"-1"[..],
            b"12a",
            b"",
            b"+1",
            b" 1",
            b"99999999999999999999999",
        ] {
            let err = setup_of(b"f", size).unwrap_err();
            assert!(
                matches!(
                    err,
                    WireError::BadField {
                        field: "filesize",
                        ..
                    }
                ),
                "{size:?}: {err:?}"
            );
        }
        assert!(matches!(
            setup_of(b"../x", b"1"),
            Err(WireError::BadFilename { .. })
        ));
        let missing =
            PhaseRequest::from_fields(&fields(&[("phase", b"setup"), ("filename", b"f")]));
        assert_eq!(
            missing.unwrap_err(),
            WireError::MissingField { field: "filesize" }
        );
        let unknown =
            PhaseRequest::from_fields(&fields(&[("phase", b"upload"), ("filename", b"f")]));
        assert!(matches!(unknown, Err(WireError::UnknownPhase { .. })));
    }

    #[test]
    fn transfer_and_verify_rules() {
        let err = PhaseRequest::from_fields(&fields(&[
            ("phase", b"transfer"),
            ("filename", b"f"),
            ("previous_size", b"0"),
        ]))
        .unwrap_err();
        assert_eq!(err, WireError::MissingField { field: "bytechunk" });
        let err = PhaseRequest::from_fields(&fields(&[("phase", b"verify")])).unwrap_err();
        assert_eq!(err, WireError::MissingField { field: "filename" });
        let err = PhaseRequest::from_fields(&fields(&[("filename", b"f")])).unwrap_err();
        assert_eq!(err, WireError::MissingField { field: "phase" });
        let err =
            PhaseRequest::from_fields(&fields(&[("phase", b"verify"), ("filename", b"\xff")]))
                .unwrap_err();
        assert!(matches!(
            err,
            WireError::BadField {
                field: "filename",
                ..
            }
        ));
    }

    #[test]
    fn last_value_wins_and_unknown_fields_are_ignored() {
        let request = PhaseRequest::from_fields(&fields(&[
            ("phase", b"verify"),
            ("filename", b"old"),
            ("filename", b"new"),
            ("checksum", b"not implemented"),
        ]))
        .unwrap();
        assert_eq!(request.filename(), "new");
    }
}
