//! The engine against a real mock server on 127.0.0.1:0: outcomes are matched by
//! error variant, never by message text.

mod support;

use std::path::PathBuf;
use std::sync::Mutex;

use idb_engine::{
    DatasetKey, Error, Event, FileOutcome, NameProblem, NoEvents, ReadError, Report, Token,
    UploadConfig, Uploader,
};
use idb_mock::{MockConfig, MockServer, WriteMode};

use support::{DS, READS, Read, TOKEN, data, failure, write};

/// An uploader with fixed chunks of `chunk` bytes, one file at a time (so which
/// file runs into what is deterministic), reading files as `read` says.
fn uploader(server: &MockServer, dataset: &str, token: &str, chunk: u64, read: Read) -> Uploader {
    let mut config = UploadConfig::new(
        server.url().parse().unwrap(),
        DatasetKey::new(dataset).unwrap(),
        Token::new(token).unwrap(),
    )
    .fixed_chunk_size(chunk);
    config.parallel = 1;
    // Protocol 1: these tests count its calls and events.
    config.protocol = idb_engine::Protocol::Chunked;
    read.apply(&mut config);
    Uploader::new(config).unwrap()
}

async fn run(uploader: &Uploader, paths: &[PathBuf], events: &dyn idb_engine::EventSink) -> Report {
    let files = uploader.check(paths).expect("the files pass the checks");
    uploader.upload(files, events).await
}

#[tokio::test]
async fn uploads_are_byte_exact_and_hashes_match() {
    for read in READS {
        let server = MockServer::start(MockConfig::new().dataset(DS, TOKEN))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sizes = [0, 1, 4095, 4096, 4097, 50_000];
        let paths: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| write(dir.path(), &format!("f{i}.bin"), &data(n, i as u64)))
            .collect();
        let report = run(&uploader(&server, DS, TOKEN, 4096, read), &paths, &NoEvents).await;
        assert!(report.all_verified(), "{report:?}");
        for (file, path) in report.files.iter().zip(&paths) {
            let stored = server
                .stored_file(DS, path.file_name().unwrap().to_str().unwrap())
                .unwrap();
            assert_eq!(std::fs::read(stored).unwrap(), std::fs::read(path).unwrap());
            let FileOutcome::Verified { blake3, receipt } = &file.outcome else {
                unreachable!()
            };
            assert_eq!(
                *blake3,
                blake3::hash(&std::fs::read(path).unwrap())
                    .to_hex()
                    .to_string()
            );
            assert_eq!(receipt.as_ref().unwrap().blake3, *blake3);
        }
    }
}

#[tokio::test]
async fn events_cover_every_byte_in_order() {
    for read in READS {
        let server = MockServer::start(MockConfig::new().dataset(DS, TOKEN))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "e.bin", &data(10_000, 1));
        let events = Mutex::new(Vec::new());
        let sink = |e: Event| events.lock().unwrap().push(e);
        let report = run(
            &uploader(&server, DS, TOKEN, 3000, read),
            std::slice::from_ref(&path),
            &sink,
        )
        .await;
        assert!(report.all_verified());
        let events = events.into_inner().unwrap();
        assert_eq!(
            events.first(),
            Some(&Event::FileStarted {
                path: path.clone(),
                size: 10_000
            })
        );
        assert_eq!(
            events.last(),
            Some(&Event::FileVerified {
                path: path.clone(),
                size: 10_000,
                blake3: blake3::hash(&std::fs::read(&path).unwrap())
                    .to_hex()
                    .to_string(),
                server_checked: true,
            })
        );
        let acked: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::ChunkAcked { offset, len, .. } => Some((*offset, *len)),
                _ => None,
            })
            .collect();
        assert_eq!(acked, [(0, 3000), (3000, 3000), (6000, 3000), (9000, 1000)]);
    }
}

