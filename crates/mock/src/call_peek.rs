//! The call a datafile request makes, read from the start of its body before
//! anything else happens to it: what its fault is drawn for (`faults.rs`).
//!
//! Only the text fields are wanted (`phase`, `filename`, `previous_size`), and
//! every client we know sends them before the chunk (the engine and the
//! service's sample client do), so at most [`PEEK_LIMIT`] bytes (plus the rest
//! of the last piece read) are read and held. The body is then handed on whole:
//! the bytes read first, then the rest as it comes, so whatever reads it next
//! sees the very body the client sent.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use idb_wire::{
    Fields, MultipartEvent, MultipartParser, Phase, PhaseRequest, TEXT_FIELD_LIMIT,
    boundary_from_content_type, parse_urlencoded,
};

use crate::faults::Call;

/// The most bytes of a body read to find its call's text fields: room for
/// them many times over (each is at most [`TEXT_FIELD_LIMIT`] bytes).
pub(crate) const PEEK_LIMIT: usize = 64 * 1024;

/// Reads the start of `body` for the call it makes on `dataset`, and returns
/// the call with the body to read again from its first byte. A request that
/// asks `Expect: 100-continue` is not read (reading would send `100 Continue`
/// before the fault is known): its call has only the dataset.
pub(crate) async fn peek_call(dataset: &str, headers: &HeaderMap, mut body: Body) -> (Call, Body) {
    let mut call = Call {
        dataset: dataset.to_owned(),
        filename: String::new(),
        phase: None,
        offset: 0,
    };
    let expects_continue = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        return (call, body);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut fields = TextFields::new(content_type);
    let mut read = BytesMut::new();
    let mut broke = None;
    let mut ended = false;
    while !fields.complete() && read.len() < PEEK_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => {
                // Only data frames come in a request body.
                if let Some(data) = frame.data_ref() {
                    fields.push(data);
                    read.extend_from_slice(data);
                }
            }
            Some(Err(e)) => {
                broke = Some(e);
                break;
            }
            None => {
                ended = true;
                break;
            }
        }
    }
    let found = fields.finish(&read, ended);
    if let Some(name) = found.get("filename") {
        call.filename = String::from_utf8_lossy(name).into_owned();
    }
    call.phase = match found.get("phase").map(|p| &p[..]) {
        Some(b"setup") => Some(Phase::Setup),
        Some(b"transfer") => Some(Phase::Transfer),
        Some(b"verify") => Some(Phase::Verify),
        _ => None,
    };
    if call.phase == Some(Phase::Transfer) {
        call.offset = found
            .get("previous_size")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
    }
    let replay = Replay {
        read: Some(read.freeze()),
        broke,
        rest: body,
    };
    (call, Body::new(replay))
}

/// The text fields of a body, as its first bytes arrive.
enum TextFields {
    /// A multipart body (boxed: a parser is much larger than nothing).
    Multipart(Box<MultipartFields>),
    /// An urlencoded body (or one of another type, read as if it were).
    Urlencoded,
}

/// The text fields of a multipart body, as its first bytes arrive.
struct MultipartFields {
    parser: MultipartParser,
    /// The text part being read: its name and its bytes so far.
    current: Option<(String, BytesMut)>,
    /// The text parts read whole.
    fields: Fields,
    /// The chunk's part began, the body ended, or it is malformed: no more
    /// text fields to wait for.
    done: bool,
}

impl TextFields {
    fn new(content_type: &str) -> Self {
        let media = content_type.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("multipart/form-data")
            && let Ok(boundary) = boundary_from_content_type(content_type)
        {
            return Self::Multipart(Box::new(MultipartFields {
                parser: MultipartParser::new(&boundary),
                current: None,
                fields: Fields::new(),
                done: false,
            }));
        }
        Self::Urlencoded
    }

    /// Whether every text field before the chunk has been read.
    fn complete(&self) -> bool {
        matches!(self, Self::Multipart(m) if m.done)
    }

