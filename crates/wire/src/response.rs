//! What a server's answer means for the client.

use std::time::Duration;

use serde::Deserialize;

use crate::Phase;

/// The client's reading of one response: what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: the call did what it should.
    Ok,
    /// 5xx (but 507), 429, 408: safe to send again, after `after` if the server
    /// said so.
    Retry {
        /// `Retry-After`, when given in seconds.
        after: Option<Duration>,
    },
    /// 409 on transfer with `{"expected_offset": N}`: the server holds N bytes;
    /// resend from there.
    Realign {
        /// Where the server wants the next chunk.
        expected_offset: u64,
    },
    /// 409 on verify with `{"received": N, "expected": M}`: not all bytes arrived.
    Incomplete {
        /// Bytes the server holds.
        received: u64,
        /// Bytes it was told to expect.
        expected: u64,
    },
    /// 409 `{"error": "no_session"}`: the server has no open upload for this name
    /// (never set up, or forgotten); start again from setup.
    NoSession,
    /// 409 on setup with `{"error": "already_exists"}`: a file of this name is
    /// already in the dataset. (A 409 on setup with any other body is
    /// [`Outcome::Rejected`], so that what the server said is shown.)
    AlreadyExists,
    /// 413: the request is over the server's size limit.
    TooLarge,
    /// 401: the token is missing, wrong, expired, or for another dataset.
    Unauthorized,
    /// 404: no such dataset, or it is not a draft.
    NotFound,
    /// An answer no Data Bank gives: 501 (Not Implemented) or 405 (Method Not
    /// Allowed) to the API's POST, or a web page (HTML) as the success answer to
    /// setup. The address is not a Data Bank API; sending again will not help.
    NotDataBank,
    /// Anything else (400, other 4xx, 507 Insufficient Storage, an unexpected
    /// 1xx/3xx): the server refused this call and sending it again will not
    /// help (soon: a full disk is not a blip).
    Rejected,
}

impl Outcome {
    /// Whether the call succeeded.
    pub fn is_ok(self) -> bool {
        self == Outcome::Ok
    }
}

#[derive(Deserialize)]
struct ConflictBody {
    expected_offset: Option<u64>,
    received: Option<u64>,
    expected: Option<u64>,
    error: Option<String>,
}

/// Classifies a response to a call of `phase` from its status, body and
/// `Retry-After` header.
pub fn classify(phase: Phase, status: u16, body: &[u8], retry_after: Option<&str>) -> Outcome {
    match status {
        // A plain web server answers a POST to any path with a page of its own.
        200..=299 if phase == Phase::Setup && looks_like_html(body) => Outcome::NotDataBank,
        200..=299 => Outcome::Ok,
        401 => Outcome::Unauthorized,
        404 => Outcome::NotFound,
        // On setup only: later, such an answer is more likely a proxy's blip.
        405 | 501 if phase == Phase::Setup => Outcome::NotDataBank,
        413 => Outcome::TooLarge,
        // The server has no room for what it was sent: sending again at once
        // finds it as full.
        507 => Outcome::Rejected,
        408 | 429 | 500..=599 => Outcome::Retry {
            after: retry_after.and_then(parse_retry_after),
        },
        409 => {
            let conflict: Option<ConflictBody> = serde_json::from_slice(body).ok();
            let conflict = conflict.as_ref();
            if conflict.and_then(|c| c.error.as_deref()) == Some("no_session") {
                return Outcome::NoSession;
            }
            match phase {
                Phase::Setup
                    if conflict.and_then(|c| c.error.as_deref()) == Some("already_exists") =>
                {
                    Outcome::AlreadyExists
                }
                Phase::Setup => Outcome::Rejected,
                Phase::Transfer => match conflict.and_then(|c| c.expected_offset) {
                    Some(expected_offset) => Outcome::Realign { expected_offset },
                    None => Outcome::Rejected,
                },
                Phase::Verify => match conflict.and_then(|c| c.received.zip(c.expected)) {
                    Some((received, expected)) => Outcome::Incomplete { received, expected },
                    None => Outcome::Rejected,
                },
            }
        }
        _ => Outcome::Rejected,
    }
}