#[tokio::test]
async fn a_refused_token_stops_the_run() {
    let server = MockServer::start(
        MockConfig::new()
            .dataset(DS, TOKEN)
            .dataset("IDB-E2", "other"),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let paths = [write(dir.path(), "a", b"a"), write(dir.path(), "b", b"b")];
    for token in ["wrong", "other"] {
        let report = run(
            &uploader(&server, DS, token, 4096, Read::Default),
            &paths,
            &NoEvents,
        )
        .await;
        assert!(matches!(failure(&report, 0), Error::Unauthorized { .. }));
        assert!(matches!(report.files[1].outcome, FileOutcome::NotStarted));
        assert!(matches!(
            report.fatal_error(),
            Some(Error::Unauthorized { .. })
        ));
    }
    assert_eq!(server.stats().bytes_accepted, 0);
}

#[tokio::test]
async fn unknown_and_published_datasets_are_not_found() {
    let server = MockServer::start(MockConfig::new().published_dataset("IDB-PUB", TOKEN))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let paths = [write(dir.path(), "a", b"a")];
    for dataset in ["IDB-PUB", "IDB-NONE"] {
        let report = run(
            &uploader(&server, dataset, TOKEN, 4096, Read::Default),
            &paths,
            &NoEvents,
        )
        .await;
        assert!(
            matches!(failure(&report, 0), Error::DatasetNotFound { .. }),
            "{dataset}"
        );
    }
}

#[tokio::test]
async fn an_existing_name_and_a_too_large_chunk_fail_only_their_file() {
    let server = MockServer::start(MockConfig::new().dataset(DS, TOKEN).max_chunk(1024))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let small = write(dir.path(), "small", b"abc");
    let big = write(dir.path(), "big", &data(5000, 2));
    let up = uploader(&server, DS, TOKEN, 2048, Read::Default);
    assert!(
        run(&up, std::slice::from_ref(&small), &NoEvents)
            .await
            .all_verified()
    );

    let other = write(dir.path(), "other", b"xyz");
    let report = run(&up, &[small, big, other], &NoEvents).await;
    assert!(matches!(failure(&report, 0), Error::AlreadyExists { .. }));
    assert!(matches!(
        failure(&report, 1),
        Error::ChunkTooLarge { len: 2048, .. }
    ));
    assert!(matches!(
        report.files[2].outcome,
        FileOutcome::Verified { .. }
    ));
    assert!(report.fatal_error().is_none());
}

#[tokio::test]
async fn a_file_that_changes_during_upload_is_never_verified() {
    for read in READS {
        let server = MockServer::start(MockConfig::new().dataset(DS, TOKEN))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let grows = write(dir.path(), "grows", &data(40_000, 3));
        let shrinks = write(dir.path(), "shrinks", &data(40_000, 4));
        let rewritten = write(dir.path(), "rewritten", &data(40_000, 5));
        let untouched = write(dir.path(), "untouched", &data(40_000, 6));
        // An old modification time, so the rewrite below visibly changes it.
        std::fs::File::options()
            .write(true)
            .open(&rewritten)
            .unwrap()
            .set_modified(
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000),
            )
            .unwrap();
        // The event sink runs between chunks: it changes the file after the first one.
        // The reader runs at most prefetch + 1 = 5 chunks ahead, so cutting the file
        // to 30 of its 40 chunks never pulls a mapped page from under it.
        let changed = [grows.clone(), shrinks.clone(), rewritten.clone()];
        let sink = move |e: Event| {
            if let Event::ChunkAcked {
                path, offset: 0, ..
            } = e
            {
                let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                if path == changed[0] {
                    std::os::unix::fs::FileExt::write_all_at(&file, b"more", 40_000).unwrap();
                } else if path == changed[1] {
                    file.set_len(30_000).unwrap();
                } else if path == changed[2] {
                    std::os::unix::fs::FileExt::write_all_at(&file, b"XXXX", 20_000).unwrap();
                }
            }
        };
        let report = run(
            &uploader(&server, DS, TOKEN, 1000, read),
            &[grows, shrinks, rewritten, untouched.clone()],
            &sink,
        )
        .await;
        for i in 0..3 {
            let error = failure(&report, i);
            assert!(
                matches!(error, Error::File(ReadError::Changed { .. })),
                "{error:?}"
            );
            assert!(
                error
                    .to_string()
                    .contains("changed while it was being read"),
                "{error}"
            );
        }
        assert!(
            matches!(report.files[3].outcome, FileOutcome::Verified { .. }),
            "{report:#?}"
        );
        assert_eq!(server.stats().files_verified, 1);
        let stored = server.stored_file(DS, "untouched").unwrap();
        assert_eq!(
            std::fs::read(stored).unwrap(),
            std::fs::read(&untouched).unwrap()
        );
    }
}

