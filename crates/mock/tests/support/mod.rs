//! Helpers shared by the mock's integration tests: a reqwest client that speaks
//! the chunked API (multipart, urlencoded or raw bodies), answers read whole,
//! seeded test bytes, and raw HTTP over a `TcpStream` for what a client library
//! would hide (a connection closed without a status line).
#![allow(dead_code)] // each test file uses its own share of these

use std::time::Duration;

pub mod tus;

use idb_mock::{MockConfig, MockServer};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const DS: &str = "IDB-1";
pub const TOKEN: &str = "tok-1";
pub const AUTH: &str = "Token token=tok-1";
/// How long any single wait in these tests may take before it counts as a hang.
pub const HANG: Duration = Duration::from_secs(60);

/// One answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("<not text>").to_owned())
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {:?}",
            self.text()
        );
        self
    }
}

pub fn client_with_timeout(timeout: Duration) -> reqwest::Client {
    // Only http:// URLs are used, but a rustls-backed client may still want a
    // provider at build time.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("build the HTTP client")
}

pub async fn start(config: MockConfig) -> MockServer {
    MockServer::start(config).await.expect("start the mock")
}

/// The default dataset with its token, serving both protocols, and nothing
/// else configured.
pub fn config() -> MockConfig {
    MockConfig::new().dataset(DS, TOKEN).tus(true)
}

/// One dataset's endpoint with one token (by default [`DS`] with [`TOKEN`]).
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    url: String,
    /// The whole `Authorization` value; `None` sends no header.
    auth: Option<String>,
}

impl Api {
    pub fn new(server: &MockServer) -> Self {
        Self::with_timeout(server, HANG)
    }

    /// A client that gives up on an answer after `timeout`.
    pub fn with_timeout(server: &MockServer, timeout: Duration) -> Self {
        Self::build(server, DS, Some(AUTH), timeout)
    }

    /// `dataset`'s endpoint, sending `token`.
    pub fn for_dataset(server: &MockServer, dataset: &str, token: &str) -> Self {
        Self::with_auth(server, dataset, Some(&format!("Token token={token}")))
    }

    /// `dataset`'s endpoint, sending `auth` as the whole `Authorization` value,
    /// or no such header for `None`.
    pub fn with_auth(server: &MockServer, dataset: &str, auth: Option<&str>) -> Self {
        Self::build(server, dataset, auth, HANG)
    }

    fn build(server: &MockServer, dataset: &str, auth: Option<&str>, timeout: Duration) -> Self {
        Self {
            client: client_with_timeout(timeout),
            url: format!("{}/api/dataset/{dataset}/datafile", server.url()),
            auth: auth.map(str::to_owned),
        }
    }

    /// A POST to the endpoint, authorised as this `Api` is.
    pub fn post(&self) -> reqwest::RequestBuilder {
        let request = self.client.post(&self.url);
        match &self.auth {
            Some(auth) => request.header(AUTHORIZATION, auth),
            None => request,
        }
    }

    /// Sends a request and reads its answer whole; `Err` when no answer came
    /// (transport error, timeout).
    async fn try_request(request: reqwest::RequestBuilder) -> Result<Answer, reqwest::Error> {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await?.to_vec();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    async fn request(request: reqwest::RequestBuilder) -> Answer {
        Self::try_request(request)
            .await
            .expect("the request reaches the mock and gets an answer")
    }

    /// Sends a multipart call; `Err` when no answer came (transport error, timeout).
    pub async fn try_send(&self, form: Form) -> Result<Answer, reqwest::Error> {
        Self::try_request(self.post().multipart(form)).await
    }

    /// Sends a call as `multipart/form-data`.
    pub async fn send(&self, form: Form) -> Answer {
        Self::request(self.post().multipart(form)).await
    }

    /// Sends a call as `application/x-www-form-urlencoded`.
    pub async fn urlencoded(&self, pairs: &[(&str, &str)]) -> Answer {
        self.raw(Some(URLENCODED), urlencode(pairs).into_bytes())
            .await
    }

    /// Sends `body` as is, with this content type (none for `None`).
    pub async fn raw(&self, content_type: Option<&str>, body: Vec<u8>) -> Answer {
        let mut request = self.post().body(body);
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        Self::request(request).await
    }

    pub async fn setup(&self, name: &str, size: u64) -> Answer {
        self.send(setup_form(name, size)).await
    }

    pub async fn transfer(&self, name: &str, offset: u64, chunk: &[u8]) -> Answer {
        self.send(transfer_form(name, offset, chunk)).await
    }

    pub async fn verify(&self, name: &str) -> Answer {
        self.send(verify_form(name)).await
    }

    /// Setup, every chunk in order, verify, all multipart; asserts a 200 for each
    /// call and returns the verify answer.
    pub async fn upload(&self, name: &str, data: &[u8], chunk: usize) -> Answer {
        self.setup(name, data.len() as u64).await.expect(200);
        let mut offset = 0;
        for piece in data.chunks(chunk) {
            self.transfer(name, offset, piece).await.expect(200);
            offset += piece.len() as u64;
        }
        let answer = self.verify(name).await;
        answer.expect(200);
        answer
    }
}

pub fn setup_form(name: &str, size: u64) -> Form {
    setup_form_text(name, &size.to_string())
}

/// A setup form whose `filesize` is any text, a number or not.
pub fn setup_form_text(name: &str, filesize: &str) -> Form {
    Form::new()
        .text("phase", "setup")
        .text("filename", name.to_owned())
        .text("filesize", filesize.to_owned())
}

pub fn transfer_form(name: &str, offset: u64, chunk: &[u8]) -> Form {
    Form::new()
        .text("phase", "transfer")
        .text("filename", name.to_owned())
        .text("previous_size", offset.to_string())
        .part(
            "bytechunk",
            Part::bytes(chunk.to_vec()).file_name("bytechunk"),
        )
}

pub fn verify_form(name: &str) -> Form {
    Form::new()
        .text("phase", "verify")
        .text("filename", name.to_owned())
}

pub const URLENCODED: &str = "application/x-www-form-urlencoded";

/// `application/x-www-form-urlencoded` as browsers and Python's `urlencode` write it.
pub fn urlencode(pairs: &[(&str, &str)]) -> String {
    fn encode(out: &mut String, text: &str) {
        for b in text.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    out.push(b as char)
                }
                b' ' => out.push('+'),
                b => out.push_str(&format!("%{b:02X}")),
            }
        }
    }
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode(&mut out, name);
        out.push('=');
        encode(&mut out, value);
    }
    out
}

