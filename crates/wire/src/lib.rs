//! The Illinois Data Bank upload protocols as data.
//!
//! `idb-wire` owns everything about the bytes on the wire and nothing about moving
//! them: it has no I/O, no async and no clock. Both sides of the project use it: the
//! engine encodes requests and classifies responses with it, the mock server parses
//! requests with it.
//!
//! Main types:
//! - [`Token`]: the dataset's upload token, a secret whose `Debug` never shows it.
//! - [`DatasetKey`], [`validate_filename`], [`MAX_FILE_SIZE`]: names and limits.
//! - [`MultipartBody`]: a request body as separate segments so that chunk bytes are
//!   sent without a copy; [`setup_body`], [`transfer_body`], [`verify_body`] build them.
//! - [`MultipartParser`]: a streaming push parser for `multipart/form-data`, which
//!   tells "not enough bytes yet" (`Ok(None)`) apart from "malformed" (`Err`).
//! - [`parse_urlencoded`], [`Fields`], [`PhaseRequest`]: the server's view of a call.
//! - [`classify`] and [`Outcome`]: what a response means for the client.
//! - [`tus`]: protocol 2's header names, the service's part-size rule and the
//!   registration call.
//! - [`WriteMode`], [`WRITE_MODE_HEADER`]: whether a server takes the chunks of a
//!   file in order only (strict) or at any offset, and how a setup answer says so.
//!
//! ```
//! use bytes::Bytes;
//! use idb_wire::{transfer_body, Boundary, MultipartParser, MultipartEvent};
//!
//! let boundary = Boundary::from_random(7);
//! let body = transfer_body(&boundary, "data.bin", 0, Bytes::from_static(b"hello"));
//! assert_eq!(body.segments()[1], Bytes::from_static(b"hello")); // the payload, uncopied
//!
//! let mut parser = MultipartParser::new(boundary.as_str());
//! for segment in body.segments() {
//!     parser.push(segment);
//! }
//! let mut names = Vec::new();
//! while let Some(event) = parser.next_event().unwrap() {
//!     if let MultipartEvent::PartStart(part) = event {
//!         names.push(part.name);
//!     }
//! }
//! assert_eq!(names, ["filename", "phase", "previous_size", "bytechunk"]);
//! ```
#![deny(missing_docs)]

mod error;
mod form;
mod limits;
mod multipart;
mod request;
mod response;
mod token;
pub mod tus;
mod write_mode;

pub use error::WireError;
pub use form::{encode_urlencoded, parse_urlencoded};
pub use limits::{DatasetKey, MAX_FILE_SIZE, MAX_FILENAME_BYTES, datafile_path, validate_filename};
pub use multipart::{
    Boundary, MultipartBody, MultipartEvent, MultipartParser, PartHeaders,
    boundary_from_content_type,
};
pub use request::{
    Fields, Phase, PhaseRequest, TEXT_FIELD_LIMIT, setup_body, transfer_body, verify_body,
};
pub use response::{
    Outcome, VerifyReceipt, body_message, classify, looks_like_html, parse_retry_after,
    retry_after_against, summarize_body,
};
pub use token::{Token, WWW_AUTHENTICATE, parse_authorization};
pub use write_mode::{WRITE_MODE_HEADER, WRITE_MODE_OFFSET, WriteMode};