#[tokio::test]
async fn checks_find_every_problem_before_anything_is_sent() {
    let server = MockServer::start(MockConfig::new().dataset(DS, TOKEN))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let a = write(dir.path(), "same", b"1");
    let b = write(&dir.path().join("sub"), "same", b"2");
    let paths = [a, dir.path().join("missing"), dir.path().join("sub"), b];
    let problems = uploader(&server, DS, TOKEN, 4096, Read::Default)
        .check(&paths)
        .err()
        .expect("problems");
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(matches!(
        problems[0],
        Error::File(ReadError::NotFound { .. })
    ));
    assert!(matches!(
        problems[1],
        Error::File(ReadError::NotAFile { .. })
    ));
    assert!(matches!(
        problems[2],
        Error::BadName {
            problem: NameProblem::Duplicate { .. },
            ..
        }
    ));
    assert_eq!(server.stats().requests, 0);
}

#[test]
fn bad_configurations_are_refused() {
    let base = || {
        UploadConfig::new(
            "http://127.0.0.1:9".parse().unwrap(),
            DatasetKey::new(DS).unwrap(),
            Token::new(TOKEN).unwrap(),
        )
    };
    let bad: [fn(&mut UploadConfig); 10] = [
        |c| c.chunk_size = 0,
        |c| c.chunk_size = idb_engine::MAX_CHUNK_SIZE + 1,
        |c| c.max_chunk_size = idb_engine::MAX_CHUNK_SIZE + 1,
        |c| c.memory = c.max_chunk_size - 1,
        |c| c.parallel = 0,
        |c| c.window = Some(0),
        |c| c.window = Some(idb_engine::MAX_WINDOW + 1),
        |c| c.bandwidth = Some(0),
        |c| c.tus_part_size = Some(0),
        |c| c.tus_part_size = Some(c.memory + 1),
    ];
    for (i, spoil) in bad.iter().enumerate() {
        let mut config = base();
        spoil(&mut config);
        assert!(
            matches!(Uploader::new(config), Err(Error::Config(_))),
            "case {i}"
        );
    }
    assert!(Uploader::new(base()).is_ok());
    let mut widest = base();
    widest.window = Some(idb_engine::MAX_WINDOW);
    assert!(
        Uploader::new(widest).is_ok(),
        "the widest window is allowed"
    );
    let mut capped = base();
    capped.bandwidth = Some(1);
    assert!(Uploader::new(capped).is_ok(), "1 byte per second is a cap");
}

/// A memory budget below the largest chunk names the option that set it:
/// `--chunk-size` when it is the larger (an adversarial pass found
/// `--max-chunk-size` named for `--chunk-size 1GiB`).
#[test]
fn a_budget_below_the_largest_chunk_names_the_larger_option() {
    let refusal = |chunk: u64, max: u64| {
        let mut config = UploadConfig::new(
            "http://127.0.0.1:9".parse().unwrap(),
            DatasetKey::new(DS).unwrap(),
            Token::new(TOKEN).unwrap(),
        );
        (config.chunk_size, config.max_chunk_size, config.memory) = (chunk, max, 1 << 20);
        match Uploader::new(config) {
            Err(Error::Config(text)) => text,
            other => panic!("{chunk}/{max}: {:?}", other.err()),
        }
    };
    let big = 4 << 20;
    assert!(refusal(big, 1 << 20).ends_with("raise --memory or lower --chunk-size"));
    assert!(refusal(1 << 20, big).ends_with("raise --memory or lower --max-chunk-size"));
    assert!(refusal(big, big).ends_with("lower --chunk-size and --max-chunk-size"));
}

#[test]
fn debug_output_never_shows_the_token() {
    let config = UploadConfig::new(
        "https://example.org".parse().unwrap(),
        DatasetKey::new(DS).unwrap(),
        Token::new("very-secret-value").unwrap(),
    );
    assert!(!format!("{config:?}").contains("very-secret"));
}

/// Files are checked first and opened only when their turn comes: one deleted or
/// changed in between fails alone, saying so, and the others verify.
#[tokio::test]
async fn a_file_gone_or_changed_since_the_check_fails_alone() {
    for read in READS {
        let server = MockServer::start(MockConfig::new().dataset(DS, TOKEN))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let keep = write(dir.path(), "keep", &data(5000, 7));
        let gone = write(dir.path(), "gone", &data(5000, 8));
        let grown = write(dir.path(), "grown", &data(5000, 9));
        let up = uploader(&server, DS, TOKEN, 4096, read);
        let files = up
            .check(&[keep.clone(), gone.clone(), grown.clone()])
            .unwrap();
        std::fs::remove_file(&gone).unwrap();
        std::fs::write(&grown, data(6000, 9)).unwrap();
        let report = up.upload(files, &NoEvents).await;
        assert!(matches!(
            report.files[0].outcome,
            FileOutcome::Verified { .. }
        ));
        let error = failure(&report, 1);
        assert!(
            matches!(error, Error::File(ReadError::Vanished { .. })),
            "{error:?}"
        );
        assert!(error.to_string().contains("it disappeared since the check"));
        assert!(matches!(
            failure(&report, 2),
            Error::File(ReadError::ChangedSinceCheck { .. })
        ));
        // Nothing of either was sent.
        assert_eq!(server.stats().files_verified, 1);
        assert!(server.accepted(DS, "gone").is_empty());
        assert!(server.accepted(DS, "grown").is_empty());
    }
}

