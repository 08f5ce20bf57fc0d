//! Protocol 2: the tus 1.0 resumable upload protocol at `<base>/files/`, and
//! the registration call that makes a finished tus upload a file of a dataset.
//!
//! The extensions served are creation, creation-defer-length, termination,
//! expiration, concatenation and checksum (sha1, sha256, sha384, sha512, md5
//! and crc32), as the service's server advertises them. A PATCH body is
//! streamed into the upload as it arrives (written at its offset and hashed
//! on a blocking thread, a few pieces in flight, never held whole) and
//! committed only at its end: a checksum that does not match, a body past the
//! length or one that breaks off leaves the upload as it was. An upload's
//! file is opened by each request that uses it and closed at its end, so any
//! number of uploads hold no file descriptor between requests.
//!
//! With [`TusProfile::S3`] the server imitates the service's tus server
//! (tus-ruby-server 2.3, its S3 storage; `patch.rs`): a PATCH body of at
//! least one part ([`s3_part_size`]) is stored whole; a shorter one that does
//! not end the file is silently dropped whole (answered 204, the offset not
//! moved) unless the length is deferred; S3's part limits follow. A join
//! removes its partials. Its answers' `Upload-Expires` moves on with every
//! PATCH, but the upload lives on only from the last PATCH that stored bytes.
//! And, as the service wraps the whole tus endpoint in its token check,
//! OPTIONS needs a token too (the plain profile answers OPTIONS to anyone, as
//! tus says).
//!
//! Tus requests are authorised by checking that the token is one the server
//! knows (any dataset's, not expired), before anything else; the dataset is
//! checked at registration (`POST /api/dataset/{key}/datafile` with
//! `tus_url`, `filename`, `size`), which, like the service, trusts `size` and
//! does not check that the upload is complete, but counts such registrations
//! ([`TusStats`]). A `tus_url` must name an upload of this server: a path, or
//! a URL whose origin is the one the request came to (its `Host`) or the
//! server's own address.
//!
//! In a store of the caller's (not a temporary one) each upload is saved
//! beside its bytes (`saved.rs`): a server started again on the store serves
//! them at the offset it had acknowledged. Which ids expired is not saved: a
//! server started again answers 404 for them, not 410.

mod answer;
mod checksum;
mod concat;
mod headers;
mod http_date;
mod lookup;
mod part_size;
mod patch;
mod register;
mod routes;
mod saved;
mod uploads;

pub(crate) use headers::upload_id;
pub(crate) use lookup::registration_lookup;
pub use part_size::{S3_MAX_PART, S3_MAX_PARTS, S3_MIN_PART, s3_part_size};
pub(crate) use register::{Registration, register};
pub(crate) use routes::{tus_collection, tus_upload};
pub(crate) use uploads::Uploads;
pub use uploads::{TusRegistration, TusStats};

use std::time::Duration;

/// The path of the tus endpoint, under the server's base URL.
pub const TUS_PATH: &str = "/files/";

/// The tus protocol version served (and required in `Tus-Resumable`).
pub const TUS_VERSION: &str = "1.0.0";

/// The extensions advertised in `Tus-Extension`.
pub const TUS_EXTENSIONS: &str =
    "creation,creation-defer-length,termination,expiration,concatenation,checksum";

/// The extensions a sink advertises: it keeps no bytes to join, so not
/// concatenation (a client would send every partial and then fail the join).
pub const TUS_EXTENSIONS_SINK: &str =
    "creation,creation-defer-length,termination,expiration,checksum";

/// The largest `Upload-Length` accepted (`Tus-Max-Size`): 2 TiB, as the service.
pub const TUS_MAX_SIZE: u64 = idb_wire::MAX_FILE_SIZE;

/// How long an unfinished upload lives after its creation or its last PATCH
/// by default: 7 days, as the service's server.
pub const DEFAULT_TUS_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// How the tus server stores a PATCH body, and the service's ways around it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TusProfile {
    /// Every byte of a PATCH is stored, as the tus protocol describes (the default).
    #[default]
    Plain,
    /// The service's server on S3 storage (tus-ruby-server 2.3): a body of
    /// at least [`s3_part_size`] bytes is stored whole; a shorter one that
    /// does not end the file is silently dropped whole (answered 204 with the
    /// offset unchanged) unless the length is deferred; at most
    /// [`S3_MAX_PARTS`] parts, and an object with a part under
    /// [`S3_MIN_PART`] before its last (sent while the length was deferred)
    /// never completes (500); the partials of a concatenation must each (but
    /// the last) be from [`S3_MIN_PART`] to [`S3_MAX_PART`] bytes, at most
    /// [`S3_MAX_PARTS`] of them, and are removed by the join; a PATCH that
    /// stores nothing moves the answered `Upload-Expires` but not the
    /// upload's life; OPTIONS needs a token like every tus request.
    S3,
}

impl TusProfile {
    /// The name on the command line: `plain` or `s3`.
    pub fn as_str(self) -> &'static str {
        match self {
            TusProfile::Plain => "plain",
            TusProfile::S3 => "s3",
        }
    }
}

impl std::str::FromStr for TusProfile {
    type Err = String;

    /// Parses `plain` or `s3` (case-insensitive).
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "plain" => Ok(TusProfile::Plain),
            "s3" => Ok(TusProfile::S3),
            other => Err(format!(
                "unknown tus profile {:?}; use plain or s3",
                other.chars().take(64).collect::<String>()
            )),
        }
    }
}
