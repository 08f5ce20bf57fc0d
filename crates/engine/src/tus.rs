//! Protocol 2: tus 1.0 at `<server>/files/`, then one registration call on the
//! datafile endpoint.
//!
//! One file goes either as one upload, sent in order (PATCH bodies whole
//! multiples of the part size, the offset the server answers always adopted),
//! or, when the server serves concatenation, as partial uploads sent in
//! parallel (one per chunk) and joined by a final POST. Every doubt (a lost
//! answer, a 409) is settled by HEAD, never by sending blindly. The joined
//! upload is registered once: the journal records the registration before the
//! call, and a resumed upload that finds it there asks the server instead of
//! registering again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use idb_wire::tus::{self, header};
use idb_wire::{Outcome, Phase, VerifyReceipt, WriteMode, parse_retry_after};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::body::Progress;
use crate::client::{Answer, DatafileClient, Head, TusHead};
use crate::protocol::{CallError, FileRef};

/// The smallest file sent as partials when the server concatenates: two
/// partials of the smallest part. Below it, one upload in order is as fast.
const CONCAT_MIN_FILE: u64 = 2 * tus::S3_MIN_PART;

/// The slowest rate a server is expected to copy a whole file at inside one
/// call (the service joins partials on S3 inside the joining POST, and its
/// registration may copy): the idle timeout of such a call grows by the
/// file's size at this rate (2 TiB: about 6 hours), on top of the usual one.
const SERVER_COPY_RATE: u64 = 100 * 1024 * 1024;

/// The most partials one file is sent as: the joining POST names every one
/// in its `Upload-Concat` header, about 40 bytes each on the service, and
/// its server (Puma) refuses a header value over 80 KiB. With 1000, about 40
/// KB. A file over 1000 x the chunk size gets larger partials instead
/// ([`concat_granule`]), as long as [`CONCAT_MIN_IN_FLIGHT`] of them fit the
/// memory budget; a larger one goes in order.
const MAX_JOIN_PARTIALS: u64 = 1000;

/// The granule of a file of `size` bytes sent as partials, given the
/// server's part size `part`: a multiple of `part` large enough that whole
/// granules make at most [`MAX_JOIN_PARTIALS`] partials.
fn concat_granule(size: u64, part: u64) -> u64 {
    let part = part.max(1);
    size.div_ceil(MAX_JOIN_PARTIALS).div_ceil(part).max(1) * part
}

/// The fewest partials of one file that must fit the run's memory budget at
/// once for it to be sent as partials: their point is sending several at a
/// time. A file whose partials are larger (over `MAX_JOIN_PARTIALS` x half
/// the budget: about 250 GiB at the default 512 MiB) goes as one upload in order,
/// which is as fast one request at a time, needs no joining copy on the
/// server, holds a part rather than the whole budget, and loses at most a
/// part, not whole partials, to a crash.
const CONCAT_MIN_IN_FLIGHT: u64 = 2;

/// 409s in a row within one send, each followed by a HEAD naming another
/// offset, before the send is retried after a backoff instead.
const MAX_CONFLICT_ROUNDS: u32 = 3;

/// What the server said in its OPTIONS answer.
#[derive(Debug, Clone)]
pub(crate) struct TusServer {
    /// `Tus-Extension`, lower case.
    extensions: Vec<String>,
    /// `Tus-Max-Size`, if it said.
    max_size: Option<u64>,
    /// The cheapest `Upload-Checksum` algorithm both sides know, if any.
    checksum: Option<Checksum>,
}

impl TusServer {
    fn serves(&self, extension: &str) -> bool {
        self.extensions.iter().any(|e| e == extension)
    }

    /// Sends no `Upload-Checksum` (the user turned it off).
    pub(crate) fn no_checksums(&mut self) {
        self.checksum = None;
    }

    /// What the server serves, for people.
    pub(crate) fn describe(&self) -> String {
        let mut text = format!("tus 1.0.0 ({})", self.extensions.join(", "));
        if let Some(checksum) = self.checksum {
            text.push_str(&format!("; PATCH bodies checked with {}", checksum.name()));
        }
        text
    }
}

/// A checksum algorithm of the checksum extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checksum {
    Crc32,
    Sha1,
    Sha256,
    Sha512,
    Sha384,
}

impl Checksum {
    /// Cheapest first, as measured by `cargo bench --bench hashing --
    /// tus-checksum` (crc32fast and ring; 8 MiB bodies, this project's 2-core
    /// machine, one run at load 4): crc32 13 GiB/s, sha256 682 MiB/s (the
    /// CPU's SHA extensions), sha512 386, sha384 375, sha1 306. A crc32 is
    /// enough to catch a body damaged on the way, which is what the extension
    /// is for (the end-to-end check is the receipt's blake3).
    const PREFERENCE: [Checksum; 5] = [
        Checksum::Crc32,
        Checksum::Sha256,
        Checksum::Sha512,
        Checksum::Sha384,
        Checksum::Sha1,
    ];

    fn name(self) -> &'static str {
        match self {
            Checksum::Crc32 => "crc32",
            Checksum::Sha1 => "sha1",
            Checksum::Sha256 => "sha256",
            Checksum::Sha384 => "sha384",
            Checksum::Sha512 => "sha512",
        }
    }

    /// The `Upload-Checksum` value for `bytes` (crc32 as the service's server
    /// reads it: the base64 of the CRC's decimal text).
    fn header(self, bytes: &[u8]) -> String {
        let algorithm = match self {
            Checksum::Crc32 => {
                let text = crc32fast::hash(bytes).to_string();
                return format!("crc32 {}", STANDARD.encode(text));
            }
            Checksum::Sha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            Checksum::Sha256 => &ring::digest::SHA256,
            Checksum::Sha384 => &ring::digest::SHA384,
            Checksum::Sha512 => &ring::digest::SHA512,
        };
        let digest = ring::digest::digest(algorithm, bytes);
        format!("{} {}", self.name(), STANDARD.encode(digest.as_ref()))
    }

    /// The cheapest of the advertised `algorithms` (comma-separated).
    fn cheapest(algorithms: &str) -> Option<Self> {
        let offered: Vec<String> = algorithms
            .split(',')
            .map(|a| a.trim().to_ascii_lowercase())
            .collect();
        Self::PREFERENCE
            .into_iter()
            .find(|c| offered.iter().any(|o| o == c.name()))
    }
}