/// Two uploads of one name into one dataset with the same state directory: the
/// second is refused before it sends anything, and the first goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_being_uploaded_is_refused_to_a_second_uploader() {
    let server = MockServer::start(MockConfig::new().dataset(DS, TOKEN))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = write(
        &dir.path().join("a").tap_mkdir(),
        "same.bin",
        &data(10_000, 1),
    );
    let second = write(
        &dir.path().join("b").tap_mkdir(),
        "same.bin",
        &data(10_000, 2),
    );
    let state = dir.path().join("state");
    let with_journal = |read| {
        let mut config = support::config(&server, 4096, read);
        config.state_dir = Some(state.clone());
        Uploader::new(config).unwrap()
    };
    let (a, b) = (with_journal(Read::Default), with_journal(Read::Default));
    let a_files = a.check(std::slice::from_ref(&first)).unwrap();
    let b_files = b.check(std::slice::from_ref(&second)).unwrap();
    // The first holds its setup at the server, so it holds the name's lock.
    server.pause();
    let running = tokio::spawn(async move { a.upload(a_files, &NoEvents).await });
    server.wait_for_requests(1).await;
    let report = b.upload(b_files, &NoEvents).await;
    let error = failure(&report, 0);
    assert!(
        matches!(error, Error::Busy { pid: Some(pid), .. } if *pid == std::process::id()),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("is uploading \"same.bin\" into IDB-E1"),
        "{error}"
    );
    assert_eq!(
        server.stats().requests_arrived,
        1,
        "only the first's held setup: the second sent nothing"
    );
    server.resume();
    let report = running.await.unwrap();
    assert!(report.all_verified(), "{report:#?}");
    let stored = std::fs::read(server.stored_file(DS, "same.bin").unwrap()).unwrap();
    assert_eq!(stored, std::fs::read(&first).unwrap());
}

trait MkDir {
    fn tap_mkdir(self) -> Self;
}

