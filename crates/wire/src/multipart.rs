//! `multipart/form-data`: encoding as separate segments (no copy of the payload) and
//! a streaming push parser.

use bytes::{Buf, Bytes, BytesMut};
use memchr::memmem;

use crate::WireError;

/// The most bytes of part headers we accept before calling the body malformed.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The most bytes we skip before the first boundary (the "preamble").
const MAX_PREAMBLE_BYTES: usize = 16 * 1024;

/// The most transport padding (spaces, tabs) we accept after a boundary.
const MAX_PADDING_BYTES: usize = 64;

/// RFC 2046: a boundary has 1 to 70 characters.
const MAX_BOUNDARY_BYTES: usize = 70;

/// A multipart boundary chosen by the client.
///
/// Made from 128 random bits the caller supplies (this crate has no randomness), so
/// the chance that a payload contains it is negligible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boundary(String);

impl Boundary {
    /// A boundary `idb-<32 hex digits>` from `random`.
    pub fn from_random(random: u128) -> Self {
        Self(format!("idb-{random:032x}"))
    }

    /// The boundary text (without the leading `--`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A request body as a list of segments, sent one after another.
///
/// For a transfer the segments are: everything up to the payload, the payload
/// itself (the caller's `Bytes`, never copied), and the closing boundary.
#[derive(Debug, Clone)]
pub struct MultipartBody {
    content_type: String,
    segments: Vec<Bytes>,
}

impl MultipartBody {
    /// The `Content-Type` header value, with the boundary.
    pub fn content_type(&self) -> &str {
        &self.content_type
    }

    /// The body's segments, in order.
    pub fn segments(&self) -> &[Bytes] {
        &self.segments
    }

    /// Takes the segments out.
    pub fn into_segments(self) -> Vec<Bytes> {
        self.segments
    }

    /// The total length in bytes (the `Content-Length`).
    pub fn len(&self) -> u64 {
        self.segments.iter().map(|s| s.len() as u64).sum()
    }

    /// Whether the body has no bytes at all (never true for a well-formed body).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Builds a body of text fields, then an optional file part `(name, filename,
    /// payload)`.
    pub(crate) fn encode(
        boundary: &Boundary,
        fields: &[(&str, &str)],
        file: Option<(&str, &str, Bytes)>,
    ) -> Self {
        let b = boundary.as_str();
        let mut head = String::new();
        for (name, value) in fields {
            head.push_str(&format!(
                "--{b}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            ));
        }
        let mut segments = Vec::with_capacity(3);
        match file {
            Some((name, filename, payload)) => {
                head.push_str(&format!(
                    "--{b}\r\nContent-Disposition: form-data; name=\"{name}\"; \
                     filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                ));
                segments.push(Bytes::from(head));
                segments.push(payload);
                segments.push(Bytes::from(format!("\r\n--{b}--\r\n")));
            }
            None => {
                head.push_str(&format!("--{b}--\r\n"));
                segments.push(Bytes::from(head));
            }
        }
        Self {
            content_type: format!("multipart/form-data; boundary={b}"),
            segments,
        }
    }
}

/// Extracts the boundary from a `Content-Type` of `multipart/form-data`.
pub fn boundary_from_content_type(content_type: &str) -> Result<String, WireError> {
    let bad = |reason| WireError::Multipart { reason };
    let mut params = content_type.split(';');
    let media = params.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("multipart/form-data") {
        return Err(bad("the content type is not multipart/form-data"));
    }
    let rest = content_type[content_type.find(';').unwrap_or(content_type.len())..]
        .trim_start_matches(';');
    let boundary = parse_params(rest)
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v)
        .ok_or(bad("the content type has no boundary"))?;
    if boundary.is_empty() || boundary.len() > MAX_BOUNDARY_BYTES {
        return Err(bad("the boundary must have 1 to 70 characters"));
    }
    if boundary.bytes().any(|b| b.is_ascii_control()) {
        return Err(bad("the boundary contains control characters"));
    }
    Ok(boundary)
}

/// Parses `; key=value; key="quoted \"value\""` parameters. Keys are lower-cased.
fn parse_params(input: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = input.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ';') {
            chars.next();
        }
        if chars.peek().is_none() {
            return out;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ';' {
                break;
            }
            key.push(c);
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => value.extend(chars.next()),
                        c => value.push(c),
                    }
                }
                // Skip anything between the closing quote and the next ';'.
                while chars.peek().is_some_and(|c| *c != ';') {
                    chars.next();
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ';' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                value = value.trim_end().to_owned();
            }
        }
        out.push((key.trim().to_ascii_lowercase(), value));
    }
}

