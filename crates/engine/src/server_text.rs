//! What a server sends back, made safe to show before it reaches any error,
//! event or log: every token of the run scrubbed out (as sent, and in the
//! encodings a server may echo it in), control characters escaped, and the
//! whole cut to [`SERVER_TEXT_LIMIT`] characters.
//!
//! A server may quote the request's headers back (an error page that echoes
//! them, a framework's debug page), so anything it says may hold the
//! `Authorization` header. The client cleans every text it takes from an
//! answer or a failed exchange here, once, where the answer enters the engine;
//! nothing else of an answer leaves the client.

use std::borrow::Cow;
use std::fmt::Write as _;

use idb_wire::Token;

/// The most characters of one server text kept for people (a body's message, a
/// `Location`, a connection error): enough for a sentence and an address, short
/// enough for one line of a log.
pub const SERVER_TEXT_LIMIT: usize = 300;

/// What stands where a token was.
const REDACTED: &str = "<redacted>";

/// The tokens a run's texts must never carry: the one it started with and every
/// one it was given since (a server may still echo an old one).
pub(crate) struct Secrets {
    tokens: Vec<Token>,
}

impl Secrets {
    pub(crate) fn new(token: &Token) -> Self {
        Self {
            tokens: vec![token.clone()],
        }
    }

    /// Scrubs `token` too from now on (older ones stay).
    pub(crate) fn add(&mut self, token: &Token) {
        if !self.tokens.contains(token) {
            self.tokens.push(token.clone());
        }
    }

    /// `text` safe to show: every token scrubbed, control characters escaped,
    /// cut to [`SERVER_TEXT_LIMIT`] characters. `cut` says the text was already
    /// cut short (a body read up to its limit): a token's beginning at its very
    /// end is scrubbed too.
    pub(crate) fn clean(&self, text: &str, cut: bool) -> String {
        let text = self.scrub(text, cut);
        cut_to_limit(&escape_controls(text.trim()), cut)
    }
}

/// `text` cut to [`SERVER_TEXT_LIMIT`] characters, with `...` where it was
/// cut (here, or already: `cut`).
pub(crate) fn cut_to_limit(text: &str, cut: bool) -> String {
    let mut out: String = text.chars().take(SERVER_TEXT_LIMIT).collect();
    if cut || out.len() < text.len() {
        out.push_str("...");
    }
    out
}

impl Secrets {
    /// `text` with every token scrubbed, nothing else changed: for a body
    /// before it is read for a message (a page's tags then cannot split a
    /// token the scrub would have matched whole).
    pub(crate) fn scrub<'t>(&self, text: &'t str, cut: bool) -> Cow<'t, str> {
        let mut text = Cow::Borrowed(text);
        for token in &self.tokens {
            if let Cow::Owned(scrubbed) = scrub(&text, token.expose().as_bytes(), cut) {
                text = Cow::Owned(scrubbed);
            }
        }
        text
    }
}

/// `text` with every occurrence of `secret` replaced by [`REDACTED`], where each
/// of its characters may be written as itself or encoded (see [`encodings`]),
/// in any mix, and in either letter case (a server that shows headers in upper
/// case). With `cut`, a match still going when the text ends counts.
fn scrub<'t>(text: &'t str, secret: &[u8], cut: bool) -> Cow<'t, str> {
    if secret.is_empty() {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    // `copied`: how far `text` went into `out`.
    let (mut at, mut copied) = (0, 0);
    while at < bytes.len() {
        match matches_at(bytes, at, secret, cut) {
            Some(end) => {
                // Every byte matched is ASCII, so both ends are char boundaries.
                let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
                out.push_str(&text[copied..at]);
                out.push_str(REDACTED);
                (at, copied) = (end, end);
            }
            None => at += 1,
        }
    }
    match out {
        Some(mut out) => {
            out.push_str(&text[copied..]);
            Cow::Owned(out)
        }
        None => Cow::Borrowed(text),
    }
}

