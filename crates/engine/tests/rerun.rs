//! Re-runs, in process: receipts skip verified files (by metadata without
//! reading them, or by blake3), `force` ignores them, and the state directory
//! seen from outside a run (`StateDir`: unfinished uploads, receipts, cleaning
//! with an injected age threshold).

mod support;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use idb_engine::{
    Cancel, CleanOutcome, Error, Event, FileOutcome, LocalFile, NoEvents, Report, STALE_AFTER,
    Scope, Stale, StateDir, UploadConfig, Uploader,
};
use idb_mock::{MockConfig, MockServer};

use support::{DS, Read, TOKEN, data, failure, write};

fn config(server: &MockServer, state: &Path) -> UploadConfig {
    let mut config = support::config(server, 4096, Read::Default);
    config.state_dir = Some(state.to_path_buf());
    config
}

async fn run(
    config: UploadConfig,
    paths: &[PathBuf],
    events: &dyn idb_engine::EventSink,
) -> Report {
    support::upload(config, paths, events).await
}

/// A mock with [`DS`], a test directory, and a state directory in it.
async fn start() -> (MockServer, tempfile::TempDir, PathBuf) {
    let server = MockServer::start(MockConfig::new().dataset(DS, TOKEN))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    (server, dir, state)
}

/// Whether file `index` was skipped, and if so whether it was read to be.
fn skipped(report: &Report, index: usize) -> Option<bool> {
    match &report.files[index].outcome {
        FileOutcome::Skipped { hashed, .. } => Some(*hashed),
        _ => None,
    }
}

#[tokio::test]
async fn a_file_verified_earlier_is_skipped_by_its_metadata_without_reading_it() {
    let (server, dir, state) = start().await;
    let paths = [
        write(dir.path(), "a.bin", &data(20_000, 1)),
        write(dir.path(), "b.bin", b"small"),
    ];
    let first = run(config(&server, &state), &paths, &NoEvents).await;
    assert!(first.all_verified(), "{first:#?}");
    let before = server.stats();

    let events = Mutex::new(Vec::new());
    let second = run(config(&server, &state), &paths, &|e: Event| {
        events.lock().unwrap().push(e)
    })
    .await;

    assert!(second.all_done() && !second.all_verified(), "{second:#?}");
    assert_eq!(
        (skipped(&second, 0), skipped(&second, 1)),
        (Some(false), Some(false))
    );
    assert_eq!(second.bytes_read, 0, "nothing read");
    assert_eq!(server.stats().requests_arrived, before.requests_arrived);
    let skips: Vec<_> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::FileSkipped {
                path,
                size,
                verified_at,
            } => Some((path.clone(), *size, *verified_at)),
            _ => None,
        })
        .collect();
    assert_eq!(skips.len(), 2, "{skips:?}");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(skips.iter().all(|(_, _, at)| now - at < 3600), "{skips:?}");
    assert!(
        skips
            .iter()
            .any(|(path, size, _)| *path == paths[1] && *size == 5)
    );
}

#[tokio::test]
async fn a_touched_file_is_skipped_by_its_blake3_and_known_by_metadata_next_time() {
    let (server, dir, state) = start().await;
    let bytes = data(50_000, 2);
    let paths = [write(dir.path(), "t.bin", &bytes)];
    assert!(
        run(config(&server, &state), &paths, &NoEvents)
            .await
            .all_verified()
    );
    std::fs::File::options()
        .write(true)
        .open(&paths[0])
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(12345))
        .unwrap();
    let before = server.stats();

    let second = run(config(&server, &state), &paths, &NoEvents).await;
    assert_eq!(skipped(&second, 0), Some(true), "{second:#?}");
    assert_eq!(
        second.bytes_read,
        bytes.len() as u64,
        "read once, to hash it"
    );
    let third = run(config(&server, &state), &paths, &NoEvents).await;
    assert_eq!(skipped(&third, 0), Some(false), "{third:#?}");
    assert_eq!(third.bytes_read, 0);
    assert_eq!(server.stats().requests_arrived, before.requests_arrived);

    // Same size, other bytes: uploaded again, and refused as a verified name.
    let mut other = bytes.clone();
    other[100] ^= 1;
    std::fs::write(&paths[0], &other).unwrap();
    let fourth = run(config(&server, &state), &paths, &NoEvents).await;
    assert!(
        matches!(
            failure(&fourth, 0),
            Error::AlreadyExists { recorded: true, .. }
        ),
        "{fourth:#?}"
    );
}

