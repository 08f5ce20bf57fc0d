//! Strict transfers whose payload streams into the session as it arrives: a
//! body that does not come whole changes nothing (the hash and the staged file
//! are put back), a half-sent chunk holds up only its own name, fields after
//! the payload cannot change the call, and a sink recognises a retry of its
//! last chunk without holding it.

mod support;

use idb_mock::{MockServer, Storage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{AUTH, Api, DS, HANG, assert_verified_in, config, data, start, until};

const BOUNDARY: &str = "streaming-test-boundary";

/// A multipart body of `before` text fields, the payload, `after` text fields.
fn body_of(before: &[(&str, &str)], chunk: &[u8], after: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    let text = |body: &mut Vec<u8>, fields: &[(&str, &str)]| {
        for (field, value) in fields {
            body.extend_from_slice(
                format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n\
                     {value}\r\n"
                )
                .as_bytes(),
            );
        }
    };
    text(&mut body, before);
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"bytechunk\"; \
             filename=\"bytechunk\"\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(chunk);
    body.extend_from_slice(b"\r\n");
    text(&mut body, after);
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// A transfer body in the engine's field order (the offset before the bytes),
/// with `after` as extra text fields after the payload.
fn transfer_body(name: &str, offset: u64, chunk: &[u8], after: &[(&str, &str)]) -> Vec<u8> {
    let offset = offset.to_string();
    let before = [
        ("filename", name),
        ("phase", "transfer"),
        ("previous_size", &offset),
    ];
    body_of(&before, chunk, after)
}

fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// A raw connection that has sent the head of a transfer and the first `sent`
/// bytes of its `body`.
async fn half_sent(server: &MockServer, body: &[u8], sent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    let head = format!(
        "POST /api/dataset/{DS}/datafile HTTP/1.1\r\nHost: {}\r\nAuthorization: {AUTH}\r\n\
         Content-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        server.addr(),
        multipart_type(),
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .expect("send the head");
    stream
        .write_all(&body[..sent])
        .await
        .expect("send the start");
    stream
}

/// Waits until the server has received at least `payload` payload bytes.
async fn until_received(server: &MockServer, payload: u64) {
    until("the payload's start arrived", || {
        server.stats().bytes_received >= payload
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_cut_off_mid_payload_leaves_the_session_as_it_was() {
    for storage in [Storage::Sink, Storage::TempDir] {
        let server = start(config().storage(storage.clone())).await;
        let api = Api::new(&server);
        let sent = data(3 << 20, 21);
        let (first, second) = sent.split_at(1 << 20);
        api.setup("cut.bin", sent.len() as u64).await.expect(200);
        api.transfer("cut.bin", 0, first).await.expect(200);

        // Half of the second chunk arrives (streamed, written and hashed), then
        // the connection goes.
        let body = transfer_body("cut.bin", first.len() as u64, second, &[]);
        let stream = half_sent(&server, &body, body.len() / 2).await;
        until_received(&server, first.len() as u64 + (1 << 19)).await;
        drop(stream);

        // The same chunk whole is taken at the same offset, and the file is
        // exactly what was sent: nothing of the cut chunk stayed.
        api.transfer("cut.bin", first.len() as u64, second)
            .await
            .expect(200);
        assert_eq!(server.stats().bytes_accepted, sent.len() as u64);
        let answer = api.verify("cut.bin").await;
        assert_verified_in(&server, DS, "cut.bin", &answer, &sent);
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_chunk_holds_up_only_its_own_name() {
    let server = start(config()).await;
    let api = Api::new(&server);
    let slow = data(2 << 20, 22);
    let quick = data(1 << 20, 23);
    api.setup("slow.bin", slow.len() as u64).await.expect(200);
    api.setup("quick.bin", quick.len() as u64).await.expect(200);

    let body = transfer_body("slow.bin", 0, &slow, &[]);
    let mut stream = half_sent(&server, &body, body.len() / 2).await;
    until_received(&server, 1 << 19).await;

    // Another name goes through from start to end meanwhile.
    let answer = api.upload("quick.bin", &quick, 256 * 1024).await;
    assert_verified_in(&server, DS, "quick.bin", &answer, &quick);

    // The rest of the slow body: its chunk is taken.
    stream
        .write_all(&body[body.len() / 2..])
        .await
        .expect("send the rest");
    let mut answer = Vec::new();
    tokio::time::timeout(HANG, stream.read_to_end(&mut answer))
        .await
        .expect("an answer")
        .expect("read the answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let verified = api.verify("slow.bin").await;
    assert_verified_in(&server, DS, "slow.bin", &verified, &slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_after_a_streamed_payload_cannot_change_the_call() {
    let server = start(config()).await;
    let api = Api::new(&server);
    let sent = data(1000, 24);
    api.setup("late.bin", 1000).await.expect(200);

    // An offset after the payload that differs from the one before it.
    let body = transfer_body("late.bin", 0, &sent[..500], &[("previous_size", "500")]);
    let answer = api.raw(Some(&multipart_type()), body).await;
    answer.expect(400);
    assert!(
        answer.text().contains("send the payload last"),
        "{}",
        answer.text()
    );
    assert_eq!(server.stats().bytes_accepted, 0);

    // Fields after the payload that repeat the call change nothing.
    let body = transfer_body("late.bin", 0, &sent[..500], &[("phase", "transfer")]);
    api.raw(Some(&multipart_type()), body).await.expect(200);
    api.transfer("late.bin", 500, &sent[500..])
        .await
        .expect(200);
    let answer = api.verify("late.bin").await;
    assert_verified_in(&server, DS, "late.bin", &answer, &sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_before_its_fields_is_held_and_applied() {
    let server = start(config()).await;
    let api = Api::new(&server);
    let sent = data(1000, 25);
    api.setup("first.bin", 1000).await.expect(200);
    let after = [
        ("phase", "transfer"),
        ("filename", "first.bin"),
        ("previous_size", "0"),
    ];
    let body = body_of(&[], &sent, &after);
    api.raw(Some(&multipart_type()), body).await.expect(200);
    let answer = api.verify("first.bin").await;
    assert_verified_in(&server, DS, "first.bin", &answer, &sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_recognises_a_retry_of_its_last_chunk_by_its_hash() {
    let server = start(config().storage(Storage::Sink)).await;
    let api = Api::new(&server);
    let sent = data(3000, 26);
    api.setup("again.bin", 3000).await.expect(200);
    api.transfer("again.bin", 0, &sent[..1000])
        .await
        .expect(200);
    api.transfer("again.bin", 1000, &sent[1000..2000])
        .await
        .expect(200);

    // The last chunk again: 200, nothing counted twice.
    let answer = api.transfer("again.bin", 1000, &sent[1000..2000]).await;
    answer.expect(200);
    assert_eq!(answer.json()["received"], 2000);
    assert_eq!(server.stats().bytes_accepted, 2000);
    // The last chunk with one byte changed, or cut short: not a retry.
    let mut changed = sent[1000..2000].to_vec();
    changed[999] ^= 1;
    let answer = api.transfer("again.bin", 1000, &changed).await;
    answer.expect(409);
    assert_eq!(answer.json()["expected_offset"], 2000);
    api.transfer("again.bin", 1000, &sent[1000..1999])
        .await
        .expect(409);
    // An earlier chunk: a sink holds nothing to compare it with.
    api.transfer("again.bin", 0, &sent[..1000])
        .await
        .expect(409);

    api.transfer("again.bin", 2000, &sent[2000..])
        .await
        .expect(200);
    let answer = api.verify("again.bin").await;
    assert_verified_in(&server, DS, "again.bin", &answer, &sent);
}
