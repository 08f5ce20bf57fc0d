//! Protocol 1 against the mock over real HTTP (127.0.0.1, reqwest and curl), checked
//! against the "Mock contract" of PROTOCOL.md: the happy path in both encodings,
//! the service's sample-client wire form, authentication, refusals, malformed
//! bodies, and the latency, sink and shutdown knobs.
//!
//! Tests match status codes and JSON fields; prose is checked only where the
//! service's documented answer is the prose (`Bad credentials`, `Dataset Not Found`).

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use idb_mock::{MockConfig, Storage};
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use reqwest::multipart::Form;
use serde_json::json;
use support::{
    AUTH, Answer, Api, DS, HANG, URLENCODED, assert_verified_in, config, data, raw_post,
    setup_form, setup_form_text, start, until, urlencode, verify_form,
};

/// The sample client's chunk size.
const SAMPLE_CHUNK: usize = 2_097_152;
/// 2 TiB, the largest declared size.
const MAX_SIZE: u64 = 2_199_023_255_552;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A multipart body written byte by byte: text fields in order, then an optional
/// file part `(field, filename, bytes)` without a part `Content-Type`, as Python
/// `requests` (the sample client) writes it; `close` adds the closing boundary.
fn raw_multipart(
    boundary: &str,
    fields: &[(&str, &[u8])],
    file: Option<(&str, &str, &[u8])>,
    close: bool,
) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    if let Some((name, filename, bytes)) = file {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; \
                 filename=\"{filename}\"\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    if close {
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    }
    body
}

