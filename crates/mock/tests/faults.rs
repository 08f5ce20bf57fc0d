//! Fault injection and the bandwidth cap over real HTTP: each fault kind at rate 1
//! does what it promises (and applies, or does not apply, the call), a reset is a
//! connection closed without any status line (seen with a raw TcpStream), the
//! same seed gives the same faults, the same calls meet the same faults in any
//! order of arrival, and a capped connection is never faster than its rate.
//!
//! Tests switch faults on after setup with `set_fault_rate`, so the call under
//! test is the one that fails.

mod support;

use std::time::{Duration, Instant};

use idb_mock::{FaultConfig, FaultKind, MockConfig, MockError, MockServer, Storage, WriteMode};
use serde_json::json;
use support::{
    Api, DS, HANG, assert_verified, config, data, raw_post, raw_post_with, setup_form, start,
    transfer_form, until, verify_form,
};

/// A config whose faults are all of `kind`, off until the test turns them on.
fn faulty(kind: FaultKind) -> MockConfig {
    config().faults(FaultConfig {
        retry_after: Duration::ZERO,
        ..FaultConfig::new(0.0, [kind])
    })
}

// ---------------------------------------------------------------------------
// 500 and 429: answered, nothing applied
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_fault_applies_nothing() {
    let server = start(faulty(FaultKind::ServerError)).await;
    let api = Api::new(&server);
    server.set_fault_rate(1.0).unwrap();
    let answer = api.setup("a.bin", 10).await;
    answer.expect(500);
    assert_eq!(answer.json()["fault"], "500");
    server.set_fault_rate(0.0).unwrap();
    // The setup did not happen.
    let answer = api.transfer("a.bin", 0, &[1; 10]).await;
    answer.expect(409);
    assert_eq!(answer.json()["error"], "no_session");

    api.setup("a.bin", 10).await.expect(200);
    server.set_fault_rate(1.0).unwrap();
    for form in [transfer_form("a.bin", 0, &[1; 10]), verify_form("a.bin")] {
        api.send(form).await.expect(500);
    }
    server.set_fault_rate(0.0).unwrap();
    let answer = api.verify("a.bin").await;
    answer.expect(409);
    assert_eq!(answer.json(), json!({ "received": 0, "expected": 10 }));
    assert_eq!(server.accepted(DS, "a.bin"), []);
    let stats = server.stats();
    assert_eq!(stats.faults.server_error, 3);
    assert_eq!(stats.faults.total(), 3);
    assert_eq!(stats.bytes_accepted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_fault_says_when_to_retry_and_applies_nothing() {
    for (retry_after, header) in [(Duration::ZERO, "0"), (Duration::from_secs(7), "7")] {
        let server = start(config().faults(FaultConfig {
            retry_after,
            ..FaultConfig::new(0.0, [FaultKind::TooManyRequests])
        }))
        .await;
        let api = Api::new(&server);
        api.setup("b.bin", 3).await.expect(200);
        server.set_fault_rate(1.0).unwrap();
        let answer = api.transfer("b.bin", 0, b"abc").await;
        answer.expect(429);
        assert_eq!(answer.header("retry-after").as_deref(), Some(header));
        server.set_fault_rate(0.0).unwrap();
        assert_eq!(server.accepted(DS, "b.bin"), []);
        assert_eq!(server.stats().bytes_accepted, 0);
        assert_eq!(server.stats().faults.too_many_requests, 1);
        // The retry goes through.
        api.transfer("b.bin", 0, b"abc").await.expect(200);
        let answer = api.verify("b.bin").await;
        assert_verified(&server, "b.bin", &answer, b"abc");
    }
}

// ---------------------------------------------------------------------------
// reset: no answer at all
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_fault_closes_the_connection_without_a_status_line() {
    let server = start(faulty(FaultKind::Reset)).await;
    let setup = b"phase=setup&filename=r.bin&filesize=5";

    // The raw client does see a status line when there is one.
    let healthy = raw_post(&server, b"phase=setup&filename=ok.bin&filesize=5").await;
    assert_eq!(healthy.status(), Some(200), "{healthy:?}");

    server.set_fault_rate(1.0).unwrap();
    let cut = raw_post(&server, setup).await;
    assert!(
        cut.received.is_empty(),
        "a reset fault wrote {:?}",
        String::from_utf8_lossy(&cut.received)
    );
    // A large body is cut off part way, with the same result.
    let big = format!(
        "phase=transfer&filename=ok.bin&previous_size=0&bytechunk={}",
        "x".repeat(4 * 1024 * 1024)
    );
    let cut = raw_post(&server, big.as_bytes()).await;
    assert!(cut.received.is_empty(), "{:?}", cut.ended_by);

    // A client that waits for `100 Continue` before its body gets not even that.
    let cut = raw_post_with(&server, "Expect: 100-continue\r\n", setup).await;
    assert!(
        cut.received.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&cut.received)
    );

    // A client library sees a transport error, not a status.
    let error = Api::new(&server)
        .try_send(setup_form("r.bin", 5))
        .await
        .expect_err("a reset must not produce an answer");
    assert!(error.status().is_none(), "{error}");

    server.set_fault_rate(0.0).unwrap();
    assert_eq!(server.stats().faults.reset, 4);
    // Nothing was applied: r.bin has no session, ok.bin no bytes.
    let api = Api::new(&server);
    let answer = api.transfer("r.bin", 0, b"12345").await;
    answer.expect(409);
    assert_eq!(answer.json()["error"], "no_session");
    assert_eq!(server.accepted(DS, "ok.bin"), []);
    // And the server goes on serving new connections.
    api.transfer("ok.bin", 0, b"12345").await.expect(200);
}

// ---------------------------------------------------------------------------
// stall: applied, answer held back
// ---------------------------------------------------------------------------

fn stalling(stall: Duration) -> MockConfig {
    config().faults(FaultConfig {
        stall,
        ..FaultConfig::new(0.0, [FaultKind::Stall])
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_fault_applies_the_call_then_holds_the_answer() {
    let stall = Duration::from_millis(300);
    let server = start(stalling(stall)).await;
    let api = Api::new(&server);
    api.setup("s.bin", 6).await.expect(200);
    server.set_fault_rate(1.0).unwrap();

    let t = Instant::now();
    let answer = api.transfer("s.bin", 0, b"abc").await;
    let took = t.elapsed();
    answer.expect(200);
    assert!(took >= stall, "a stalled answer came after {took:?}");

    // An impatient client gives up; the call was applied all the same, so its
    // identical retry is a 200 that stores nothing twice.
    let impatient = Api::with_timeout(&server, Duration::from_millis(50));
    let error = impatient
        .try_send(transfer_form("s.bin", 3, b"def"))
        .await
        .expect_err("the answer is held past the client's timeout");
    assert!(error.is_timeout(), "{error}");
    until("the stalled transfer is applied", || {
        server.stats().faults.stall == 2
    })
    .await;
    server.set_fault_rate(0.0).unwrap();
    api.transfer("s.bin", 3, b"def").await.expect(200);
    assert_eq!(server.accepted(DS, "s.bin"), [(0, 3), (3, 3)]);
    assert_eq!(server.stats().bytes_accepted, 6);
    let answer = api.verify("s.bin").await;
    assert_verified(&server, "s.bin", &answer, b"abcdef");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_stalled_answer_go_at_once() {
    // The default stall (30 s) is longer than this test may take.
    let server = start(stalling(idb_mock::DEFAULT_STALL)).await;
    server.set_fault_rate(1.0).unwrap();
    let api = Api::new(&server);
    let in_flight = tokio::spawn(async move { api.setup("h.bin", 1).await });
    until("the setup is stalled", || server.stats().faults.stall == 1).await;

    let t = Instant::now();
    tokio::time::timeout(HANG, server.shutdown())
        .await
        .expect("shutdown returns");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    in_flight.await.expect("the request task").expect(200);
}

// ---------------------------------------------------------------------------
// truncate: half stored, 500; the retry realigns
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncate_fault_stores_half_and_the_strict_retry_gets_409_expected_offset() {
    for storage in [Storage::TempDir, Storage::Sink] {
        let server = start(faulty(FaultKind::Truncate).storage(storage.clone())).await;
        let api = Api::new(&server);
        let sent = data(300, 1);
        api.setup("t.bin", 300).await.expect(200);
        api.transfer("t.bin", 0, &sent[..100]).await.expect(200);
        server.set_fault_rate(1.0).unwrap();

        let answer = api.transfer("t.bin", 100, &sent[100..201]).await;
        answer.expect(500);
        assert_eq!(answer.json()["fault"], "truncate");
        // 101 bytes sent, the first 50 kept. Faults still on: the retry is refused
        // before any payload is read, so the refusal comes through.
        let answer = api.transfer("t.bin", 100, &sent[100..201]).await;
        answer.expect(409);
        assert_eq!(
            answer.json(),
            json!({ "expected_offset": 150 }),
            "{storage:?}"
        );
        assert_eq!(server.accepted(DS, "t.bin"), [(0, 100), (100, 50)]);

        // Setup and verify carry no payload to cut: a plain 500, not applied.
        api.verify("t.bin").await.expect(500);
        server.set_fault_rate(0.0).unwrap();
        api.transfer("t.bin", 150, &sent[150..]).await.expect(200);
        let answer = api.verify("t.bin").await;
        assert_verified(&server, "t.bin", &answer, &sent);
        let faults = server.stats().faults;
        assert_eq!(
            (faults.truncate, faults.server_error),
            (1, 1),
            "{storage:?}"
        );
        assert_eq!(server.stats().bytes_accepted, 300);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncate_fault_in_offset_mode_keeps_half_at_its_offset() {
    for storage in [Storage::TempDir, Storage::Sink] {
        let server = start(
            faulty(FaultKind::Truncate)
                .mode(WriteMode::Offset)
                .storage(storage.clone()),
        )
        .await;
        let api = Api::new(&server);
        let sent = data(200, 2);
        api.setup("o.bin", 200).await.expect(200);
        server.set_fault_rate(1.0).unwrap();
        api.transfer("o.bin", 100, &sent[100..]).await.expect(500);
        server.set_fault_rate(0.0).unwrap();
        assert_eq!(server.accepted(DS, "o.bin"), [(100, 50)]);
        // The retry overlaps the kept half identically and adds the rest.
        api.transfer("o.bin", 100, &sent[100..]).await.expect(200);
        api.transfer("o.bin", 0, &sent[..100]).await.expect(200);
        let answer = api.verify("o.bin").await;
        assert_verified(&server, "o.bin", &answer, &sent);
        assert_eq!(server.stats().bytes_accepted, 200, "{storage:?}");
    }
}

// ---------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------

/// The statuses of 40 setups sent one after another to a fresh server.
async fn statuses(seed: u64) -> (Vec<u16>, idb_mock::Stats) {
    let server = start(config().faults(FaultConfig {
        seed,
        retry_after: Duration::ZERO,
        ..FaultConfig::new(0.5, [FaultKind::ServerError, FaultKind::TooManyRequests])
    }))
    .await;
    let api = Api::new(&server);
    let mut out = Vec::new();
    for i in 0..40 {
        out.push(api.setup(&format!("f{i}.bin"), 1).await.status);
    }
    (out, server.stats())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_gives_the_same_faults() {
    let (a, stats) = statuses(42).await;
    let (b, _) = statuses(42).await;
    let (c, _) = statuses(43).await;
    assert_eq!(a, b, "same seed, same requests, other faults");
    assert_ne!(a, c, "another seed gave the very same 40 faults");
    let count = |s: u16| a.iter().filter(|&&x| x == s).count() as u64;
    assert!(count(200) > 0 && count(500) > 0 && count(429) > 0, "{a:?}");
    assert_eq!(count(200) + count(500) + count(429), 40, "{a:?}");
    assert_eq!(stats.faults.server_error, count(500));
    assert_eq!(stats.faults.too_many_requests, count(429));
}

/// The statuses of one transfer per file, sent to a fresh server concurrently
/// (all at once, arriving in whatever order the scheduler gives), or one after
/// another in `order`.
async fn transfer_statuses(order: &[usize], concurrent: bool) -> Vec<u16> {
    let server = start(config().faults(FaultConfig {
        seed: 42,
        retry_after: Duration::ZERO,
        ..FaultConfig::new(0.0, [FaultKind::ServerError, FaultKind::TooManyRequests])
    }))
    .await;
    let api = Api::new(&server);
    let chunk = data(100, 9);
    for i in 0..order.len() {
        api.setup(&format!("f{i}.bin"), 200).await.expect(200);
    }
    server.set_fault_rate(0.5).unwrap();
    let mut statuses = vec![0; order.len()];
    if concurrent {
        let mut calls = tokio::task::JoinSet::new();
        for &i in order {
            let (api, chunk) = (api.clone(), chunk.clone());
            calls.spawn(async move { (i, api.transfer(&format!("f{i}.bin"), 100, &chunk).await) });
        }
        while let Some(done) = calls.join_next().await {
            let (i, answer) = done.expect("the call's task");
            statuses[i] = answer.status;
        }
    } else {
        for &i in order {
            statuses[i] = api.transfer(&format!("f{i}.bin"), 100, &chunk).await.status;
        }
    }
    statuses
}

/// Faults are drawn from the call (file, phase, offset, attempt), not from the
/// order of arrival: the same transfers sent forward, backward and all at once
/// meet the same faults, file by file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_calls_in_any_order_meet_the_same_faults() {
    let forward: Vec<usize> = (0..24).collect();
    let backward: Vec<usize> = forward.iter().rev().copied().collect();
    let a = transfer_statuses(&forward, false).await;
    assert_eq!(transfer_statuses(&backward, false).await, a);
    assert_eq!(transfer_statuses(&forward, true).await, a);
    // Offset 100 is past what each file holds (0): a call let through is refused
    // with 409; a faulted one gets its fault instead.
    assert!(
        a.contains(&409) && (a.contains(&500) || a.contains(&429)),
        "{a:?}"
    );
}

/// A verify is applied before its stall, so its answer is a 200; the client
/// that gave up sends it again, and that retry must be a new attempt with a
/// fresh draw (had the 200 reset the name's attempts, every retry would meet
/// the first attempt's stall again, for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verify_held_by_a_stall_gets_a_fresh_draw_when_sent_again() {
    let server = start(stalling(Duration::ZERO)).await;
    let api = Api::new(&server);
    let names: Vec<String> = (0..20).map(|i| format!("v{i}.bin")).collect();
    for name in &names {
        api.setup(name, 3).await.expect(200);
        api.transfer(name, 0, b"abc").await.expect(200);
    }
    server.set_fault_rate(0.5).unwrap();
    let mut stalled_first = 0;
    for name in &names {
        let mut sends = 0;
        loop {
            sends += 1;
            assert!(sends <= 40, "{name}: 40 verifies, every one stalled");
            let before = server.stats().faults.stall;
            api.verify(name).await.expect(200);
            if server.stats().faults.stall == before {
                break;
            }
        }
        stalled_first += u32::from(sends > 1);
    }
    assert!(
        stalled_first > 0,
        "no verify was stalled: the test tested nothing"
    );
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_knobs_are_refused_at_start() {
    for rate in [-0.5, 1.5, f64::NAN] {
        let result =
            MockServer::start(config().faults(FaultConfig::new(rate, FaultKind::ALL))).await;
        assert!(
            matches!(result, Err(MockError::FaultRate { .. })),
            "rate {rate} was let through"
        );
    }
    let result = MockServer::start(config().faults(FaultConfig::new(0.5, []))).await;
    assert!(matches!(result, Err(MockError::NoFaultKinds)));
    let result = MockServer::start(config().bandwidth(Some(0))).await;
    assert!(matches!(result, Err(MockError::ZeroBandwidth)));

    let server = start(config()).await;
    assert!(matches!(
        server.set_fault_rate(2.0),
        Err(MockError::FaultRate { .. })
    ));
}

// ---------------------------------------------------------------------------
// Bandwidth
// ---------------------------------------------------------------------------

/// A body of B bytes over a new connection capped at R bytes/s takes at least
/// B/R (a lower bound only: the test holds on any machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_connection_receives_no_faster_than_its_rate() {
    let rate = 256 * 1024;
    let server = start(config().bandwidth(Some(rate))).await;
    let api = Api::new(&server);
    api.setup("slow.bin", 192 * 1024).await.expect(200);
    let sent = data(192 * 1024, 3);

    // A fresh client, so a fresh connection that has saved up nothing.
    let fresh = Api::new(&server);
    let t = Instant::now();
    fresh.transfer("slow.bin", 0, &sent).await.expect(200);
    let took = t.elapsed();

    let least = Duration::from_secs_f64(sent.len() as f64 / rate as f64);
    assert!(
        took >= least,
        "{} bytes took {took:?}, less than {least:?}",
        sent.len()
    );
    let answer = api.verify("slow.bin").await;
    assert_verified(&server, "slow.bin", &answer, &sent);
}