/// The longest `Retry-After` taken: longer ones are cut to it.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// Parses `Retry-After`, as delay-seconds or as an HTTP-date (the wait until
/// then by this machine's clock; see [`retry_after_against`] for reading it
/// against the server's). Delays are capped at [`RETRY_AFTER_CAP`]. A date
/// past, or anything else, is `None`: the client then uses its own backoff
/// (a clock ahead of the server's must not make every retry go at once).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    parse_retry_after_at(value, std::time::SystemTime::now())
}

/// [`parse_retry_after`] with the clock read as `now`.
pub fn parse_retry_after_at(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .ok()
            .filter(|wait| !wait.is_zero())?,
    };
    Some(wait.min(RETRY_AFTER_CAP))
}

/// A `Retry-After` date read against the answer's own `Date` (the server's
/// clock, so the clocks' skew does not count), as delay-seconds; anything
/// else as it came.
pub fn retry_after_against(value: &str, date: Option<&str>) -> String {
    let wait = date
        .and_then(|date| httpdate::parse_http_date(date.trim()).ok())
        .zip(httpdate::parse_http_date(value.trim()).ok())
        .map(|(now, then)| then.duration_since(now).unwrap_or(Duration::ZERO));
    match wait {
        Some(wait) => wait.as_secs().to_string(),
        None => value.to_owned(),
    }
}

/// Whether a response body is a web page: after white space (and a byte order
/// mark), it opens with `<!DOCTYPE html`, `<html`, `<head`, `<body` or `<title`,
/// in any case. A JSON or plain-text answer never does.
pub fn looks_like_html(body: &[u8]) -> bool {
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    let body = &body[start..];
    [
        &b"<!doctype html"[..],
        b"<html",
        b"<head",
        b"<body",
        b"<title",
    ]
    .iter()
    .any(|tag| {
        body.len() >= tag.len()
                && body[..tag.len()].eq_ignore_ascii_case(tag)
                // `<html>`, `<html lang=..>`, not `<htmlfoo`.
                && body
                    .get(tag.len())
                    .is_none_or(|b| !b.is_ascii_alphanumeric())
    })
}

/// What an error response body says, for a person, whole and raw: the
/// `message` (or `error`) of a JSON body, what a web page says ([`page_text`]),
/// else the body as text. The caller makes it safe to show (cut, control
/// characters escaped, secrets removed).
pub fn body_message(body: &[u8]) -> String {
    if looks_like_html(body) {
        return page_text(&String::from_utf8_lossy(body));
    }
    #[derive(Deserialize)]
    struct ErrorBody {
        message: Option<String>,
        error: Option<String>,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody {
            message: Some(m), ..
        })
        | Ok(ErrorBody { error: Some(m), .. }) => m,
        _ => String::from_utf8_lossy(body).into_owned(),
    }
}

