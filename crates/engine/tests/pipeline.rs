//! The transfer pipeline against a real mock with faults, in both write modes:
//! byte-exact results, ordered offsets, bounded memory, 413 / Retry-After / 409 /
//! 401 handling. Fault schedules are seeded, so a failure replays.

mod support;

use std::sync::Mutex;
use std::time::Duration;

use idb_engine::{Error, Event, FileOutcome, NoEvents, Token};
use idb_mock::{FaultConfig, FaultKind, MockConfig, MockServer, Storage, WriteMode};
use proptest::prelude::*;

use support::{
    DS, READS, Read, TOKEN, assert_exact, assert_strictly_ordered, config, name, paths, runtime,
    upload, write_files,
};

fn mock(mode: WriteMode, faults: FaultConfig) -> MockConfig {
    support::mock(mode).faults(faults)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Random files under a random seeded fault schedule, in both modes, with
    /// the mock's JSON errors or plain ones (web pages naming no offset): every
    /// file arrives byte-exact; in strict mode, in order with no gap. (Plain
    /// errors leave out `truncate`: a server that keeps half a chunk and will
    /// not say so can only be answered by starting over, which a high fault
    /// rate turns into too many restarts.)
    #[test]
    fn every_file_arrives_exactly_whatever_fails(
        sizes in proptest::collection::vec(0usize..120_000, 1..5),
        chunk in 4096u64..40_000,
        rate in 0.0f64..0.35,
        fault_seed in any::<u64>(),
        offset_mode in any::<bool>(),
        plain in any::<bool>(),
        read in proptest::sample::select(READS.to_vec()),
    ) {
        let mode = if offset_mode { WriteMode::Offset } else { WriteMode::Strict };
        let kinds = FaultKind::ALL
            .into_iter()
            .filter(|&kind| !(plain && kind == FaultKind::Truncate));
        let mut faults = FaultConfig::new(rate, kinds);
        faults.seed = fault_seed;
        faults.stall = Duration::from_millis(600);
        faults.retry_after = Duration::ZERO;
        runtime().block_on(async {
            let server = MockServer::start(mock(mode, faults).plain_errors(plain))
                .await
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let files = write_files(dir.path(), &sizes, fault_seed);
            let report = upload(config(&server, chunk, read), &paths(&files), &NoEvents).await;
            assert_exact(&server, &report, &files);
            if mode == WriteMode::Strict {
                assert_strictly_ordered(&server, &files);
            }
        });
    }
}

/// 50 files at once under a small memory budget: the chunk bytes alive (counted
/// by the chunks themselves, not by the budget) never exceed it, in either mode,
/// whichever way files are read, and everything arrives.
#[test]
fn the_memory_budget_holds_with_fifty_files_in_parallel() {
    runtime().block_on(async {
        for (mode, read) in [WriteMode::Strict, WriteMode::Offset]
            .into_iter()
            .flat_map(|m| READS.map(|r| (m, r)))
        {
            let server =
                MockServer::start(mock(mode, FaultConfig::new(0.0, [])).storage(Storage::Sink))
                    .await
                    .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let sizes: Vec<usize> = (0..50).map(|i| 20_000 + i * 1_000).collect();
            let files = write_files(dir.path(), &sizes, 50);
            let mut config = config(&server, 16 * 1024, read);
            config.parallel = 50;
            config.memory = 64 * 1024;
            let report = upload(config, &paths(&files), &NoEvents).await;
            assert!(report.all_verified(), "{report:#?}");
            assert!(report.peak_chunk_bytes > 0);
            assert!(
                report.peak_chunk_bytes <= 64 * 1024,
                "{mode:?} {read:?}: peak {} over the budget",
                report.peak_chunk_bytes
            );
            for ((path, bytes), file) in files.iter().zip(&report.files) {
                let receipt = server.receipt(DS, name(path)).unwrap();
                assert_eq!(receipt.blake3, blake3::hash(bytes).to_hex().to_string());
                assert_eq!(file.size, bytes.len() as u64);
            }
        }
    });
}

/// A 413 halves the chunk size (for the rest of the run) and the upload goes on;
/// no accepted chunk is over the server's limit.
#[test]
fn too_large_chunks_shrink_until_the_server_takes_them() {
    runtime().block_on(async {
        for read in READS {
            let limit = 100 * 1024;
            let server = MockServer::start(MockConfig::new().dataset(DS, TOKEN).max_chunk(limit))
                .await
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let files = write_files(dir.path(), &[1_000_000, 300_000], 413);
            let report = upload(config(&server, 256 * 1024, read), &paths(&files), &NoEvents).await;
            assert_exact(&server, &report, &files);
            assert_eq!(report.final_chunk_size, 64 * 1024);
            for (path, _) in &files {
                assert!(
                    server
                        .accepted(DS, name(path))
                        .iter()
                        .all(|&(_, len)| len <= limit)
                );
            }
        }
    });
}

