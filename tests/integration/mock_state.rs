//! `idb mock-server --store DIR` keeps its state across processes: an upload driven
//! by raw HTTP calls, cut by SIGTERM or SIGKILL of the server, continues on a new
//! process started on the same store and the same port at the offset the first
//! one acknowledged, and the stored file is byte-exact. A corrupt `+state.json`
//! is reported on stderr and the server still starts.
//!
//! The calls are plain HTTP/1.1 over a `TcpStream` (multipart, `Connection:
//! close`), one request per connection, so no pooled connection outlives a server.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;

use crate::util::{Dir, HANG, ServerProcess, assert_same_bytes, blake3_hex, random_bytes};

const KEY: &str = "IDB-X";
const TOK: &str = "tok-x";
/// Chunk size of these uploads.
const C: usize = 64 * 1024;
const BOUNDARY: &str = "idb-mock-state-test-boundary";

/// One answer: status and body.
struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    #[track_caller]
    fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        self
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// A multipart body of `fields` and, if given, the `bytechunk` file part.
fn multipart(fields: &[(&str, &str)], chunk: Option<&[u8]>) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    if let Some(chunk) = chunk {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"bytechunk\"; \
                 filename=\"bytechunk\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// POSTs a multipart `body` to the dataset's endpoint on `url` and reads the
/// whole answer (the server closes the connection after it).
fn post(url: &str, body: &[u8]) -> Answer {
    let addr = url.strip_prefix("http://").expect("an http:// URL");
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(HANG)).expect("set a timeout");
    let mut request = format!(
        "POST /api/dataset/{KEY}/datafile HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Token token={TOK}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    stream
        .write_all(&request)
        .unwrap_or_else(|e| panic!("send to {addr}: {e}"));
    let mut received = Vec::new();
    if let Err(e) = stream.read_to_end(&mut received) {
        assert!(
            !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "no answer from {addr} within {HANG:?}"
        );
    }
    let text = String::from_utf8_lossy(&received).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line from {addr}: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Answer { status, body }
}

fn setup(url: &str, name: &str, size: usize) -> Answer {
    let size = size.to_string();
    post(
        url,
        &multipart(
            &[("phase", "setup"), ("filename", name), ("filesize", &size)],
            None,
        ),
    )
}

fn transfer(url: &str, name: &str, offset: usize, chunk: &[u8]) -> Answer {
    let offset = offset.to_string();
    let fields = [
        ("phase", "transfer"),
        ("filename", name),
        ("previous_size", &offset),
    ];
    post(url, &multipart(&fields, Some(chunk)))
}

fn verify(url: &str, name: &str) -> Answer {
    post(
        url,
        &multipart(&[("phase", "verify"), ("filename", name)], None),
    )
}

/// `idb mock-server` on `listen` storing into `store`.
fn serve(dir: &Dir, listen: &str, store: &Path) -> ServerProcess {
    ServerProcess::start(
        dir,
        &[
            "--listen",
            listen,
            "--dataset",
            "IDB-X:tok-x",
            "--store",
            store.to_str().expect("a UTF-8 temp path"),
        ],
    )
}

/// Uploads two chunks, stops the server with `signal`, starts it again on the
/// same port and store, and finishes the upload there.
fn resume_after(name: &str, signal: &str) {
    let dir = Dir::new(name);
    let store = dir.join("store");
    let bytes = random_bytes(name, 5 * C + 77);
    let server = serve(&dir, "127.0.0.1:0", &store);
    let url = server.url.clone();
    let listen = url.strip_prefix("http://").unwrap().to_owned();

    setup(&url, "cut.bin", bytes.len()).expect(200);
    transfer(&url, "cut.bin", 0, &bytes[..C]).expect(200);
    transfer(&url, "cut.bin", C, &bytes[C..2 * C]).expect(200);
    let (status, _, stderr) = server.signal(signal);
    if signal == "-TERM" {
        assert_eq!(status.code(), Some(0), "{stderr}");
    }
    assert!(store.join("+state.json").is_file(), "no saved state");

    let server = serve(&dir, &listen, &store);
    assert_eq!(
        server.url, url,
        "the new server listens where the old one did"
    );
    // A client that believed it had sent more is told where to go on...
    let answer = transfer(&url, "cut.bin", 3 * C, &bytes[3 * C..4 * C]);
    answer.expect(409);
    assert_eq!(
        answer.json(),
        serde_json::json!({ "expected_offset": 2 * C })
    );
    // ...and one that retries its last acknowledged chunk gets 200 again.
    transfer(&url, "cut.bin", C, &bytes[C..2 * C]).expect(200);
    for start in (2 * C..bytes.len()).step_by(C) {
        let end = (start + C).min(bytes.len());
        transfer(&url, "cut.bin", start, &bytes[start..end]).expect(200);
    }
    let answer = verify(&url, "cut.bin");
    answer.expect(200);
    let receipt = answer.json();
    assert_eq!(receipt["size"], bytes.len(), "{receipt}");
    assert_eq!(receipt["blake3"], blake3_hex(&bytes), "{receipt}");
    let (status, _, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");

    let stored = std::fs::read(store.join(KEY).join("cut.bin")).expect("read the stored file");
    assert_same_bytes("the file in --store", &bytes, &stored);

    // A third process still refuses to overwrite it.
    let server = serve(&dir, &listen, &store);
    let answer = setup(&url, "cut.bin", 1);
    answer.expect(409);
    assert_eq!(answer.json()["error"], "already_exists");
    let (status, _, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn an_upload_cut_by_sigterm_of_the_server_finishes_on_the_restarted_server() {
    resume_after("sigterm_resume", "-TERM");
}

#[test]
fn an_upload_cut_by_sigkill_of_the_server_finishes_on_the_restarted_server() {
    resume_after("sigkill_resume", "-KILL");
}

#[test]
fn a_corrupt_state_file_is_reported_and_the_server_starts_empty() {
    let dir = Dir::new("a_corrupt_state_file_is_reported_and_the_server_starts_empty");
    let store = dir.join("store");
    dir.write(
        "store/+state.json",
        b"{\"version\": 1, \"sessions\": [{\"data",
    );
    let server = serve(&dir, "127.0.0.1:0", &store);
    let url = server.url.clone();
    setup(&url, "new.bin", 3).expect(200);
    transfer(&url, "new.bin", 0, b"abc").expect(200);
    verify(&url, "new.bin").expect(200);
    let (status, _, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning:") && stderr.contains("+state.json"),
        "expected a warning about the state file\n{stderr}"
    );
    assert_eq!(
        std::fs::read(store.join(KEY).join("new.bin")).unwrap(),
        b"abc"
    );
}
