//! Counters a test can steer by: `wait_for_chunks` resolves on the n-th accepted
//! chunk and not before (shown with `now_or_never`, no sleeps), and
//! `bytes_received` counts every payload byte that arrived, refused ones too, and
//! `first_payload_at`/`last_payload_at` say when the first and newest came.

mod support;

use std::pin::pin;

use futures_util::FutureExt;
use idb_mock::{FaultConfig, FaultKind};
use support::{Api, DS, HANG, config, data, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_chunks_resolves_on_the_nth_accepted_chunk_and_not_before() {
    let server = start(config()).await;
    let api = Api::new(&server);
    server
        .wait_for_chunks(0)
        .now_or_never()
        .expect("zero chunks are there already");
    // The pinned wait borrows the server: it lives in this block.
    {
        let mut third = pin!(server.wait_for_chunks(3));
        assert!(third.as_mut().now_or_never().is_none());

        let bytes = data(40, 1);
        api.setup("w.bin", 40).await.expect(200);
        api.transfer("w.bin", 0, &bytes[..10]).await.expect(200);
        api.transfer("w.bin", 10, &bytes[10..20]).await.expect(200);
        // Calls that accept nothing do not count: a gap, an identical retry.
        api.transfer("w.bin", 30, &bytes[30..]).await.expect(409);
        api.transfer("w.bin", 10, &bytes[10..20]).await.expect(200);
        assert_eq!(server.stats().chunks_accepted, 2);
        assert!(third.as_mut().now_or_never().is_none());

        // A waiter already pending is woken by the third chunk.
        let waiter = {
            let api = api.clone();
            let bytes = bytes.clone();
            async move {
                api.transfer("w.bin", 20, &bytes[20..30]).await.expect(200);
            }
        };
        let ((), ()) = tokio::time::timeout(HANG, async { tokio::join!(third, waiter) })
            .await
            .expect("the wait ends after the third chunk");
    }
    assert_eq!(server.stats().chunks_accepted, 3);
    server
        .wait_for_chunks(3)
        .now_or_never()
        .expect("three chunks are there already");
    assert!(server.wait_for_chunks(4).now_or_never().is_none());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_received_counts_refused_payloads_too() {
    let server = start(config().max_chunk(1000).faults(FaultConfig {
        retry_after: std::time::Duration::ZERO,
        ..FaultConfig::new(0.0, [FaultKind::ServerError])
    }))
    .await;
    let api = Api::new(&server);
    let bytes = data(1000, 2);
    api.setup("r.bin", 1000).await.expect(200);
    api.transfer("r.bin", 0, &bytes[..100]).await.expect(200);
    // Refused: a wrong offset (409), past the end (400), over the limit (413),
    // a wrong token (401), an unknown dataset (404), an injected 500.
    api.transfer("r.bin", 500, &bytes[500..700])
        .await
        .expect(409);
    api.transfer("r.bin", 100, &[0; 950]).await.expect(400);
    api.transfer("r.bin", 100, &[0; 1500]).await.expect(413);
    Api::for_dataset(&server, DS, "tok-wrong")
        .transfer("r.bin", 100, &[0; 30])
        .await
        .expect(401);
    Api::for_dataset(&server, "IDB-404", "tok-1")
        .transfer("r.bin", 100, &[0; 40])
        .await
        .expect(404);
    server.set_fault_rate(1.0).unwrap();
    api.transfer("r.bin", 100, &bytes[100..150])
        .await
        .expect(500);
    server.set_fault_rate(0.0).unwrap();
    // An identical retry arrives again, and is received again.
    api.transfer("r.bin", 0, &bytes[..100]).await.expect(200);

    let stats = server.stats();
    assert_eq!(stats.bytes_accepted, 100);
    assert_eq!(
        stats.bytes_received,
        100 + 200 + 950 + 1500 + 30 + 40 + 50 + 100,
        "{stats:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_arrival_instants_bracket_the_transfer_bytes() {
    let server = start(config()).await;
    let api = Api::new(&server);
    let bytes = data(300, 3);
    api.setup("t.bin", 300).await.expect(200);
    let stats = server.stats();
    assert_eq!(
        (stats.first_payload_at, stats.last_payload_at),
        (None, None),
        "setup carries no payload"
    );

    let started = std::time::Instant::now();
    api.transfer("t.bin", 0, &bytes[..100]).await.expect(200);
    let one = server.stats();
    let first = one.first_payload_at.expect("the first payload is stamped");
    // One request's payload may come in several frames, stamped one by one.
    let first_last = one.last_payload_at.expect("stamped");
    assert!(first_last >= first, "{one:?}");

    api.transfer("t.bin", 100, &bytes[100..]).await.expect(200);
    let elapsed = started.elapsed();
    let two = server.stats();
    let last = two.last_payload_at.expect("stamped");
    assert_eq!(two.first_payload_at, Some(first), "the first stays");
    // The second chunk came after the first, and both within the client's view
    // of the two calls.
    assert!(last > first_last, "{two:?}");
    assert!(last - first <= elapsed, "{two:?} within {elapsed:?}");
    server.shutdown().await;
}
