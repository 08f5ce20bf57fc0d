//! Resuming from the journal, in process: the edge cases a review found.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use idb_engine::{DatasetKey, Error, Event, FileOutcome, Report, Token, UploadConfig, Uploader};
use idb_mock::{MockConfig, MockServer, Storage};

use support::{DS, READS, Read};

const OLD: &str = "old-token";
const NEW: &str = "new-token";

fn data(len: usize) -> Vec<u8> {
    support::data(len, 0)
}

fn config(
    server: &MockServer,
    token: &str,
    journal: &Path,
    chunk: u64,
    max: u64,
    read: Read,
) -> UploadConfig {
    let mut config = UploadConfig::new(
        server.url().parse().unwrap(),
        DatasetKey::new(DS).unwrap(),
        Token::new(token).unwrap(),
    )
    .chunk_size(chunk);
    config.max_chunk_size = max;
    // The journal is `<state dir>/journal`.
    config.state_dir = journal.parent().map(Path::to_path_buf);
    read.apply(&mut config);
    config
}

async fn upload(config: UploadConfig, path: &Path, events: &dyn idb_engine::EventSink) -> Report {
    let uploader = Uploader::new(config).unwrap();
    let files = uploader.check(&[path.to_path_buf()]).unwrap();
    uploader.upload(files, events).await
}

/// A first run stopped by a 401 once `stop_at` chunks are acknowledged; returns
/// the bytes the server holds.
async fn interrupted(
    server: &MockServer,
    config: UploadConfig,
    path: &Path,
    stop_at: usize,
) -> u64 {
    let sink = support::expire_tokens_after(server, stop_at);
    let report = upload(config, path, &sink).await;
    assert!(
        matches!(report.fatal_error(), Some(Error::Unauthorized { .. })),
        "{report:#?}"
    );
    // The same token again, or another test's run before: it works from now on.
    server.add_token(DS, NEW, None).unwrap();
    report.files[0].acked
}

/// A test's directory with a journal directory and one data file in it.
struct Files {
    dir: tempfile::TempDir,
    bytes: Vec<u8>,
    path: PathBuf,
}

impl Files {
    fn new(name: &str, size: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bytes = data(size);
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        Self { dir, bytes, path }
    }

    fn journal(&self) -> PathBuf {
        self.dir.path().join("journal")
    }
}

/// The journal files (not the lock file) in `dir`.
fn journals(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default()
}

/// Regression: a journal saying the server holds the whole file (killed between
/// the last chunk and verify) made the resumed run fail with "the reader did not
/// hash the whole file" after a successful verify, on every later run too.
#[tokio::test(flavor = "multi_thread")]
async fn resuming_with_everything_sent_verifies() {
    for read in READS {
        let server = MockServer::start(MockConfig::new().dataset(DS, OLD))
            .await
            .unwrap();
        let files = Files::new("all.bin", 200_000);
        let (journal, path, bytes) = (files.journal(), &files.path, &files.bytes);
        let held = interrupted(
            &server,
            config(&server, OLD, &journal, 50_000, 50_000, read),
            path,
            4,
        )
        .await;
        assert_eq!(held, 200_000);

        let report = upload(
            config(&server, NEW, &journal, 50_000, 50_000, read),
            path,
            &idb_engine::NoEvents,
        )
        .await;

        assert!(report.all_verified(), "{report:#?}");
        let FileOutcome::Verified { blake3, .. } = &report.files[0].outcome else {
            unreachable!()
        };
        assert_eq!(*blake3, blake3::hash(bytes).to_hex().to_string());
        assert!(journals(&journal).is_empty());
    }
}

/// Makes the one journal in `journal` lag the server, as after a kill before
/// its save: it says nothing was acknowledged. (Without its check, as an
/// earlier idb wrote journals: a changed journal with its check is not trusted.)
fn lag_behind_the_server(journal: &Path) {
    let file = journals(journal).pop().unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    let mut entry: serde_json::Value = serde_json::from_str(&text).unwrap();
    entry["acked"] = 0.into();
    entry.as_object_mut().unwrap().remove("check");
    std::fs::write(&file, entry.to_string()).unwrap();
}