/// The headers of one part that matter for a form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartHeaders {
    /// `name` from `Content-Disposition`: the form field.
    pub name: String,
    /// `filename` from `Content-Disposition`, for file parts.
    pub filename: Option<String>,
    /// The part's `Content-Type`, if given.
    pub content_type: Option<String>,
}

/// One step of a multipart body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultipartEvent {
    /// A new part begins.
    PartStart(PartHeaders),
    /// Some bytes of the current part's content (zero-copy slices of the parser's
    /// buffer, or of the bytes given to [`MultipartParser::push_bytes`]; a
    /// part's content may come in several pieces).
    Data(Bytes),
    /// The current part ended.
    PartEnd,
    /// The closing boundary was read; anything after it is ignored.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Preamble,
    AfterBoundary,
    Headers,
    Body,
    Done,
}

/// A streaming `multipart/form-data` parser: push bytes as they arrive, pull events.
///
/// It holds at most one delimiter's length of part content plus the bytes pushed
/// since the last event, so the caller controls memory by pulling events after
/// each push. [`MultipartParser::next_event`] answers `Ok(None)` when it needs more
/// bytes and `Err` when the body is malformed; [`MultipartParser::finish`] tells
/// whether a body that ended was complete.
///
/// Bytes pushed as they were received ([`MultipartParser::push_bytes`]) in the
/// middle of a part's content are not copied: its `Data` events are slices of
/// them. Only the few bytes at each end that may belong to a delimiter are.
pub struct MultipartParser {
    /// `\r\n--<boundary>`: what ends a part's content.
    delimiter: Vec<u8>,
    finder: memmem::Finder<'static>,
    buf: BytesMut,
    /// Bytes pushed whole inside a part's content, not yet looked at: they
    /// follow `buf`, which then holds less than one delimiter.
    pending: Option<Bytes>,
    state: State,
}

impl MultipartParser {
    /// A parser for bodies with this boundary (as given by
    /// [`boundary_from_content_type`]).
    pub fn new(boundary: &str) -> Self {
        let delimiter = [b"\r\n--", boundary.as_bytes()].concat();
        let finder = memmem::Finder::new(&delimiter).into_owned();
        // A body normally starts with `--boundary`, without the CRLF in front of it;
        // seeding the buffer with one lets a single search rule find every delimiter.
        let mut buf = BytesMut::with_capacity(64 * 1024);
        buf.extend_from_slice(b"\r\n");
        Self {
            delimiter,
            finder,
            buf,
            pending: None,
            state: State::Preamble,
        }
    }

    /// Appends bytes received from the network (copied).
    pub fn push(&mut self, data: &[u8]) {
        if self.state != State::Done {
            self.take_pending();
            self.buf.extend_from_slice(data);
        }
    }

    /// Appends bytes received from the network, without copying them when they
    /// come in the middle of a part's content and every event of the bytes
    /// before them was pulled: the `Data` events are then slices of `data`.
    /// Otherwise it is [`MultipartParser::push`]. The events are the same but
    /// for how a part's content is cut into `Data` pieces.
    pub fn push_bytes(&mut self, data: Bytes) {
        let inside_content = self.state == State::Body
            && self.pending.is_none()
            && self.buf.len() < self.delimiter.len()
            && data.len() >= self.delimiter.len();
        if inside_content {
            self.pending = Some(data);
        } else {
            self.push(&data);
        }
    }

    /// Moves bytes pushed whole into `buf` (copying them), for the rules that
    /// look at `buf` only.
    fn take_pending(&mut self) {
        if let Some(pending) = self.pending.take() {
            self.buf.extend_from_slice(&pending);
        }
    }

