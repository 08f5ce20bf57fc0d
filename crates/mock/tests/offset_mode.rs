//! Offset mode over real HTTP: chunks in any order and concurrently, verify only
//! when the chunks cover the file exactly, overlaps allowed only when identical,
//! the `idb-write-mode` header on setup; and the accepted-offset log that proves
//! strict mode stays in order. Every scenario runs in store and sink mode.

mod support;

use idb_mock::{Storage, WriteMode};
use idb_wire::{WRITE_MODE_HEADER, WRITE_MODE_OFFSET};
use serde_json::json;
use support::{Api, DS, assert_verified, blake3_hex, config, data, start};

/// Both storages: the bytes go to a directory (compared there) or nowhere
/// (compared by what is held, or by hash).
const STORAGES: [Storage; 2] = [Storage::TempDir, Storage::Sink];

async fn offset_server(storage: Storage) -> idb_mock::MockServer {
    start(config().mode(WriteMode::Offset).storage(storage)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_carries_the_write_mode_header_only_in_offset_mode() {
    let strict = start(config()).await;
    let answer = Api::new(&strict).setup("a.bin", 10).await;
    answer.expect(200);
    assert_eq!(
        answer.header(WRITE_MODE_HEADER),
        None,
        "strict mode said offset"
    );

    let offset = offset_server(Storage::TempDir).await;
    let api = Api::new(&offset);
    let answer = api.setup("a.bin", 10).await;
    answer.expect(200);
    assert_eq!(
        answer.header(WRITE_MODE_HEADER).as_deref(),
        Some(WRITE_MODE_OFFSET)
    );
    // It is a property of setup answers; transfers and verify do not repeat it.
    let answer = api.transfer("a.bin", 0, &[1; 10]).await;
    answer.expect(200);
    assert_eq!(answer.header(WRITE_MODE_HEADER), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_chunks_verify_with_the_blake3_of_the_whole_file() {
    for storage in STORAGES {
        let server = offset_server(storage.clone()).await;
        let api = Api::new(&server);
        let sent = data(10 * 1000 + 7, 1);
        let chunk = 1000;
        api.setup("shuffled.bin", sent.len() as u64)
            .await
            .expect(200);
        // Last first, then the odd chunks, then the even ones (0 last but one).
        let count = sent.len().div_ceil(chunk);
        let mut order: Vec<usize> = vec![count - 1];
        order.extend((1..count - 1).step_by(2));
        order.extend((2..count - 1).step_by(2));
        order.push(0);
        for (i, &k) in order.iter().enumerate() {
            let start = k * chunk;
            let end = (start + chunk).min(sent.len());
            api.transfer("shuffled.bin", start as u64, &sent[start..end])
                .await
                .expect(200);
            if i + 1 < order.len() {
                // Nothing verifies before the last piece is in.
                let early = api.verify("shuffled.bin").await;
                early.expect(409);
            }
        }
        let answer = api.verify("shuffled.bin").await;
        assert_verified(&server, "shuffled.bin", &answer, &sent);
        let stats = server.stats();
        assert_eq!(stats.bytes_accepted, sent.len() as u64, "{storage:?}");
        assert_eq!(stats.chunks_accepted, count as u64, "{storage:?}");
        // The log is in the order accepted.
        let logged: Vec<u64> = server
            .accepted(DS, "shuffled.bin")
            .iter()
            .map(|&(offset, _)| offset)
            .collect();
        let expected: Vec<u64> = order.iter().map(|&k| (k * chunk) as u64).collect();
        assert_eq!(logged, expected, "{storage:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_chunks_verify_with_the_blake3_of_the_whole_file() {
    for storage in STORAGES {
        let server = offset_server(storage.clone()).await;
        let api = Api::new(&server);
        let sent = data(32 * 64 * 1024 + 3, 2);
        let chunk = 64 * 1024;
        api.setup("parallel.bin", sent.len() as u64)
            .await
            .expect(200);
        let mut tasks = tokio::task::JoinSet::new();
        for (k, piece) in sent.chunks(chunk).enumerate() {
            let api = api.clone();
            let piece = piece.to_vec();
            tasks.spawn(async move {
                api.transfer("parallel.bin", (k * chunk) as u64, &piece)
                    .await
                    .status
            });
        }
        while let Some(status) = tasks.join_next().await {
            assert_eq!(status.expect("a transfer task"), 200, "{storage:?}");
        }
        let answer = api.verify("parallel.bin").await;
        assert_verified(&server, "parallel.bin", &answer, &sent);
        assert_eq!(server.stats().bytes_accepted, sent.len() as u64);
        let mut logged = server.accepted(DS, "parallel.bin");
        logged.sort_unstable();
        let expected: Vec<(u64, u64)> = sent
            .chunks(chunk)
            .enumerate()
            .map(|(k, p)| ((k * chunk) as u64, p.len() as u64))
            .collect();
        assert_eq!(logged, expected, "{storage:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_leaves_verify_at_409_with_the_contiguous_prefix() {
    for storage in STORAGES {
        let server = offset_server(storage.clone()).await;
        let api = Api::new(&server);
        let sent = data(300, 3);
        api.setup("gap.bin", 300).await.expect(200);
        // Nothing at 0 yet: the prefix is empty whatever arrived later.
        api.transfer("gap.bin", 200, &sent[200..]).await.expect(200);
        let answer = api.verify("gap.bin").await;
        answer.expect(409);
        assert_eq!(answer.json(), json!({ "received": 0, "expected": 300 }));

        api.transfer("gap.bin", 0, &sent[..100]).await.expect(200);
        let answer = api.verify("gap.bin").await;
        answer.expect(409);
        assert_eq!(answer.json(), json!({ "received": 100, "expected": 300 }));
        assert!(server.receipt(DS, "gap.bin").is_none());

        // Filling the gap completes the file.
        api.transfer("gap.bin", 100, &sent[100..200])
            .await
            .expect(200);
        let answer = api.verify("gap.bin").await;
        assert_verified(&server, "gap.bin", &answer, &sent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_different_bytes_are_409_overlap() {
    for storage in STORAGES {
        let server = offset_server(storage.clone()).await;
        let api = Api::new(&server);
        let sent = data(400, 4);
        let mut other = sent.clone();
        other[150] ^= 0xff;
        other[350] ^= 0xff;
        api.setup("clash.bin", 400).await.expect(200);
        api.transfer("clash.bin", 0, &sent[..200]).await.expect(200); // hashed
        api.transfer("clash.bin", 300, &sent[300..])
            .await
            .expect(200); // held
        let before = server.stats();

        // Over hashed bytes (the whole piece, so a sink can compare by hash), and
        // straddling held bytes.
        for (start, end) in [(0, 200), (250, 400)] {
            let answer = api
                .transfer("clash.bin", start, &other[start as usize..end])
                .await;
            answer.expect(409);
            assert_eq!(
                answer.json()["error"],
                "overlap",
                "{storage:?} {start}..{end}"
            );
        }
        assert_eq!(server.stats().bytes_accepted, before.bytes_accepted);
        assert_eq!(server.accepted(DS, "clash.bin").len(), 2);

        // The refused chunks left no trace: the right bytes complete the file.
        api.transfer("clash.bin", 200, &sent[200..300])
            .await
            .expect(200);
        let answer = api.verify("clash.bin").await;
        assert_verified(&server, "clash.bin", &answer, &sent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_identical_bytes_are_200_and_counted_once() {
    for storage in STORAGES {
        let server = offset_server(storage.clone()).await;
        let api = Api::new(&server);
        let sent = data(500, 5);
        api.setup("same.bin", 500).await.expect(200);
        api.transfer("same.bin", 100, &sent[100..200])
            .await
            .expect(200);
        // Straddles the held piece on both sides: 100 new bytes.
        api.transfer("same.bin", 50, &sent[50..250])
            .await
            .expect(200);
        assert_eq!(server.stats().bytes_accepted, 200, "{storage:?}");
        // An exact retry of held bytes, and one inside them: nothing new, not logged.
        api.transfer("same.bin", 100, &sent[100..200])
            .await
            .expect(200);
        api.transfer("same.bin", 120, &sent[120..130])
            .await
            .expect(200);
        assert_eq!(server.stats().bytes_accepted, 200, "{storage:?}");
        // The prefix reaches them: [0, 250) is hashed now.
        api.transfer("same.bin", 0, &sent[..50]).await.expect(200);
        // A retry of already hashed pieces, whole: compared by hash in a sink.
        api.transfer("same.bin", 0, &sent[..250]).await.expect(200);
        api.transfer("same.bin", 100, &sent[100..200])
            .await
            .expect(200);
        assert_eq!(server.stats().bytes_accepted, 250, "{storage:?}");
        assert_eq!(
            server.accepted(DS, "same.bin"),
            [(100, 100), (50, 200), (0, 50)],
            "{storage:?}"
        );

        api.transfer("same.bin", 250, &sent[250..])
            .await
            .expect(200);
        let answer = api.verify("same.bin").await;
        assert_verified(&server, "same.bin", &answer, &sent);
        assert_eq!(server.stats().bytes_accepted, 500);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_compares_any_overlap_and_a_sink_refuses_part_of_a_hashed_piece() {
    let sent = data(300, 6);
    // Store: any part of a stored piece is compared with the file.
    let server = offset_server(Storage::TempDir).await;
    let api = Api::new(&server);
    api.setup("part.bin", 300).await.expect(200);
    api.transfer("part.bin", 0, &sent[..200]).await.expect(200);
    api.transfer("part.bin", 50, &sent[50..100])
        .await
        .expect(200);
    api.transfer("part.bin", 150, &sent[150..300])
        .await
        .expect(200);
    let answer = api.verify("part.bin").await;
    assert_verified(&server, "part.bin", &answer, &sent);

    // Sink: hashed bytes are gone; part of a hashed piece cannot be compared, and
    // is refused rather than trusted.
    let server = offset_server(Storage::Sink).await;
    let api = Api::new(&server);
    api.setup("part.bin", 300).await.expect(200);
    api.transfer("part.bin", 0, &sent[..200]).await.expect(200);
    let answer = api.transfer("part.bin", 50, &sent[50..100]).await;
    answer.expect(409);
    assert_eq!(answer.json()["error"], "overlap");
    api.transfer("part.bin", 200, &sent[200..])
        .await
        .expect(200);
    let answer = api.verify("part.bin").await;
    assert_verified(&server, "part.bin", &answer, &sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_past_the_declared_size_is_400_in_offset_mode() {
    let server = offset_server(Storage::TempDir).await;
    let api = Api::new(&server);
    let sent = data(101, 7);
    api.setup("end.bin", 100).await.expect(200);
    api.transfer("end.bin", 50, &sent[50..]).await.expect(400);
    api.transfer("end.bin", 100, &sent[100..]).await.expect(400);
    assert_eq!(server.stats().bytes_accepted, 0);
    api.transfer("end.bin", 50, &sent[50..100])
        .await
        .expect(200);
    api.transfer("end.bin", 0, &sent[..50]).await.expect(200);
    let answer = api.verify("end.bin").await;
    assert_verified(&server, "end.bin", &answer, &sent[..100]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_setup_resets_an_offset_session_and_its_log() {
    let server = offset_server(Storage::Sink).await;
    let api = Api::new(&server);
    let first = data(100, 8);
    let second = data(60, 9);
    api.setup("again.bin", 100).await.expect(200);
    api.transfer("again.bin", 50, &first[50..])
        .await
        .expect(200);
    assert_eq!(server.accepted(DS, "again.bin"), [(50, 50)]);

    api.setup("again.bin", 60).await.expect(200);
    assert_eq!(server.accepted(DS, "again.bin"), []);
    api.transfer("again.bin", 0, &second).await.expect(200);
    let answer = api.verify("again.bin").await;
    assert_verified(&server, "again.bin", &answer, &second);
    assert_eq!(answer.json()["blake3"], blake3_hex(&second));
}

/// The accepted log in strict mode: offsets strictly increasing, each chunk
/// starting where the previous one ended, from 0 to the size; identical retries
/// and refused chunks are not in it. Kept after verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_accepts_offsets_in_order_without_gaps() {
    for storage in STORAGES {
        let server = start(config().storage(storage.clone())).await;
        let api = Api::new(&server);
        let sent = data(1000, 10);
        api.setup("strict.bin", 1000).await.expect(200);
        let mut offset = 0;
        for (k, piece) in sent.chunks(300).enumerate() {
            api.transfer("strict.bin", offset, piece).await.expect(200);
            // An identical retry of the chunk just sent, and a chunk ahead.
            api.transfer("strict.bin", offset, piece).await.expect(200);
            if k == 0 {
                api.transfer("strict.bin", 600, &sent[600..900])
                    .await
                    .expect(409);
            }
            offset += piece.len() as u64;
        }
        let answer = api.verify("strict.bin").await;
        assert_verified(&server, "strict.bin", &answer, &sent);

        let log = server.accepted(DS, "strict.bin");
        assert_eq!(
            log,
            [(0, 300), (300, 300), (600, 300), (900, 100)],
            "{storage:?}"
        );
        let mut next = 0;
        for (offset, len) in log {
            assert_eq!(offset, next, "a gap or a repeat before {offset}");
            assert!(len > 0);
            next = offset + len;
        }
        assert_eq!(next, 1000);
    }
    // A file never set up has no log.
    let server = start(config()).await;
    assert_eq!(server.accepted(DS, "none.bin"), []);
}