/// Where a match of `secret` starting at `at` ends, if one does.
fn matches_at(text: &[u8], at: usize, secret: &[u8], cut: bool) -> Option<usize> {
    let Some((&first, rest)) = secret.split_first() else {
        return Some(at);
    };
    if at == text.len() {
        return cut.then_some(at);
    }
    let mut lengths = [0; MAX_ENCODINGS];
    let found = encodings(&text[at..], first, &mut lengths);
    // Several encodings can fit (`%` as itself or as `%25`): try each.
    lengths[..found]
        .iter()
        .find_map(|&len| matches_at(text, at + len, rest, cut))
        .or_else(|| {
            // The text ends inside what may be an escape of this character.
            let tail = &text[at..];
            (cut && tail.len() < MAX_ESCAPE && matches!(tail[0], b'%' | b'\\' | b'&'))
                .then_some(text.len())
        })
}

/// How many ways one character can be written that [`encodings`] knows.
const MAX_ENCODINGS: usize = 4;

/// The longest escape of one character [`encodings`] reads (`&#x0000002F;`).
const MAX_ESCAPE: usize = 12;

/// The lengths of the ways `text` begins with the character `c`: as itself;
/// percent-encoded once or twice (`%2F`, `%2f`, `%252F`); a JSON escape
/// (`\u002F`, `\/`); an HTML character reference (`&#47;`, `&#x2f;`, `&amp;`
/// and the like); `+` for a space (a form).
fn encodings(text: &[u8], c: u8, lengths: &mut [usize; MAX_ENCODINGS]) -> usize {
    let mut found = 0;
    let mut push = |len: usize| {
        if found < MAX_ENCODINGS {
            lengths[found] = len;
            found += 1;
        }
    };
    if text[0].eq_ignore_ascii_case(&c) || (c == b' ' && text[0] == b'+') {
        push(1);
    }
    match text[0] {
        b'%' => {
            if text.get(1..3).and_then(hex).is_some_and(|v| is(v, c)) {
                push(3);
            }
            if text.get(1..3) == Some(b"25")
                && text.get(3..5).and_then(hex).is_some_and(|v| is(v, c))
            {
                push(5);
            }
        }
        b'\\' => {
            if c == b'/' && text.get(1) == Some(&b'/') {
                push(2);
            }
            if text.get(1) == Some(&b'u') && text.get(2..6).and_then(hex).is_some_and(|v| is(v, c))
            {
                push(6);
            }
        }
        b'&' => {
            if let Some(len) = character_reference(text, c) {
                push(len);
            }
        }
        _ => {}
    }
    found
}

/// The value of hexadecimal digits (only digits: no sign, no space).
fn hex(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    digits.iter().try_fold(0u32, |value, &d| {
        Some(value * 16 + (d as char).to_digit(16)?)
    })
}

/// The length of an HTML character reference to `c` at the start of `text`.
fn character_reference(text: &[u8], c: u8) -> Option<usize> {
    let end = text.iter().take(MAX_ESCAPE).position(|&b| b == b';')?;
    let name = &text[1..end];
    let value = if let Some(digits) = name
        .strip_prefix(b"#x")
        .or_else(|| name.strip_prefix(b"#X"))
    {
        hex(digits)?
    } else if let Some(digits) = name.strip_prefix(b"#") {
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()?
    } else {
        u32::from(match name {
            b"amp" => b'&',
            b"lt" => b'<',
            b"gt" => b'>',
            b"quot" => b'"',
            b"apos" => b'\'',
            _ => return None,
        })
    };
    is(value, c).then_some(end + 1)
}

/// Whether the character of code `value` is `c`, in either letter case.
fn is(value: u32, c: u8) -> bool {
    u8::try_from(value).is_ok_and(|v| v.eq_ignore_ascii_case(&c))
}

