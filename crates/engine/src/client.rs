//! Protocol 1 over HTTP: one call, one classified answer.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use idb_wire::{
    Boundary, DatasetKey, MultipartBody, Outcome, Phase, Token, VerifyReceipt, WRITE_MODE_HEADER,
    WRITE_MODE_OFFSET, body_message, classify, datafile_path, tus,
};
use reqwest::header::{self, HeaderValue};
use url::Url;

use crate::bandwidth::Bandwidth;
use crate::body::{Progress, SegmentedBody};
use crate::idle::with_idle_timeout;
use crate::protocol::{CallError, FileRef};
use crate::server_text::Secrets;
use crate::{Error, UploadConfig};

/// The most bytes of a response body kept (enough for any JSON answer).
const RESPONSE_BODY_LIMIT: usize = 64 * 1024;

/// The server's answer to one call, as the engine sees it: classified, and
/// every text in it safe to show ([`Secrets::clean`]: the token scrubbed,
/// control characters escaped, cut). The raw body never leaves the client.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) outcome: Outcome,
    /// What the server said, for people: the `message` of a JSON body, or the
    /// body's text (empty if it sent none).
    pub(crate) said: String,
    /// `Location`, for redirects (which are never followed: a POST must not turn
    /// into a GET, and the token must not go to another host).
    pub(crate) location: Option<String>,
    /// Whether the server said it writes chunks at their offsets.
    pub(crate) offset_mode: bool,
    /// The receipt in a successful verify's answer, if it sent one (boxed:
    /// every other answer carries none).
    pub(crate) receipt: Option<Box<VerifyReceipt>>,
    /// The size a successful verify's answer reports without a whole receipt
    /// ([`VerifyReceipt::reported_size`]).
    pub(crate) reported_size: Option<u64>,
}

impl Answer {
    /// A successful close that reports a size other than `file`'s: the
    /// server holds other bytes than were sent.
    pub(crate) fn size_mismatch(&self, file: FileRef<'_>) -> Option<CallError> {
        self.reported_size
            .filter(|&reported| reported != file.size)
            .map(|reported| CallError::SizeMismatch { reported })
    }
}

impl Answer {
    /// An answer the engine makes of what it saw (no location, no receipt):
    /// a refusal it infers, or a server's answer read as another outcome.
    pub(crate) fn made(status: u16, outcome: Outcome, said: String) -> Self {
        Self {
            status,
            outcome,
            said,
            location: None,
            offset_mode: false,
            receipt: None,
            reported_size: None,
        }
    }
}

/// Why a call got no answer.
#[derive(Debug)]
pub(crate) enum Transport {
    /// Connecting, sending or receiving failed.
    Http {
        /// The error and its causes on one line, safe to show.
        reason: String,
        /// A TLS handshake was answered in plain HTTP (rustls read the HTTP
        /// status line as a record of an unknown type).
        plain_http: bool,
        /// A request in plain HTTP was answered with what is not HTTP (hyper
        /// read no HTTP version): most likely a TLS server's alert.
        not_http: bool,
        /// The TLS handshake refused the server's certificate, and why.
        certificate: Option<crate::tls::CertificateProblem>,
    },
    /// Nothing moved for this long (the idle timeout, or the shorter wait for a
    /// server not heard from yet).
    Idle(Duration),
}

/// A client for one dataset's datafile endpoint.
pub(crate) struct DatafileClient {
    http: reqwest::Client,
    endpoint: Url,
    /// The token in use, replaced when a refreshed one arrives mid-run. Held only
    /// to copy the header out or swap it.
    auth: RwLock<Auth>,
    idle_timeout: Duration,
    /// How long a call waits while nothing moves before the server answered
    /// anything (see [`crate::UploadConfig::first_answer_timeout`]).
    first_answer_timeout: Duration,
    /// The run added private CAs (`--ca-cert`): a refused certificate says so.
    private_ca: bool,
    /// When the server last answered (any status): until it first did, a
    /// silence is more likely a wrong address than a slow server; long after,
    /// a call out of attempts means the server stopped answering. The lock is
    /// held to read or replace the instant only.
    last_answer: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// The cap on the bytes of every transfer body this client sends, shared by
    /// all of them (`None`: no cap, and no bucket at all). Setup and verify bodies
    /// are a few hundred bytes and are never held back.
    bandwidth: Option<Arc<Bandwidth>>,
}