/// What the journal keeps of a tus upload beside the offset: where it lives on
/// the server, and whether its registration was sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TusRecord {
    /// Sent as partials joined at the end.
    #[serde(default)]
    pub(crate) concat: bool,
    /// The upload sent in order, if the file goes as one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) upload: Option<String>,
    /// The partial uploads the server holds whole, by offset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) partials: Vec<SavedPartial>,
    /// The joined upload, once the final POST was answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) joined: Option<String>,
    /// The upload to register: the server held all of it (written before the
    /// registration call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) registering: Option<String>,
    /// Its registration may have reached the server (written before the
    /// call, cleared by a definite refusal): a run that finds it asks the
    /// server whether it went through before sending it.
    #[serde(default)]
    pub(crate) registration_sent: bool,
}

/// A partial upload held whole by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedPartial {
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) url: String,
}

/// One partial upload (a chunk of a file sent by concatenation).
#[derive(Debug, Clone)]
struct Partial {
    len: u64,
    url: String,
    /// The server holds all of it.
    done: bool,
}

/// What the client knows of one file's upload.
#[derive(Debug, Default)]
struct TusFile {
    /// Sent as partials joined at the end (else one upload in order).
    concat: bool,
    /// The upload sent in order.
    upload: Option<String>,
    /// An answer about the upload was lost or was an error: HEAD before
    /// sending more.
    unsure: bool,
    /// Partial uploads by offset.
    partials: BTreeMap<u64, Partial>,
    /// An answer about a partial at this offset was lost: HEAD it first.
    unsure_partials: std::collections::HashSet<u64>,
    /// The joined upload.
    joined: Option<String>,
    /// A final POST's answer was lost: check the partials before another.
    join_unsure: bool,
    /// The upload to register (once the server holds all of it).
    registering: Option<String>,
    /// Its registration may have reached the server (kept in the journal).
    register_sent: bool,
    /// A registration may have gone through without this process seeing the
    /// answer (lost, a 5xx, or the last run's): ask before sending.
    ask_first: bool,
}

/// What the server says of a registration sent earlier.
enum Lookup {
    /// It went through (and the receipt, if the server sent one).
    Registered(Option<VerifyReceipt>),
    /// It did not.
    NotRegistered,
    /// The server cannot say (it has no lookup): answered with this status.
    Unknown { status: u16 },
}

/// The tus client: the run's HTTP client and token, and each file's upload.
pub(crate) struct TusClient<'a> {
    client: &'a DatafileClient,
    /// `<server>/files/`.
    endpoint: Url,
    server: TusServer,
    /// Send files by concatenation when the server serves it.
    concat: bool,
    /// The part size PATCH bodies are whole multiples of (`None`: the
    /// service's rule for each file's size).
    part_size: Option<u64>,
    /// The run's memory budget (`--memory`): partials that do not fit it
    /// [`CONCAT_MIN_IN_FLIGHT`] times are not sent.
    memory: u64,
    /// Each file's upload, by name. Held only to read or change an entry,
    /// never across a call.
    files: Mutex<HashMap<String, TusFile>>,
}

/// The tus endpoint under `server`.
pub(crate) fn endpoint(server: &Url) -> Url {
    let mut url = server.clone();
    let prefix = server.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}{}", tus::TUS_PATH));
    url
}

/// What an OPTIONS on the tus endpoint found.
pub(crate) enum Probe {
    /// A tus 1.0.0 server.
    Tus(TusServer),
    /// No tus server there, and what was answered instead.
    Absent(String),
}

/// Asks `server` whether it serves tus 1.0.0 (OPTIONS on its tus endpoint; no
/// token is needed for it, but the run's is sent, as the service checks it).
pub(crate) async fn probe(client: &DatafileClient, server: &Url) -> Result<Probe, CallError> {
    let url = endpoint(server);
    let progress = Progress::default();
    let request = client
        .authorized(client.http().request(Method::OPTIONS, url))
        .header(header::TUS_RESUMABLE, tus::TUS_VERSION);
    let (head, body, cut) = client
        .exchange(Phase::Setup, request, &progress)
        .await
        .map_err(CallError::Transport)?;
    let speaks = head
        .tus
        .version
        .as_deref()
        .is_some_and(|v| v.split(',').any(|v| v.trim() == tus::TUS_VERSION));
    // A tus server says its versions whatever the status (a 401 included:
    // the calls that follow then say what is wrong with the token).
    if !speaks {
        let said = client.said(&body, cut);
        // A passing trouble, or a refused token, is not an answer to "tus or
        // not": retried (or the token's error), as for a first setup.
        // (501 Not Implemented, as a plain web server answers OPTIONS, is an
        // answer: no tus there.)
        let passing = match head.status {
            408 | 429 | 500 | 502..=504 => Some(Outcome::Retry {
                after: head.retry_after.as_deref().and_then(parse_retry_after),
            }),
            // 401 is how the service refuses a token (PROTOCOL: `Bad
            // credentials`); a 403 is some other refusal, told as it is, as
            // protocol 1 tells it.
            401 => Some(Outcome::Unauthorized),
            _ => None,
        };
        if let Some(outcome) = passing {
            return Err(CallError::Refused(Answer::made(head.status, outcome, said)));
        }
        let what = match head.status {
            200..=299 => format!("HTTP {} without Tus-Version 1.0.0", head.status),
            status if said.is_empty() => format!("HTTP {status}"),
            status => format!("HTTP {status}: {said}"),
        };
        return Ok(Probe::Absent(what));
    }
    let extensions = head
        .tus
        .extensions
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .collect::<Vec<_>>();
    let checksum = if extensions.iter().any(|e| e == "checksum") {
        head.tus
            .checksum_algorithms
            .as_deref()
            .and_then(Checksum::cheapest)
    } else {
        None
    };
    Ok(Probe::Tus(TusServer {
        extensions,
        max_size: TusHead::number(&head.tus.max_size),
        checksum,
    }))
}