/// Regression: when the server held more than the journal said by more than the
/// resumed run's first chunk, the 409 naming its offset was taken for another
/// upload of the same file.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_ahead_of_the_journal_is_followed() {
    for read in READS {
        let server = MockServer::start(MockConfig::new().dataset(DS, OLD).storage(Storage::Sink))
            .await
            .unwrap();
        let files = Files::new("ahead.bin", 300_000);
        let (journal, path, bytes) = (files.journal(), &files.path, &files.bytes);
        let held = interrupted(
            &server,
            config(&server, OLD, &journal, 20_000, 20_000, read),
            path,
            6,
        )
        .await;
        assert!(held >= 120_000);
        lag_behind_the_server(&journal);

        let report = upload(
            config(&server, NEW, &journal, 20_000, 20_000, read),
            path,
            &idb_engine::NoEvents,
        )
        .await;

        assert!(report.all_verified(), "{report:#?}");
        assert_eq!(
            server.receipt(DS, "ahead.bin").unwrap().blake3,
            blake3::hash(bytes).to_hex().to_string()
        );
    }
}

/// Regression (found by an adversarial pass, after a `kill -9` of a run whose
/// chunks had grown): a server ahead of the journal that takes the resumed
/// run's first chunks as identical retries of bytes it holds (200) and then
/// names its offset inside a later chunk (409) was taken for another upload of
/// the same file, and the file failed. Until the server names its offset, a
/// resumed upload may meet the journal's lag at any chunk.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_ahead_of_the_journal_that_takes_retries_is_followed() {
    for read in READS {
        let server = MockServer::start(MockConfig::new().dataset(DS, OLD))
            .await
            .unwrap();
        let files = Files::new("retries.bin", 300_000);
        let (journal, path, bytes) = (files.journal(), &files.path, &files.bytes);
        let held = interrupted(
            &server,
            config(&server, OLD, &journal, 20_000, 20_000, read),
            path,
            6,
        )
        .await;
        assert_eq!(held, 120_000);
        lag_behind_the_server(&journal);

        // Chunks of 50 000: two identical retries, then one across 120 000.
        let report = upload(
            config(&server, NEW, &journal, 50_000, 50_000, read),
            path,
            &idb_engine::NoEvents,
        )
        .await;

        assert!(report.all_verified(), "{read:?}: {report:#?}");
        assert_eq!(
            std::fs::read(server.stored_file(DS, "retries.bin").unwrap()).unwrap(),
            *bytes
        );
    }
}

/// Regression: a resumed upload has no setup to measure the round trip with, so
/// it never grew its chunks; it now starts at the size the last run reached.
#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_upload_keeps_its_chunk_size() {
    for read in READS {
        let server = MockServer::start(
            MockConfig::new()
                .dataset(DS, OLD)
                .latency(Duration::from_millis(20)),
        )
        .await
        .unwrap();
        let files = Files::new("grow.bin", 8 << 20);
        let (journal, path) = (files.journal(), &files.path);
        let held = interrupted(
            &server,
            config(&server, OLD, &journal, 64 << 10, 1 << 20, read),
            path,
            4,
        )
        .await;
        let first_run = server.accepted(DS, "grow.bin").len();

        let report = upload(
            config(&server, NEW, &journal, 64 << 10, 1 << 20, read),
            path,
            &idb_engine::NoEvents,
        )
        .await;

        assert!(report.all_verified(), "{report:#?}");
        let log = server.accepted(DS, "grow.bin");
        let resumed = &log[first_run..];
        assert_eq!(resumed[0].0, held);
        assert_eq!(resumed[0].1, 1 << 20, "{log:?}");
    }
}

