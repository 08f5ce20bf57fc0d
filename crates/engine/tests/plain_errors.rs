//! Servers that speak less than the mock: errors that are web pages, with no
//! offset, no count and no `no_session`, and a repeated chunk refused like any
//! offset mismatch (the mock's `plain_errors`, and scripted raw servers). The
//! engine must not depend on the mock's error vocabulary: a resume the server
//! cannot continue starts over once, a lost answer is settled by the next
//! chunk, and nothing loops.

mod support;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use idb_engine::{
    DatasetKey, Error, Event, FileOutcome, Report, RestartReason, Token, UploadConfig, Uploader,
};
use idb_mock::{FaultConfig, FaultKind, MockConfig, MockServer, Storage};
use support::raw_server::{RawServer, Reply, Request};
use support::{DS, TOKEN};

/// Chunk size of these tests.
const C: u64 = 16 * 1024;

const HTML_409: &[u8] = b"<!DOCTYPE html>\n<html><head><title>409 Conflict</title></head></html>\n";

/// A file of `chunks` whole chunks plus a tail, in its own directory, with a
/// state directory beside it.
struct Upload {
    dir: tempfile::TempDir,
    path: PathBuf,
    bytes: Vec<u8>,
}

impl Upload {
    fn new(chunks: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bytes = support::data((chunks * C + 100) as usize, chunks);
        let path = support::write(dir.path(), "plain.bin", &bytes);
        Self { dir, path, bytes }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The engine tests' quick configuration, with the journal on.
    fn config(&self, url: &str, token: &str) -> UploadConfig {
        let mut config = UploadConfig::new(
            url.parse().unwrap(),
            DatasetKey::new(DS).unwrap(),
            Token::new(token).unwrap(),
        )
        .fixed_chunk_size(C);
        support::quick(&mut config);
        config.state_dir = Some(self.state_dir());
        config
    }

    fn blake3(&self) -> String {
        blake3::hash(&self.bytes).to_hex().to_string()
    }
}

async fn run(config: UploadConfig, path: &Path, events: &dyn idb_engine::EventSink) -> Report {
    let uploader = Uploader::new(config).unwrap();
    let files = uploader.check(&[path.to_path_buf()]).unwrap();
    uploader.upload(files, events).await
}

/// Every event of a run, kept.
#[derive(Default)]
struct Events(Mutex<Vec<Event>>);

impl Events {
    fn restarts(&self) -> Vec<RestartReason> {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter_map(|e| match e {
                Event::Restarted { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }

    fn answers_lost(&self) -> Vec<(u64, u64)> {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter_map(|e| match e {
                Event::AnswerLost { offset, to, .. } => Some((*offset, *to)),
                _ => None,
            })
            .collect()
    }
}

impl idb_engine::EventSink for Events {
    fn emit(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }
}

/// A plain-errors mock for [`DS`] with `token`, on `addr` if given.
async fn plain_mock(token: &str, addr: Option<std::net::SocketAddr>) -> MockServer {
    let mut config = MockConfig::new()
        .dataset(DS, token)
        .storage(Storage::TempDir)
        .plain_errors(true);
    if let Some(addr) = addr {
        config = config.listen(addr);
    }
    MockServer::start(config).await.unwrap()
}

/// A first run against a plain-errors mock, stopped by a 401 once `stop_at`
/// chunks are acknowledged; the server is then restarted on the same address
/// (its upload sessions gone) with `new` as the token. Returns the new server.
async fn interrupted_then_restarted(upload: &Upload, stop_at: usize, new: &str) -> MockServer {
    let server = plain_mock("old", None).await;
    let sink = support::expire_tokens_after(&server, stop_at);
    let report = run(upload.config(&server.url(), "old"), &upload.path, &sink).await;
    assert!(
        matches!(report.fatal_error(), Some(Error::Unauthorized { .. })),
        "{report:#?}"
    );
    drop(sink);
    let addr = server.addr();
    server.shutdown().await;
    plain_mock(new, Some(addr)).await
}

/// The first trap: upload, stop, restart the server (its sessions are
/// gone), run again. The resumed transfer is refused with a page that names no
/// offset; the engine starts the file over once, says so, and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_the_restarted_server_cannot_continue_starts_over_once() {
    let upload = Upload::new(6);
    let server = interrupted_then_restarted(&upload, 3, TOKEN).await;
    let events = Events::default();

    let report = run(upload.config(&server.url(), TOKEN), &upload.path, &events).await;

    assert!(report.all_verified(), "{report:#?}");
    assert_eq!(
        events.restarts(),
        [RestartReason::ResumeRefused { status: 409 }]
    );
    let receipt = server.receipt(DS, "plain.bin").unwrap();
    assert_eq!(receipt.blake3, upload.blake3());
    server.shutdown().await;
}

/// When the journal says every chunk was sent, the resumed upload's first call
/// is the verify, and the last run may have been stopped during its verify:
/// a page refusing it could mean the file is in the dataset already. It is not
/// started over (that could add it twice): the file fails saying so, its
/// journal is dropped, and the next run's setup finds out (here the restarted
/// server has no such file: it uploads and verifies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_verify_refused_without_a_reason_is_not_started_over() {
    let upload = Upload::new(3);
    // All four chunks (three whole and the tail) acknowledged, then the 401.
    let server = interrupted_then_restarted(&upload, 4, TOKEN).await;
    let events = Events::default();

    let report = run(upload.config(&server.url(), TOKEN), &upload.path, &events).await;

    let FileOutcome::Failed(error) = &report.files[0].outcome else {
        panic!("{report:#?}");
    };
    assert!(
        matches!(
            error,
            Error::VerifyUnsettled {
                status: 409,
                resumed: true,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!report.files[0].resumable);
    assert_eq!(events.restarts(), []);
    // The verify alone: no setup was sent.
    assert_eq!(server.stats().requests, 1);

    let report = run(upload.config(&server.url(), TOKEN), &upload.path, &events).await;
    assert!(report.all_verified(), "{report:#?}");
    let receipt = server.receipt(DS, "plain.bin").unwrap();
    assert_eq!(receipt.blake3, upload.blake3());
    server.shutdown().await;
}

/// A resumed upload that fails before the server confirmed anything claims
/// no byte on the server: the journal's offset was never accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_resume_claims_only_what_the_server_confirmed() {
    let upload = Upload::new(6);
    let server = interrupted_then_restarted(&upload, 3, "new").await;
    // The restarted server's token is another: the resume's 401 ends the run
    // before any chunk is accepted.
    let report = run(
        upload.config(&server.url(), TOKEN),
        &upload.path,
        &Events::default(),
    )
    .await;

    assert!(
        matches!(report.fatal_error(), Some(Error::Unauthorized { .. })),
        "{report:#?}"
    );
    assert_eq!(report.files[0].acked, 0, "{report:#?}");
    server.shutdown().await;
}

/// The second trap: one lost acknowledgement (the mock applies the
/// chunk and holds its answer past the idle timeout), and the server refuses
/// the chunk sent again with a page. The engine takes it as received, the next
/// chunk's acceptance confirms it, and the file verifies with every chunk
/// stored once. Also when the lost answer is the last chunk's (verify settles
/// it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_refused_again_is_taken_as_received_and_confirmed() {
    for (chunks, stalled) in [(4, 2), (3, 4)] {
        let upload = Upload::new(chunks);
        let faults = FaultConfig {
            stall: Duration::from_secs(30),
            ..FaultConfig::new(0.0, [FaultKind::Stall])
        };
        let server = MockServer::start(
            MockConfig::new()
                .dataset(DS, TOKEN)
                .storage(Storage::TempDir)
                .plain_errors(true)
                .faults(faults),
        )
        .await
        .unwrap();
        let events = Events::default();
        let acks = Mutex::new(0);
        // The chunk after the `stalled - 1`th acknowledgement stalls (the sink runs
        // before the pump sends the next chunk); its retry goes through.
        let sink = |e: Event| {
            match &e {
                Event::ChunkAcked { .. } => {
                    let mut acks = acks.lock().unwrap();
                    *acks += 1;
                    if *acks == stalled - 1 {
                        server.set_fault_rate(1.0).unwrap();
                    }
                }
                Event::Retry { .. } => server.set_fault_rate(0.0).unwrap(),
                _ => {}
            }
            idb_engine::EventSink::emit(&events, e);
        };

        let report = run(upload.config(&server.url(), TOKEN), &upload.path, &sink).await;

        assert!(report.all_verified(), "{report:#?}");
        assert_eq!(report.files[0].acked, upload.bytes.len() as u64);
        let start = (stalled as u64 - 1) * C;
        let end = (start + C).min(upload.bytes.len() as u64);
        assert_eq!(events.answers_lost(), [(start, end)]);
        assert_eq!(events.restarts(), []);
        assert_eq!(
            server.receipt(DS, "plain.bin").unwrap().blake3,
            upload.blake3()
        );
        // Each chunk stored once: the refused repeat stored nothing.
        let accepted = server.accepted(DS, "plain.bin");
        let offsets: Vec<u64> = accepted.iter().map(|&(offset, _)| offset).collect();
        let expected: Vec<u64> = (0..=chunks).map(|i| i * C).collect();
        assert_eq!(offsets, expected, "{accepted:?}");
        server.shutdown().await;
    }
}

/// A script for a raw server: each request takes the next reply of its phase
/// (and, for transfers, checks the offset it expects).
struct Script {
    steps: Mutex<VecDeque<(&'static str, Option<u64>, Reply)>>,
}

impl Script {
    fn new(steps: Vec<(&'static str, Option<u64>, Reply)>) -> Self {
        Self {
            steps: Mutex::new(steps.into()),
        }
    }

    fn reply(&self, request: &Request) -> Reply {
        let (phase, offset, reply) = self
            .steps
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| panic!("no reply left for {request:?}"));
        assert_eq!(request.phase.as_deref(), Some(phase), "{request:?}");
        assert_eq!(request.previous_size, offset, "{request:?}");
        reply
    }