    fn push(&mut self, data: &[u8]) {
        let Self::Multipart(m) = self else {
            return;
        };
        let MultipartFields {
            parser,
            current,
            fields,
            done,
        } = &mut **m;
        if *done {
            return;
        }
        parser.push(data);
        loop {
            match parser.next_event() {
                Ok(Some(MultipartEvent::PartStart(part))) => {
                    if PhaseRequest::is_payload_field(&part.name) {
                        *done = true;
                        return;
                    }
                    *current = Some((part.name, BytesMut::new()));
                }
                Ok(Some(MultipartEvent::Data(bytes))) => {
                    if let Some((_, value)) = current
                        && value.len() + bytes.len() <= TEXT_FIELD_LIMIT
                    {
                        value.extend_from_slice(&bytes);
                    }
                }
                Ok(Some(MultipartEvent::PartEnd)) => {
                    if let Some((name, value)) = current.take() {
                        fields.push(name, value.freeze());
                    }
                }
                Ok(Some(MultipartEvent::End)) | Err(_) => {
                    *done = true;
                    return;
                }
                Ok(None) => return,
            }
        }
    }

    /// The fields found in `read`, the first bytes of the body (all of it if
    /// `ended`).
    fn finish(self, read: &[u8], ended: bool) -> Fields {
        match self {
            Self::Multipart(m) => m.fields,
            Self::Urlencoded => {
                // Only whole pairs: up to the last `&` of a body not read to its end.
                let whole = if ended {
                    read
                } else {
                    let end = read.iter().rposition(|&b| b == b'&').unwrap_or(0);
                    &read[..end]
                };
                parse_urlencoded(whole)
                    .map(|pairs| {
                        pairs
                            .into_iter()
                            .filter(|(name, _)| !PhaseRequest::is_payload_field(name))
                            .collect()
                    })
                    .unwrap_or_default()
            }
        }
    }
}

/// A body whose first bytes were read already: those, then whatever broke
/// the reading (if something did), then the rest.
struct Replay {
    read: Option<Bytes>,
    broke: Option<axum::Error>,
    rest: Body,
}

impl hyper::body::Body for Replay {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if let Some(read) = this.read.take().filter(|read| !read.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(read))));
        }
        if let Some(broke) = this.broke.take() {
            return Poll::Ready(Some(Err(broke)));
        }
        Pin::new(&mut this.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.read.as_ref().is_none_or(Bytes::is_empty)
            && self.broke.is_none()
            && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let read = self.read.as_ref().map_or(0, |r| r.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + read);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + read);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    async fn peek(content_type: &str, body: &'static [u8]) -> (Call, Vec<u8>) {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        let (call, body) = peek_call("IDB-1", &headers, Body::from(body)).await;
        let again = body.collect().await.unwrap().to_bytes().to_vec();
        (call, again)
    }

    #[tokio::test]
    async fn the_call_of_a_multipart_transfer_is_read_before_its_chunk() {
        let body = b"--B\r\nContent-Disposition: form-data; name=\"filename\"\r\n\r\nx.bin\r\n\
--B\r\nContent-Disposition: form-data; name=\"phase\"\r\n\r\ntransfer\r\n\
--B\r\nContent-Disposition: form-data; name=\"previous_size\"\r\n\r\n4096\r\n\
--B\r\nContent-Disposition: form-data; name=\"bytechunk\"; filename=\"bytechunk\"\r\n\r\nabc\r\n--B--\r\n";
        let (call, again) = peek("multipart/form-data; boundary=B", body).await;
        assert_eq!(call.filename, "x.bin");
        assert_eq!(call.phase, Some(Phase::Transfer));
        assert_eq!(call.offset, 4096);
        assert_eq!(again, body, "the body is handed on whole");
    }

    #[tokio::test]
    async fn the_call_of_an_urlencoded_body_is_read_too() {
        let body = b"phase=verify&filename=y.bin";
        let (call, again) = peek("application/x-www-form-urlencoded", body).await;
        assert_eq!(
            (call.filename.as_str(), call.phase),
            ("y.bin", Some(Phase::Verify))
        );
        assert_eq!(call.offset, 0);
        assert_eq!(again, body);
        // Garbage gives a call with what could be read, and the same body.
        let (call, again) = peek("text/plain", b"\xff\xfe").await;
        assert_eq!((call.filename.as_str(), call.phase), ("", None));
        assert_eq!(again, b"\xff\xfe");
    }
}
