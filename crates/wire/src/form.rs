//! `application/x-www-form-urlencoded`, the encoding of the sample client's `setup`
//! and `verify` calls.

use bytes::Bytes;

use crate::WireError;

/// Decodes a urlencoded body into `(name, value)` pairs, in order.
///
/// Names must be UTF-8; values stay bytes (`+` is a space, `%XX` a byte), because a
/// client may send `bytechunk` this way. A `%` not followed by two hex digits is an
/// error, not a guess.
pub fn parse_urlencoded(body: &[u8]) -> Result<Vec<(String, Bytes)>, WireError> {
    let mut pairs = Vec::new();
    for piece in body.split(|&b| b == b'&') {
        if piece.is_empty() {
            continue;
        }
        let (name, value) = match piece.iter().position(|&b| b == b'=') {
            Some(i) => (&piece[..i], &piece[i + 1..]),
            None => (piece, &[][..]),
        };
        let name = String::from_utf8(decode(name)?).map_err(|_| WireError::Urlencoded {
            reason: "a field name is not UTF-8",
        })?;
        pairs.push((name, Bytes::from(decode(value)?)));
    }
    Ok(pairs)
}

fn decode(input: &[u8]) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = input.get(i + 1..i + 3).ok_or(WireError::Urlencoded {
                    reason: "a '%' escape is cut short",
                })?;
                let value =
                    hex_value(hex[0])
                        .zip(hex_value(hex[1]))
                        .ok_or(WireError::Urlencoded {
                            reason: "a '%' escape is not two hex digits",
                        })?;
                out.push(value.0 << 4 | value.1);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Encodes `(name, value)` pairs as a urlencoded body (unreserved characters kept,
/// everything else `%XX`).
pub fn encode_urlencoded(pairs: &[(&str, &[u8])]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode_into(&mut out, name.as_bytes());
        out.push('=');
        encode_into(&mut out, value);
    }
    out
}

fn encode_into(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn decodes_the_sample_clients_setup() {
        let pairs = parse_urlencoded(b"phase=setup&filename=my+file%2B.txt&filesize=42").unwrap();
        let pairs: Vec<_> = pairs
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_ref()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("phase", &b"setup"[..]),
                ("filename", b"my file+.txt"),
                ("filesize", b"42")
            ]
        );
    }

    #[test]
    fn empty_pieces_and_bare_names() {
        let pairs = parse_urlencoded(b"&&a&b=").unwrap();
        assert_eq!(pairs.len(), 2);
        assert!(pairs.iter().all(|(_, v)| v.is_empty()));
    }

    #[test]
    fn refuses_broken_escapes() {
        for bad in [&b"a=%"[..], b"a=%4", b"a=%zz", b"%ff=1"] {
            assert!(
                matches!(parse_urlencoded(bad), Err(WireError::Urlencoded { .. })),
                "{bad:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn round_trips(value in proptest::collection::vec(any::<u8>(), 0..200), name in "[a-z_]{1,12}") {
            let body = encode_urlencoded(&[(&name, &value)]);
            let pairs = parse_urlencoded(body.as_bytes()).unwrap();
            prop_assert_eq!(pairs.len(), 1);
            prop_assert_eq!(&pairs[0].0, &name);
            prop_assert_eq!(pairs[0].1.as_ref(), &value[..]);
        }
    }
}