    fn left(&self) -> usize {
        self.steps.lock().unwrap().len()
    }
}

fn ok() -> Reply {
    Reply::status(200, b"")
}

fn page() -> Reply {
    Reply::status(409, HTML_409)
}

/// A lost answer whose chunk the server did not keep (it went down and came
/// back without the upload): the chunk sent again and the next one are both
/// refused with pages. The guess is wrong, the file starts over once from a
/// new setup, and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_the_next_chunk_does_not_confirm_starts_the_file_over() {
    let upload = Upload::new(2);
    let script = std::sync::Arc::new(Script::new(vec![
        ("setup", None, ok()),
        ("transfer", Some(0), ok()),
        // Lost: the connection closes, and the server forgot the upload.
        ("transfer", Some(C), Reply::Close),
        ("transfer", Some(C), page()),
        // The guess: the next chunk, refused too.
        ("transfer", Some(2 * C), page()),
        // Over again.
        ("setup", None, ok()),
        ("transfer", Some(0), ok()),
        ("transfer", Some(C), ok()),
        ("transfer", Some(2 * C), ok()),
        ("verify", None, ok()),
    ]));
    let replies = std::sync::Arc::clone(&script);
    let server = RawServer::start(move |request| replies.reply(request)).await;
    let events = Events::default();

