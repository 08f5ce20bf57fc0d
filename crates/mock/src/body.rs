//! Reading a request body into form fields, streaming, with limits.

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use idb_wire::{
    Fields, MultipartEvent, MultipartParser, PhaseRequest, TEXT_FIELD_LIMIT, WireError,
    boundary_from_content_type, parse_urlencoded,
};

use crate::counters::Received;
use crate::payload_feed::PayloadFeed;

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

/// Where the payload part of a multipart body goes, chosen when the part
/// begins, from the fields read before it.
pub(crate) enum PayloadDest {
    /// Held whole (at most `max_chunk` bytes) and returned among the fields.
    Hold,
    /// Handed on piece by piece as it arrives (never held whole); the fields
    /// get an empty value in its place, and the feed is returned with them.
    Stream(PayloadFeed),
    /// Counted and dropped; the fields get an empty value in its place.
    Drop,
}

/// The most bytes of an urlencoded body per payload byte allowed (`%XX` is 3).
const URLENCODED_EXPANSION: u64 = 3;

/// Room for the non-payload parts of a body.
const ENVELOPE_BYTES: u64 = 64 * 1024;

/// Reads the form fields of a request. What becomes of a multipart payload is
/// up to `payload`, asked when its part begins with the fields so far and the
/// part's name ([`PayloadDest`]); an urlencoded payload is always held. At most
/// `max_chunk` payload bytes are held or streamed; past that the rest of the
/// body is read and dropped (a stream's feed is dropped: its receiver undoes
/// what it did), and the answer is [`BodyError::TooLarge`] (reading to the end
/// lets the client see the 413 instead of a reset connection). Payload bytes
/// are added to `received` as they arrive, whatever the answer (an urlencoded
/// body is counted once decoded, so not when it is too large to decode).
///
/// Returns the fields and, when the payload was streamed, its feed, not yet
/// finished: the caller finishes it once it has checked the fields.
pub(crate) async fn read_fields(
    content_type: Option<&str>,
    content_length: Option<u64>,
    body: Body,
    limits: Limits<'_>,
    payload: impl FnMut(&Fields, &str) -> PayloadDest,
) -> Result<(Fields, Option<PayloadFeed>), BodyError> {
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
        read_multipart(&boundary, content_length, body, limits, payload).await
    } else if media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        let fields = read_urlencoded(body, limits.max_chunk, limits.received).await?;
        Ok((fields, None))
    } else {
        drain(body).await;
        Err(BodyError::UnsupportedType)
    }
}

/// The limits a body is read under, and where its payload is counted.
#[derive(Clone, Copy)]
pub(crate) struct Limits<'a> {
    /// The most payload bytes taken (413 past it).
    pub(crate) max_chunk: u64,
    /// Counts every payload byte as it arrives.
    pub(crate) received: &'a Received,
}

/// The payload part being read.
enum Payload {
    Hold(BytesMut),
    Stream(PayloadFeed),
    /// Counted only: dropped by choice, or over the limit.
    Count,
}

/// The part being read: its name, where its bytes go, how many came.
struct Part {
    name: String,
    /// `None` for a text field, whose bytes are in `text`.
    payload: Option<Payload>,
    text: BytesMut,
    len: u64,
}

async fn read_multipart(
    boundary: &str,
    content_length: Option<u64>,
    mut body: Body,
    limits: Limits<'_>,
    mut choose: impl FnMut(&Fields, &str) -> PayloadDest,
) -> Result<(Fields, Option<PayloadFeed>), BodyError> {
    let Limits {
        max_chunk,
        received,
    } = limits;
    let mut parser = MultipartParser::new(boundary);
    let mut fields = Fields::new();
    let mut current: Option<Part> = None;
    // The feed of a payload streamed and ended, handed back to the caller.
    let mut streamed: Option<PayloadFeed> = None;
    // A payload over the limit: parsing goes on, to count what arrives.
    let mut too_large = false;
    // The body is malformed: parsing stops, the rest is read and dropped.
    let mut error: Option<BodyError> = None;
    // A held payload's buffer is reserved once from Content-Length, so a large
    // chunk is not reallocated as it grows.
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
                    let payload = if !PhaseRequest::is_payload_field(&headers.name) {
                        None
                    } else if streamed.is_some() {
                        // The streamed payload was handed on already: a second
                        // one cannot take its place.
                        error = Some(BodyError::Malformed(WireError::Multipart {
                            reason: "a body with a streamed payload has a second payload part",
                        }));
                        break;
                    } else {
                        Some(match choose(&fields, &headers.name) {
                            PayloadDest::Hold => {
                                Payload::Hold(BytesMut::with_capacity(payload_hint))
                            }
                            PayloadDest::Stream(feed) => Payload::Stream(feed),
                            PayloadDest::Drop => Payload::Count,
                        })
                    };
                    current = Some(Part {
                        name: headers.name,
                        payload,
                        text: BytesMut::new(),
                        len: 0,
                    });
                }
                MultipartEvent::Data(data) => {
                    let Some(part) = current.as_mut() else {
                        continue;
                    };
                    part.len += data.len() as u64;
                    let Some(payload) = part.payload.as_mut() else {
                        if part.text.len() + data.len() > TEXT_FIELD_LIMIT {
                            error = Some(over_limit(&part.name));
                        } else {
                            part.text.extend_from_slice(&data);
                        }
                        continue;
                    };
                    received.add(data.len() as u64);
                    if part.len > max_chunk {
                        // Dropping a feed tells its receiver to undo.
                        too_large = true;
                        *payload = Payload::Count;
                        continue;
                    }
                    match payload {
                        Payload::Hold(held) => held.extend_from_slice(&data),
                        Payload::Stream(feed) => feed.send(data).await,
                        Payload::Count => {}
                    }
                }
                MultipartEvent::PartEnd => {
                    if let Some(part) = current.take() {
                        match part.payload {
                            None => fields.push(part.name, part.text.freeze()),
                            Some(Payload::Hold(held)) => fields.push(part.name, held.freeze()),
                            Some(Payload::Stream(feed)) => {
                                fields.push(part.name, Bytes::new());
                                streamed = Some(feed);
                            }
                            Some(Payload::Count) if !too_large => {
                                fields.push(part.name, Bytes::new());
                            }
                            Some(Payload::Count) => {}
                        }
                    }
                }
                MultipartEvent::End => {}
            }
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                // The connection's own buffer, not copied: the payload's
                // pieces are slices of it.
                if let Ok(data) = frame.into_data()
                    && error.is_none()
                {
                    parser.push_bytes(data);
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
    Ok((fields, streamed))
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
