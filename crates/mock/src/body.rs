//! Reading a request body into form fields, streaming, with limits.

use axum::body::Body;
use bytes::BytesMut;
use http_body_util::BodyExt;
use idb_wire::{
    Fields, MultipartEvent, MultipartParser, PhaseRequest, TEXT_FIELD_LIMIT, WireError,
    boundary_from_content_type, parse_urlencoded,
};

use crate::counters::Received;

/// Why a body could not be turned into fields.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The payload is over the chunk limit (413).
    TooLarge,
    /// The body breaks its format, or a text field is too long (400).
    Malformed(WireError),
    /// The content type is neither multipart nor urlencoded (415).
    UnsupportedType,
    /// The connection failed while reading (no answer will reach the client).
    Io,
}

/// The most bytes of an urlencoded body per payload byte allowed (`%XX` is 3).
const URLENCODED_EXPANSION: u64 = 3;

/// Room for the non-payload parts of a body.
const ENVELOPE_BYTES: u64 = 64 * 1024;

/// Reads the form fields of a request. At most `max_chunk` payload bytes are held;
/// past that the rest of the body is read and dropped, and the answer is
/// [`BodyError::TooLarge`] (reading to the end lets the client see the 413
/// instead of a reset connection). Payload bytes are added to `received` as they
/// arrive, whatever the answer (an urlencoded body is counted once decoded, so
/// not when it is too large to decode).
pub(crate) async fn read_fields(
    content_type: Option<&str>,
    content_length: Option<u64>,
    body: Body,
    max_chunk: u64,
    received: &Received,
) -> Result<Fields, BodyError> {
    let content_type = content_type.unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("multipart/form-data") {
        let boundary = match boundary_from_content_type(content_type) {
            Ok(boundary) => boundary,
            Err(e) => {
                drain(body).await;
                return Err(BodyError::Malformed(e));
            }
        };
        read_multipart(&boundary, content_length, body, max_chunk, received).await
    } else if media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        read_urlencoded(body, max_chunk, received).await
    } else {
        drain(body).await;
        Err(BodyError::UnsupportedType)
    }
}

async fn read_multipart(
    boundary: &str,
    content_length: Option<u64>,
    mut body: Body,
    max_chunk: u64,
    received: &Received,
) -> Result<Fields, BodyError> {
    let mut parser = MultipartParser::new(boundary);
    let mut fields = Fields::new();
    // The part being read: its name, its bytes so far (`None` once a payload
    // went over the limit: the rest is counted and dropped), its limit.
    let mut current: Option<(String, Option<BytesMut>, usize)> = None;
    // A payload over the limit: parsing goes on, to count what arrives.
    let mut too_large = false;
    // The body is malformed: parsing stops, the rest is read and dropped.
    let mut error: Option<BodyError> = None;
    // Reserve the payload buffer once from Content-Length, so a large chunk is not
    // reallocated as it grows.
    let payload_hint = content_length.unwrap_or(0).min(max_chunk + ENVELOPE_BYTES) as usize;
    loop {
        // Pull every event the bytes so far allow, then read more.
        while error.is_none() {
            let event = match parser.next_event() {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(e) => {
                    error = Some(BodyError::Malformed(e));
                    break;
                }
            };
            match event {
                MultipartEvent::PartStart(headers) => {
                    let limit = limit_of(&headers.name, max_chunk);
                    let capacity = if PhaseRequest::is_payload_field(&headers.name) {
                        payload_hint
                    } else {
                        0
                    };
                    let buf = BytesMut::with_capacity(capacity);
                    current = Some((headers.name, Some(buf), limit));
                }
                MultipartEvent::Data(data) => {
                    let Some((name, buf, limit)) = current.as_mut() else {
                        continue;
                    };
                    let payload = PhaseRequest::is_payload_field(name);
                    if payload {
                        received.add(data.len() as u64);
                    }
                    let Some(held) = buf else {
                        continue;
                    };
                    if held.len() + data.len() <= *limit {
                        held.extend_from_slice(&data);
                    } else if payload {
                        too_large = true;
                        *buf = None;
                    } else {
                        error = Some(over_limit(name));
                    }
                }
                MultipartEvent::PartEnd => {
                    if let Some((name, Some(buf), _)) = current.take() {
                        fields.push(name, buf.freeze());
                    }
                }
                MultipartEvent::End => {}
            }
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref()
                    && error.is_none()
                {
                    parser.push(data);
                }
            }
            Some(Err(_)) => return Err(BodyError::Io),
            None => break,
        }
    }
    if too_large {
        return Err(BodyError::TooLarge);
    }
    if let Some(error) = error {
        return Err(error);
    }
    parser.finish().map_err(BodyError::Malformed)?;
    Ok(fields)
}

async fn read_urlencoded(
    mut body: Body,
    max_chunk: u64,
    received: &Received,
) -> Result<Fields, BodyError> {
    let limit = (max_chunk * URLENCODED_EXPANSION + ENVELOPE_BYTES) as usize;
    let mut buf = BytesMut::new();
    let mut too_large = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Io)?;
        if let Some(data) = frame.data_ref() {
            too_large |= buf.len() + data.len() > limit;
            if !too_large {
                buf.extend_from_slice(data);
            }
        }
    }
    if too_large {
        return Err(BodyError::TooLarge);
    }
    let pairs = parse_urlencoded(&buf).map_err(BodyError::Malformed)?;
    let payload: usize = pairs
        .iter()
        .filter(|(n, _)| PhaseRequest::is_payload_field(n))
        .map(|(_, v)| v.len())
        .sum();
    received.add(payload as u64);
    if let Some((name, _)) = pairs.iter().find(|(n, v)| v.len() > limit_of(n, max_chunk)) {
        return Err(over_limit(name));
    }
    Ok(pairs.into_iter().collect())
}

/// Reads a body to its end and drops it, so an early answer (401, 404) reaches a
/// client that is still sending instead of a reset connection.
pub(crate) async fn drain(mut body: Body) {
    while let Some(Ok(_)) = body.frame().await {}
}

/// The field's size limit: `max_chunk` for the payload, [`TEXT_FIELD_LIMIT`] else.
fn limit_of(name: &str, max_chunk: u64) -> usize {
    if PhaseRequest::is_payload_field(name) {
        max_chunk as usize
    } else {
        TEXT_FIELD_LIMIT
    }
}

/// The error for a field over its limit: 413 for the payload, 400 for text.
fn over_limit(name: &str) -> BodyError {
    if PhaseRequest::is_payload_field(name) {
        BodyError::TooLarge
    } else {
        BodyError::Malformed(WireError::BadField {
            field: "form field",
            reason: "a text field is longer than 4096 bytes",
        })
    }
}

/// Reads a body until at least `at_least` bytes came (or it ended or broke), and
/// drops what it read: the start of a request that a `reset` fault then cuts off.
pub(crate) async fn read_some(mut body: Body, at_least: u64) {
    let mut read = 0u64;
    while read < at_least {
        match body.frame().await {
            Some(Ok(frame)) => {
                read += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            Some(Err(_)) | None => return,
        }
    }
}