impl<'a> TusClient<'a> {
    pub(crate) fn new(
        client: &'a DatafileClient,
        server_url: &Url,
        server: TusServer,
        config: &crate::UploadConfig,
    ) -> Self {
        Self {
            client,
            endpoint: endpoint(server_url),
            concat: config.tus_concat && server.serves("concatenation"),
            server,
            part_size: config.tus_part_size,
            memory: config.memory,
            files: Mutex::new(HashMap::new()),
        }
    }

    /// Whether files are sent as partials (the server concatenates).
    pub(crate) fn concatenates(&self) -> bool {
        self.concat
    }

    fn with_file<T>(&self, filename: &str, f: impl FnOnce(&mut TusFile) -> T) -> T {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        f(files.entry(filename.to_owned()).or_default())
    }

    /// A `Location` (or a saved URL) as an absolute URL of this server: one
    /// naming another server is refused, so the token never goes there. An
    /// `http://` address of this very host while the server is spoken to over
    /// HTTPS (a server behind a proxy that ends TLS builds its addresses from
    /// the plain requests it sees) is taken over HTTPS, never in plain.
    fn upload_url(&self, location: &str) -> Result<Url, CallError> {
        let mut url = self.endpoint.join(location).map_err(|_| {
            self.refused(
                201,
                format!(
                    "the upload's address {:?} is not a URL",
                    self.client.clean(location)
                ),
            )
        })?;
        let behind_tls_proxy = url.scheme() == "http"
            && self.endpoint.scheme() == "https"
            && url.port().is_none()
            && url.host() == self.endpoint.host();
        if behind_tls_proxy {
            // Both only fail for URLs that cannot be https (no host), which
            // this one is not; the origin check below stays the judge.
            let _ = url.set_scheme("https");
            let _ = url.set_port(self.endpoint.port());
        }
        if url.origin() != self.endpoint.origin() {
            return Err(self.refused(
                201,
                format!(
                    "the server put the upload at {}, on another server than {}; \
                     the token is not sent there",
                    self.client.clean(url.as_str()),
                    self.endpoint
                ),
            ));
        }
        Ok(url)
    }

    /// A refusal the engine makes of an answer (an address elsewhere, no progress).
    fn refused(&self, status: u16, said: String) -> CallError {
        CallError::Refused(Answer::made(status, Outcome::Rejected, said))
    }

    /// An answer as the pipeline sees it. `upload`: the call was about an
    /// upload (a 404 or 410 then means the server no longer has it).
    fn answer(&self, head: &Head, body: &[u8], cut: bool, upload: bool) -> Answer {
        let status = head.status;
        let outcome = match status {
            200..=299 => Outcome::Ok,
            401 => Outcome::Unauthorized,
            404 | 410 if upload => Outcome::NoSession,
            404 | 405 | 501 => Outcome::NotDataBank,
            413 => Outcome::TooLarge,
            // The server's disk is full: sending again cannot help, nor can
            // another file (as protocol 1's 507).
            507 => Outcome::Rejected,
            // A body that arrived damaged, a lock held by another request on
            // the upload, a timeout: send it again.
            tus::CHECKSUM_MISMATCH | 408 | 423 | 429 | 500..=599 => Outcome::Retry {
                after: head.retry_after.as_deref().and_then(parse_retry_after),
            },
            _ => Outcome::Rejected,
        };
        Answer {
            status,
            outcome,
            said: self.client.said(body, cut),
            location: head.location.as_deref().map(|l| self.client.clean(l)),
            offset_mode: false,
            receipt: None,
            reported_size: None,
        }
    }

