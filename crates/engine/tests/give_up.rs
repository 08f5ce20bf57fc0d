//! Knowing when to give up, against servers the mock will not play: a server
//! that never answers is reported within minutes, an address that is no Data
//! Bank after one answer, and calls and files end at their deadlines. Timeouts
//! run on tokio's paused clock: nothing here waits for real.

mod support;

use std::time::Duration;

use idb_engine::{
    DEFAULT_FIRST_ANSWER_TIMEOUT, DatasetKey, Error, FileOutcome, NoEvents, Phase, Report,
    RetryPolicy, Token, UploadConfig,
};
use support::raw_server::{RawServer, Reply};
use support::{DS, data, upload, write};
use tokio::time::Instant;

const TOKEN: &str = "give-up-token";

/// The defaults, but for a fixed jitter seed and protocol 1 (the raw server
/// scripts its calls; a probe for tus would be one more).
fn defaults(server: &RawServer) -> UploadConfig {
    let mut config = UploadConfig::new(
        server.url().parse().unwrap(),
        DatasetKey::new(DS).unwrap(),
        Token::new(TOKEN).unwrap(),
    );
    config.retry.seed = Some(5);
    config.protocol = idb_engine::Protocol::Chunked;
    config
}

/// Uploads `files` small files to `server` with `config`.
async fn run(config: UploadConfig, files: usize) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<_> = (0..files)
        .map(|i| write(dir.path(), &format!("f{i}.bin"), &data(1000 + i, i as u64)))
        .collect();
    upload(config, &paths, &NoEvents).await
}

/// A web page, as a plain web server sends for any path.
const PAGE: &[u8] = b"<!DOCTYPE html>\n<html><head><title>It works</title></head></html>";