/// The token and its header, with a generation counting replacements.
struct Auth {
    token: Token,
    /// `Token token=...`, marked sensitive so it never shows in debug output.
    header: HeaderValue,
    generation: u64,
    /// This token and every earlier one: what the server's texts are cleaned of.
    secrets: Secrets,
}

impl DatafileClient {
    pub(crate) fn new(config: &UploadConfig) -> Result<Self, Error> {
        // reqwest is built without a default crypto provider (so no C toolchain
        // for aws-lc is needed); install ring's unless the process chose one.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        // No whole-request timeout: a healthy large chunk on a slow link may take
        // minutes. Stalls are caught by the idle watchdog instead.
        let http = reqwest::Client::builder()
            .user_agent(concat!("idb/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            // Private authorities on top of the platform's roots (tls.rs).
            .tls_certs_merge(crate::tls::load_ca_certs(&config.ca_certs)?)
            .build()
            .map_err(crate::tls::client_error)?;
        let endpoint = endpoint(&config.server, &config.dataset)?;
        Ok(Self {
            http,
            endpoint,
            auth: RwLock::new(Auth {
                token: config.token.clone(),
                header: authorization(&config.token)?,
                generation: 0,
                secrets: Secrets::new(&config.token),
            }),
            idle_timeout: config.idle_timeout,
            first_answer_timeout: config.first_answer_timeout,
            private_ca: !config.ca_certs.is_empty(),
            last_answer: std::sync::Mutex::new(None),
            bandwidth: config.bandwidth.map(|rate| Arc::new(Bandwidth::new(rate))),
        })
    }

    /// Sends one call and classifies the answer. Fails with [`Transport::Idle`]
    /// when no request byte went out and no answer came for the idle timeout
    /// (or, before the server answered anything, the first answer timeout).
    pub(crate) async fn call(
        &self,
        phase: Phase,
        body: MultipartBody,
    ) -> Result<Answer, Transport> {
        self.send_call(phase, body, self.idle_timeout_for(phase), None)
            .await
    }

    /// A call that closes the upload of a file sent as `sent` (protocol 1's
    /// verify, tus's registration), waiting up to `timeout` with nothing
    /// moving (the server may hash or copy the whole file first); its
    /// receipt, if the server sends one, as [`DatafileClient::receipt`].
    pub(crate) async fn close(
        &self,
        body: MultipartBody,
        sent: &str,
        timeout: Duration,
    ) -> Result<Answer, Transport> {
        self.send_call(Phase::Verify, body, timeout, Some(sent))
            .await
    }

    async fn send_call(
        &self,
        phase: Phase,
        body: MultipartBody,
        timeout: Duration,
        sent: Option<&str>,
    ) -> Result<Answer, Transport> {
        let progress = Progress::default();
        let content_type = body.content_type().to_owned();
        let request = self
            .authorized(self.http.post(self.endpoint.clone()))
            .header(header::CONTENT_TYPE, content_type)
            .body(reqwest::Body::wrap(SegmentedBody::new(
                body.into_segments(),
                progress.clone(),
                self.bandwidth.clone().filter(|_| phase == Phase::Transfer),
            )));
        let (head, body, cut) = self.exchange_within(request, &progress, timeout).await?;
        Ok(self.answer(phase, head, &body, cut, sent))
    }

    /// The idle timeout of calls after the first answer.
    pub(crate) fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// `request` with the token's `Authorization` header.
    pub(crate) fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.header(
            header::AUTHORIZATION,
            self.auth
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .header
                .clone(),
        )
    }

    /// The HTTP client (one connection pool for the run).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The datafile endpoint (`<server>/api/dataset/<key>/datafile`).
    pub(crate) fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// A body of `bytes` that counts its progress for the idle timeout, under
    /// the run's bandwidth cap.
    pub(crate) fn payload(&self, bytes: Bytes, progress: &Progress) -> reqwest::Body {
        reqwest::Body::wrap(SegmentedBody::new(
            vec![bytes],
            progress.clone(),
            self.bandwidth.clone(),
        ))
    }

    /// Sends `request` and reads the answer (its status line, the headers the
    /// engine reads, and up to [`RESPONSE_BODY_LIMIT`] bytes of body, and whether
    /// it was cut). Fails with [`Transport::Idle`] when nothing moved (the body's
    /// bytes counted in `progress`) for the idle timeout of `phase`.
    pub(crate) async fn exchange(
        &self,
        phase: Phase,
        request: reqwest::RequestBuilder,
        progress: &Progress,
    ) -> Result<(Head, Bytes, bool), Transport> {
        self.exchange_within(request, progress, self.idle_timeout_for(phase))
            .await
    }

    /// [`DatafileClient::exchange`] with its own idle timeout (a call the
    /// server works on for long before it answers, with nothing moving).
    pub(crate) async fn exchange_within(
        &self,
        request: reqwest::RequestBuilder,
        progress: &Progress,
        timeout: Duration,
    ) -> Result<(Head, Bytes, bool), Transport> {
        let exchange = async {
            let response = request.send().await?;
            *self.last_answer.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(tokio::time::Instant::now());
            let head = Head::of(&response);
            let (body, cut) = read_limited(response).await?;
            Ok((head, body, cut))
        };
        match with_idle_timeout(progress, timeout, exchange).await {
            Some(result) => result.map_err(|e| self.transport_error(&e)),
            None => Err(Transport::Idle(timeout)),
        }
    }

    /// What the server said in `body`, for people: cleaned of every token of the
    /// run, control characters escaped, cut.
    pub(crate) fn said(&self, body: &[u8], cut: bool) -> String {
        let auth = self.auth.read().unwrap_or_else(|e| e.into_inner());
        let secrets = &auth.secrets;
        secrets.clean(
            &body_message(
                secrets
                    .scrub(&String::from_utf8_lossy(body), cut)
                    .as_bytes(),
            ),
            cut,
        )
    }

    /// `text` from the server (a header), cleaned as [`DatafileClient::said`].
    pub(crate) fn clean(&self, text: &str) -> String {
        let auth = self.auth.read().unwrap_or_else(|e| e.into_inner());
        auth.secrets.clean(text, false)
    }

    /// The answer as the engine sees it: every text from the server cleaned,
    /// here and only here (receipts in [`DatafileClient::receipt`]), and the
    /// raw body dropped. `sent`: the name a verify closed the upload of.
    fn answer(
        &self,
        phase: Phase,
        head: Head,
        body: &[u8],
        cut: bool,
        sent: Option<&str>,
    ) -> Answer {
        let outcome = classify(phase, head.status, body, head.retry_after.as_deref());
        let closed = phase == Phase::Verify && outcome.is_ok();
        let receipt = closed
            .then(|| VerifyReceipt::parse(body))
            .flatten()
            .map(|r| Box::new(self.receipt(r, sent)));
        let reported_size = (closed && receipt.is_none())
            .then(|| VerifyReceipt::reported_size(body))
            .flatten();
        let location = head.location.map(|l| self.clean(&l));
        Answer {
            status: head.status,
            outcome,
            // Scrubbed raw first, then again once read for a person.
            said: self.said(body, cut),
            location,
            offset_mode: head.offset_mode,
            receipt,
            reported_size,
        }
    }

    /// A receipt from the server made safe to keep and show: its name kept
    /// whole when it is the name `sent` (compared byte for byte before
    /// anything is scrubbed, so a token that happens to occur in a file's
    /// name cannot make the name differ), else only scrubbed (trimmed or
    /// escaped, a name with an invisible character or an edge space would
    /// not match; whoever shows it escapes it); its hash cleaned.
    pub(crate) fn receipt(&self, raw: VerifyReceipt, sent: Option<&str>) -> VerifyReceipt {
        let auth = self.auth.read().unwrap_or_else(|e| e.into_inner());
        let filename = if sent == Some(raw.filename.as_str()) {
            raw.filename
        } else {
            auth.secrets.scrub(&raw.filename, false).into_owned()
        };
        VerifyReceipt {
            filename,
            blake3: auth.secrets.clean(&raw.blake3, false),
            size: raw.size,
        }
    }

    /// A failed exchange, its text cleaned (reqwest's errors name the URL,
    /// which never holds the token; cleaned all the same).
    fn transport_error(&self, error: &reqwest::Error) -> Transport {
        let chain = error_chain(error);
        let auth = self.auth.read().unwrap_or_else(|e| e.into_inner());
        Transport::Http {
            plain_http: chain.contains("InvalidContentType"),
            not_http: chain.contains("invalid HTTP version parsed"),
            certificate: crate::tls::certificate_problem(error, self.private_ca),
            reason: auth.secrets.clean(&chain, false),
        }
    }

    /// How long a call may go with nothing moving: the idle timeout, or less
    /// for a setup while the server never answered (a silent server is found
    /// sooner). Only a setup: a resumed upload's first call may be a verify
    /// that a healthy server takes long to answer (it hashes the whole file).
    fn idle_timeout_for(&self, phase: Phase) -> Duration {
        if phase == Phase::Setup && self.last_answer().is_none() {
            self.idle_timeout.min(self.first_answer_timeout)
        } else {
            self.idle_timeout
        }
    }

    /// When the server last answered anything (any status), if it did.
    pub(crate) fn last_answer(&self) -> Option<tokio::time::Instant> {
        *self.last_answer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One `HEAD` of the server's address (no token, nothing of the dataset):
    /// how long an answer, any answer, takes. A connection is opened first if
    /// none is pooled, and that time is counted.
    pub(crate) async fn head(&self, server: &Url) -> Result<Duration, Transport> {
        let started = tokio::time::Instant::now();
        let request = self.http.head(server.clone()).send();
        match tokio::time::timeout(self.idle_timeout, request).await {
            Ok(Ok(_)) => Ok(started.elapsed()),
            Ok(Err(e)) => Err(self.transport_error(&e)),
            Err(_) => Err(Transport::Idle(self.idle_timeout)),
        }
    }

    /// How many times the token was replaced.
    pub(crate) fn token_generation(&self) -> u64 {
        self.auth
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .generation
    }

    /// Uses `token` from now on; `false` if it is the token already in use.
    pub(crate) fn replace_token(&self, token: &Token) -> Result<bool, Error> {
        let header = authorization(token)?;
        let mut auth = self.auth.write().unwrap_or_else(|e| e.into_inner());
        if auth.token == *token {
            return Ok(false);
        }
        auth.token = token.clone();
        auth.header = header;
        auth.generation += 1;
        auth.secrets.add(token);
        Ok(true)
    }

    pub(crate) fn boundary() -> Boundary {
        Boundary::from_random(rand::random())
    }
}

/// What the engine reads of an answer's status line and headers (raw: texts
/// from it are cleaned before they go further, see [`DatafileClient::clean`]).
pub(crate) struct Head {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<String>,
    pub(crate) location: Option<String>,
    offset_mode: bool,
    /// The tus headers of the answer (protocol 2).
    pub(crate) tus: TusHead,
}

/// The tus headers an answer carries (absent ones `None`).
#[derive(Debug, Default)]
pub(crate) struct TusHead {
    pub(crate) version: Option<String>,
    pub(crate) extensions: Option<String>,
    pub(crate) max_size: Option<String>,
    pub(crate) checksum_algorithms: Option<String>,
    pub(crate) offset: Option<String>,
    pub(crate) length: Option<String>,
}

impl TusHead {
    /// A header holding a byte count (`Upload-Offset`, `Upload-Length`,
    /// `Tus-Max-Size`), if it holds one.
    pub(crate) fn number(text: &Option<String>) -> Option<u64> {
        text.as_deref().and_then(|t| t.trim().parse().ok())
    }
}

impl Head {
    fn of(response: &reqwest::Response) -> Self {
        Self {
            status: response.status().as_u16(),
            // A date, against the server's own clock.
            retry_after: header_text(response, header::RETRY_AFTER).map(|value| {
                idb_wire::retry_after_against(
                    &value,
                    header_text(response, header::DATE).as_deref(),
                )
            }),
            location: header_text(response, header::LOCATION),
            offset_mode: header_text(response, WRITE_MODE_HEADER.try_into().expect("valid name"))
                .is_some_and(|v| v.trim().eq_ignore_ascii_case(WRITE_MODE_OFFSET)),
            tus: TusHead {
                version: named(response, tus::header::TUS_VERSION),
                extensions: named(response, tus::header::TUS_EXTENSION),
                max_size: named(response, tus::header::TUS_MAX_SIZE),
                checksum_algorithms: named(response, tus::header::TUS_CHECKSUM_ALGORITHM),
                offset: named(response, tus::header::UPLOAD_OFFSET),
                length: named(response, tus::header::UPLOAD_LENGTH),
            },
        }
    }
}

fn named(response: &reqwest::Response, name: &'static str) -> Option<String> {
    header_text(response, header::HeaderName::from_static(name))
}

fn header_text(response: &reqwest::Response, name: header::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The body, up to [`RESPONSE_BODY_LIMIT`] bytes, and whether it was longer.
async fn read_limited(mut response: reqwest::Response) -> Result<(Bytes, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(piece) = response.chunk().await? {
        let room = RESPONSE_BODY_LIMIT.saturating_sub(body.len());
        body.extend_from_slice(&piece[..piece.len().min(room)]);
        if piece.len() > room {
            // The rest is not read: an endless answer ends here.
            return Ok((body.into(), true));
        }
    }
    Ok((body.into(), false))
}

/// An error and its sources on one line ("error sending request: connection
/// refused"), since reqwest's own message is only the outermost layer.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

fn authorization(token: &Token) -> Result<HeaderValue, Error> {
    let mut value = HeaderValue::from_str(&token.authorization())
        .map_err(|_| Error::Config("the token cannot be sent in an HTTP header".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// `<server>/api/dataset/<key>/datafile`, keeping any path prefix of the server URL.
fn endpoint(server: &Url, dataset: &DatasetKey) -> Result<Url, Error> {
    if !matches!(server.scheme(), "http" | "https") {
        return Err(Error::Config(format!(
            "the server URL must start with https:// (got {})",
            server.scheme()
        )));
    }
    // A part the token's requests must not carry: a query or a fragment
    // would be glued onto every call's address (`.../files/#frag`) and onto
    // the receipts' and journals' server, credentials would go to the server.
    let extra = if server.query().is_some() {
        Some("a query (?...)")
    } else if server.fragment().is_some() {
        Some("a fragment (#...)")
    } else if !server.username().is_empty() || server.password().is_some() {
        Some("a user name or password (the token is the only credential)")
    } else {
        None
    };
    if let Some(extra) = extra {
        return Err(Error::Config(format!(
            "the server URL (--server) has {extra}, which a Data Bank address never has; \
             give only its scheme, host, port and path, like https://databank.illinois.edu"
        )));
    }
    let mut url = server.clone();
    let prefix = server.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}{}", datafile_path(dataset)));
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DatasetKey {
        DatasetKey::new("IDB-9").unwrap()
    }

    #[test]
    fn endpoint_keeps_prefix() {
        let cases = [
            (
                "https://databank.illinois.edu",
                "https://databank.illinois.edu/api/dataset/IDB-9/datafile",
            ),
            ("https://h/", "https://h/api/dataset/IDB-9/datafile"),
            (
                "http://127.0.0.1:8080/prefix/",
                "http://127.0.0.1:8080/prefix/api/dataset/IDB-9/datafile",
            ),
        ];
        for (server, expected) in cases {
            assert_eq!(
                endpoint(&server.parse().unwrap(), &key()).unwrap().as_str(),
                expected
            );
        }
    }

    #[test]
    fn endpoint_refuses_odd_urls() {
        for bad in [
            "ftp://h/",
            "https://h/?x=1",
            "https://h/#frag",
            "https://h/#",
            "https://user:pw@h/",
        ] {
            assert!(
                matches!(
                    endpoint(&bad.parse().unwrap(), &key()),
                    Err(Error::Config(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn authorization_header_is_sensitive() {
        let value = authorization(&Token::new("abc").unwrap()).unwrap();
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("abc"));
    }
}