/// What a web page says, on one line: its `<title>` when it has a non-empty
/// one (an error page's title is its status, such as `409 Conflict`), else its
/// text without tags (a block tag such as `<p>` or `<br>` breaks words, an
/// inline one such as `<b>` does not); runs of white space become one space.
fn page_text(page: &str) -> String {
    // ASCII lowercasing keeps every byte where it was.
    let lower = page.to_ascii_lowercase();
    let title = lower.find("<title").and_then(|open| {
        let start = open + lower[open..].find('>')? + 1;
        let end = start + lower[start..].find("</title")?;
        Some(&page[start..end])
    });
    let text = match title {
        Some(title) if !title.trim().is_empty() => title.to_owned(),
        _ => {
            let mut text = String::with_capacity(page.len());
            let mut rest = page;
            while let Some(open) = rest.find('<') {
                text.push_str(&rest[..open]);
                let Some(close) = rest[open..].find('>') else {
                    rest = "";
                    break;
                };
                if breaks_words(&rest[open + 1..open + close]) {
                    text.push(' ');
                }
                rest = &rest[open + close + 1..];
            }
            text.push_str(rest);
            text
        }
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether a tag (its text between `<` and `>`) ends a block of text: a
/// heading, paragraph, line break, list item, table cell and the like.
fn breaks_words(tag: &str) -> bool {
    const BLOCKS: [&str; 24] = [
        "br",
        "p",
        "div",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "li",
        "ul",
        "ol",
        "tr",
        "td",
        "th",
        "table",
        "pre",
        "hr",
        "title",
        "head",
        "body",
        "html",
        "section",
        "blockquote",
    ];
    let name: String = tag
        .trim_start_matches('/')
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    BLOCKS.iter().any(|b| b.eq_ignore_ascii_case(&name)) || tag.starts_with('!')
}

/// A short, printable summary of an error response body for a person:
/// [`body_message`] with control characters removed, at most 200 characters.
/// (It does not know any secret: the engine has its own, which removes the token.)
pub fn summarize_body(body: &[u8]) -> String {
    let clean: String = body_message(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    clean.trim().to_owned()
}

/// What the mock (and, we hope, a real server) answers to a successful verify.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct VerifyReceipt {
    /// The file name.
    pub filename: String,
    /// Bytes received.
    pub size: u64,
    /// blake3 of the bytes received, as 64 lowercase hex digits.
    pub blake3: String,
}

impl VerifyReceipt {
    /// Reads a receipt from a verify response body; `None` if the server sent
    /// something else (the public API promises only a 200).
    pub fn parse(body: &[u8]) -> Option<Self> {
        serde_json::from_slice(body).ok()
    }

    /// The size a verify's body reports when it is no whole receipt (a server
    /// that reports only a size, or writes it as a string or a float): a JSON
    /// object whose `size` is a whole number of bytes, written as a number,
    /// as a float with nothing after the point, or as a string of digits.
    pub fn reported_size(body: &[u8]) -> Option<u64> {
        Self::size_in(&serde_json::from_slice(body).ok()?)
    }

    /// [`VerifyReceipt::reported_size`] of a receipt already read as JSON.
    pub fn size_in(value: &serde_json::Value) -> Option<u64> {
        match value.as_object()?.get("size")? {
            serde_json::Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64)
                    .map(|f| f as u64)
            }),
            serde_json::Value::String(s)
                if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) =>
            {
                s.parse().ok()
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_as_seconds_or_as_a_date() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let at = |value: &str| parse_retry_after_at(value, now);
        assert_eq!(at("3"), Some(Duration::from_secs(3)));
        assert_eq!(at(" 0 "), Some(Duration::ZERO));
        assert_eq!(at("999999999"), Some(RETRY_AFTER_CAP));
        // 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
        assert_eq!(
            at("Tue, 14 Nov 2023 22:13:40 GMT"),
            Some(Duration::from_secs(20))
        );
        // Past (a clock ahead of the server's): the client's own backoff.
        assert_eq!(at("Tue, 14 Nov 2023 22:13:00 GMT"), None);
        assert_eq!(at("Tue, 14 Nov 2023 22:13:20 GMT"), None);
        // Against the answer's own Date, the clocks' skew does not count.
        let date = Some("Tue, 14 Nov 2023 22:13:00 GMT");
        assert_eq!(
            retry_after_against("Tue, 14 Nov 2023 22:13:30 GMT", date),
            "30"
        );
        assert_eq!(
            retry_after_against("Tue, 14 Nov 2023 22:12:00 GMT", date),
            "0"
        );
        assert_eq!(
            retry_after_against("Tue, 14 Nov 2023 22:13:30 GMT", None),
            "Tue, 14 Nov 2023 22:13:30 GMT"
        );
        assert_eq!(retry_after_against("7", date), "7");
        assert_eq!(at("Thu, 16 Nov 2023 22:13:20 GMT"), Some(RETRY_AFTER_CAP));
        for nothing in ["", "-1", "1.5", "soon", "Tue, 14 Nov 2023"] {
            assert_eq!(at(nothing), None, "{nothing:?}");
        }
    }

    #[test]
    fn a_size_is_read_from_a_body_that_is_no_whole_receipt() {
        let size = |body: &str| VerifyReceipt::reported_size(body.as_bytes());
        assert_eq!(size(r#"{"filename":"a","size":150000}"#), Some(150_000));
        assert_eq!(size(r#"{"size":"300000"}"#), Some(300_000));
        assert_eq!(size(r#"{"size":300000.0}"#), Some(300_000));
        assert_eq!(size(r#"{"size":0}"#), Some(0));
        for nothing in [
            r#"{"size":-1}"#,
            r#"{"size":1.5}"#,
            r#"{"size":"12a"}"#,
            r#"{"size":""}"#,
            r#"{"bytes":5}"#,
            r#"[5]"#,
            "5",
            "ok",
            "",
        ] {
            assert_eq!(size(nothing), None, "{nothing}");
        }
    }

    #[test]
    fn statuses() {
        let c = |status, body: &[u8]| classify(Phase::Transfer, status, body, None);
        assert_eq!(c(200, b""), Outcome::Ok);
        assert_eq!(c(204, b""), Outcome::Ok);
        assert_eq!(c(401, b"Bad credentials"), Outcome::Unauthorized);
        assert_eq!(c(404, b"Dataset Not Found"), Outcome::NotFound);
        assert_eq!(c(413, b""), Outcome::TooLarge);
        assert_eq!(c(400, b""), Outcome::Rejected);
        assert_eq!(c(403, b""), Outcome::Rejected);
        assert_eq!(c(302, b""), Outcome::Rejected);
        // A full disk is not retried at once.
        assert_eq!(c(507, b"No space left on device"), Outcome::Rejected);
        // Not a Data Bank only when setup meets it; later, a proxy's blip.
        let setup = |status, body: &[u8]| classify(Phase::Setup, status, body, None);
        assert_eq!(setup(405, b""), Outcome::NotDataBank);
        assert_eq!(setup(501, b"<html>"), Outcome::NotDataBank);
        assert_eq!(c(405, b""), Outcome::Rejected);
        assert_eq!(c(501, b"<html>"), Outcome::Retry { after: None });
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(c(s, b""), Outcome::Retry { after: None }, "{s}");
        }
    }

    #[test]
    fn retry_after_seconds() {
        assert_eq!(
            classify(Phase::Transfer, 429, b"", Some(" 7 ")),
            Outcome::Retry {
                after: Some(Duration::from_secs(7))
            }
        );
        // A date past: the client's own backoff.
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("999999"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn conflicts_depend_on_phase_and_body() {
        assert_eq!(
            classify(Phase::Transfer, 409, br#"{"expected_offset": 42}"#, None),
            Outcome::Realign {
                expected_offset: 42
            }
        );
        assert_eq!(
            classify(Phase::Transfer, 409, b"conflict", None),
            Outcome::Rejected
        );
        assert_eq!(
            classify(
                Phase::Verify,
                409,
                br#"{"received": 1, "expected": 5}"#,
                None
            ),
            Outcome::Incomplete {
                received: 1,
                expected: 5
            }
        );
        assert_eq!(classify(Phase::Verify, 409, b"{}", None), Outcome::Rejected);
        assert_eq!(
            classify(
                Phase::Setup,
                409,
                br#"{"error": "already_exists", "message": "x"}"#,
                None
            ),
            Outcome::AlreadyExists
        );
        // Any other conflict on setup is shown as the server said it.
        assert_eq!(classify(Phase::Setup, 409, b"", None), Outcome::Rejected);
        assert_eq!(
            classify(Phase::Setup, 409, br#"{"error": "locked"}"#, None),
            Outcome::Rejected
        );
        for phase in [Phase::Transfer, Phase::Verify] {
            assert_eq!(
                classify(
                    phase,
                    409,
                    br#"{"error": "no_session", "message": "x"}"#,
                    None
                ),
                Outcome::NoSession
            );
        }
    }

    #[test]
    fn a_web_page_answering_setup_is_not_a_data_bank() {
        let page = b"\n  <!DOCTYPE html>\n<html><body>Welcome</body></html>";
        assert_eq!(
            classify(Phase::Setup, 200, page, None),
            Outcome::NotDataBank
        );
        // Only setup's answer is judged by its body; other phases' success stands.
        assert_eq!(classify(Phase::Transfer, 200, page, None), Outcome::Ok);
        assert_eq!(classify(Phase::Setup, 200, b"", None), Outcome::Ok);
        assert_eq!(
            classify(Phase::Setup, 200, b"{\"ok\":1}", None),
            Outcome::Ok
        );
        // An error status with a web page is still an ordinary answer.
        assert_eq!(
            classify(Phase::Setup, 500, page, None),
            Outcome::Retry { after: None }
        );
        assert_eq!(
            classify(Phase::Setup, 401, page, None),
            Outcome::Unauthorized
        );
    }

    #[test]
    fn html_is_recognized_by_its_opening_tag() {
        for page in [
            &b"<!doctype html><p>x"[..],
            b"\xef\xbb\xbf<HTML lang=en>",
            b"\r\n<head><title>x</title>",
            b"<body>",
            b"<title>Index of /</title>",
        ] {
            assert!(looks_like_html(page), "{}", String::from_utf8_lossy(page));
        }
        for other in [
            &b""[..],
            b"OK",
            b"{\"html\": \"<html>\"}",
            b"<htmlish>",
            b"<?xml version=\"1.0\"?>",
            b"<htm",
        ] {
            assert!(
                !looks_like_html(other),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn body_messages_are_whole() {
        assert_eq!(body_message(&[b'a'; 500]).len(), 500);
        assert_eq!(body_message(br#"{"message":"m","error":"e"}"#), "m");
    }

    #[test]
    fn a_web_page_says_its_title_or_its_text_on_one_line() {
        let page = b"<!DOCTYPE html>\n<html>\n<head><TITLE>409\n Conflict</TITLE></head>\n\
                     <body><h1>409 Conflict</h1></body>\n</html>\n";
        assert_eq!(body_message(page), "409 Conflict");
        let untitled = b"<html><head><title> </title></head><body><h1>Oops</h1>\n<p>It \
                         broke<br>here.</p></body></html>";
        assert_eq!(body_message(untitled), "Oops It broke here.");
        // Inline tags do not split words (nor a token the engine scrubs).
        assert_eq!(
            body_message(b"<html><p>Token token=ab<b>cd</b>ef</p></html>"),
            "Token token=abcdef"
        );
        // Cut before the title ends: the text without tags.
        assert_eq!(body_message(b"<html><title>Ser"), "Ser");
    }

    #[test]
    fn summaries() {
        assert_eq!(
            summarize_body(br#"{"error":"x","message":"the reason"}"#),
            "the reason"
        );
        assert_eq!(summarize_body(br#"{"error":"x"}"#), "x");
        assert_eq!(
            summarize_body(b"line one\nline\ttwo\x07"),
            "line one line two"
        );
        assert_eq!(summarize_body(&[b'a'; 500]).len(), 200);
        assert_eq!(summarize_body(b""), "");
    }

    #[test]
    fn receipts() {
        let r = VerifyReceipt::parse(br#"{"filename":"a","size":3,"blake3":"ab"}"#).unwrap();
        assert_eq!(
            (r.filename.as_str(), r.size, r.blake3.as_str()),
            ("a", 3, "ab")
        );
        assert_eq!(VerifyReceipt::parse(b"OK"), None);
    }
}