/// Deterministic, incompressible-looking test bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

pub fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Asserts a verify answer is the receipt of `sent`, and that the stored copy
/// (store mode) holds exactly `sent`.
#[track_caller]
pub fn assert_verified(server: &MockServer, name: &str, answer: &Answer, sent: &[u8]) {
    check_verified(server, DS, name, answer, sent, false);
}

/// [`assert_verified`] in `dataset`, checking the server's own receipt as well.
#[track_caller]
pub fn assert_verified_in(
    server: &MockServer,
    dataset: &str,
    name: &str,
    answer: &Answer,
    sent: &[u8],
) {
    check_verified(server, dataset, name, answer, sent, true);
}

#[track_caller]
fn check_verified(
    server: &MockServer,
    dataset: &str,
    name: &str,
    answer: &Answer,
    sent: &[u8],
    receipt: bool,
) {
    answer.expect(200);
    let body = answer.json();
    assert_eq!(body["filename"], name, "{body}");
    assert_eq!(body["size"], sent.len() as u64, "{body}");
    assert_eq!(body["blake3"], blake3_hex(sent), "{body}");
    if receipt {
        let receipt = server
            .receipt(dataset, name)
            .expect("a receipt after verify");
        assert_eq!(receipt.filename, name);
        assert_eq!(receipt.size, sent.len() as u64);
        assert_eq!(receipt.blake3, blake3_hex(sent));
    }
    if let Some(path) = server.stored_file(dataset, name) {
        let stored = std::fs::read(&path).expect("read the stored file");
        assert!(
            stored == sent,
            "stored bytes differ from the bytes sent ({} vs {})",
            stored.len(),
            sent.len()
        );
    }
}

/// What came back on a raw connection: every byte the server wrote before the
/// connection ended, and how it ended.
#[derive(Debug)]
pub struct RawExchange {
    pub received: Vec<u8>,
    /// `None`: a clean end of stream; `Some`: the error that ended it (a reset).
    pub ended_by: Option<std::io::ErrorKind>,
}

impl RawExchange {
    /// The status code of the first line, if a status line came.
    pub fn status(&self) -> Option<u16> {
        let text = String::from_utf8_lossy(&self.received);
        let line = text.lines().next()?;
        line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }
}

/// Sends an urlencoded POST of `body` to the default dataset's endpoint over a
/// plain TCP connection (`Connection: close`), then reads until the server ends
/// the connection. Write errors are ignored: a server that resets the connection
/// may do so while the body is still going out.
pub async fn raw_post(server: &MockServer, body: &[u8]) -> RawExchange {
    raw_post_with(server, "", body).await
}

/// [`raw_post`] with `extra` header lines (each ending in `\r\n`).
pub async fn raw_post_with(server: &MockServer, extra: &str, body: &[u8]) -> RawExchange {
    let mut stream = TcpStream::connect(server.addr())
        .await
        .expect("connect to the mock");
    let head = format!(
        "POST /api/dataset/{DS}/datafile HTTP/1.1\r\nHost: {}\r\nAuthorization: {AUTH}\r\n\
         Content-Type: {URLENCODED}\r\nContent-Length: {}\r\n\
         {extra}Connection: close\r\n\r\n",
        server.addr(),
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    let _ = stream.write_all(&request).await;
    let mut received = Vec::new();
    let ended_by = tokio::time::timeout(HANG, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return None,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) => return Some(e.kind()),
            }
        }
    })
    .await
    .expect("the server ends the connection");
    RawExchange { received, ended_by }
}

/// Waits (without sleeping) until `done` holds, or fails the test after [`HANG`].
pub async fn until(what: &str, mut done: impl FnMut() -> bool) {
    tokio::time::timeout(HANG, async {
        while !done() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}