/// A resumed upload reads only the part of the file it has not sent: the hash
/// state saved in the journal covers the rest, and the final blake3 still covers
/// the whole file.
#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_upload_reads_only_what_it_has_not_sent() {
    for read in READS {
        let server = MockServer::start(MockConfig::new().dataset(DS, OLD))
            .await
            .unwrap();
        let size = (2 << 20) + 123;
        let files = Files::new("big.bin", size);
        let (journal, path, bytes) = (files.journal(), &files.path, &files.bytes);
        let held = interrupted(
            &server,
            config(&server, OLD, &journal, 64 << 10, 64 << 10, read),
            path,
            5,
        )
        .await;
        assert!(held >= 5 * (64 << 10) && held < size as u64, "{held}");

        let report = upload(
            config(&server, NEW, &journal, 64 << 10, 64 << 10, read),
            path,
            &idb_engine::NoEvents,
        )
        .await;

        assert!(report.all_verified(), "{read:?}: {report:#?}");
        assert_eq!(
            report.bytes_read,
            size as u64 - held,
            "{read:?}: the resumed run read only what it sent"
        );
        let FileOutcome::Verified { blake3, .. } = &report.files[0].outcome else {
            unreachable!()
        };
        assert_eq!(*blake3, blake3::hash(bytes).to_hex().to_string());
    }
}

/// What the journal of `path`'s upload says: (acknowledged bytes, whether it
/// holds a hash state).
fn journal_says(journal: &Path) -> (u64, bool) {
    let files = journals(journal);
    assert_eq!(files.len(), 1, "one journal: {files:?}");
    let entry: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    (entry["acked"].as_u64().unwrap(), !entry["hash"].is_null())
}

/// Regression: a resumed upload kept a blank journal entry until its first
/// acknowledgement, so one stopped before it (here a refused token on its first
/// chunk) wrote "0 bytes, no hash" over what the journal had said.
#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_upload_stopped_before_its_first_ack_keeps_its_journal() {
    let server = MockServer::start(MockConfig::new().dataset(DS, OLD))
        .await
        .unwrap();
    let files = Files::new("keep.bin", 300_000);
    let (journal, path) = (files.journal(), &files.path);
    let held = interrupted(
        &server,
        config(&server, OLD, &journal, 20_000, 20_000, Read::Default),
        path,
        6,
    )
    .await;
    assert_eq!(journal_says(&journal), (held, true));
    // The old token is expired: the resumed run's first chunk is refused.
    let report = upload(
        config(&server, OLD, &journal, 20_000, 20_000, Read::Default),
        path,
        &idb_engine::NoEvents,
    )
    .await;
    assert!(
        matches!(report.fatal_error(), Some(Error::Unauthorized { .. })),
        "{report:#?}"
    );
    assert_eq!(journal_says(&journal), (held, true));
}

/// Regression: a run stopped from outside before a resumed file's turn had
/// opened it removed or zeroed the file's journal (the stop could win before the
/// upload was first polled). The journal now stays as it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_cancelled_at_once_leaves_the_journals_as_they_were() {
    let server = MockServer::start(MockConfig::new().dataset(DS, OLD))
        .await
        .unwrap();
    let files = Files::new("cancel.bin", 300_000);
    let (journal, path) = (files.journal(), &files.path);
    let held = interrupted(
        &server,
        config(&server, OLD, &journal, 20_000, 20_000, Read::Default),
        path,
        6,
    )
    .await;
    for _ in 0..10 {
        let uploader = Uploader::new(config(
            &server,
            NEW,
            &journal,
            20_000,
            20_000,
            Read::Default,
        ))
        .unwrap();
        let checked = uploader.check(std::slice::from_ref(path)).unwrap();
        let cancel = idb_engine::Cancel::new();
        cancel.cancel();
        let report = uploader
            .upload_until(checked, &idb_engine::NoEvents, &cancel)
            .await;
        assert!(
            matches!(
                report.files[0].outcome,
                FileOutcome::Interrupted | FileOutcome::NotStarted
            ),
            "{report:#?}"
        );
        assert_eq!(journal_says(&journal), (held, true));
    }
    assert_eq!(
        server
            .accepted(DS, "cancel.bin")
            .iter()
            .map(|&(_, l)| l)
            .sum::<u64>(),
        held,
        "nothing more was sent, and no setup reset the upload"
    );
}