    /// In a part's content, with bytes pushed whole: the next `Data` event
    /// without copying them, or `None` when the rules on `buf` must go on
    /// (after the bytes that may hold a delimiter were moved there).
    fn content_in_pending(&mut self) -> Option<MultipartEvent> {
        let keep = self.delimiter.len() - 1;
        let data = self.pending.as_ref()?;
        if !self.buf.is_empty() {
            // `buf` holds less than a delimiter: one starting in it ends
            // within the first `keep` bytes of `data`, which are at least
            // that long (see `push_bytes`).
            let mut junction = Vec::with_capacity(self.buf.len() + keep);
            junction.extend_from_slice(&self.buf);
            junction.extend_from_slice(&data[..keep]);
            if self.finder.find(&junction).is_some() {
                self.take_pending();
                return None;
            }
            return Some(MultipartEvent::Data(self.buf.split().freeze()));
        }
        let data = self.pending.take()?;
        match self.finder.find(&data) {
            Some(0) => {
                self.buf.extend_from_slice(&data);
                None
            }
            Some(i) => {
                self.buf.extend_from_slice(&data[i..]);
                Some(MultipartEvent::Data(data.slice(..i)))
            }
            None => {
                // The last `keep` bytes may be the start of a delimiter.
                let n = data.len() - keep;
                self.buf.extend_from_slice(&data[n..]);
                Some(MultipartEvent::Data(data.slice(..n)))
            }
        }
    }

    /// The next event, `Ok(None)` if more bytes are needed, or the reason the body
    /// is malformed.
    pub fn next_event(&mut self) -> Result<Option<MultipartEvent>, WireError> {
        let bad = |reason| Err(WireError::Multipart { reason });
        loop {
            match self.state {
                State::Preamble => match self.finder.find(&self.buf) {
                    Some(i) => {
                        self.buf.advance(i + self.delimiter.len());
                        self.state = State::AfterBoundary;
                    }
                    None if self.buf.len() > MAX_PREAMBLE_BYTES + self.delimiter.len() => {
                        return bad("no boundary found at the start of the body");
                    }
                    None => return Ok(None),
                },
                State::AfterBoundary => {
                    if self.buf.len() < 2 {
                        return Ok(None);
                    }
                    if self.buf.starts_with(b"--") {
                        self.state = State::Done;
                        self.buf.clear();
                        return Ok(Some(MultipartEvent::End));
                    }
                    let pad = self
                        .buf
                        .iter()
                        .take_while(|b| matches!(b, b' ' | b'\t'))
                        .count();
                    if pad > MAX_PADDING_BYTES {
                        return bad("too much padding after a boundary");
                    }
                    if self.buf.len() < pad + 2 {
                        return Ok(None);
                    }
                    if &self.buf[pad..pad + 2] != b"\r\n" {
                        return bad("a boundary is followed by something other than a line end");
                    }
                    self.buf.advance(pad + 2);
                    self.state = State::Headers;
                }
                State::Headers => {
                    let (end, consumed) = if self.buf.starts_with(b"\r\n") {
                        (0, 2)
                    } else {
                        match memmem::find(&self.buf, b"\r\n\r\n") {
                            Some(i) => (i, i + 4),
                            None if self.buf.len() > MAX_HEADER_BYTES => {
                                return bad("part headers are too long");
                            }
                            None => return Ok(None),
                        }
                    };
                    if end > MAX_HEADER_BYTES {
                        return bad("part headers are too long");
                    }
                    let headers = parse_part_headers(&self.buf[..end])?;
                    self.buf.advance(consumed);
                    self.state = State::Body;
                    return Ok(Some(MultipartEvent::PartStart(headers)));
                }
                State::Body if self.pending.is_some() => {
                    if let Some(event) = self.content_in_pending() {
                        return Ok(Some(event));
                    }
                }
                State::Body => {
                    return Ok(match self.finder.find(&self.buf) {
                        Some(0) => {
                            self.buf.advance(self.delimiter.len());
                            self.state = State::AfterBoundary;
                            Some(MultipartEvent::PartEnd)
                        }
                        Some(i) => Some(MultipartEvent::Data(self.buf.split_to(i).freeze())),
                        None => {
                            // The last delimiter-length-minus-one bytes may be the start
                            // of a delimiter; everything before them is content.
                            let keep = self.delimiter.len() - 1;
                            (self.buf.len() > keep).then(|| {
                                let n = self.buf.len() - keep;
                                MultipartEvent::Data(self.buf.split_to(n).freeze())
                            })
                        }
                    });
                }
                State::Done => {
                    self.buf.clear();
                    self.pending = None;
                    return Ok(None);
                }
            }
        }
    }