    /// One tus request: `Tus-Resumable` and the token added, sent, answered.
    async fn request(
        &self,
        phase: Phase,
        method: Method,
        url: Url,
        headers: &[(&'static str, String)],
        body: Option<Bytes>,
    ) -> Result<(Head, Bytes, bool), CallError> {
        self.request_within(phase, method, url, headers, body, None)
            .await
    }

    /// [`TusClient::request`] with its own idle timeout (`None`: the phase's).
    async fn request_within(
        &self,
        phase: Phase,
        method: Method,
        url: Url,
        headers: &[(&'static str, String)],
        body: Option<Bytes>,
        timeout: Option<std::time::Duration>,
    ) -> Result<(Head, Bytes, bool), CallError> {
        let progress = Progress::default();
        let mut request = self
            .client
            .authorized(self.client.http().request(method, url))
            .header(header::TUS_RESUMABLE, tus::TUS_VERSION);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(bytes) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, tus::OFFSET_OCTET_STREAM)
                .body(self.client.payload(bytes, &progress));
        }
        match timeout {
            Some(timeout) => {
                self.client
                    .exchange_within(request, &progress, timeout)
                    .await
            }
            None => self.client.exchange(phase, request, &progress).await,
        }
        .map_err(CallError::Transport)
    }

    /// How long a call that copies the whole file on the server (the join,
    /// the registration) may go with nothing moving.
    fn copying_timeout(&self, size: u64) -> std::time::Duration {
        self.client.idle_timeout() + std::time::Duration::from_secs(size / SERVER_COPY_RATE)
    }

    /// Creates an upload of `len` bytes (`concat`: its `Upload-Concat`); its URL.
    async fn create(
        &self,
        file: FileRef<'_>,
        len: Option<u64>,
        concat: Option<String>,
    ) -> Result<Url, CallError> {
        self.create_within(file, len, concat, None).await
    }

    /// [`TusClient::create`] with its own idle timeout (the joining POST).
    async fn create_within(
        &self,
        file: FileRef<'_>,
        len: Option<u64>,
        concat: Option<String>,
        timeout: Option<std::time::Duration>,
    ) -> Result<Url, CallError> {
        let mut headers = vec![(
            header::UPLOAD_METADATA,
            format!("filename {}", STANDARD.encode(file.filename)),
        )];
        if let Some(len) = len {
            headers.push((header::UPLOAD_LENGTH, len.to_string()));
        }
        if let Some(concat) = concat {
            headers.push((header::UPLOAD_CONCAT, concat));
        }
        let (head, body, cut) = self
            .request_within(
                Phase::Setup,
                Method::POST,
                self.endpoint.clone(),
                &headers,
                None,
                timeout,
            )
            .await?;
        let answer = self.answer(&head, &body, cut, false);
        if !answer.outcome.is_ok() {
            return Err(CallError::Refused(answer));
        }
        match head.location.as_deref() {
            Some(location) => self.upload_url(location),
            None => Err(self.refused(
                head.status,
                "the server created the upload but did not say where (no Location)".into(),
            )),
        }
    }

    /// HEAD of an upload: how many bytes it holds, and its length.
    async fn head(&self, url: &Url, phase: Phase) -> Result<(u64, Option<u64>), CallError> {
        let (head, body, cut) = self
            .request(phase, Method::HEAD, url.clone(), &[], None)
            .await?;
        let answer = self.answer(&head, &body, cut, true);
        if !answer.outcome.is_ok() {
            return Err(CallError::Refused(answer));
        }
        let offset = TusHead::number(&head.tus.offset);
        let length = TusHead::number(&head.tus.length);
        match offset {
            Some(offset) => Ok((offset, length)),
            None => Err(self.refused(
                head.status,
                "the server answered HEAD of the upload without Upload-Offset".into(),
            )),
        }
    }

    /// Sends `bytes` (the file's bytes from `base`) to the upload at `url`,
    /// which holds `at` bytes (`base <= at`): PATCH after PATCH from where the
    /// server is, adopting the offset it answers, until it holds
    /// `base + bytes.len()`. A server that holds more than that, or less than
    /// `base`, is answered as a realign to its offset.
    async fn patch(
        &self,
        url: &Url,
        base: u64,
        bytes: &Bytes,
        mut at: u64,
    ) -> Result<(), CallError> {
        let end = base + bytes.len() as u64;
        let mut conflicts = 0;
        loop {
            if at == end {
                return Ok(());
            }
            if at < base || at > end {
                return Err(realign(at));
            }
            let body = bytes.slice((at - base) as usize..);
            let mut headers = vec![(header::UPLOAD_OFFSET, at.to_string())];
            if let Some(checksum) = self.server.checksum {
                let body = body.clone();
                let value = tokio::task::spawn_blocking(move || checksum.header(&body))
                    .await
                    .map_err(|e| self.refused(0, format!("hashing the body failed: {e}")))?;
                headers.push((header::UPLOAD_CHECKSUM, value));
            }
            let sent = body.len() as u64;
            let (head, answer_body, cut) = self
                .request(
                    Phase::Transfer,
                    Method::PATCH,
                    url.clone(),
                    &headers,
                    Some(body),
                )
                .await?;
            if head.status == 409 {
                // Not where we thought: ask.
                let (now, _) = self.head(url, Phase::Transfer).await?;
                conflicts += 1;
                if now == at || conflicts > MAX_CONFLICT_ROUNDS {
                    // Refused where HEAD says it is: a store whose last write
                    // HEAD does not see yet (@tus/file-store after a cut
                    // PATCH). Sent again after a backoff, HEAD first.
                    return Err(CallError::Refused(Answer::made(
                        409,
                        Outcome::Retry { after: None },
                        format!("refused at offset {at}, where the server says the upload is"),
                    )));
                }
                at = now;
                continue;
            }
            let answer = self.answer(&head, &answer_body, cut, true);
            if !answer.outcome.is_ok() {
                return Err(CallError::Refused(answer));
            }
            let now = TusHead::number(&head.tus.offset);
            match now {
                Some(now) if now > at => at = now,
                Some(now) if now == at => {
                    return Err(self.refused(
                        head.status,
                        format!(
                            "the server kept none of the {sent} bytes sent at offset {at}: it \
                             stores whole parts only, and its parts are larger; run again with \
                             --tus-part-size set to its part size (or without --tus-part-size, \
                             for the service's rule)"
                        ),
                    ));
                }
                Some(now) => return Err(realign(now)),
                None => {
                    return Err(self.refused(
                        head.status,
                        "the server answered a PATCH without Upload-Offset".into(),
                    ));
                }
            }
        }
    }

    /// Sends one chunk as (or into) the partial upload at its offset.
    async fn send_partial(
        &self,
        file: FileRef<'_>,
        offset: u64,
        bytes: Bytes,
    ) -> Result<(), CallError> {
        let len = bytes.len() as u64;
        let (known, unsure) = self.with_file(file.filename, |t| {
            let known = t.partials.get(&offset).filter(|p| p.len == len).cloned();
            (known, t.unsure_partials.contains(&offset))
        });
        let (url, at) = match known {
            Some(p) if p.done => return Ok(()),
            // An earlier PATCH of it got no answer: where is it?
            Some(p) if unsure => {
                let url = self.upload_url(&p.url)?;
                match self.head(&url, Phase::Transfer).await {
                    Ok((at, _)) => (url, at),
                    // Gone (expired, or deleted): a new one.
                    Err(CallError::Refused(a)) if matches!(a.outcome, Outcome::NoSession) => {
                        (self.new_partial(file, offset, len).await?, 0)
                    }
                    Err(e) => return Err(e),
                }
            }
            Some(p) => (self.upload_url(&p.url)?, 0),
            None => (self.new_partial(file, offset, len).await?, 0),
        };
        self.with_file(file.filename, |t| t.unsure_partials.insert(offset));
        // Offsets inside a partial are not the file's: a partial that holds
        // less or more than it should is sent again, HEAD first.
        self.patch(&url, 0, &bytes, at).await.map_err(|e| match e {
            CallError::Refused(Answer {
                status,
                outcome: Outcome::Realign { expected_offset },
                ..
            }) => CallError::Refused(Answer::made(
                status,
                Outcome::Retry { after: None },
                format!("the partial upload at {offset} holds {expected_offset} bytes"),
            )),
            e => e,
        })?;
        self.with_file(file.filename, |t| {
            t.unsure_partials.remove(&offset);
            if let Some(p) = t.partials.get_mut(&offset) {
                p.done = true;
            }
        });
        Ok(())
    }

    /// Creates the partial upload of the `len` bytes at `offset`.
    async fn new_partial(
        &self,
        file: FileRef<'_>,
        offset: u64,
        len: u64,
    ) -> Result<Url, CallError> {
        let url = self.create(file, Some(len), Some("partial".into())).await?;
        self.with_file(file.filename, |t| {
            t.unsure_partials.remove(&offset);
            t.partials.insert(
                offset,
                Partial {
                    len,
                    url: url.to_string(),
                    done: false,
                },
            );
        });
        Ok(url)
    }

    /// The partials, in order, that make up the whole file; `None` if they do
    /// not (a chunk's partial is missing or not whole).
    fn chain(&self, file: FileRef<'_>) -> Option<Vec<String>> {
        self.with_file(file.filename, |t| {
            let mut urls = Vec::new();
            let mut at = 0;
            while at < file.size {
                let p = t.partials.get(&at).filter(|p| p.done)?;
                urls.push(p.url.clone());
                at += p.len;
            }
            (at == file.size).then_some(urls)
        })
    }

    /// Joins the partials (or finds they were joined), then checks with HEAD
    /// that the server holds the whole file; the URL of the upload to register.
    async fn join(&self, file: FileRef<'_>) -> Result<Url, CallError> {
        if let Some(joined) = self.with_file(file.filename, |t| t.joined.clone()) {
            return self.upload_url(&joined);
        }
        let Some(urls) = self.chain(file) else {
            return Err(incomplete(0, file.size));
        };
        if self.with_file(file.filename, |t| t.join_unsure) {
            // The last final POST may have joined them: the server may have
            // deleted the partials then, and the joined upload's address was
            // lost with the answer. Join again only if every partial is there.
            // (A partial gone is answered as the upload lost: the file starts over.)
            for url in &urls {
                self.head(&self.upload_url(url)?, Phase::Verify).await?;
            }
        }
        // Paths, not whole URLs: the header stays short (a server limits it).
        let paths = urls
            .iter()
            .map(|url| self.upload_url(url).map(|u| u.path().to_owned()))
            .collect::<Result<Vec<_>, _>>()?;
        let concat = format!("final;{}", paths.join(" "));
        self.with_file(file.filename, |t| t.join_unsure = true);
        let joined = self
            .create_within(
                file,
                None,
                Some(concat),
                Some(self.copying_timeout(file.size)),
            )
            .await;
        let url = match joined {
            Ok(url) => url,
            // Refused for good: the partials may be gone (expired, or joined
            // and deleted by a join whose answer was lost): the file starts
            // over if so, else the refusal stands.
            Err(CallError::Refused(answer))
                if !matches!(
                    answer.outcome,
                    Outcome::Retry { .. } | Outcome::Unauthorized
                ) =>
            {
                self.with_file(file.filename, |t| t.join_unsure = false);
                for url in &urls {
                    self.head(&self.upload_url(url)?, Phase::Verify).await?;
                }
                return Err(CallError::Refused(answer));
            }
            // No answer, or one that may come after the join: unsure.
            Err(e) => return Err(e),
        };
        self.with_file(file.filename, |t| {
            t.join_unsure = false;
            t.joined = Some(url.to_string());
        });
        Ok(url)
    }

    /// Asks the server whether the upload at `url` (of the file sent as
    /// `filename`) was registered (`GET <datafile endpoint>?tus_url=<url>`).
    async fn lookup(&self, url: &str, file: FileRef<'_>) -> Result<Lookup, CallError> {
        let mut endpoint = self.client.endpoint().clone();
        endpoint
            .query_pairs_mut()
            .append_pair(tus::LOOKUP_PARAM, url);
        let progress = Progress::default();
        let request = self.client.authorized(self.client.http().get(endpoint));
        let (head, body, cut) = self
            .client
            .exchange(Phase::Verify, request, &progress)
            .await
            .map_err(CallError::Transport)?;
        let answer = self.answer(&head, &body, cut, false);
        if matches!(
            answer.outcome,
            Outcome::Unauthorized | Outcome::Retry { .. }
        ) {
            return Err(CallError::Refused(answer));
        }
        let found = (head.status == 200)
            .then(|| tus::RegistrationLookup::parse(&body))
            .flatten();
        Ok(match found {
            Some((lookup, _)) if !lookup.registered => Lookup::NotRegistered,
            // A receipt of the server's own shape that gives another size:
            // what it holds is not what was sent (as for a verify's answer).
            Some((_, Some(reported))) if reported != file.size => {
                return Err(CallError::SizeMismatch { reported });
            }
            Some((lookup, _)) => Lookup::Registered(
                lookup
                    .receipt
                    .map(|r| self.client.receipt(r, Some(file.filename))),
            ),
            None => Lookup::Unknown {
                status: head.status,
            },
        })
    }

    /// The upload to register once the server holds all of it.
    pub(crate) async fn whole(&self, file: FileRef<'_>) -> Result<Url, CallError> {
        let url = if self.with_file(file.filename, |t| t.concat) {
            self.join(file).await?
        } else {
            match self.with_file(file.filename, |t| t.upload.clone()) {
                Some(upload) => self.upload_url(&upload)?,
                None => return Err(no_session()),
            }
        };
        let (at, length) = self.head(&url, Phase::Verify).await?;
        if at != file.size || length.is_some_and(|l| l != file.size) {
            return Err(incomplete(at, file.size));
        }
        Ok(url)
    }
}

/// The server has no upload of the file (for the pipeline: start over).
fn no_session() -> CallError {
    CallError::Refused(Answer::made(404, Outcome::NoSession, String::new()))
}

/// A 409 that names where the server is.
fn realign(at: u64) -> CallError {
    CallError::Refused(Answer::made(
        409,
        Outcome::Realign {
            expected_offset: at,
        },
        String::new(),
    ))
}

/// The server holds `received` of `expected` bytes at the end.
fn incomplete(received: u64, expected: u64) -> CallError {
    CallError::Refused(Answer::made(
        409,
        Outcome::Incomplete { received, expected },
        String::new(),
    ))
}

/// What [`crate::negotiate::Negotiated`] calls once the run speaks tus (the
/// [`crate::protocol::Protocol`] operations, file by file).
impl TusClient<'_> {
    pub(crate) async fn begin(&self, file: FileRef<'_>) -> Result<WriteMode, CallError> {
        if let Some(max) = self.server.max_size.filter(|&m| file.size > m) {
            return Err(self.refused(
                413,
                format!("the server takes uploads of at most {max} bytes (Tus-Max-Size)"),
            ));
        }
        if self.concat_for(file) {
            // Partials are created with their chunks; this round trip (a cheap
            // OPTIONS) measures the path as a setup does.
            let (head, body, cut) = self
                .request(
                    Phase::Setup,
                    Method::OPTIONS,
                    self.endpoint.clone(),
                    &[],
                    None,
                )
                .await?;
            let answer = self.answer(&head, &body, cut, false);
            if !answer.outcome.is_ok() {
                return Err(CallError::Refused(answer));
            }
            self.with_file(file.filename, |t| {
                *t = TusFile {
                    concat: true,
                    ..TusFile::default()
                };
            });
            return Ok(WriteMode::Offset);
        }
        if self.concat && file.size >= CONCAT_MIN_FILE {
            tracing::info!(
                file = %file.filename,
                partial = concat_granule(file.size, self.part(file)),
                memory = self.memory,
                "sent as one upload in order: its partials would not fit the memory budget twice"
            );
        }
        let url = self.create(file, Some(file.size), None).await?;
        self.with_file(file.filename, |t| {
            *t = TusFile {
                upload: Some(url.to_string()),
                ..TusFile::default()
            };
        });
        Ok(WriteMode::Strict)
    }

    pub(crate) async fn send(
        &self,
        file: FileRef<'_>,
        offset: u64,
        bytes: Bytes,
    ) -> Result<(), CallError> {
        let (concat, upload, unsure) =
            self.with_file(file.filename, |t| (t.concat, t.upload.clone(), t.unsure));
        if concat {
            return self.send_partial(file, offset, bytes).await;
        }
        let Some(upload) = upload else {
            return Err(no_session());
        };
        let url = self.upload_url(&upload)?;
        let at = if unsure {
            self.head(&url, Phase::Transfer).await?.0
        } else {
            offset
        };
        self.with_file(file.filename, |t| t.unsure = true);
        self.patch(&url, offset, &bytes, at).await?;
        self.with_file(file.filename, |t| t.unsure = false);
        Ok(())
    }

    pub(crate) async fn query_offset(&self, file: FileRef<'_>) -> Result<Option<u64>, CallError> {
        let (concat, upload) = self.with_file(file.filename, |t| (t.concat, t.upload.clone()));
        match upload.filter(|_| !concat) {
            Some(upload) => {
                let url = self.upload_url(&upload)?;
                Ok(Some(self.head(&url, Phase::Transfer).await?.0))
            }
            None => Ok(None),
        }
    }

    pub(crate) fn granule(&self, file: FileRef<'_>) -> u64 {
        // An upload resumed goes on as it began (the last run's settings may
        // have been others), so its partials stay as few as the join allows.
        let resumed = {
            let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
            files
                .get(file.filename)
                .filter(|t| t.concat || t.upload.is_some())
                .map(|t| t.concat)
        };
        if resumed.unwrap_or_else(|| self.concat_for(file)) {
            concat_granule(file.size, self.part(file))
        } else {
            self.part(file)
        }
    }

    /// The part size of `file`'s PATCH bodies.
    fn part(&self, file: FileRef<'_>) -> u64 {
        self.part_size
            .unwrap_or_else(|| tus::s3_part_size(Some(file.size)))
    }

    /// Whether `file` is sent as partials: when the server concatenates, the
    /// file is not small, and its partials fit the memory budget
    /// [`CONCAT_MIN_IN_FLIGHT`] times.
    fn concat_for(&self, file: FileRef<'_>) -> bool {
        self.concat
            && file.size >= CONCAT_MIN_FILE
            && concat_granule(file.size, self.part(file)).saturating_mul(CONCAT_MIN_IN_FLIGHT)
                <= self.memory
    }

    pub(crate) async fn prepare_finish(
        &self,
        file: FileRef<'_>,
    ) -> Result<Option<String>, CallError> {
        // A registration sent already (by the last run, or an attempt whose
        // answer was lost) is settled by `finish`, never by checking the
        // upload again: the server may have moved it into the dataset.
        if let Some(url) = self.with_file(file.filename, |t| t.registering.clone()) {
            return Ok(Some(url));
        }
        let url = self.whole(file).await?.to_string();
        // Journaled as "may have been sent" before the call goes out: a crash
        // after it asks, never registers again blindly.
        self.with_file(file.filename, |t| {
            t.registering = Some(url.clone());
            t.register_sent = true;
        });
        Ok(Some(url))
    }

    pub(crate) async fn finish(
        &self,
        file: FileRef<'_>,
    ) -> Result<Option<VerifyReceipt>, CallError> {
        let (url, ask_first) =
            self.with_file(file.filename, |t| (t.registering.clone(), t.ask_first));
        let Some(url) = url else {
            return Err(incomplete(0, file.size));
        };
        if ask_first {
            // Registering twice makes two datafiles: ask first.
            match self.lookup(&url, file).await? {
                Lookup::Registered(receipt) => return Ok(receipt),
                Lookup::NotRegistered => {}
                Lookup::Unknown { status } => return Err(CallError::Unsettled { status }),
            }
        }
        let body =
            tus::registration_body(&DatafileClient::boundary(), &url, file.filename, file.size);
        self.with_file(file.filename, |t| t.register_sent = true);
        let answer = match self
            .client
            .close(body, file.filename, self.copying_timeout(file.size))
            .await
        {
            Ok(answer) => answer,
            Err(e) => {
                // No answer: it may have gone through.
                self.with_file(file.filename, |t| t.ask_first = true);
                return Err(CallError::Transport(e));
            }
        };
        if answer.outcome.is_ok() {
            if let Some(mismatch) = answer.size_mismatch(file) {
                return Err(mismatch);
            }
            return Ok(answer.receipt.map(|r| *r));
        }
        self.with_file(file.filename, |t| {
            if matches!(answer.outcome, Outcome::Retry { .. }) {
                // A 5xx may come after the server applied it.
                t.ask_first = true;
            } else {
                // Refused for good: not registered.
                t.register_sent = false;
                t.ask_first = false;
            }
        });
        Err(CallError::Refused(answer))
    }

    /// The registration [`TusClient::prepare_finish`] marked as maybe sent
    /// was not sent: the next attempt sends it without asking first.
    pub(crate) fn registration_not_sent(&self, file: FileRef<'_>) {
        self.with_file(file.filename, |t| {
            t.register_sent = false;
            t.ask_first = false;
        });
    }

    pub(crate) fn saved(&self, file: FileRef<'_>) -> Option<TusRecord> {
        Some(self.with_file(file.filename, |t| {
            TusRecord {
                concat: t.concat,
                upload: t.upload.clone(),
                partials: t
                    .partials
                    .iter()
                    .filter(|(_, p)| p.done)
                    .map(|(&offset, p)| SavedPartial {
                        offset,
                        len: p.len,
                        url: p.url.clone(),
                    })
                    .collect(),
                joined: t.joined.clone(),
                registering: t.registering.clone(),
                registration_sent: t.register_sent,
            }
        }))
    }

    pub(crate) fn restore(&self, file: FileRef<'_>, record: TusRecord) {
        self.with_file(file.filename, |t| {
            *t = TusFile {
                concat: record.concat,
                upload: record.upload,
                // The last run may have been stopped mid-PATCH.
                unsure: true,
                partials: record
                    .partials
                    .into_iter()
                    .map(|p| {
                        (
                            p.offset,
                            Partial {
                                len: p.len,
                                url: p.url,
                                done: true,
                            },
                        )
                    })
                    .collect(),
                unsure_partials: Default::default(),
                // A run killed during the joining POST: check the partials
                // before joining again.
                join_unsure: record.concat && record.joined.is_none(),
                joined: record.joined,
                register_sent: record.registration_sent,
                ask_first: record.registration_sent,
                registering: record.registering,
            };
        });
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whole granules of a file never make more partials than the joining
        /// POST may name, and each is whole parts.
        #[test]
        fn partials_of_whole_granules_fit_the_join(
            size in 0u64..=(4u64 << 40),
            part in 1u64..=(64 << 20),
        ) {
            let granule = concat_granule(size, part);
            prop_assert_eq!(granule % part, 0);
            prop_assert!(size.div_ceil(granule) <= MAX_JOIN_PARTIALS);
        }
    }

    #[test]
    fn small_files_keep_the_part_size_as_their_granule() {
        let part = tus::s3_part_size(Some(1 << 30));
        assert_eq!(concat_granule(1 << 30, part), part);
        // 2 TiB on the service's rule: parts of about 210 MiB, granules of
        // ten parts (2.1 GiB) so that about 1000 partials remain.
        let size = 2u64 << 40;
        let part = tus::s3_part_size(Some(size));
        assert_eq!(concat_granule(size, part), 10 * part);
    }

    #[test]
    fn the_cheapest_checksum_both_sides_know_is_chosen() {
        // The service's list.
        let service = "sha1,sha256,sha384,sha512,md5,crc32";
        assert_eq!(Checksum::cheapest(service), Some(Checksum::Crc32));
        assert_eq!(Checksum::cheapest(" SHA512 , sha1"), Some(Checksum::Sha512));
        assert_eq!(Checksum::cheapest("sha1"), Some(Checksum::Sha1));
        assert_eq!(Checksum::cheapest("md5"), None, "not computed here");
        assert_eq!(Checksum::cheapest(""), None);
    }

    #[test]
    fn checksum_headers_are_in_the_services_format() {
        // crc32 as tus-ruby-server writes it: base64 of the decimal text.
        assert_eq!(Checksum::Crc32.header(b"abc"), "crc32 ODkxNTY4NTc4");
        assert_eq!(
            Checksum::Sha1.header(b"abc"),
            "sha1 qZk+NkcGgWq6PiVxeFDCbJzQ2J0="
        );
        assert_eq!(
            Checksum::Sha256.header(b"abc"),
            "sha256 ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }

    #[test]
    fn the_tus_endpoint_keeps_the_servers_path_prefix() {
        for (server, expected) in [
            ("https://h", "https://h/files/"),
            ("https://h/", "https://h/files/"),
            (
                "http://127.0.0.1:8080/prefix/",
                "http://127.0.0.1:8080/prefix/files/",
            ),
        ] {
            assert_eq!(endpoint(&server.parse().unwrap()).as_str(), expected);
        }
    }

    #[test]
    fn a_journal_record_reads_back_and_an_old_one_without_it_still_does() {
        let record = TusRecord {
            concat: true,
            upload: None,
            partials: vec![SavedPartial {
                offset: 0,
                len: 5,
                url: "http://h/files/a".into(),
            }],
            joined: None,
            registering: Some("http://h/files/b".into()),
            registration_sent: true,
        };
        let text = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<TusRecord>(&text).unwrap(), record);
        assert_eq!(
            serde_json::from_str::<TusRecord>("{}").unwrap(),
            TusRecord::default()
        );
    }

    /// A run's settings for `server` (defaults otherwise).
    fn config_for(server: &Url) -> crate::UploadConfig {
        crate::UploadConfig::new(
            server.clone(),
            idb_wire::DatasetKey::new("IDB-9").unwrap(),
            idb_wire::Token::new("abc").unwrap(),
        )
    }

    /// A tus server serving `extensions`, no checksum and any size.
    fn offer(extensions: &[&str]) -> TusServer {
        TusServer {
            extensions: extensions.iter().map(|&e| e.to_owned()).collect(),
            max_size: None,
            checksum: None,
        }
    }

    #[test]
    fn files_whose_partials_would_not_fit_the_memory_budget_twice_go_in_order() {
        let server = Url::parse("http://127.0.0.1:9/").unwrap();
        let mut config = config_for(&server);
        let client = DatafileClient::new(&config).unwrap();
        let concatenating = || offer(&["creation", "concatenation"]);
        let file = |size| FileRef {
            filename: "a.bin",
            size,
        };
        let tus = TusClient::new(&client, &server, concatenating(), &config);
        // The default budget (512 MiB) holds two partials of a 200 GiB file
        // (205 MiB each, ten of its parts), not of one of 250 GiB or more.
        let fits = 200u64 << 30;
        let part = tus::s3_part_size(Some(fits));
        assert_eq!(config.memory, 512 << 20);
        assert!(tus.concat_for(file(fits)));
        assert_eq!(tus.granule(file(fits)), 10 * part);
        for size in [250u64 << 30, 2u64 << 40] {
            assert!(!tus.concat_for(file(size)), "{size}");
            // In order, a PATCH body is the part size, not a partial's.
            assert_eq!(
                tus.granule(file(size)),
                tus::s3_part_size(Some(size)),
                "{size}"
            );
        }
        // An upload begun as partials (by a run with more memory) goes on as
        // partials of the same size: their number stays within the join's.
        let huge = file(2u64 << 40);
        let part = tus::s3_part_size(Some(huge.size));
        tus.restore(
            huge,
            TusRecord {
                concat: true,
                ..TusRecord::default()
            },
        );
        assert_eq!(tus.granule(huge), concat_granule(huge.size, part));
        // More memory: 2 TiB goes as partials of 2.1 GiB, but an upload begun
        // in order goes on in parts.
        config.memory = 8 << 30;
        let tus = TusClient::new(&client, &server, concatenating(), &config);
        assert!(tus.concat_for(huge));
        assert_eq!(tus.granule(huge), concat_granule(huge.size, part));
        tus.restore(
            huge,
            TusRecord {
                upload: Some("http://127.0.0.1:9/files/a".into()),
                ..TusRecord::default()
            },
        );
        assert_eq!(tus.granule(huge), part);
    }

    #[test]
    fn a_plain_http_address_of_the_same_host_is_taken_over_https_only() {
        let at = |server: &str, location: &str| {
            let server = Url::parse(server).unwrap();
            let config = config_for(&server);
            let client = DatafileClient::new(&config).unwrap();
            TusClient::new(&client, &server, offer(&[]), &config)
                .upload_url(location)
                .map(|url| url.to_string())
                .map_err(|_| ())
        };
        let server = "https://databank.example.org/";
        // Behind a proxy that ends TLS: the same host, plain, default port.
        assert_eq!(
            at(server, "http://databank.example.org/files/abc"),
            Ok("https://databank.example.org/files/abc".to_owned())
        );
        assert_eq!(
            at(
                "https://databank.example.org:8443/",
                "http://databank.example.org/files/abc"
            ),
            Ok("https://databank.example.org:8443/files/abc".to_owned())
        );
        assert_eq!(
            at(server, "/files/abc"),
            Ok("https://databank.example.org/files/abc".to_owned())
        );
        // Another host, or a port of its own, is another server.
        assert_eq!(
            at(server, "http://elsewhere.example.org/files/abc"),
            Err(())
        );
        assert_eq!(
            at(server, "http://databank.example.org:8080/files/abc"),
            Err(())
        );
        assert_eq!(
            at(server, "https://elsewhere.example.org/files/abc"),
            Err(())
        );
        // Spoken to in plain, an https address is not this server's either.
        assert_eq!(
            at("http://127.0.0.1:9/", "https://127.0.0.1:9/files/abc"),
            Err(())
        );
    }

    #[test]
    fn a_registration_not_sent_is_not_saved_as_maybe_sent() {
        let server = Url::parse("http://127.0.0.1:9/").unwrap();
        let config = config_for(&server);
        let client = DatafileClient::new(&config).unwrap();
        let tus = TusClient::new(&client, &server, offer(&[]), &config);
        let file = FileRef {
            filename: "a.bin",
            size: 5,
        };
        tus.restore(
            file,
            TusRecord {
                upload: Some("http://127.0.0.1:9/files/a".into()),
                registering: Some("http://127.0.0.1:9/files/a".into()),
                registration_sent: true,
                ..TusRecord::default()
            },
        );
        tus.registration_not_sent(file);
        let saved = tus.saved(file).unwrap();
        assert!(!saved.registration_sent, "{saved:?}");
        assert!(!tus.with_file("a.bin", |t| t.ask_first), "nothing to ask");
    }
}