/// 413 at the smallest chunk size fails the file with the matching error.
#[test]
fn too_large_at_the_minimum_fails_the_file() {
    for read in READS {
        runtime().block_on(async {
            let server = MockServer::start(MockConfig::new().dataset(DS, TOKEN).max_chunk(1000))
                .await
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let files = write_files(dir.path(), &[5000], 1);
            let report = upload(
                config(&server, 4096, read),
                &[files[0].0.clone()],
                &NoEvents,
            )
            .await;
            assert!(matches!(
                &report.files[0].outcome,
                FileOutcome::Failed(Error::ChunkTooLarge { len: 4096, .. })
            ));
        });
    }
}

/// Every 429 is retried after exactly the server's Retry-After (0 here), not the
/// engine's own backoff, which is set far too long to finish otherwise.
#[test]
fn retry_after_is_honoured() {
    for read in READS {
        runtime().block_on(async {
            let mut faults = FaultConfig::new(0.4, [FaultKind::TooManyRequests]);
            faults.retry_after = Duration::ZERO;
            faults.seed = 429;
            let server = MockServer::start(mock(WriteMode::Strict, faults))
                .await
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let files = write_files(dir.path(), &[200_000], 2);
            let mut config = config(&server, 16 * 1024, read);
            config.retry.base_delay = Duration::from_secs(3600);
            config.retry.max_delay = Duration::from_secs(3600);
            let delays = Mutex::new(Vec::new());
            let sink = |e: Event| {
                if let Event::Retry { reason, delay, .. } = e {
                    delays.lock().unwrap().push((reason, delay));
                }
            };
            let report = upload(config, &[files[0].0.clone()], &sink).await;
            assert_exact(&server, &report, &files);
            let delays = delays.into_inner().unwrap();
            assert!(!delays.is_empty(), "the seed gives some 429s");
            assert_eq!(server.stats().faults.too_many_requests, delays.len() as u64);
            for (reason, delay) in delays {
                assert!(reason.starts_with("HTTP 429"), "{reason}");
                assert_eq!(delay, Duration::ZERO);
            }
        });
    }
}

/// A truncated chunk (the server kept part of it and answered 500) makes the next
/// attempt meet a 409 naming the server's offset: the engine goes on from there,
/// never skipping or repeating a byte.
#[test]
fn a_409_realigns_to_the_servers_offset() {
    for read in READS {
        runtime().block_on(async {
            let mut faults = FaultConfig::new(0.3, [FaultKind::Truncate]);
            faults.seed = 409;
            let server = MockServer::start(mock(WriteMode::Strict, faults))
                .await
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let files = write_files(dir.path(), &[300_000], 3);
            let realigned = Mutex::new(Vec::new());
            let sink = |e: Event| {
                if let Event::Realigned { from, to, .. } = e {
                    realigned.lock().unwrap().push((from, to));
                }
            };
            let report = upload(
                config(&server, 16 * 1024, read),
                &[files[0].0.clone()],
                &sink,
            )
            .await;
            assert_exact(&server, &report, &files);
            assert_strictly_ordered(&server, &files);
            let realigned = realigned.into_inner().unwrap();
            assert!(!realigned.is_empty(), "the seed truncates some chunks");
            assert!(
                realigned.iter().all(|(from, to)| to > from),
                "{realigned:?}"
            );
        });
    }
}

/// A token that stops working mid-run stops the run cleanly: no file is
/// verified, and for every file the engine reports exactly the bytes the server
/// holds, so nothing acknowledged is lost (a later run can resume from there).
#[test]
fn a_refused_token_mid_run_stops_it_and_keeps_what_was_acknowledged() {
    for read in READS {
        runtime().block_on(async {
            let server = MockServer::start(MockConfig::new().dataset(DS, TOKEN))
                .await
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let files = write_files(dir.path(), &[300_000, 300_000, 300_000, 300_000], 401);
            let paths: Vec<_> = files.iter().map(|(p, _)| p.clone()).collect();
            let acks = Mutex::new(0);
            // After the fifth acknowledged chunk of the run, the token expires.
            let sink = |e: Event| {
                if let Event::ChunkAcked { .. } = e {
                    let mut acks = acks.lock().unwrap();
                    *acks += 1;
                    if *acks == 5 {
                        server.expire_tokens();
                    }
                }
            };
            let report = upload(config(&server, 16 * 1024, read), &paths, &sink).await;
            assert!(
                matches!(report.fatal_error(), Some(Error::Unauthorized { .. })),
                "{report:#?}"
            );
            assert_eq!(server.stats().files_verified, 0);
            let mut total = 0;
            for ((path, _), file) in files.iter().zip(&report.files) {
                let held: u64 = server
                    .accepted(DS, name(path))
                    .iter()
                    .map(|&(_, len)| len)
                    .sum();
                assert_eq!(file.acked, held, "{}: {:?}", path.display(), file.outcome);
                assert!(!matches!(file.outcome, FileOutcome::Verified { .. }));
                total += held;
            }
            assert!(
                total >= 5 * 16 * 1024,
                "the acknowledged chunks are all reported"
            );
        });
    }
}