#[tokio::test]
async fn force_ignores_receipts_and_the_server_refuses_the_verified_name() {
    let (server, dir, state) = start().await;
    let paths = [write(dir.path(), "f.bin", &data(9000, 3))];
    assert!(
        run(config(&server, &state), &paths, &NoEvents)
            .await
            .all_verified()
    );
    let before = server.stats();

    let mut forced = config(&server, &state);
    forced.force = true;
    let report = run(forced, &paths, &NoEvents).await;

    let error = failure(&report, 0);
    assert!(
        matches!(error, Error::AlreadyExists { recorded: true, .. }),
        "{error:?}"
    );
    assert!(!report.all_done());
    let after = server.stats();
    assert_eq!(after.requests_arrived - before.requests_arrived, 1, "setup");
    assert_eq!(after.bytes_received, before.bytes_received);
    // Without a receipt, the same refusal says it was not recorded here.
    let elsewhere = dir.path().join("other-state");
    let report = run(config(&server, &elsewhere), &paths, &NoEvents).await;
    assert!(matches!(
        failure(&report, 0),
        Error::AlreadyExists {
            recorded: false,
            ..
        }
    ));
}

/// The state directory from outside: one unfinished upload and one receipt;
/// cleaning with the real threshold keeps the fresh journal, with an injected
/// threshold of zero removes it (a dry run first).
#[tokio::test]
async fn the_state_directory_lists_and_cleans_with_an_injected_age() {
    let (server, dir, state_root) = start().await;
    let done = write(dir.path(), "done.bin", b"done");
    let part = write(dir.path(), "part.bin", &data(40_000, 4));
    let mut config = config(&server, &state_root);
    config.parallel = 1;
    // One verified file, then another stopped at its third chunk.
    assert!(
        run(config.clone(), std::slice::from_ref(&done), &NoEvents)
            .await
            .all_verified()
    );
    let cancel = Cancel::new();
    let acks = Mutex::new(0);
    let uploader = Uploader::new(config).unwrap();
    let files = uploader.check(std::slice::from_ref(&part)).unwrap();
    let report = uploader
        .upload_until(
            files,
            &|e: Event| {
                if let Event::ChunkAcked { .. } = e {
                    let mut acks = acks.lock().unwrap();
                    *acks += 1;
                    if *acks == 3 {
                        cancel.cancel();
                    }
                }
            },
            &cancel,
        )
        .await;
    assert!(matches!(report.files[0].outcome, FileOutcome::Interrupted));

    let state = StateDir::new(&state_root);
    let everything = Scope::default();
    let unfinished = state.unfinished(&everything).unwrap();
    assert_eq!(unfinished.len(), 1, "{unfinished:?}");
    let journal = &unfinished[0];
    assert_eq!(
        (
            journal.filename.as_str(),
            journal.size,
            journal.local.clone()
        ),
        ("part.bin", 40_000, LocalFile::Unchanged)
    );
    assert!(journal.acked >= 3 * 4096 && journal.acked < 40_000);
    let other = Scope {
        dataset: Some(idb_engine::DatasetKey::new("IDB-OTHER").unwrap()),
        ..Scope::default()
    };
    assert!(state.unfinished(&other).unwrap().is_empty());
    let server_url = server.url().parse().unwrap();
    let dataset = idb_engine::DatasetKey::new(DS).unwrap();
    let receipts = state.receipts(&server_url, &dataset).unwrap();
    assert_eq!(receipts.len(), 1);
    assert_eq!(
        (receipts[0].filename.as_str(), receipts[0].size),
        ("done.bin", 4)
    );
    assert_eq!(
        receipts[0].blake3,
        blake3::hash(b"done").to_hex().to_string()
    );

    assert!(
        state
            .clean(&everything, STALE_AFTER, false)
            .unwrap()
            .is_empty()
    );
    let dry = state.clean(&everything, Duration::ZERO, true).unwrap();
    assert_eq!(dry.len(), 1);
    assert!(matches!(dry[0].why, Stale::Old { .. }));
    assert_eq!(dry[0].outcome, CleanOutcome::WouldRemove);
    assert_eq!(state.unfinished(&everything).unwrap().len(), 1);
    let cleaned = state.clean(&everything, Duration::ZERO, false).unwrap();
    assert_eq!(cleaned[0].outcome, CleanOutcome::Removed);
    assert!(state.unfinished(&everything).unwrap().is_empty());
    assert_eq!(state.receipts(&server_url, &dataset).unwrap().len(), 1);
}
