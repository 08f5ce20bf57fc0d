use std::fmt;

use crate::WireError;

/// The `WWW-Authenticate` value the service sends with a 401.
pub const WWW_AUTHENTICATE: &str = "Token realm=\"Application\"";

/// The longest token we accept. Real tokens are short hex strings.
const MAX_TOKEN_BYTES: usize = 4096;

/// A dataset's upload token: a secret.
///
/// `Debug` prints `Token(<redacted>)`; there is no `Display`. The only ways to get
/// the text out are [`Token::authorization`] (to build the header) and
/// [`Token::expose`] (to compare), both named so that a review notices them.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Validates a token: non-empty, at most 4 KiB, visible ASCII without spaces,
    /// quotes, commas or backslashes (so it fits `Token token=...` unquoted).
    ///
    /// Surrounding white space (a trailing newline in a token file) is removed first.
    pub fn new(text: &str) -> Result<Self, WireError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(WireError::BadToken {
                reason: "it is empty",
            });
        }
        if text.len() > MAX_TOKEN_BYTES {
            return Err(WireError::BadToken {
                reason: "it is longer than 4096 bytes",
            });
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b',' | b'\\'))
        {
            return Err(WireError::BadToken {
                reason: "it contains spaces, control characters, quotes, commas, backslashes \
                         or non-ASCII characters",
            });
        }
        Ok(Self(text.to_owned()))
    }

    /// The `Authorization` header value: `Token token=<TOKEN>`. Mark the header
    /// sensitive where your HTTP library allows it.
    pub fn authorization(&self) -> String {
        format!("Token token={}", self.0)
    }

    /// The secret text, for comparisons on the server side.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Extracts the token from an `Authorization` header value, as the service's Rails
/// code does: `Token token=abc`, `Token token="abc"`, or `Bearer abc`. Returns `None`
/// for anything else.
pub fn parse_authorization(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return (!rest.is_empty()).then_some(rest);
    }
    if !scheme.eq_ignore_ascii_case("token") {
        return None;
    }
    // Parameters are `key=value` separated by commas; the token is `token=...`
    // (Rails also accepts the bare first value).
    let first = rest.split(',').next()?.trim();
    let raw = match first.split_once('=') {
        Some((key, v)) if key.trim() == "token" => v.trim(),
        Some(_) => return None,
        None => first,
    };
    let raw = raw
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(raw);
    (!raw.is_empty()).then_some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let token = Token::new("s3cr3t-abc").unwrap();
        let shown = format!("{token:?} {:?}", Some(&token));
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn trims_and_renders_header() {
        let token = Token::new("  abc123\n").unwrap();
        assert_eq!(token.authorization(), "Token token=abc123");
        assert_eq!(token.expose(), "abc123");
    }

    #[test]
    fn refuses_unsendable_tokens() {
        for bad in [
            "",
            "   \n",
            "a b",
            "a\"b",
            "a,b",
            "ab\\",
            "é",
            &"t".repeat(4097),
        ] {
            assert!(
                matches!(Token::new(bad), Err(WireError::BadToken { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn errors_never_carry_the_token() {
        let err = Token::new("secret with space").unwrap_err();
        assert!(!err.to_string().contains("secret"));
        assert!(!format!("{err:?}").contains("secret"));
    }

    #[test]
    fn parses_authorization_forms() {
        assert_eq!(parse_authorization("Token token=abc"), Some("abc"));
        assert_eq!(parse_authorization("Token token=\"abc\""), Some("abc"));
        assert_eq!(parse_authorization("token token=abc, nonce=1"), Some("abc"));
        assert_eq!(parse_authorization("Token abc"), Some("abc"));
        assert_eq!(parse_authorization("Bearer abc"), Some("abc"));
        assert_eq!(parse_authorization("Basic YWJj"), None);
        assert_eq!(parse_authorization("Token other=abc"), None);
        assert_eq!(parse_authorization("Token token="), None);
        assert_eq!(parse_authorization("Token"), None);
    }

    #[test]
    fn header_round_trips() {
        let token = Token::new("abc-123_XYZ").unwrap();
        assert_eq!(
            parse_authorization(&token.authorization()),
            Some(token.expose())
        );
    }
}