/// With a distant server, the first chunk is sized from the setup's round trip
/// (20 ms asks for far more than the configured start, up to the ceiling), and
/// chunks never shrink without a reason. (Growth from measured chunks is
/// unit-tested in `chunking`.)
#[test]
fn the_first_chunk_is_sized_from_the_setups_round_trip() {
    for read in READS {
        runtime().block_on(async {
            let server = MockServer::start(
                MockConfig::new()
                    .dataset(DS, TOKEN)
                    .latency(Duration::from_millis(20)),
            )
            .await
            .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let files = write_files(dir.path(), &[6 << 20], 20);
            let mut config = config(&server, 64 * 1024, read);
            config.max_chunk_size = 1 << 20;
            let report = upload(config, &[files[0].0.clone()], &NoEvents).await;
            assert_exact(&server, &report, &files);
            assert_eq!(report.final_chunk_size, 1 << 20);
            let lens: Vec<u64> = server
                .accepted(DS, name(&files[0].0))
                .iter()
                .map(|&(_, len)| len)
                .collect();
            // Six chunks of the ceiling: none at the start size read ahead
            // while the setup was out.
            assert_eq!(lens, [1 << 20; 6], "{lens:?}");
        });
    }
}

/// When the token stops working mid-run and the refresh source has a new one,
/// every file goes on; the source is asked once even though several files meet
/// the 401 at the same moment (the others see the token already replaced).
#[test]
fn a_refreshed_token_carries_every_file_on() {
    for read in READS {
        runtime().block_on(async {
            let server = MockServer::start(MockConfig::new().dataset(DS, TOKEN))
                .await
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let files = write_files(dir.path(), &[300_000, 300_000, 300_000, 300_000], 7);
            let paths: Vec<_> = files.iter().map(|(p, _)| p.clone()).collect();
            let fetches = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
            let mut config = config(&server, 16 * 1024, read);
            config.parallel = 4;
            let counter = fetches.clone();
            config.token_refresh = Some(idb_engine::TokenRefresh::new(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Some(Token::new("renewed-token").unwrap())
            }));
            let acks = Mutex::new(0);
            let refreshed = Mutex::new(0);
            let sink = |e: Event| match e {
                Event::ChunkAcked { .. } => {
                    let mut acks = acks.lock().unwrap();
                    *acks += 1;
                    if *acks == 6 {
                        server.add_token(DS, "renewed-token", None).unwrap();
                        server.expire_token(TOKEN);
                    }
                }
                Event::TokenRefreshed => *refreshed.lock().unwrap() += 1,
                _ => {}
            };
            let report = upload(config, &paths, &sink).await;
            assert_exact(&server, &report, &files);
            assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1);
            assert_eq!(*refreshed.lock().unwrap(), 1);
        });
    }
}

/// A refresh source with nothing new does not loop: the run stops on the 401.
#[test]
fn a_refresh_with_the_same_token_stops_the_run() {
    for read in READS {
        runtime().block_on(async {
            let server = MockServer::start(MockConfig::new().dataset(DS, TOKEN))
                .await
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let files = write_files(dir.path(), &[100_000], 8);
            let mut config = config(&server, 16 * 1024, read);
            config.token_refresh = Some(idb_engine::TokenRefresh::new(|| {
                Some(Token::new(TOKEN).unwrap())
            }));
            let sink = |e: Event| {
                if let Event::ChunkAcked { offset: 0, .. } = e {
                    server.expire_tokens();
                }
            };
            let report = upload(config, &[files[0].0.clone()], &sink).await;
            assert!(
                matches!(report.fatal_error(), Some(Error::Unauthorized { .. })),
                "{report:#?}"
            );
            assert_eq!(report.files[0].acked, 16 * 1024);
        });
    }
}

/// Regression: a token source that hands out a new token every time, against a
/// server that refuses them all, looped for ever without a backoff. Refreshed
/// tokens now count as attempts: the run stops on the 401 within the limit.
#[test]
fn a_token_source_that_keeps_changing_is_bounded_by_the_attempts() {
    runtime().block_on(async {
        let server = MockServer::start(MockConfig::new().dataset(DS, TOKEN))
            .await
            .unwrap();
        server.expire_tokens();
        let dir = tempfile::tempdir().unwrap();
        let files = write_files(dir.path(), &[1000], 9);
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let mut config = config(&server, 16 * 1024, Read::Default);
        config.retry.max_attempts = 5;
        let counter = fetches.clone();
        config.token_refresh = Some(idb_engine::TokenRefresh::new(move || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Some(Token::new(&format!("changing-{n}")).unwrap())
        }));
        let report = upload(config, &paths(&files), &NoEvents).await;
        assert!(
            matches!(report.fatal_error(), Some(Error::Unauthorized { .. })),
            "{report:#?}"
        );
        let fetched = fetches.load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..5).contains(&fetched), "{fetched} refreshes");
    });
}

