//! The disk-full knob (`MockConfig::disk_full_after`) over real HTTP: payload
//! fits until the limit, across files; the transfer that does not fit is
//! answered 507 with the mock's JSON error and applies nothing; the disk stays
//! full; what needs no new room (an identical retry, an empty file, a verify)
//! still works; sink and offset modes count the same way, and a plain-errors
//! server says 507 in its own way.

mod support;

use idb_mock::{Storage, WriteMode};
use support::{Api, DS, assert_verified, config, data, start};

/// A transfer refused for a full disk: 507 with the mock's JSON error.
#[track_caller]
fn assert_full(answer: &support::Answer) {
    answer.expect(507);
    let body = answer.json();
    assert_eq!(body["error"], "insufficient_storage", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("No space left on device"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_the_limit_get_507_and_apply_nothing() {
    for storage in [Storage::TempDir, Storage::Sink] {
        let server = start(config().storage(storage.clone()).disk_full_after(100)).await;
        let api = Api::new(&server);
        let a = data(60, 1);
        let b = data(60, 2);

        // 60 bytes fit, across two calls of one file.
        api.setup("a.bin", 60).await.expect(200);
        api.transfer("a.bin", 0, &a[..30]).await.expect(200);
        api.transfer("a.bin", 30, &a[30..]).await.expect(200);
        // Another file: 40 of room left, so 30 fit and the next 30 do not.
        api.setup("b.bin", 60).await.expect(200);
        api.transfer("b.bin", 0, &b[..30]).await.expect(200);
        assert_full(&api.transfer("b.bin", 30, &b[30..]).await);
        assert_eq!(server.accepted(DS, "b.bin"), [(0, 30)], "{storage:?}");

        // Full from now on: even a byte that would have fit is refused.
        assert_full(&api.transfer("b.bin", 30, &b[30..31]).await);
        let answer = api.verify("b.bin").await;
        answer.expect(409);
        assert_eq!(answer.json()["received"], 30);

        // What needs no new room goes on: an identical retry of stored bytes,
        // the verify of a complete file, an empty file.
        api.transfer("a.bin", 30, &a[30..]).await.expect(200);
        let answer = api.verify("a.bin").await;
        assert_verified(&server, "a.bin", &answer, &a);
        let answer = api.upload("empty.bin", b"", 10).await;
        assert_verified(&server, "empty.bin", &answer, b"");

        let stats = server.stats();
        assert_eq!(stats.faults.disk_full, 2, "{storage:?}");
        assert_eq!(stats.faults.total(), 2);
        assert_eq!(stats.bytes_accepted, 90);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_does_not_fit_is_refused_whole_in_offset_mode() {
    let server = start(config().mode(WriteMode::Offset).disk_full_after(50)).await;
    let api = Api::new(&server);
    let sent = data(80, 3);
    api.setup("o.bin", 80).await.expect(200);
    api.transfer("o.bin", 40, &sent[40..]).await.expect(200);
    // Overlapping the held piece, this chunk adds 20 new bytes: 10 too many.
    assert_full(&api.transfer("o.bin", 20, &sent[20..60]).await);
    assert_eq!(server.accepted(DS, "o.bin"), [(40, 40)]);
    // A retry of bytes already held needs no room.
    api.transfer("o.bin", 40, &sent[40..]).await.expect(200);
    assert_eq!(server.stats().faults.disk_full, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_errors_server_says_507_as_a_page() {
    let server = start(config().plain_errors(true).disk_full_after(5)).await;
    let api = Api::new(&server);
    api.setup("p.bin", 10).await.expect(200);
    let answer = api.transfer("p.bin", 0, &data(10, 4)).await;
    answer.expect(507);
    assert!(
        answer
            .header("content-type")
            .unwrap_or_default()
            .starts_with("text/html"),
        "{:?}",
        answer.text()
    );
    assert!(!answer.text().contains("insufficient_storage"));
}

/// A streamed chunk that is not kept after all (it runs past the declared
/// size once part of it was written) gives its room back: the disk fills only
/// with bytes the server kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_refused_part_way_gives_its_room_back() {
    const KIB: usize = 1024;
    for storage in [Storage::TempDir, Storage::Sink] {
        let server = start(
            config()
                .storage(storage.clone())
                .disk_full_after(2 * 1024 * KIB as u64),
        )
        .await;
        let api = Api::new(&server);
        // 1.5 MiB declared, 3 MiB sent: refused once past the end, after the
        // first pieces were written.
        api.setup("long.bin", (1536 * KIB) as u64).await.expect(200);
        api.transfer("long.bin", 0, &data(3 * 1024 * KIB, 1))
            .await
            .expect(400);
        // The whole 2 MiB of room is still there.
        let fits = data(2 * 1024 * KIB, 2);
        let answer = api.upload("fits.bin", &fits, 1024 * KIB).await;
        assert_verified(&server, "fits.bin", &answer, &fits);
        assert_eq!(server.stats().faults.disk_full, 0, "{storage:?}");
    }
}