// ---------------------------------------------------------------------------
// 1. Happy path, multipart for all three phases
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_in_several_chunks_is_stored_and_verified() {
    let server = start(config()).await;
    let api = Api::new(&server);
    let sent = data(1024 * 1024 + 77, 1);
    let chunk = 256 * 1024;

    let answer = api.upload("data.bin", &sent, chunk).await;

    assert_verified_in(&server, DS, "data.bin", &answer, &sent);
    assert!(
        server.stored_file(DS, "data.bin").is_some(),
        "TempDir storage keeps the file"
    );
    let stats = server.stats();
    assert_eq!(stats.chunks_accepted, sent.len().div_ceil(chunk) as u64);
    assert_eq!(stats.bytes_accepted, sent.len() as u64);
    assert_eq!(stats.files_verified, 1);
    assert_eq!(stats.requests, 2 + sent.len().div_ceil(chunk) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urlencoded_is_accepted_for_every_phase() {
    let server = start(config()).await;
    let api = Api::new(&server);
    // Arbitrary bytes (NUL, '%', '&', '+', high bytes) survive %XX encoding.
    let sent: Vec<u8> = (0..=255u8).chain(b"&=+% \r\n".iter().copied()).collect();
    let size = sent.len().to_string();
    api.urlencoded(&[
        ("phase", "setup"),
        ("filename", "u.bin"),
        ("filesize", &size),
    ])
    .await
    .expect(200);
    // `urlencode` takes &str; build this body by hand to carry raw bytes.
    let mut body = String::from("phase=transfer&filename=u.bin&previous_size=0&bytechunk=");
    for b in &sent {
        body.push_str(&format!("%{b:02X}"));
    }
    api.raw(Some(URLENCODED), body.into_bytes())
        .await
        .expect(200);
    let answer = api
        .urlencoded(&[("phase", "verify"), ("filename", "u.bin")])
        .await;
    assert_verified_in(&server, DS, "u.bin", &answer, &sent);
}

// ---------------------------------------------------------------------------
// 2. The service's sample client, on the wire
// ---------------------------------------------------------------------------

/// The sample client's transfer: `filename`, `phase`, `previous_size` as text
/// fields in that order, then `bytechunk` as a file part named `bytechunk`.
fn sample_transfer(boundary: &str, name: &str, previous_size: u64, chunk: &[u8]) -> Vec<u8> {
    let previous = previous_size.to_string();
    raw_multipart(
        boundary,
        &[
            ("filename", name.as_bytes()),
            ("phase", b"transfer"),
            ("previous_size", previous.as_bytes()),
        ],
        Some(("bytechunk", "bytechunk", chunk)),
        true,
    )
}

/// Uploads like the sample client: urlencoded setup and verify, hand-written
/// multipart transfers of 2 MiB, one request after another. `verify_extra` is
/// appended to the verify fields.
async fn sample_client_upload(
    api: &Api,
    name: &str,
    sent: &[u8],
    verify_extra: &[(&str, &str)],
) -> Answer {
    // A boundary like the one `requests` makes (uuid4 hex).
    let boundary = "4f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let size = sent.len().to_string();
    api.urlencoded(&[("phase", "setup"), ("filename", name), ("filesize", &size)])
        .await
        .expect(200);
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let mut offset = 0u64;
    for chunk in sent.chunks(SAMPLE_CHUNK) {
        let body = sample_transfer(boundary, name, offset, chunk);
        api.raw(Some(&content_type), body).await.expect(200);
        offset += chunk.len() as u64;
    }
    let mut fields = vec![("phase", "verify"), ("filename", name)];
    fields.extend_from_slice(verify_extra);
    api.urlencoded(&fields).await
}

/// 5 MiB + 123 bytes whose first chunk carries near-boundary sequences.
fn sample_data() -> Vec<u8> {
    let mut sent = data(5 * 1024 * 1024 + 123, 2);
    let tricky = b"\r\n--4f1e2d3c4b5a69788796a5b4c3d2e1f\r\n--\r\n\r\n--4f1e2d3c";
    sent[1000..1000 + tricky.len()].copy_from_slice(tricky);
    // And one right at the end of a chunk, where a parser splits its buffer.
    let at = SAMPLE_CHUNK - 10;
    sent[at..at + tricky.len()].copy_from_slice(tricky);
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_client_wire_form_is_accepted() {
    let server = start(config()).await;
    let api = Api::new(&server);
    let sent = sample_data();
    // A space in the name: `+` in the urlencoded calls, raw in the multipart ones.
    let name = "sample data.bin";

    let answer = sample_client_upload(&api, name, &sent, &[]).await;

    assert_verified_in(&server, DS, name, &answer, &sent);
    assert_eq!(server.stats().chunks_accepted, 3);
    assert_eq!(server.stats().bytes_accepted, sent.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_sample_client_checksum_field_on_verify_is_ignored() {
    let server = start(config()).await;
    let api = Api::new(&server);
    let sent = sample_data();

    let answer =
        sample_client_upload(&api, "old.bin", &sent, &[("checksum", "not implemented")]).await;
    assert_verified_in(&server, DS, "old.bin", &answer, &sent);

    // The even older MD5 value is ignored as well, in a multipart verify too.
    let small = data(10, 3);
    api.setup("md5.bin", 10).await.expect(200);
    api.transfer("md5.bin", 0, &small).await.expect(200);
    let answer = api
        .send(verify_form("md5.bin").text("checksum", "d41d8cd98f00b204e9800998ecf8427e"))
        .await;
    assert_verified_in(&server, DS, "md5.bin", &answer, &small);
}

/// Runs curl with `args` against `url`; returns (status, body).
async fn curl(url: &str, args: Vec<String>) -> (u16, String) {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let output = Command::new("curl")
            .args([
                "-sS",
                "--noproxy",
                "*",
                "--max-time",
                "60",
                "-o",
                "-",
                "-w",
                "%{http_code}",
            ])
            .args(["-H", &format!("Authorization: {AUTH}")])
            .args(&args)
            .arg(&url)
            .output()
            .expect("run curl");
        assert!(
            output.status.success(),
            "curl failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let out = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, code) = out.split_at(out.len() - 3);
        (
            code.parse().expect("curl printed the status code"),
            body.to_owned(),
        )
    })
    .await
    .expect("the curl task")
}

fn curl_found() -> bool {
    Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_sample_client_upload() {
    if !curl_found() {
        eprintln!("skipping: curl not found");
        return;
    }
    let server = start(config()).await;
    let url = format!("{}/api/dataset/{DS}/datafile", server.url());
    let sent = sample_data();
    let name = "curl sample.bin";
    let dir = tempfile::tempdir().expect("a temp dir for the chunks");
    let s = |v: &str| v.to_owned();

    let (status, body) = curl(
        &url,
        vec![
            s("-d"),
            s("phase=setup"),
            s("--data-urlencode"),
            format!("filename={name}"),
            s("-d"),
            format!("filesize={}", sent.len()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let mut offset = 0u64;
    for (i, chunk) in sent.chunks(SAMPLE_CHUNK).enumerate() {
        let path = dir.path().join(format!("chunk{i}"));
        std::fs::write(&path, chunk).expect("write a chunk file");
        // curl sends `Expect: 100-continue` for bodies this large.
        let (status, body) = curl(
            &url,
            vec![
                s("-F"),
                format!("filename={name}"),
                s("-F"),
                s("phase=transfer"),
                s("-F"),
                format!("previous_size={offset}"),
                s("-F"),
                format!("bytechunk=@{};filename=bytechunk", path.display()),
            ],
        )
        .await;
        assert_eq!(status, 200, "chunk {i}: {body}");
        offset += chunk.len() as u64;
    }

    let (status, body) = curl(
        &url,
        vec![
            s("-d"),
            s("phase=verify"),
            s("--data-urlencode"),
            format!("filename={name}"),
            s("--data-urlencode"),
            s("checksum=not implemented"),
        ],
    )
    .await;
    let answer = Answer {
        status,
        headers: HeaderMap::new(),
        body: body.into_bytes(),
    };
    assert_verified_in(&server, DS, name, &answer, &sent);
}

// ---------------------------------------------------------------------------
// 3. Authentication
// ---------------------------------------------------------------------------

#[track_caller]
fn assert_unauthorized(answer: &Answer) {
    answer.expect(401);
    let challenge = answer
        .headers
        .get(WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap_or("<not text>"));
    assert_eq!(challenge, Some("Token realm=\"Application\""));
    assert_eq!(answer.text(), "Bad credentials");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_authorization_is_401_with_challenge() {
    let server = start(config()).await;
    let anonymous = Api::with_auth(&server, DS, None);
    assert_unauthorized(&anonymous.setup("a.bin", 1).await);

    // Every phase asks for the token, not only setup.
    let api = Api::new(&server);
    api.setup("a.bin", 1).await.expect(200);
    assert_unauthorized(&anonymous.transfer("a.bin", 0, b"x").await);
    api.transfer("a.bin", 0, b"x").await.expect(200);
    assert_unauthorized(&anonymous.verify("a.bin").await);
    assert!(
        server.receipt(DS, "a.bin").is_none(),
        "an unauthorised verify completed the file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_malformed_token_is_401() {
    let server = start(config()).await;
    for auth in [
        "Token token=tok-2",
        "Token token=",
        "Token token=tok-1x",
        "Basic dG9rLTE6",
        "tok-1",
        "Bearer",
    ] {
        let answer = Api::with_auth(&server, DS, Some(auth))
            .setup("a.bin", 1)
            .await;
        assert_eq!(answer.status, 401, "{auth:?} was let in");
        assert_unauthorized(&answer);
    }
    assert_eq!(server.stats().chunks_accepted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_of_another_dataset_is_401() {
    let server = start(
        MockConfig::new()
            .dataset("IDB-A", "tok-a")
            .dataset("IDB-B", "tok-b"),
    )
    .await;
    assert_unauthorized(
        &Api::with_auth(&server, "IDB-B", Some("Token token=tok-a"))
            .setup("a.bin", 1)
            .await,
    );
    assert_unauthorized(
        &Api::with_auth(&server, "IDB-A", Some("Token token=tok-b"))
            .setup("a.bin", 1)
            .await,
    );
    // Each token works on its own dataset.
    Api::with_auth(&server, "IDB-A", Some("Token token=tok-a"))
        .setup("a.bin", 1)
        .await
        .expect(200);
    Api::with_auth(&server, "IDB-B", Some("Token token=tok-b"))
        .setup("a.bin", 1)
        .await
        .expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_and_quoted_token_forms_are_accepted() {
    let server = start(config()).await;
    for (i, auth) in ["Bearer tok-1", "Token token=\"tok-1\"", "Token token=tok-1"]
        .into_iter()
        .enumerate()
    {
        let api = Api::with_auth(&server, DS, Some(auth));
        let name = format!("f{i}.bin");
        let sent = data(100, i as u64);
        let answer = api.upload(&name, &sent, 40).await;
        assert_verified_in(&server, DS, &name, &answer, &sent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_401() {
    let server = start(config().token_ttl(Duration::ZERO)).await;
    let api = Api::new(&server);
    assert_unauthorized(&api.setup("a.bin", 1).await);
    assert_unauthorized(&api.verify("a.bin").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorised_large_transfer_still_gets_its_401() {
    // The answer comes before the body is read; the client must still see it.
    let server = start(config()).await;
    let chunk = data(3 * 1024 * 1024, 4);
    let answer = Api::with_auth(&server, DS, Some("Token token=nope"))
        .transfer("a.bin", 0, &chunk)
        .await;
    assert_unauthorized(&answer);
    // And the same client (connection) keeps working.
    let api = Api::new(&server);
    api.setup("a.bin", 1).await.expect(200);
}

// ---------------------------------------------------------------------------
// 4. Datasets that take no uploads
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_dataset_is_404_even_with_a_right_token() {
    let server = start(config()).await;
    for auth in [Some(AUTH), None] {
        let answer = Api::with_auth(&server, "IDB-404", auth)
            .setup("a.bin", 1)
            .await;
        answer.expect(404);
        assert_eq!(answer.text(), "Dataset Not Found");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_dataset_is_404_even_with_its_token() {
    let server = start(config().published_dataset("IDB-P", "tok-p")).await;
    let api = Api::with_auth(&server, "IDB-P", Some("Token token=tok-p"));
    for answer in [
        api.setup("a.bin", 1).await,
        api.transfer("a.bin", 0, b"x").await,
        api.verify("a.bin").await,
    ] {
        answer.expect(404);
        assert_eq!(answer.text(), "Dataset Not Found");
    }
    // `publish` on an existing draft does the same.
    let server = start(config().publish(DS)).await;
    let answer = Api::new(&server).setup("a.bin", 1).await;
    answer.expect(404);
    assert_eq!(answer.text(), "Dataset Not Found");
}

// ---------------------------------------------------------------------------
// 5. Refusals
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_with_a_gap_is_409_with_expected_offset() {
    let server = start(config()).await;
    let api = Api::new(&server);
    let sent = data(300, 5);
    api.setup("gap.bin", 300).await.expect(200);
    let answer = api.transfer("gap.bin", 5, &sent[5..100]).await;
    answer.expect(409);
    assert_eq!(answer.json()["expected_offset"], json!(0));

    api.transfer("gap.bin", 0, &sent[..100]).await.expect(200);
    let answer = api.transfer("gap.bin", 200, &sent[200..]).await;
    answer.expect(409);
    assert_eq!(answer.json()["expected_offset"], json!(100));

    // Nothing of the refused chunks was kept: the upload goes on from 100.
    api.transfer("gap.bin", 100, &sent[100..]).await.expect(200);
    let answer = api.verify("gap.bin").await;
    assert_verified_in(&server, DS, "gap.bin", &answer, &sent);
    assert_eq!(server.stats().bytes_accepted, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_transfer_with_other_bytes_is_409_with_expected_offset() {
    let server = start(config()).await;
    let api = Api::new(&server);
    let sent = data(300, 6);
    let other = data(300, 7);
    api.setup("overlap.bin", 300).await.expect(200);
    api.transfer("overlap.bin", 0, &sent[..100])
        .await
        .expect(200);
    api.transfer("overlap.bin", 100, &sent[100..200])
        .await
        .expect(200);

    // Same offset as the last chunk, other bytes; an offset inside it; and the
    // first chunk's offset.
    for (at, len) in [(100, 100), (150, 100), (0, 100), (0, 200)] {
        let answer = api
            .transfer("overlap.bin", at, &other[at as usize..at as usize + len])
            .await;
        answer.expect(409);
        assert_eq!(
            answer.json()["expected_offset"],
            json!(200),
            "overlap at {at}+{len}"
        );
    }
    api.transfer("overlap.bin", 200, &sent[200..])
        .await
        .expect(200);
    let answer = api.verify("overlap.bin").await;
    assert_verified_in(&server, DS, "overlap.bin", &answer, &sent);
    assert_eq!(server.stats().bytes_accepted, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_past_the_declared_size_is_400() {
    let server = start(config()).await;
    let api = Api::new(&server);
    let sent = data(101, 8);
    api.setup("end.bin", 100).await.expect(200);
    api.transfer("end.bin", 0, &sent).await.expect(400);
    api.transfer("end.bin", 0, &sent[..60]).await.expect(200);
    api.transfer("end.bin", 60, &sent[60..]).await.expect(400);
    // The refused bytes were not kept.
    assert_eq!(server.stats().bytes_accepted, 60);
    api.transfer("end.bin", 60, &sent[60..100])
        .await
        .expect(200);
    let answer = api.verify("end.bin").await;
    assert_verified_in(&server, DS, "end.bin", &answer, &sent[..100]);
    // Even one byte after a complete file is past the end.
    api.setup("zero.bin", 0).await.expect(200);
    api.transfer("zero.bin", 0, b"x").await.expect(400);
}

/// PROTOCOL.md's mock contract: a name with a control character (U+0001 to
/// U+001F, U+007F) is refused with 400 in every phase, sent over raw HTTP as a
/// client that skips its own check would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_names_with_control_characters_are_400_in_every_phase() {
    let server = start(config()).await;
    for name in [
        "a\u{1}b",
        "line\nbreak",
        "tab\tname",
        "esc\u{1b}[31m",
        "del\u{7f}",
        "\u{1f}",
    ] {
        let phases: [&[(&str, &str)]; 3] = [
            &[("phase", "setup"), ("filename", name), ("filesize", "1")],
            &[
                ("phase", "transfer"),
                ("filename", name),
                ("previous_size", "0"),
                ("bytechunk", "x"),
            ],
            &[("phase", "verify"), ("filename", name)],
        ];
        for pairs in phases {
            let exchange = raw_post(&server, urlencode(pairs).as_bytes()).await;
            let text = String::from_utf8_lossy(&exchange.received);
            assert_eq!(exchange.status(), Some(400), "{pairs:?}: {text}");
            assert!(text.contains("control character"), "{pairs:?}: {text}");
        }
    }
    // Nothing was staged for any of them.
    assert_eq!(server.stats().chunks_accepted, 0);
    let store = server.store_dir().expect("TempDir storage has a directory");
    assert_eq!(
        std::fs::read_dir(store).unwrap().count(),
        0,
        "the store is not empty"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_filenames_are_400_on_setup() {
    let server = start(config()).await;
    let api = Api::new(&server);
    for name in ["", "a/b", "/abs", "dir/", "../x", "..", ".", "a\\b", "a\0b"] {
        let answer = api.setup(name, 1).await;
        assert_eq!(answer.status, 400, "filename {name:?}: {}", answer.text());
        // The same names urlencoded.
        let answer = api
            .urlencoded(&[("phase", "setup"), ("filename", name), ("filesize", "1")])
            .await;
        assert_eq!(
            answer.status,
            400,
            "urlencoded filename {name:?}: {}",
            answer.text()
        );
    }
    // No filename field at all.
    let answer = api
        .send(Form::new().text("phase", "setup").text("filesize", "1"))
        .await;
    answer.expect(400);
    // Nothing was written outside the dataset's directory.
    let store = server.store_dir().expect("TempDir storage has a directory");
    let outside: Vec<_> = std::fs::read_dir(store)
        .expect("list the store")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n != DS)
        .collect();
    assert!(
        outside.is_empty(),
        "files outside the dataset directory: {outside:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_filesizes_are_400() {
    let server = start(config()).await;
    let api = Api::new(&server);
    let over = (MAX_SIZE + 1).to_string();
    for size in [
        over.as_str(),
        "99999999999999999999999",
        "abc",
        "-1",
        "1.5",
        "",
        " 5",
        "5 ",
        "0x10",
        "1e3",
    ] {
        let answer = api.send(setup_form_text("s.bin", size)).await;
        assert_eq!(answer.status, 400, "filesize {size:?}: {}", answer.text());
    }
    // Missing filesize.
    api.send(Form::new().text("phase", "setup").text("filename", "s.bin"))
        .await
        .expect(400);
    // None of them opened a session.
    let answer = api.transfer("s.bin", 0, b"x").await;
    answer.expect(409);
    assert_eq!(answer.json()["error"], json!("no_session"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filesize_of_exactly_2_tib_is_accepted() {
    let server = start(config()).await;
    let api = Api::new(&server);
    api.setup("huge.bin", MAX_SIZE).await.expect(200);
    api.transfer("huge.bin", 0, b"first bytes")
        .await
        .expect(200);
    let answer = api.verify("huge.bin").await;
    answer.expect(409);
    assert_eq!(answer.json()["received"], json!(11));
    assert_eq!(answer.json()["expected"], json!(MAX_SIZE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_over_max_chunk_is_413_and_the_server_keeps_working() {
    let server = start(config().max_chunk(1024)).await;
    let api = Api::new(&server);
    let sent = data(2048, 9);
    api.setup("big.bin", 2048).await.expect(200);

    // Just over the limit, and far over it: the client reads a 413 either way,
    // not a reset connection.
    api.transfer("big.bin", 0, &sent[..1025]).await.expect(413);
    let large = data(4 * 1024 * 1024, 10);
    api.transfer("big.bin", 0, &large).await.expect(413);
    api.raw(
        Some(URLENCODED),
        format!(
            "phase=transfer&filename=big.bin&previous_size=0&bytechunk={}",
            "A".repeat(8 * 1024)
        )
        .into_bytes(),
    )
    .await
    .expect(413);
    assert_eq!(server.stats().bytes_accepted, 0);

    // Same client, then a fresh client on a new connection: the server goes on,
    // and the session is unharmed.
    api.transfer("big.bin", 0, &sent[..1024]).await.expect(200);
    let fresh = Api::new(&server);
    fresh
        .transfer("big.bin", 1024, &sent[1024..])
        .await
        .expect(200);
    let answer = fresh.verify("big.bin").await;
    assert_verified_in(&server, DS, "big.bin", &answer, &sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_before_the_last_byte_is_409_with_counts() {
    let server = start(config()).await;
    let api = Api::new(&server);
    let sent = data(100, 11);
    api.setup("early.bin", 100).await.expect(200);
    let answer = api.verify("early.bin").await;
    answer.expect(409);
    assert_eq!(answer.json()["received"], json!(0));
    assert_eq!(answer.json()["expected"], json!(100));

    api.transfer("early.bin", 0, &sent[..99]).await.expect(200);
    let answer = api.verify("early.bin").await;
    answer.expect(409);
    assert_eq!(answer.json()["received"], json!(99));
    assert_eq!(answer.json()["expected"], json!(100));
    assert!(server.receipt(DS, "early.bin").is_none());

    // The early verify did not close the session.
    api.transfer("early.bin", 99, &sent[99..]).await.expect(200);
    let answer = api.verify("early.bin").await;
    assert_verified_in(&server, DS, "early.bin", &answer, &sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_and_verify_without_setup_are_409_no_session() {
    let server = start(config()).await;
    let api = Api::new(&server);
    for answer in [
        api.transfer("none.bin", 0, b"abc").await,
        api.verify("none.bin").await,
    ] {
        answer.expect(409);
        assert_eq!(answer.json()["error"], json!("no_session"));
    }
    // A session is per (dataset, name): another name's setup does not open this one.
    api.setup("other.bin", 3).await.expect(200);
    let answer = api.transfer("none.bin", 0, b"abc").await;
    answer.expect(409);
    assert_eq!(answer.json()["error"], json!("no_session"));
    // After verify the session is closed: more bytes get no_session too.
    api.transfer("other.bin", 0, b"abc").await.expect(200);
    api.verify("other.bin").await.expect(200);
    let answer = api.transfer("other.bin", 3, b"d").await;
    answer.expect(409);
    assert_eq!(answer.json()["error"], json!("no_session"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_of_a_verified_name_is_409_and_nothing_is_overwritten() {
    let server = start(config()).await;
    let api = Api::new(&server);
    let sent = data(50, 12);
    let answer = api.upload("done.bin", &sent, 20).await;
    assert_verified_in(&server, DS, "done.bin", &answer, &sent);

    for size in [50, 10, 0] {
        let answer = api.setup("done.bin", size).await;
        answer.expect(409);
        assert_ne!(answer.json()["error"], json!("no_session"));
    }
    let answer = api
        .urlencoded(&[
            ("phase", "setup"),
            ("filename", "done.bin"),
            ("filesize", "5"),
        ])
        .await;
    answer.expect(409);
    // The file and its receipt are as verified.
    assert_verified_in(
        &server,
        DS,
        "done.bin",
        &api.verify("done.bin").await,
        &sent,
    );
    // The same name in another dataset is another file.
    let server2 = start(config().dataset("IDB-2", "tok-2")).await;
    let a = Api::new(&server2);
    let b = Api::with_auth(&server2, "IDB-2", Some("Token token=tok-2"));
    let answer = a.upload("same.bin", &sent, 50).await;
    assert_verified_in(&server2, DS, "same.bin", &answer, &sent);
    let answer = b.upload("same.bin", &sent[..7], 50).await;
    assert_verified_in(&server2, "IDB-2", "same.bin", &answer, &sent[..7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_retry_of_the_last_chunk_is_200_and_not_double_counted() {
    let server = start(config()).await;
    let api = Api::new(&server);
    let sent = data(300, 13);
    api.setup("retry.bin", 300).await.expect(200);
    api.transfer("retry.bin", 0, &sent[..100]).await.expect(200);
    api.transfer("retry.bin", 100, &sent[100..200])
        .await
        .expect(200);
    let before = server.stats();

    // The 200 of the last chunk "was lost": the client sends it again, twice.
    api.transfer("retry.bin", 100, &sent[100..200])
        .await
        .expect(200);
    api.transfer("retry.bin", 100, &sent[100..200])
        .await
        .expect(200);
    let after = server.stats();
    assert_eq!(
        after.bytes_accepted, before.bytes_accepted,
        "a retried chunk was counted again"
    );
    assert_eq!(after.bytes_accepted, 200);
    assert_eq!(after.chunks_accepted, before.chunks_accepted);

    // The upload goes on from 200, and the file holds each byte once.
    api.transfer("retry.bin", 200, &sent[200..])
        .await
        .expect(200);
    // Retrying the final chunk after it completed the file is fine too.
    api.transfer("retry.bin", 200, &sent[200..])
        .await
        .expect(200);
    let answer = api.verify("retry.bin").await;
    assert_verified_in(&server, DS, "retry.bin", &answer, &sent);
    assert_eq!(server.stats().bytes_accepted, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resending_an_earlier_identical_chunk_does_not_corrupt_the_file() {
    // The contract answers a chunk identical to the one stored at that offset with
    // 200; in store mode that holds for any earlier chunk. Nothing is stored twice.
    let server = start(config()).await;
    let api = Api::new(&server);
    let sent = data(300, 14);
    api.setup("again.bin", 300).await.expect(200);
    api.transfer("again.bin", 0, &sent[..100]).await.expect(200);
    api.transfer("again.bin", 100, &sent[100..200])
        .await
        .expect(200);
    api.transfer("again.bin", 0, &sent[..100]).await.expect(200);
    // A resend that is not identical, or straddles the end, is a conflict.
    let answer = api.transfer("again.bin", 0, &sent[1..101]).await;
    answer.expect(409);
    assert_eq!(answer.json()["expected_offset"], json!(200));
    let answer = api.transfer("again.bin", 150, &sent[150..250]).await;
    answer.expect(409);
    assert_eq!(answer.json()["expected_offset"], json!(200));
    assert_eq!(server.stats().bytes_accepted, 200);
    api.transfer("again.bin", 200, &sent[200..])
        .await
        .expect(200);
    let answer = api.verify("again.bin").await;
    assert_verified_in(&server, DS, "again.bin", &answer, &sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_setup_on_an_open_session_resets_it() {
    let server = start(config()).await;
    let api = Api::new(&server);
    let first = data(100, 15);
    let second = data(80, 16);
    api.setup("reset.bin", 100).await.expect(200);
    api.transfer("reset.bin", 0, &first[..50]).await.expect(200);

    api.setup("reset.bin", 80).await.expect(200);
    // The 50 bytes sent before the reset no longer count.
    let answer = api.transfer("reset.bin", 50, &first[50..80]).await;
    answer.expect(409);
    assert_eq!(answer.json()["expected_offset"], json!(0));
    let answer = api.transfer("reset.bin", 0, &second[..30]).await;
    answer.expect(200);
    let answer = api.verify("reset.bin").await;
    answer.expect(409);
    assert_eq!(answer.json()["received"], json!(30));
    assert_eq!(answer.json()["expected"], json!(80));
    api.transfer("reset.bin", 30, &second[30..])
        .await
        .expect(200);
    let answer = api.verify("reset.bin").await;
    assert_verified_in(&server, DS, "reset.bin", &answer, &second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_file_verifies_with_the_blake3_of_empty_input() {
    let server = start(config()).await;
    let api = Api::new(&server);
    api.setup("empty.bin", 0).await.expect(200);
    let answer = api.verify("empty.bin").await;
    assert_verified_in(&server, DS, "empty.bin", &answer, b"");
    assert_eq!(
        answer.json()["blake3"],
        json!("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262")
    );
    let stored = server
        .stored_file(DS, "empty.bin")
        .expect("an empty file is stored");
    assert_eq!(
        std::fs::metadata(stored)
            .expect("stat the stored file")
            .len(),
        0
    );
}

/// Regression: the staging directory once lived at `<store>/<dataset>/.incoming`,
/// so a file of that (valid) name could not be verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filename_dot_incoming_can_be_uploaded() {
    let server = start(config()).await;
    let api = Api::new(&server);
    let sent = data(10, 17);
    let answer = api.upload(".incoming", &sent, 10).await;
    assert_verified_in(&server, DS, ".incoming", &answer, &sent);
}

// ---------------------------------------------------------------------------
// 6. Malformed bodies
// ---------------------------------------------------------------------------

const BOUNDARY: &str = "test-boundary-1234";

fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_without_closing_boundary_is_400() {
    let server = start(config()).await;
    let api = Api::new(&server);
    api.setup("cut.bin", 10).await.expect(200);
    let body = raw_multipart(
        BOUNDARY,
        &[
            ("phase", b"transfer"),
            ("filename", b"cut.bin"),
            ("previous_size", b"0"),
        ],
        Some(("bytechunk", "bytechunk", b"0123456789")),
        false,
    );
    api.raw(Some(&multipart_type()), body).await.expect(400);
    // A body cut inside the chunk is refused as well.
    let mut body = raw_multipart(
        BOUNDARY,
        &[
            ("phase", b"transfer"),
            ("filename", b"cut.bin"),
            ("previous_size", b"0"),
        ],
        Some(("bytechunk", "bytechunk", b"0123456789")),
        true,
    );
    body.truncate(body.len() - 30);
    api.raw(Some(&multipart_type()), body).await.expect(400);
    assert_eq!(
        server.stats().bytes_accepted,
        0,
        "bytes of a broken body were stored"
    );
    // A multipart type without a boundary, and a body that is not multipart.
    api.raw(Some("multipart/form-data"), b"phase=setup".to_vec())
        .await
        .expect(400);
    api.raw(
        Some(&multipart_type()),
        b"phase=setup&filename=a&filesize=1".to_vec(),
    )
    .await
    .expect(400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_phase_is_400() {
    let server = start(config()).await;
    let api = Api::new(&server);
    api.send(Form::new().text("filename", "a.bin").text("filesize", "1"))
        .await
        .expect(400);
    api.urlencoded(&[("filename", "a.bin"), ("filesize", "1")])
        .await
        .expect(400);
    // Empty bodies carry no phase either.
    api.raw(Some(URLENCODED), Vec::new()).await.expect(400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_phase_is_400() {
    let server = start(config()).await;
    let api = Api::new(&server);
    for phase in ["upload", "SETUP", "", "setup "] {
        let answer = api
            .send(setup_form("a.bin", 1).text("phase", phase.to_owned()))
            .await;
        assert_eq!(answer.status, 400, "phase {phase:?}: {}", answer.text());
    }
    api.urlencoded(&[("phase", "finish"), ("filename", "a.bin")])
        .await
        .expect(400);
    // A transfer without its bytechunk is malformed too.
    api.setup("a.bin", 1).await.expect(200);
    let form = Form::new()
        .text("phase", "transfer")
        .text("filename", "a.bin")
        .text("previous_size", "0");
    api.send(form).await.expect(400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urlencoded_escape_is_400() {
    let server = start(config()).await;
    let api = Api::new(&server);
    for body in [
        "phase=setup&filename=a%2&filesize=1",
        "phase=setup&filename=a%zz&filesize=1",
    ] {
        let answer = api.raw(Some(URLENCODED), body.as_bytes().to_vec()).await;
        assert_eq!(answer.status, 400, "{body:?}: {}", answer.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_content_type_is_415() {
    let server = start(config()).await;
    let api = Api::new(&server);
    let body = b"phase=setup&filename=a.bin&filesize=1".to_vec();
    api.raw(Some("text/plain"), body.clone()).await.expect(415);
    api.raw(Some("application/json"), br#"{"phase":"setup"}"#.to_vec())
        .await
        .expect(415);
    api.raw(None, body).await.expect(415);
}

// ---------------------------------------------------------------------------
// 7. Latency
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_knob_holds_every_answer_back() {
    let latency = Duration::from_millis(200);
    let server = start(config().latency(latency)).await;
    let api = Api::new(&server);
    let anonymous = Api::with_auth(&server, DS, None);

    let t = Instant::now();
    api.setup("slow.bin", 3).await.expect(200);
    let setup = t.elapsed();
    let t = Instant::now();
    api.transfer("slow.bin", 0, b"abc").await.expect(200);
    let transfer = t.elapsed();
    let t = Instant::now();
    anonymous.verify("slow.bin").await.expect(401);
    let refused = t.elapsed();

    for (what, took) in [("setup", setup), ("transfer", transfer), ("a 401", refused)] {
        assert!(
            took >= latency,
            "{what} took {took:?}, less than {latency:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// 8. Sink storage
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_storage_hashes_but_keeps_no_file() {
    let server = start(config().storage(Storage::Sink)).await;
    assert!(server.store_dir().is_none());
    let api = Api::new(&server);
    let sent = data(700_001, 18);
    let answer = api.upload("sink.bin", &sent, 100_000).await;
    assert_verified_in(&server, DS, "sink.bin", &answer, &sent);
    assert!(server.stored_file(DS, "sink.bin").is_none());
    assert_eq!(server.stats().bytes_accepted, sent.len() as u64);
    // The protocol's refusals still apply in sink mode.
    api.setup("sink.bin", 1).await.expect(409);
    api.setup("s2.bin", 10).await.expect(200);
    let answer = api.transfer("s2.bin", 3, b"abc").await;
    answer.expect(409);
    assert_eq!(answer.json()["expected_offset"], json!(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_storage_puts_files_under_the_dataset() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let root = dir.path().join("store");
    let server = start(config().storage(Storage::Dir(root.clone()))).await;
    let api = Api::new(&server);
    let sent = data(1000, 19);
    let answer = api.upload("dir.bin", &sent, 300).await;
    assert_verified_in(&server, DS, "dir.bin", &answer, &sent);
    assert_eq!(
        std::fs::read(root.join(DS).join("dir.bin")).expect("read the stored file"),
        sent
    );
}

// ---------------------------------------------------------------------------
// 9. Shutdown
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_and_later_connects_fail() {
    let server = start(config()).await;
    let addr: SocketAddr = server.addr();
    let api = Api::new(&server);
    // Leave an idle keep-alive connection in the client's pool.
    api.setup("a.bin", 1).await.expect(200);

    tokio::time::timeout(HANG, server.shutdown())
        .await
        .expect("shutdown returns");

    let connect = tokio::net::TcpStream::connect(addr).await;
    assert!(connect.is_err(), "a connect after shutdown succeeded");
    let error = api.post().multipart(setup_form("b.bin", 1)).send().await;
    assert!(
        error.is_err(),
        "a request after shutdown got an answer: {:?}",
        error.map(|r| r.status())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_request_in_flight_finish() {
    let server = start(config().latency(Duration::from_millis(300))).await;
    let api = Api::new(&server);
    let in_flight = tokio::spawn(async move { api.setup("a.bin", 1).await });
    // The mock counts a request before holding its answer back by the latency:
    // wait (without sleeping) until this one is being held.
    until("the request reaches the mock", || {
        server.stats().requests > 0
    })
    .await;

    tokio::time::timeout(HANG, server.shutdown())
        .await
        .expect("shutdown returns");
    let answer = in_flight.await.expect("the request task");
    answer.expect(200);
}

/// An empty chunk whose offset is past the declared size is past the end: 400,
/// as a chunk with bytes in it would be (not a 409 naming the offset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_chunk_past_the_declared_size_is_a_400() {
    let server = support::start(support::config()).await;
    let api = support::Api::new(&server);
    api.setup("short.bin", 10).await.expect(200);
    api.transfer("short.bin", 11, b"").await.expect(400);
    server.shutdown().await;
}
