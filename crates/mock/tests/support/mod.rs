//! Helpers shared by the offset-mode and fault tests: a reqwest client that speaks
//! the chunked API, answers read whole, seeded test bytes, and raw HTTP over a
//! `TcpStream` for what a client library would hide (a connection closed without
//! a status line).
#![allow(dead_code)] // each test file uses its own share of these

use std::time::Duration;

use idb_mock::{MockConfig, MockServer};
use reqwest::header::{AUTHORIZATION, HeaderMap};
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

/// The default dataset with its token, and nothing else configured.
pub fn config() -> MockConfig {
    MockConfig::new().dataset(DS, TOKEN)
}

/// One dataset's endpoint with one token (by default [`DS`] with [`TOKEN`]).
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    url: String,
    /// The whole `Authorization` value.
    auth: String,
}

impl Api {
    pub fn new(server: &MockServer) -> Self {
        Self::with_timeout(server, HANG)
    }

    /// A client that gives up on an answer after `timeout`.
    pub fn with_timeout(server: &MockServer, timeout: Duration) -> Self {
        Self {
            client: client_with_timeout(timeout),
            url: format!("{}/api/dataset/{DS}/datafile", server.url()),
            auth: AUTH.to_owned(),
        }
    }

    /// `dataset`'s endpoint, sending `token`.
    pub fn for_dataset(server: &MockServer, dataset: &str, token: &str) -> Self {
        Self {
            client: client_with_timeout(HANG),
            url: format!("{}/api/dataset/{dataset}/datafile", server.url()),
            auth: format!("Token token={token}"),
        }
    }

    /// Sends a multipart call; `Err` when no answer came (transport error, timeout).
    pub async fn try_send(&self, form: Form) -> Result<Answer, reqwest::Error> {
        let response = self
            .client
            .post(&self.url)
            .header(AUTHORIZATION, &self.auth)
            .multipart(form)
            .send()
            .await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await?.to_vec();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    pub async fn send(&self, form: Form) -> Answer {
        self.try_send(form)
            .await
            .expect("the request reaches the mock and gets an answer")
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
}

pub fn setup_form(name: &str, size: u64) -> Form {
    Form::new()
        .text("phase", "setup")
        .text("filename", name.to_owned())
        .text("filesize", size.to_string())
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
    answer.expect(200);
    let body = answer.json();
    assert_eq!(body["filename"], name, "{body}");
    assert_eq!(body["size"], sent.len() as u64, "{body}");
    assert_eq!(body["blake3"], blake3_hex(sent), "{body}");
    if let Some(path) = server.stored_file(DS, name) {
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
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
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