/// Regression (found by a review): a write whose modification time was put
/// back, between the run's check of the files and the file's turn, to a file
/// with a journal. The open took the status change as none and the journal
/// was matched with the checked identity, so the held bytes were never hashed
/// again: the file was verified as the old head and the new tail. The journal
/// is now matched with the file as opened: the held bytes are hashed again,
/// found changed, and the file starts over.
#[tokio::test(flavor = "multi_thread")]
async fn a_hidden_write_between_the_check_and_the_turn_is_not_resumed_over() {
    use std::os::unix::fs::FileExt;
    for read in READS {
        let server = MockServer::start(MockConfig::new().dataset(DS, OLD))
            .await
            .unwrap();
        let files = Files::new("window.bin", 200_000);
        let (journal, path) = (files.journal(), &files.path);
        let held = interrupted(
            &server,
            config(&server, OLD, &journal, 20_000, 20_000, read),
            path,
            3,
        )
        .await;
        assert!(held > 0 && held < 200_000, "{held}");

        let uploader = Uploader::new(config(&server, NEW, &journal, 20_000, 20_000, read)).unwrap();
        let checked = uploader.check(std::slice::from_ref(path)).unwrap();
        // Meanwhile (another file's turn): written in place, head and tail,
        // its modification time put back.
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        let modified = file.metadata().unwrap().modified().unwrap();
        file.write_all_at(b"NEWHEAD", 10).unwrap();
        file.write_all_at(b"NEWTAIL", 199_000).unwrap();
        file.set_modified(modified).unwrap();
        drop(file);
        let now = std::fs::read(path).unwrap();

        let report = uploader.upload(checked, &idb_engine::NoEvents).await;

        assert!(report.all_verified(), "{read:?}: {report:#?}");
        let stored = std::fs::read(server.stored_file(DS, "window.bin").unwrap()).unwrap();
        assert!(stored == now, "{read:?}: verified a mix of two versions");
    }
}

/// Regression (found by an adversarial pass): a state directory whose disk
/// filled up, or that was removed, mid-run left the upload with no journal,
/// yet the run said it would resume (and a note per second called it "not
/// resuming from its journal"). A failed write is now told once, while the
/// file is still going (here the run is stopped when it is told: it was told
/// only as the file ended), and the file's report says it cannot resume.
#[tokio::test(flavor = "multi_thread")]
async fn a_journal_that_cannot_be_saved_is_not_promised_to_resume() {
    // 60 chunks of 50 ms each at least: the file goes on for 3 s, well past
    // the run's look for failed writes each second.
    let server = MockServer::start(
        MockConfig::new()
            .dataset(DS, OLD)
            .latency(Duration::from_millis(50)),
    )
    .await
    .unwrap();
    let files = Files::new("unsaved.bin", 1_200_000);
    let (journal, path) = (files.journal(), &files.path);
    let mut config = config(&server, OLD, &journal, 20_000, 20_000, Read::Default);
    config.journal_interval = Duration::ZERO;
    let uploader = Uploader::new(config).unwrap();
    let checked = uploader.check(std::slice::from_ref(path)).unwrap();
    let cancel = idb_engine::Cancel::new();
    let (acks, unsaved) = (AtomicUsize::new(0), Mutex::new(Vec::new()));
    let sink = |event: Event| match event {
        // The directory goes away after the first save.
        Event::ChunkAcked { .. } if acks.fetch_add(1, Ordering::SeqCst) == 1 => {
            std::fs::remove_dir_all(&journal).unwrap();
        }
        Event::JournalUnsaved { reason, .. } => {
            unsaved.lock().unwrap().push(reason);
            cancel.cancel();
        }
        _ => {}
    };
    let report = uploader.upload_until(checked, &sink, &cancel).await;

    assert!(
        matches!(report.files[0].outcome, FileOutcome::Interrupted),
        "{report:#?}"
    );
    assert!(report.files[0].acked > 0);
    assert!(!report.files[0].resumable, "{report:#?}");
    let unsaved = unsaved.into_inner().unwrap();
    assert_eq!(unsaved.len(), 1, "told once: {unsaved:?}");
    assert!(
        unsaved[0].contains("cannot write the journal"),
        "{unsaved:?}"
    );
}