impl MkDir for std::path::PathBuf {
    /// Creates the directory and returns it.
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

/// A run stopped while a file's last bytes are at the server sends no new
/// call, even for that file once those bytes are answered within the grace:
/// its verify (over tus, its registration) is left to the next run, which goes
/// straight to it without sending a byte again. (A verify sent then could be
/// cut short by the grace's end and left in doubt; and the README promises
/// no new call.)
#[tokio::test(flavor = "multi_thread")]
async fn a_run_stopped_while_the_last_bytes_are_held_leaves_the_verify_to_the_next() {
    // (protocol, server mode, chunks, journal): on an offset server all three
    // chunks are in flight and the file's reading has ended when the stop
    // comes. Without a journal the next run could not go straight to the
    // verify: it is sent within the grace instead (found by a review).
    // The last case chmods the file just before the stop: the verify waits for
    // its bytes to be hashed again, which the stop must not cut short when
    // there is no journal (found by a review).
    let cases = [
        (
            idb_engine::Protocol::Chunked,
            WriteMode::Strict,
            1,
            true,
            false,
        ),
        (
            idb_engine::Protocol::Chunked,
            WriteMode::Offset,
            3,
            true,
            false,
        ),
        (idb_engine::Protocol::Tus, WriteMode::Strict, 1, true, false),
        (
            idb_engine::Protocol::Chunked,
            WriteMode::Offset,
            3,
            false,
            false,
        ),
        (
            idb_engine::Protocol::Chunked,
            WriteMode::Offset,
            3,
            false,
            true,
        ),
    ];
    for (protocol, mode, chunks, journal, chmod) in cases {
        let server = MockServer::start(MockConfig::new().dataset(DS, TOKEN).mode(mode).tus(true))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let bytes = data(10_000, 3);
        let path = write(dir.path(), "last.bin", &bytes);
        let uploader = || {
            let mut config = UploadConfig::new(
                server.url().parse().unwrap(),
                DatasetKey::new(DS).unwrap(),
                Token::new(TOKEN).unwrap(),
            )
            .fixed_chunk_size(10_000_u64.div_ceil(chunks));
            config.protocol = protocol;
            config.state_dir = journal.then(|| dir.path().join("state"));
            Uploader::new(config).unwrap()
        };
        let first = uploader();
        let files = first.check(std::slice::from_ref(&path)).unwrap();
        // Once the file's upload is open, the server holds what comes next:
        // the requests carrying all its bytes.
        let (opened_tx, opened) = tokio::sync::oneshot::channel();
        let opened_tx = Mutex::new(Some(opened_tx));
        let events = |e: Event| {
            if let Event::FileStarted { .. } = e {
                server.pause();
                if let Some(tx) = opened_tx.lock().unwrap().take() {
                    let _ = tx.send(server.stats().requests_arrived);
                }
            }
        };
        let cancel = idb_engine::Cancel::new();
        let (report, arrived) = {
            let run = first.upload_until(files, &events, &cancel);
            let stop = async {
                let arrived = opened.await.unwrap();
                server.wait_for_requests(arrived + chunks).await;
                if chmod {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                        .unwrap();
                }
                cancel.cancel();
                server.resume();
                arrived + chunks
            };
            tokio::join!(run, stop)
        };
        let file = &report.files[0];
        if !journal {
            assert!(report.all_verified(), "{protocol:?} {mode:?}: {report:#?}");
            let stored = std::fs::read(server.stored_file(DS, "last.bin").unwrap()).unwrap();
            assert_eq!(stored, bytes);
            continue;
        }
        assert!(
            matches!(file.outcome, FileOutcome::Interrupted) && file.acked == 10_000,
            "{protocol:?} {mode:?}: {report:#?}"
        );
        assert_eq!(
            server.stats().requests_arrived,
            arrived,
            "{protocol:?} {mode:?}: no call after the held one"
        );
        assert!(
            server.stored_file(DS, "last.bin").is_none(),
            "{protocol:?} {mode:?}"
        );
        let report = run(&uploader(), std::slice::from_ref(&path), &NoEvents).await;
        assert!(report.all_verified(), "{protocol:?} {mode:?}: {report:#?}");
        assert_eq!(report.files[0].acked, 10_000);
        let stored = std::fs::read(server.stored_file(DS, "last.bin").unwrap()).unwrap();
        assert_eq!(stored, bytes, "{protocol:?} {mode:?}");
        assert_eq!(
            server.stats().bytes_received,
            10_000,
            "{protocol:?} {mode:?}: the next run sent no byte again"
        );
    }
}

/// Regression (found by an adversarial pass): a `chmod` during an upload
/// failed the file as written to, its journal was dropped and the next run
/// sent it all again. A change of the status alone now goes on once the bytes
/// read are hashed again and found the same; a write whose modification time
/// was put back is found the same way and still fails the file.
#[tokio::test(flavor = "multi_thread")]
async fn a_chmod_during_the_upload_goes_on_and_a_hidden_write_fails() {
    use std::os::unix::fs::{FileExt, PermissionsExt};
    for read in READS {
        for hidden_write in [false, true] {
            let server = MockServer::start(MockConfig::new().dataset(DS, TOKEN))
                .await
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let bytes = data(60_000, 4);
            let path = write(dir.path(), "status.bin", &bytes);
            let uploader = uploader(&server, DS, TOKEN, 16_384, read);
            let changed = std::sync::atomic::AtomicBool::new(false);
            let events = |e: Event| {
                if let Event::ChunkAcked { .. } = e
                    && !changed.swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    if hidden_write {
                        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                        let modified = file.metadata().unwrap().modified().unwrap();
                        file.write_all_at(b"XXXX", 10).unwrap();
                        file.set_modified(modified).unwrap();
                    } else {
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                            .unwrap();
                    }
                }
            };
            let report = run(&uploader, std::slice::from_ref(&path), &events).await;
            let what = format!("{read:?}, hidden write {hidden_write}");
            if hidden_write {
                assert!(
                    matches!(failure(&report, 0), Error::File(ReadError::Changed { .. })),
                    "{what}: {report:#?}"
                );
                assert!(server.stored_file(DS, "status.bin").is_none(), "{what}");
            } else {
                assert!(report.all_verified(), "{what}: {report:#?}");
                assert_eq!(
                    std::fs::read(server.stored_file(DS, "status.bin").unwrap()).unwrap(),
                    bytes,
                    "{what}"
                );
                assert_eq!(
                    server.stats().bytes_received,
                    60_000,
                    "{what}: nothing sent again"
                );
            }
        }
    }
}