    let report = run(upload.config(server.url(), TOKEN), &upload.path, &events).await;

    assert!(report.all_verified(), "{report:#?}");
    assert_eq!(script.left(), 0);
    assert_eq!(events.answers_lost(), [(C, 2 * C)]);
    assert_eq!(
        events.restarts(),
        [RestartReason::AnswerLostUnconfirmed { status: 409 }]
    );
}

/// A server that refuses every transfer with a page: the file fails after one
/// setup (a fresh upload has nothing to start over from), and a run resuming
/// its journal starts over once, then fails the same way. Nothing loops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refusing_every_transfer_with_a_page_fails_without_looping() {
    let upload = Upload::new(2);
    let script = std::sync::Arc::new(Script::new(vec![
        ("setup", None, ok()),
        ("transfer", Some(0), ok()),
        ("transfer", Some(C), page()),
        // The next run resumes at C (the journal): refused, over once.
        ("transfer", Some(C), page()),
        ("setup", None, ok()),
        ("transfer", Some(0), page()),
    ]));
    let replies = std::sync::Arc::clone(&script);
    let server = RawServer::start(move |request| replies.reply(request)).await;

    for expected_restarts in [vec![], vec![RestartReason::ResumeRefused { status: 409 }]] {
        let events = Events::default();
        let report = run(upload.config(server.url(), TOKEN), &upload.path, &events).await;
        let FileOutcome::Failed(error) = &report.files[0].outcome else {
            panic!("{report:#?}");
        };
        assert!(
            matches!(error, Error::Rejected { status: 409, .. }),
            "{error:?}"
        );
        assert_eq!(events.restarts(), expected_restarts);
    }
    assert_eq!(script.left(), 0);
}
