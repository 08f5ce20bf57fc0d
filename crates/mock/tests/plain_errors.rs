//! `plain_errors`, the model of a server that speaks less than the mock: every
//! error is a small HTML page giving only the status (no JSON, no offsets), and
//! a retried identical chunk is refused like any offset mismatch. Successes and
//! the protocol's state machine are unchanged.

mod support;

use idb_mock::{FaultConfig, FaultKind, MockConfig, Storage, WriteMode};
use reqwest::multipart::Form;
use support::{Answer, Api, DS, TOKEN, assert_verified, config, data, raw_post, start, urlencode};

/// Chunk size of these tests.
const C: usize = 4096;

fn plain() -> MockConfig {
    config().plain_errors(true)
}

/// Asserts `answer` has `status` and is an HTML page that says only it.
#[track_caller]
fn assert_html_error(answer: &Answer, status: u16) {
    answer.expect(status);
    let content_type = answer.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let body = answer.text();
    assert!(body.starts_with("<!DOCTYPE html>"), "{body}");
    assert!(body.contains(&status.to_string()), "{body}");
    for field in ["{", "expected_offset", "received", "expected", "error"] {
        assert!(!body.contains(field), "{field:?} in {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_of_every_phase_is_an_html_page() {
    let server = start(plain().max_chunk(C as u64)).await;
    let api = Api::new(&server);
    let sent = data(3 * C, 1);
    let name = "f.bin";

    // No session yet: a transfer and a verify.
    assert_html_error(&api.transfer(name, 0, &sent[..C]).await, 409);
    assert_html_error(&api.verify(name).await, 409);
    api.setup(name, sent.len() as u64).await.expect(200);
    api.transfer(name, 0, &sent[..C]).await.expect(200);
    // An offset ahead, and behind with other bytes.
    assert_html_error(&api.transfer(name, 2 * C as u64, &sent[..C]).await, 409);
    assert_html_error(&api.transfer(name, 0, &sent[C..2 * C]).await, 409);
    // Verify too early.
    assert_html_error(&api.verify(name).await, 409);
    // Past the end, over the chunk limit, a bad name, a bad size.
    assert_html_error(&api.transfer(name, 3 * C as u64 - 1, &sent[..2]).await, 400);
    assert_html_error(&api.transfer(name, C as u64, &data(C + 1, 2)).await, 413);
    assert_html_error(&api.setup("a/b", 1).await, 400);
    assert_html_error(&api.send(support::setup_form_text("g", "-1")).await, 400);
    assert_html_error(
        &api.raw(Some("text/plain"), b"phase=setup".to_vec()).await,
        415,
    );
    // Wrong token, unknown dataset.
    let unauthorized = Api::with_auth(&server, DS, Some("Token token=not-it"))
        .setup("g", 1)
        .await;
    assert_html_error(&unauthorized, 401);
    assert!(unauthorized.header("www-authenticate").is_some());
    assert_html_error(
        &Api::for_dataset(&server, "IDB-404", TOKEN)
            .setup("g", 1)
            .await,
        404,
    );

    // The upload itself goes on as usual, and its successes are the mock's.
    for offset in (C..3 * C).step_by(C) {
        api.transfer(name, offset as u64, &sent[offset..offset + C])
            .await
            .expect(200);
    }
    assert_verified(&server, name, &api.verify(name).await, &sent);
    // A verified name.
    assert_html_error(&api.setup(name, 1).await, 409);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_500_and_429_are_html_pages_and_429_keeps_retry_after() {
    for (kind, status) in [
        (FaultKind::ServerError, 500),
        (FaultKind::TooManyRequests, 429),
    ] {
        let server = start(plain().faults(FaultConfig::new(1.0, [kind]))).await;
        let answer = Api::new(&server).setup("f.bin", 1).await;
        assert_html_error(&answer, status);
        if status == 429 {
            assert!(answer.header("retry-after").is_some());
        }
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_identical_chunk_is_refused_like_any_offset_mismatch() {
    for storage in [Storage::TempDir, Storage::Sink] {
        let server = start(plain().storage(storage.clone())).await;
        let api = Api::new(&server);
        let sent = data(2 * C, 3);
        api.setup("r.bin", sent.len() as u64).await.expect(200);
        api.transfer("r.bin", 0, &sent[..C]).await.expect(200);
        // The acknowledgement was lost, say, and the client sends it again.
        assert_html_error(&api.transfer("r.bin", 0, &sent[..C]).await, 409);
        assert_eq!(
            server.accepted(DS, "r.bin"),
            vec![(0, C as u64)],
            "{storage:?}"
        );
        api.transfer("r.bin", C as u64, &sent[C..])
            .await
            .expect(200);
        let answer = api.verify("r.bin").await;
        answer.expect(200);
        assert_eq!(answer.json()["blake3"], support::blake3_hex(&sent));
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_mode_still_takes_a_repeated_chunk_at_its_offset() {
    // A server that writes each chunk at its offset simply writes it again.
    let server = start(plain().mode(WriteMode::Offset)).await;
    let api = Api::new(&server);
    let sent = data(2 * C, 4);
    api.setup("o.bin", sent.len() as u64).await.expect(200);
    api.transfer("o.bin", 0, &sent[..C]).await.expect(200);
    api.transfer("o.bin", 0, &sent[..C]).await.expect(200);
    // Overlapping bytes that differ are still an error, as a page.
    assert_html_error(&api.transfer("o.bin", 0, &data(C, 5)).await, 409);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_wire_an_offset_mismatch_is_a_409_html_page() {
    let server = start(plain()).await;
    let api = Api::new(&server);
    api.setup("w.bin", 10).await.expect(200);
    let body = urlencode(&[
        ("phase", "transfer"),
        ("filename", "w.bin"),
        ("previous_size", "5"),
        ("bytechunk", "abcde"),
    ]);
    let exchange = raw_post(&server, body.as_bytes()).await;
    let text = String::from_utf8_lossy(&exchange.received).to_string();
    assert_eq!(exchange.status(), Some(409), "{text}");
    let (head, page) = text.split_once("\r\n\r\n").expect("a head and a body");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    assert!(
        !page.contains("expected_offset") && !page.contains('{'),
        "{page}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_knob_errors_stay_json() {
    let server = start(config()).await;
    let answer = Api::new(&server)
        .send(
            Form::new()
                .text("phase", "verify")
                .text("filename", "none.bin"),
        )
        .await;
    answer.expect(409);
    assert_eq!(answer.json()["error"], "no_session");
    server.shutdown().await;
}