    /// Call at the end of the body: `Ok` only if the closing boundary was read.
    pub fn finish(&self) -> Result<(), WireError> {
        match self.state {
            State::Done => Ok(()),
            _ => Err(WireError::Multipart {
                reason: "the body ended before its closing boundary",
            }),
        }
    }

    /// Whether the closing boundary has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }
}

fn parse_part_headers(raw: &[u8]) -> Result<PartHeaders, WireError> {
    let bad = |reason| WireError::Multipart { reason };
    let text = std::str::from_utf8(raw).map_err(|_| bad("part headers are not UTF-8"))?;
    let mut disposition = None;
    let mut content_type = None;
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or(bad("a part header line has no ':'"))?;
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-disposition") {
            disposition = Some(value.trim());
        } else if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.trim().to_owned());
        }
    }
    let disposition = disposition.ok_or(bad("a part has no Content-Disposition"))?;
    let (kind, params) = disposition.split_once(';').unwrap_or((disposition, ""));
    if !kind.trim().eq_ignore_ascii_case("form-data") {
        return Err(bad("a part's Content-Disposition is not form-data"));
    }
    let params = parse_params(params);
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let name = get("name").ok_or(bad("a part's Content-Disposition has no name"))?;
    Ok(PartHeaders {
        name,
        filename: get("filename"),
        content_type,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Feeds `body` in pieces of the given sizes (cycled) and collects the events,
    /// merging adjacent `Data` so that results do not depend on the split.
    fn parse_in_pieces(boundary: &str, body: &[u8], sizes: &[usize]) -> Result<Vec<Ev>, WireError> {
        parse_pushed(boundary, body, sizes, false)
    }

    /// [`parse_in_pieces`], pushing each piece with `push_bytes` if `uncopied`.
    fn parse_pushed(
        boundary: &str,
        body: &[u8],
        sizes: &[usize],
        uncopied: bool,
    ) -> Result<Vec<Ev>, WireError> {
        let mut parser = MultipartParser::new(boundary);
        let mut events = Vec::new();
        let mut rest = body;
        let mut i = 0;
        loop {
            while let Some(event) = parser.next_event()? {
                push_event(&mut events, event);
            }
            if rest.is_empty() {
                break;
            }
            let n = sizes[i % sizes.len()].clamp(1, rest.len());
            i += 1;
            if uncopied {
                parser.push_bytes(Bytes::copy_from_slice(&rest[..n]));
            } else {
                parser.push(&rest[..n]);
            }
            rest = &rest[n..];
        }
        parser.finish()?;
        Ok(events)
    }

    #[derive(Debug, PartialEq)]
    enum Ev {
        Start(String, Option<String>),
        Data(Vec<u8>),
        End,
        Close,
    }

    fn push_event(events: &mut Vec<Ev>, event: MultipartEvent) {
        match event {
            MultipartEvent::PartStart(h) => events.push(Ev::Start(h.name, h.filename)),
            MultipartEvent::Data(d) => match events.last_mut() {
                Some(Ev::Data(prev)) => prev.extend_from_slice(&d),
                _ => events.push(Ev::Data(d.to_vec())),
            },
            MultipartEvent::PartEnd => events.push(Ev::End),
            MultipartEvent::End => events.push(Ev::Close),
        }
    }

    fn concat(body: &MultipartBody) -> Vec<u8> {
        body.segments()
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect()
    }

    #[test]
    fn encodes_a_transfer_like_the_sample_client() {
        let boundary = Boundary::from_random(1);
        let body = MultipartBody::encode(
            &boundary,
            &[("phase", "transfer")],
            Some(("bytechunk", "bytechunk", Bytes::from_static(b"AB"))),
        );
        let b = boundary.as_str();
        assert_eq!(
            body.content_type(),
            format!("multipart/form-data; boundary={b}")
        );
        assert_eq!(body.segments().len(), 3);
        assert_eq!(body.segments()[1], Bytes::from_static(b"AB"));
        let expected = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"phase\"\r\n\r\ntransfer\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"bytechunk\"; filename=\"bytechunk\"\r\n\
             Content-Type: application/octet-stream\r\n\r\nAB\r\n--{b}--\r\n"
        );
        assert_eq!(String::from_utf8(concat(&body)).unwrap(), expected);
        assert_eq!(body.len(), expected.len() as u64);
    }

    #[test]
    fn parses_a_hand_written_body_with_preamble_padding_and_epilogue() {
        let body = b"ignored preamble\r\n--XyZ  \r\ncontent-disposition: Form-Data; name=\"a\"\r\n\r\n1\r\n--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x \\\"q\\\".bin\"\r\nContent-Type: text/plain\r\n\r\n\r\n--X\r\n--XyZ--\r\nepilogue";
        let events = parse_in_pieces("XyZ", body, &[usize::MAX]).unwrap();
        assert_eq!(
            events,
            [
                Ev::Start("a".into(), None),
                Ev::Data(b"1".to_vec()),
                Ev::End,
                Ev::Start("f".into(), Some("x \"q\".bin".into())),
                Ev::Data(b"\r\n--X".to_vec()),
                Ev::End,
                Ev::Close,
            ]
        );
    }

    #[test]
    fn empty_part_content_gives_no_data_event() {
        let body = b"--b\r\nContent-Disposition: form-data; name=\"e\"\r\n\r\n\r\n--b--";
        let events = parse_in_pieces("b", body, &[1]).unwrap();
        assert_eq!(events, [Ev::Start("e".into(), None), Ev::End, Ev::Close]);
    }

    #[test]
    fn malformed_bodies_are_errors_not_waits() {
        let cases: &[&[u8]] = &[
            b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--",
            b"--b\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nx\r\n--b--",
            b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--",
            b"--b\r\nno colon here\r\n\r\nx\r\n--b--",
            b"--bX\r\n",
            b"--b\r\nContent-Disposition: form-data; name=\"\xff\"\r\n\r\nx\r\n--b--",
        ];
        for body in cases {
            assert!(
                matches!(
                    parse_in_pieces("b", body, &[3]),
                    Err(WireError::Multipart { .. })
                ),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_cut_body_needs_more_bytes_then_fails_at_finish() {
        let body = b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nsome data";
        let mut parser = MultipartParser::new("b");
        parser.push(body);
        while parser.next_event().unwrap().is_some() {}
        assert!(!parser.is_done());
        assert!(matches!(parser.finish(), Err(WireError::Multipart { .. })));
    }

    #[test]
    fn endless_headers_and_preamble_are_refused() {
        let mut parser = MultipartParser::new("b");
        parser.push(&vec![b'x'; MAX_PREAMBLE_BYTES + 100]);
        assert!(parser.next_event().is_err());

        let mut parser = MultipartParser::new("b");
        parser.push(b"--b\r\nX-Long: ");
        parser.push(&vec![b'x'; MAX_HEADER_BYTES + 1]);
        assert!(parser.next_event().is_err());
    }

    #[test]
    fn content_type_boundaries() {
        assert_eq!(
            boundary_from_content_type("multipart/form-data; boundary=abc").unwrap(),
            "abc"
        );
        assert_eq!(
            boundary_from_content_type("Multipart/Form-Data;charset=utf-8; BOUNDARY=\"a b\"")
                .unwrap(),
            "a b"
        );
        for bad in [
            "application/json",
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/mixed; boundary=abc",
        ] {
            assert!(boundary_from_content_type(bad).is_err(), "{bad}");
        }
        let long = format!("multipart/form-data; boundary={}", "x".repeat(71));
        assert!(boundary_from_content_type(&long).is_err());
    }

    #[test]
    fn content_pushed_whole_is_not_copied() {
        let mut parser = MultipartParser::new("bnd");
        parser.push(b"--bnd\r\nContent-Disposition: form-data; name=\"bytechunk\"\r\n\r\n");
        assert!(matches!(
            parser.next_event(),
            Ok(Some(MultipartEvent::PartStart(_)))
        ));
        assert_eq!(parser.next_event().unwrap(), None);
        let piece = Bytes::from(vec![7u8; 4096]);
        parser.push_bytes(piece.clone());
        let Ok(Some(MultipartEvent::Data(data))) = parser.next_event() else {
            panic!("content expected");
        };
        // All but the bytes that may start a delimiter, in place.
        assert_eq!(data.as_ptr(), piece.as_ptr());
        assert_eq!(data.len(), 4096 - "\r\n--bnd".len() + 1);
        assert_eq!(parser.next_event().unwrap(), None);
        let next = Bytes::from(vec![8u8; 4096]);
        parser.push_bytes(next.clone());
        // The carried bytes first (copied: they are few), then the new piece in place.
        let Ok(Some(MultipartEvent::Data(carried))) = parser.next_event() else {
            panic!("carried content expected");
        };
        assert_eq!(carried.len(), "\r\n--bnd".len() - 1);
        let Ok(Some(MultipartEvent::Data(data))) = parser.next_event() else {
            panic!("content expected");
        };
        assert_eq!(data.as_ptr(), next.as_ptr());
        parser.push_bytes(Bytes::from_static(b"\r\n--bnd--\r\n"));
        let mut rest = Vec::new();
        while let Some(event) = parser.next_event().unwrap() {
            rest.push(event);
        }
        assert_eq!(rest.last(), Some(&MultipartEvent::End));
        parser.finish().unwrap();
    }

    proptest! {
        /// Whatever the payload and however the bytes are split, the parser gives
        /// back exactly the fields and payload that were encoded.
        #[test]
        fn round_trip_under_any_split(
            payload in proptest::collection::vec(any::<u8>(), 0..3000),
            value in "[ -~]{0,40}",
            sizes in proptest::collection::vec(1usize..200, 1..8),
            random in any::<u128>(),
        ) {
            let boundary = Boundary::from_random(random);
            let body = MultipartBody::encode(
                &boundary,
                &[("filename", &value)],
                Some(("bytechunk", "bytechunk", Bytes::from(payload.clone()))),
            );
            let events = parse_in_pieces(boundary.as_str(), &concat(&body), &sizes).unwrap();
            let mut expected = vec![Ev::Start("filename".into(), None)];
            if !value.is_empty() {
                expected.push(Ev::Data(value.into_bytes()));
            }
            expected.extend([Ev::End, Ev::Start("bytechunk".into(), Some("bytechunk".into()))]);
            if !payload.is_empty() {
                expected.push(Ev::Data(payload));
            }
            expected.extend([Ev::End, Ev::Close]);
            prop_assert_eq!(events, expected);
        }

        /// Pieces pushed without copying give the same events as copied ones,
        /// and their content's `Data` are slices of the pieces, even when the
        /// content is full of near-delimiters and a delimiter straddles pieces.
        #[test]
        fn uncopied_pieces_parse_the_same(
            words in proptest::collection::vec(0usize..5, 0..400),
            sizes in proptest::collection::vec(1usize..120, 1..8),
        ) {
            let boundary = "bnd";
            // Pieces of a delimiter, a CR LF, and plain bytes.
            let alphabet: [&[u8]; 5] = [b"\r\n--bn", b"\r\n-", b"\r", b"\n--bnx", b"abc"];
            let payload: Vec<u8> = words.iter().flat_map(|&w| alphabet[w].iter().copied()).collect();
            let body = MultipartBody::encode(
                &Boundary(boundary.to_owned()),
                &[("filename", "f")],
                Some(("bytechunk", "bytechunk", Bytes::from(payload.clone()))),
            );
            let body = concat(&body);
            let copied = parse_pushed(boundary, &body, &sizes, false).unwrap();
            let uncopied = parse_pushed(boundary, &body, &sizes, true).unwrap();
            prop_assert_eq!(&copied, &uncopied);
            let expected_payload = (!payload.is_empty()).then_some(Ev::Data(payload));
            prop_assert_eq!(copied.get(4), expected_payload.as_ref().or(Some(&Ev::End)));
        }

        /// Arbitrary bytes never panic the parser and never make it loop.
        #[test]
        fn never_panics(body in proptest::collection::vec(any::<u8>(), 0..500)) {
            let _ = parse_in_pieces("b", &body, &[7]);
            let _ = parse_pushed("b", &body, &[7], true);
        }
    }
}
