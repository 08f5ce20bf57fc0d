//! How a server takes the chunks of one file, and how it says so.

use std::fmt;
use std::str::FromStr;

use crate::WireError;

/// The response header with which a server that writes each chunk at its offset
/// (the mock's offset mode) says so, on `setup`: `Idb-Write-Mode: offset`. A client
/// may then keep several chunks of one file in flight. Its absence means strict:
/// one chunk at a time, in order.
pub const WRITE_MODE_HEADER: &str = "idb-write-mode";

/// The [`WRITE_MODE_HEADER`] value for offset mode.
pub const WRITE_MODE_OFFSET: &str = "offset";

/// How a server takes the transfers (chunks) of one file.
///
/// For a client, it is what a setup answer announced: [`WriteMode::Offset`] when
/// it carried [`WRITE_MODE_HEADER`] with [`WRITE_MODE_OFFSET`], else
/// [`WriteMode::Strict`], and it bounds how many chunks of the file are worth
/// keeping in flight. For a server (the mock), it is how transfers are ordered:
/// in order only, or at any offset in any order.
///
/// ```
/// use idb_wire::{WireError, WriteMode};
///
/// assert_eq!(" Offset ".parse::<WriteMode>(), Ok(WriteMode::Offset));
/// assert_eq!(WriteMode::default().to_string(), "strict");
/// assert!(matches!(
///     "sideways".parse::<WriteMode>(),
///     Err(WireError::UnknownWriteMode { .. })
/// ));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum WriteMode {
    /// The documented protocol: a transfer must start where the bytes received so
    /// far end, else 409 `{"expected_offset": N}`. Only one chunk of a file can
    /// usefully be in flight.
    #[default]
    Strict,
    /// A server that writes each chunk at its offset: transfers may come in any
    /// order and concurrently, and verify succeeds when they cover the file exactly.
    /// Setup answers carry `idb-write-mode: offset` ([`WRITE_MODE_HEADER`]).
    Offset,
}

impl WriteMode {
    /// The name on the command line: `strict` or `offset`.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteMode::Strict => "strict",
            WriteMode::Offset => "offset",
        }
    }
}

impl fmt::Display for WriteMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WriteMode {
    type Err = WireError;

    /// Parses `strict` or `offset` (case-insensitive, surrounding spaces ignored).
    fn from_str(text: &str) -> Result<Self, WireError> {
        let name = text.trim();
        [WriteMode::Strict, WriteMode::Offset]
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| WireError::UnknownWriteMode {
                mode: name.chars().take(64).collect(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        for mode in [WriteMode::Strict, WriteMode::Offset] {
            assert_eq!(mode.as_str().parse::<WriteMode>(), Ok(mode));
            assert_eq!(mode.to_string(), mode.as_str());
        }
        assert_eq!("STRICT".parse::<WriteMode>(), Ok(WriteMode::Strict));
        assert_eq!(WriteMode::default(), WriteMode::Strict);
        assert_eq!(WriteMode::Offset.as_str(), WRITE_MODE_OFFSET);
        let long = "x".repeat(100);
        assert!(matches!(
            long.parse::<WriteMode>(),
            Err(WireError::UnknownWriteMode { mode }) if mode.len() == 64
        ));
        assert!(matches!(
            "".parse::<WriteMode>(),
            Err(WireError::UnknownWriteMode { mode }) if mode.is_empty()
        ));
    }
}