#[tokio::test(start_paused = true)]
async fn a_server_that_never_answers_is_reported_after_three_attempts_within_three_minutes() {
    let server = RawServer::start(|_| Reply::Silent).await;
    let started = Instant::now();
    let report = run(defaults(&server), 1).await;
    let took = started.elapsed();

    let error = support::failure(&report, 0);
    assert!(
        matches!(error, Error::NoAnswer { attempts: 3, waited, .. } if *waited == DEFAULT_FIRST_ANSWER_TIMEOUT),
        "{error:?}"
    );
    assert!(error.is_fatal_for_run());
    assert!(
        error
            .to_string()
            .contains("accepted the connection but never answered (3 attempts"),
        "{error}"
    );
    assert_eq!(server.requests(), 3);
    // Three waits of 30 s (the watchdog looks four times a wait) and two
    // backoffs of under a second: on the paused clock, about 95 s.
    assert!(took < Duration::from_secs(180), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn fewer_attempts_than_three_report_a_silent_server_sooner() {
    let server = RawServer::start(|_| Reply::Silent).await;
    let mut config = defaults(&server);
    config.retry.max_attempts = 1;
    let report = run(config, 1).await;
    let error = support::failure(&report, 0);
    assert!(
        matches!(error, Error::NoAnswer { attempts: 1, .. }),
        "{error:?}"
    );
    assert_eq!(server.requests(), 1);
}

/// A server that answered setup, then goes silent: each call gets every
/// attempt and the full idle timeout (the shorter first-answer wait is for a
/// server never heard from), and once a call gave up with no call answered for
/// five minutes, the run stops: the other files would wait as long, one after
/// another.
#[tokio::test(start_paused = true)]
async fn a_server_heard_from_that_goes_silent_stops_the_run_after_one_calls_attempts() {
    // Setup answers; every transfer is left unanswered.
    let server = RawServer::start(|request| match request.phase.as_deref() {
        Some("setup") => Reply::status(200, b""),
        _ => Reply::Silent,
    })
    .await;
    let mut config = defaults(&server);
    config.retry.max_attempts = 6;
    config.parallel = 1;
    let started = Instant::now();
    let report = run(config, 3).await;
    let error = report.fatal_error().expect("the run stopped");
    let Error::ServerStopped { gave_up, .. } = error else {
        panic!("{error:?}");
    };
    assert!(
        matches!(
            **gave_up,
            Error::GaveUp {
                phase: Phase::Transfer,
                attempts: 6,
                ..
            }
        ),
        "{gave_up:?}"
    );
    assert!(error.to_string().contains("stopped answering"), "{error}");
    // One file's setup and six transfers; the others never started.
    assert_eq!(server.requests(), 7);
    let started_files = report
        .files
        .iter()
        .filter(|f| !matches!(f.outcome, FileOutcome::NotStarted))
        .count();
    assert_eq!(started_files, 1, "{report:#?}");
    // Six idle timeouts of 60 s.
    assert!(
        started.elapsed() >= Duration::from_secs(6 * 60),
        "{:?}",
        started.elapsed()
    );
}

/// A verify the server does not answer is not taken for a server that stopped:
/// a server may take long over one. The file fails; the run goes on.
#[tokio::test(start_paused = true)]
async fn a_verify_left_unanswered_fails_only_its_file() {
    let server = RawServer::start(|request| match request.phase.as_deref() {
        Some("verify") => Reply::Silent,
        _ => Reply::status(200, b""),
    })
    .await;
    let mut config = defaults(&server);
    config.retry.max_attempts = 6;
    config.parallel = 1;
    let report = run(config, 2).await;
    assert!(report.fatal_error().is_none(), "{report:#?}");
    for i in 0..2 {
        let error = support::failure(&report, i);
        assert!(
            matches!(
                error,
                Error::GaveUp {
                    phase: Phase::Verify,
                    ..
                }
            ),
            "{error:?}"
        );
    }
}

/// While another call gets answers, a call that runs out of attempts is that
/// call's trouble: its file fails, the run goes on.
#[tokio::test(start_paused = true)]
async fn a_call_given_up_while_others_are_answered_fails_only_its_file() {
    // Transfers of f0 (1000 bytes) are left unanswered; everything else is.
    let server = RawServer::start(|request| {
        let silent = request.phase.as_deref() == Some("transfer")
            && request.filename.as_deref() == Some("f0.bin");
        let ok = Reply::status(200, b"");
        match request.phase.as_deref() {
            _ if silent => Reply::Silent,
            Some("setup") => ok,
            // The other file's later calls come back after f0's transfer went
            // out (well within the idle timeout): answers while it waits.
            _ => Reply::Later(Duration::from_secs(20), Box::new(ok)),
        }
    })
    .await;
    let mut config = defaults(&server);
    config.retry.max_attempts = 2;
    config.parallel = 2;
    let report = run(config, 2).await;
    let error = support::failure(&report, 0);
    assert!(
        matches!(error, Error::GaveUp { attempts: 2, .. }),
        "{error:?}"
    );
    assert!(!error.is_fatal_for_run());
    assert!(
        matches!(report.files[1].outcome, FileOutcome::Verified { .. }),
        "{report:#?}"
    );
}

#[tokio::test]
async fn answers_no_data_bank_gives_stop_the_run_after_one_attempt() {
    for (status, body) in [
        (501, &b"Not Implemented"[..]),
        (405, b""),
        (200, PAGE),
        (201, PAGE),
    ] {
        let server = RawServer::start(move |_| Reply::status(status, body)).await;
        let mut config = defaults(&server);
        config.parallel = 1;
        let report = run(config, 2).await;
        let error = report
            .fatal_error()
            .unwrap_or_else(|| panic!("{status}: no fatal error: {report:?}"));
        assert!(
            matches!(error, Error::NotDataBank { status: s, phase: Phase::Setup, .. } if *s == status),
            "{status}: {error:?}"
        );
        assert!(!error.worth_resuming());
        let shown = error.to_string();
        assert!(
            shown.contains("does not look like a Data Bank API at http://127.0.0.1:"),
            "{shown}"
        );
        if body == PAGE {
            assert!(
                shown.contains("a web page") && shown.contains("It works"),
                "{shown}"
            );
        }
        assert_eq!(
            server.requests(),
            1,
            "{status}: one attempt, then the run stops"
        );
        assert!(
            report
                .files
                .iter()
                .any(|f| matches!(f.outcome, FileOutcome::NotStarted)),
            "{report:?}"
        );
    }
}

#[tokio::test]
async fn an_error_status_with_a_web_page_is_an_ordinary_answer() {
    // 500 with a page is retried; 401 with a page is a refused token.
    let server = RawServer::start(|_| Reply::status(500, PAGE)).await;
    let mut config = defaults(&server);
    config.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(1),
        ..config.retry
    };
    let report = run(config, 1).await;
    assert!(
        matches!(
            support::failure(&report, 0),
            Error::GaveUp { attempts: 3, .. }
        ),
        "{report:?}"
    );
    assert_eq!(server.requests(), 3);

    let server = RawServer::start(|_| Reply::status(401, PAGE)).await;
    let report = run(defaults(&server), 1).await;
    assert!(
        matches!(support::failure(&report, 0), Error::Unauthorized { .. }),
        "{report:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_past_the_call_deadline_gives_up_at_once() {
    let server = RawServer::start(|_| Reply::Answer {
        status: 503,
        reason: "Busy".into(),
        headers: vec![("retry-after".into(), "3600".into())],
        body: Vec::new(),
    })
    .await;
    let mut config = defaults(&server);
    config.retry.deadline = Duration::from_secs(15 * 60);
    let started = Instant::now();
    let report = run(config, 1).await;
    let error = support::failure(&report, 0);
    assert!(
        matches!(error, Error::GaveUp { attempts: 1, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("call deadline"), "{error}");
    assert_eq!(server.requests(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "it did not wait an hour"
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_is_given_up_at_its_deadline_before_its_attempts_run_out() {
    let server = RawServer::start(|_| Reply::status(500, b"down")).await;
    let mut config = defaults(&server);
    config.retry = RetryPolicy {
        max_attempts: 1000,
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(8),
        deadline: Duration::from_secs(60),
        ..config.retry
    };
    let started = Instant::now();
    let report = run(config, 1).await;
    let error = support::failure(&report, 0);
    let Error::GaveUp {
        attempts, elapsed, ..
    } = error
    else {
        panic!("{error:?}")
    };
    assert!(*attempts > 3 && *attempts < 20, "{attempts}");
    // No wait was begun that would end past the deadline.
    assert!(*elapsed <= Duration::from_secs(60), "{elapsed:?}");
    assert!(
        started.elapsed() <= Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_file_is_given_up_at_its_deadline_with_its_calls_in_flight() {
    // Setup answers; the transfer is never answered and the idle timeout is
    // long: only the file's deadline ends it.
    let server = RawServer::start(|request| match request.phase.as_deref() {
        Some("setup") => Reply::status(200, b""),
        _ => Reply::Silent,
    })
    .await;
    let mut config = defaults(&server);
    config.idle_timeout = Duration::from_secs(3600);
    config.file_deadline = Some(Duration::from_secs(100));
    let started = Instant::now();
    let report = run(config, 1).await;
    let error = support::failure(&report, 0);
    assert!(
        matches!(error, Error::FileDeadline { deadline, .. } if *deadline == Duration::from_secs(100)),
        "{error:?}"
    );
    assert!(error.worth_resuming());
    assert!(!error.is_fatal_for_run());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(100) && took < Duration::from_secs(101),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_verify_in_flight_at_the_file_deadline_is_let_finish() {
    // Verify takes 30 s to answer; the file's deadline passes meanwhile.
    let server = RawServer::start(|request| match request.phase.as_deref() {
        Some("verify") => Reply::Later(Duration::from_secs(30), Box::new(Reply::status(200, b""))),
        _ => Reply::status(200, b""),
    })
    .await;
    let mut config = defaults(&server);
    config.file_deadline = Some(Duration::from_secs(10));
    let report = run(config, 1).await;
    assert!(report.all_verified(), "{report:?}");
}

/// Regression: two uploads of one name from different state directories (no
/// lock keeps them apart) reset each other's copy with every setup, and each
/// started over whenever it found the server behind what it had acknowledged:
/// over a slow link they went on for a minute and gigabytes. The second time
/// in a run that the server is found behind, the file fails, naming the likely
/// cause. Here the server acknowledges the first chunk after every setup and
/// then says it holds nothing, as another uploader's setup would make it.
#[tokio::test(start_paused = true)]
async fn a_server_found_behind_twice_in_a_run_fails_the_file() {
    let setups = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&setups);
    let server = RawServer::start(move |request| match request.phase.as_deref() {
        Some("setup") => {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Reply::status(200, b"")
        }
        Some("transfer") if request.previous_size == Some(0) => Reply::status(200, b""),
        Some("transfer") => Reply::status(409, br#"{"expected_offset": 0}"#),
        _ => Reply::status(200, b""),
    })
    .await;
    let mut config = defaults(&server);
    config.chunk_size = 256;
    config.max_chunk_size = 256;
    let report = run(config, 1).await;

    let error = support::failure(&report, 0);
    assert!(matches!(error, Error::ServerWentBack { .. }), "{error:?}");
    assert!(!error.is_fatal_for_run());
    assert!(
        error
            .to_string()
            .contains("another upload of the same name"),
        "{error}"
    );
    assert_eq!(setups.load(std::sync::atomic::Ordering::SeqCst), 2);
}