/// `text` with every control character written as an escape: `\n`, `\t`, `\r`
/// by name, other ASCII controls as `\xNN`, and the rest (C1 controls, and the
/// invisible characters that reorder or hide text) as `\u{NN}`; borrowed when
/// there is nothing to escape. A backslash is left as it is, so ordinary text
/// (and text escaped already) shows unchanged. The engine cleans server text
/// with it; the CLI shows file names with it.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unprintable) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_ascii_control() => {
                write!(out, "\\x{:02x}", c as u32).expect("write to a String");
            }
            c if unprintable(c) => write!(out, "\\u{{{:x}}}", c as u32).expect("write to a String"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Control characters (C0, DEL, C1) and the invisible format characters that
/// reorder or hide text (bidirectional overrides, zero-width characters).
fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "Ab/c+d&e%f";

    fn secrets() -> Secrets {
        Secrets::new(&Token::new(SECRET).unwrap())
    }

    /// Every way `secret` may be echoed that the scrubber knows of.
    fn echoes(secret: &str) -> Vec<String> {
        let percent = |upper: bool| {
            secret
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() {
                        (b as char).to_string()
                    } else if upper {
                        format!("%{b:02X}")
                    } else {
                        format!("%{b:02x}")
                    }
                })
                .collect::<String>()
        };
        let every_byte = |form: &dyn Fn(u8) -> String| secret.bytes().map(form).collect();
        vec![
            secret.to_owned(),
            percent(true),
            percent(false),
            every_byte(&|b| format!("%{b:02X}")),
            every_byte(&|b| format!("%25{b:02x}")),
            every_byte(&|b| format!("\\u{:04x}", b)),
            secret.replace('/', "\\/"),
            every_byte(&|b| format!("&#{b};")),
            every_byte(&|b| format!("&#x{b:X};")),
            secret.replace('&', "&amp;"),
            format!("Token token={secret}"),
            secret.to_ascii_uppercase(),
            secret.to_ascii_lowercase(),
            percent(true).to_ascii_uppercase(),
            every_byte(&|b| format!("&#{};", b.to_ascii_uppercase())),
        ]
    }

    #[test]
    fn every_echo_of_the_token_is_scrubbed() {
        for echo in echoes(SECRET) {
            let text = format!("bad request: authorization: {echo}; accept: */*");
            let shown = secrets().clean(&text, false);
            assert!(!shown.contains(&echo), "{echo}: {shown}");
            assert!(shown.contains(REDACTED), "{echo}: {shown}");
            assert!(shown.starts_with("bad request: authorization: "), "{shown}");
            assert!(shown.ends_with("; accept: */*"), "{shown}");
        }
    }

    #[test]
    fn a_token_begun_where_a_cut_text_ends_is_scrubbed() {
        // (Cut within the token: `Tok` alone is no secret.)
        for echo in echoes(SECRET).iter().filter(|e| !e.starts_with("Token ")) {
            for keep in 1..echo.len() {
                let text = format!("x {}", &echo[..keep]);
                let shown = secrets().clean(&text, true);
                assert_eq!(shown, format!("x {REDACTED}..."), "{echo} cut at {keep}");
            }
        }
        // A text that was not cut keeps what only looks like a beginning.
        assert_eq!(secrets().clean("x Ab", false), "x Ab");
    }

    #[test]
    fn every_token_of_the_run_is_scrubbed() {
        let mut secrets = secrets();
        secrets.add(&Token::new("second-token").unwrap());
        let shown = secrets.clean(&format!("{SECRET} then second-token"), false);
        assert_eq!(shown, format!("{REDACTED} then {REDACTED}"));
    }

    #[test]
    fn text_without_the_token_is_kept() {
        let text = "Ab/c+d&e%g, %41b/c, A b/c, &#x41;";
        assert_eq!(secrets().clean(text, false), text);
    }

    #[test]
    fn texts_are_cut_and_escaped() {
        let long = "é".repeat(1000);
        let shown = secrets().clean(&long, false);
        assert_eq!(shown.chars().count(), SERVER_TEXT_LIMIT + 3);
        assert!(shown.ends_with("..."));
        assert_eq!(
            secrets().clean(" line\none\t\x1b[31m\u{202e}\r\n", false),
            "line\\none\\t\\x1b[31m\\u{202e}"
        );
        assert!(
            !secrets()
                .clean("\u{9b}\x07", false)
                .chars()
                .any(char::is_control)
        );
    }

    #[test]
    fn odd_escapes_neither_panic_nor_match() {
        for text in [
            "%", "%2", "%+2F", "\\u", "\\u+02F", "&#", "&#;", "&#x+41;", "&#-65;",
        ] {
            assert_eq!(
                Secrets::new(&Token::new("A").unwrap()).clean(text, false),
                text
            );
        }
    }
}