/// Two uploaders of different files with the same name into one dataset, with
/// no journal (so no lock keeps them apart): each setup resets the other's
/// upload, which then starts over (the server holds less than it acknowledged);
/// one that finds the server ahead of what it sent fails loudly as an offset
/// conflict instead of taking the other's bytes as its own, or, found behind a
/// second time, as the server going back (or after too many restarts). A copy
/// that verifies is exact.
#[test]
fn a_server_ahead_with_bytes_this_upload_never_sent_is_a_conflict() {
    runtime().block_on(async {
        let server = MockServer::start(
            MockConfig::new()
                .dataset(DS, TOKEN)
                .latency(Duration::from_millis(2)),
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&dir_a).unwrap();
        std::fs::create_dir_all(&dir_b).unwrap();
        let a = write_files(&dir_a, &[400_000], 1);
        let b = write_files(&dir_b, &[400_000], 2);
        let (pa, pb) = (paths(&a), paths(&b));
        let (ra, rb) = tokio::join!(
            upload(config(&server, 16 * 1024, Read::Default), &pa, &NoEvents),
            upload(config(&server, 16 * 1024, Read::Default), &pb, &NoEvents),
        );
        let outcomes = [&ra.files[0].outcome, &rb.files[0].outcome];
        assert!(
            outcomes.iter().any(|o| matches!(
                o,
                FileOutcome::Failed(
                    Error::OffsetConflict { .. }
                        | Error::ServerWentBack { .. }
                        | Error::TooManyRestarts { .. }
                )
            )),
            "{outcomes:#?}"
        );
        // Never does a file verify with the other's bytes in it.
        for (report, files) in [(&ra, &a), (&rb, &b)] {
            if report.all_verified() {
                assert_exact(&server, report, files);
            }
        }
    });
}

/// Regression: a 409 naming fewer bytes than the server had acknowledged was
/// followed, so an upload went on after bytes someone else had sent (here a
/// second client that set the same name up again and sent its own first chunk)
/// and verified a spliced copy wherever the server sends no hash. The upload now
/// starts over, so every byte the server ends with is one it sent.
#[test]
fn a_server_holding_less_than_it_acknowledged_gets_everything_again() {
    for read in READS {
        runtime().block_on(async {
            let server = MockServer::start(MockConfig::new().dataset(DS, TOKEN))
                .await
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let files = write_files(dir.path(), &[200_000], 11);
            let url = server.url();
            let restarts = Mutex::new(Vec::new());
            let intruded = std::sync::atomic::AtomicBool::new(false);
            let sink = |e: Event| match e {
                // Four chunks in, once: another client resets the upload and sends
                // 16 KiB of its own (on its own runtime, from a thread: the sink
                // is sync).
                Event::ChunkAcked { offset, .. }
                    if offset == 3 * 16 * 1024
                        && !intruded.swap(true, std::sync::atomic::Ordering::SeqCst) =>
                {
                    let url = url.clone();
                    std::thread::spawn(move || intrude(&url, "file-0.bin"))
                        .join()
                        .unwrap();
                }
                Event::Restarted { reason, .. } => restarts.lock().unwrap().push(reason),
                _ => {}
            };
            let mut config = config(&server, 16 * 1024, read);
            config.parallel = 1;
            let report = upload(config, &paths(&files), &sink).await;
            assert_exact(&server, &report, &files);
            assert_eq!(
                *restarts.lock().unwrap(),
                [idb_engine::RestartReason::ServerLostBytes]
            );
        });
    }
}

/// Another client's setup of `name`, then 16 KiB of its own bytes at offset 0.
fn intrude(url: &str, name: &str) {
    use idb_wire::{Boundary, setup_body, transfer_body};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let endpoint = format!("{url}/api/dataset/{DS}/datafile");
        let boundary = Boundary::from_random(99);
        for body in [
            setup_body(&boundary, name, 200_000),
            transfer_body(&boundary, name, 0, vec![0x55u8; 16 * 1024].into()),
        ] {
            let bytes: Vec<u8> = body.segments().iter().flat_map(|s| s.to_vec()).collect();
            let status = client
                .post(&endpoint)
                .header("authorization", format!("Token token={TOKEN}"))
                .header("content-type", body.content_type())
                .body(bytes)
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 200);
        }
    });
}
