//! A store directory's saved state over real HTTP: a strict upload cut by a
//! shutdown continues on a new server started on the same store and the same
//! address, at the offset the first one reached (an older offset gets 409
//! `expected_offset`), and verifies byte-exact; receipts survive restarts; the
//! staged bytes win over the saved count; a corrupt or unknown-version state file
//! starts the server empty with a warning; offset-mode uploads are not resumed;
//! a second server on a store in use is refused, naming the holder's pid.

mod support;

use std::net::SocketAddr;
use std::path::Path;

use idb_mock::{MockConfig, MockError, MockServer, STATE_FILE, Storage, WriteMode};
use serde_json::{Value, json};
use support::{Api, DS, assert_verified, blake3_hex, config, data, start};

/// Chunk size of these tests.
const C: usize = 64 * 1024;

fn stored_in(store: &Path) -> MockConfig {
    config().storage(Storage::Dir(store.to_owned()))
}

/// A server on `store` listening on `addr` (the address of the server before it).
async fn restart(store: &Path, addr: SocketAddr) -> MockServer {
    restart_with(stored_in(store), addr).await
}

async fn restart_with(config: MockConfig, addr: SocketAddr) -> MockServer {
    let server = start(config.listen(addr)).await;
    assert_eq!(
        server.addr(),
        addr,
        "the new server listens where the old one did"
    );
    server
}

fn saved_state(store: &Path) -> Value {
    let bytes = std::fs::read(store.join(STATE_FILE)).expect("read the saved state");
    serde_json::from_slice(&bytes).expect("the saved state is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_resumes_a_strict_upload_at_its_offset() {
    let store = tempfile::tempdir().unwrap();
    let sent = data(5 * C + 123, 1);
    let server = start(stored_in(store.path())).await;
    let api = Api::new(&server);
    api.setup("big.bin", sent.len() as u64).await.expect(200);
    api.transfer("big.bin", 0, &sent[..C]).await.expect(200);
    api.transfer("big.bin", C as u64, &sent[C..2 * C])
        .await
        .expect(200);
    let addr = server.addr();
    server.shutdown().await;

    let state = saved_state(store.path());
    assert_eq!(state["version"], 1, "{state}");
    assert_eq!(
        state["sessions"],
        json!([{
            "dataset": DS, "filename": "big.bin", "declared": sent.len(),
            "received": 2 * C, "accepted": [[0, C], [C, C]],
        }]),
        "{state}"
    );

    let server = restart(store.path(), addr).await;
    assert_eq!(server.warnings(), Vec::<String>::new());
    assert_eq!(
        server.accepted(DS, "big.bin"),
        [(0, C as u64), (C as u64, C as u64)]
    );
    let api = Api::new(&server);
    // Different bytes at an older offset: where to continue.
    let answer = api.transfer("big.bin", C as u64, &data(C, 99)).await;
    answer.expect(409);
    assert_eq!(answer.json(), json!({ "expected_offset": 2 * C }));
    // The identical retry of the last chunk is still recognised (read back from
    // the staged file).
    api.transfer("big.bin", C as u64, &sent[C..2 * C])
        .await
        .expect(200);
    // The next transfer at the offset the first server reached.
    api.transfer("big.bin", 2 * C as u64, &sent[2 * C..3 * C])
        .await
        .expect(200);
    let answer = api.transfer("big.bin", 2 * C as u64, &data(C, 98)).await;
    answer.expect(409);
    assert_eq!(answer.json(), json!({ "expected_offset": 3 * C }));
    for start in (3 * C..sent.len()).step_by(C) {
        let end = (start + C).min(sent.len());
        api.transfer("big.bin", start as u64, &sent[start..end])
            .await
            .expect(200);
    }
    let answer = api.verify("big.bin").await;
    assert_verified(&server, "big.bin", &answer, &sent);
    assert_eq!(answer.json()["blake3"], blake3_hex(&sent));
    assert_eq!(server.stats().bytes_accepted, (sent.len() - 2 * C) as u64);
    let state = saved_state(store.path());
    assert_eq!(state["sessions"], json!([]), "{state}");
    assert_eq!(state["verified"][0]["blake3"], blake3_hex(&sent), "{state}");
    server.shutdown().await;

    // A third server still knows the name is taken, and its receipt.
    let server = restart(store.path(), addr).await;
    let api = Api::new(&server);
    let answer = api.setup("big.bin", 10).await;
    answer.expect(409);
    assert_eq!(answer.json()["error"], "already_exists");
    let receipt = server.receipt(DS, "big.bin").expect("the receipt survives");
    assert_eq!(
        (receipt.size, receipt.blake3),
        (sent.len() as u64, blake3_hex(&sent))
    );
    let answer = api.verify("big.bin").await;
    assert_verified(&server, "big.bin", &answer, &sent);
    assert_eq!(
        server.accepted(DS, "big.bin").len(),
        6,
        "the log is saved with the receipt"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_file_shorter_than_the_saved_count_wins() {
    let store = tempfile::tempdir().unwrap();
    let sent = data(3 * C, 2);
    let server = start(stored_in(store.path())).await;
    let api = Api::new(&server);
    api.setup("cut.bin", sent.len() as u64).await.expect(200);
    api.transfer("cut.bin", 0, &sent[..C]).await.expect(200);
    api.transfer("cut.bin", C as u64, &sent[C..2 * C])
        .await
        .expect(200);
    let addr = server.addr();
    server.shutdown().await;
    // The last bytes never reached the disk (a power cut, say).
    let staged = store.path().join("+incoming").join(DS).join("cut.bin");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&staged)
        .unwrap();
    file.set_len((C + 10) as u64).unwrap();
    drop(file);

    let server = restart(store.path(), addr).await;
    let warnings = server.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("cut.bin"), "{warnings:?}");
    let api = Api::new(&server);
    let answer = api.transfer("cut.bin", 2 * C as u64, &sent[2 * C..]).await;
    answer.expect(409);
    assert_eq!(answer.json(), json!({ "expected_offset": C + 10 }));
    api.transfer("cut.bin", (C + 10) as u64, &sent[C + 10..])
        .await
        .expect(200);
    let answer = api.verify("cut.bin").await;
    assert_verified(&server, "cut.bin", &answer, &sent);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_setup_after_restart_starts_the_file_over() {
    let store = tempfile::tempdir().unwrap();
    let server = start(stored_in(store.path())).await;
    let api = Api::new(&server);
    api.setup("again.bin", 20).await.expect(200);
    api.transfer("again.bin", 0, &[7; 10]).await.expect(200);
    let addr = server.addr();
    server.shutdown().await;

    let server = restart(store.path(), addr).await;
    let api = Api::new(&server);
    api.setup("again.bin", 15).await.expect(200);
    let answer = api.transfer("again.bin", 10, &[7; 5]).await;
    answer.expect(409);
    assert_eq!(answer.json(), json!({ "expected_offset": 0 }));
    api.transfer("again.bin", 0, &[8; 15]).await.expect(200);
    let answer = api.verify("again.bin").await;
    assert_verified(&server, "again.bin", &answer, &[8; 15]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verify_cut_between_saving_and_moving_is_finished_on_start() {
    let store = tempfile::tempdir().unwrap();
    let server = start(stored_in(store.path())).await;
    let api = Api::new(&server);
    api.setup("moved.bin", 3).await.expect(200);
    api.transfer("moved.bin", 0, &[1, 2, 3]).await.expect(200);
    api.verify("moved.bin").await.expect(200);
    let stored = server.stored_file(DS, "moved.bin").unwrap();
    let addr = server.addr();
    server.shutdown().await;
    // As if the server had stopped after saving the receipt, before the move.
    let staged = store.path().join("+incoming").join(DS).join("moved.bin");
    std::fs::rename(&stored, &staged).unwrap();

    let server = restart(store.path(), addr).await;
    assert_eq!(server.warnings(), Vec::<String>::new());
    assert_eq!(std::fs::read(&stored).unwrap(), [1, 2, 3]);
    assert!(!staged.exists());
    let answer = Api::new(&server).verify("moved.bin").await;
    assert_verified(&server, "moved.bin", &answer, &[1, 2, 3]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_starts_empty_with_a_warning() {
    let store = tempfile::tempdir().unwrap();
    let server = start(stored_in(store.path())).await;
    let api = Api::new(&server);
    api.setup("x.bin", 4).await.expect(200);
    api.transfer("x.bin", 0, &[1, 2]).await.expect(200);
    let addr = server.addr();
    server.shutdown().await;
    let saved = std::fs::read(store.path().join(STATE_FILE)).unwrap();
    std::fs::write(store.path().join(STATE_FILE), &saved[..saved.len() / 2]).unwrap();

    let server = restart(store.path(), addr).await;
    let warnings = server.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains(STATE_FILE), "{warnings:?}");
    assert!(warnings[0].contains("not valid JSON"), "{warnings:?}");
    // Set aside, not lost.
    assert_eq!(
        std::fs::read(store.path().join("+state.json.bad")).unwrap(),
        &saved[..saved.len() / 2]
    );
    let api = Api::new(&server);
    let answer = api.transfer("x.bin", 2, &[3, 4]).await;
    answer.expect(409);
    assert_eq!(answer.json()["error"], "no_session");
    // It works from empty and saves a good state again.
    api.setup("x.bin", 4).await.expect(200);
    assert_eq!(saved_state(store.path())["version"], 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_state_version_starts_empty_with_a_warning() {
    let store = tempfile::tempdir().unwrap();
    let newer = json!({
        "version": 2,
        "sessions": [{ "dataset": DS, "filename": "x.bin", "declared": 4, "received": 2 }],
        "verified": [],
        "something": "new",
    });
    std::fs::write(store.path().join(STATE_FILE), newer.to_string()).unwrap();

    let server = start(stored_in(store.path())).await;
    let warnings = server.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("version 2"), "{warnings:?}");
    let api = Api::new(&server);
    let answer = api.transfer("x.bin", 2, &[3, 4]).await;
    answer.expect(409);
    assert_eq!(answer.json()["error"], "no_session");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_mode_upload_is_not_resumed_and_its_client_starts_over() {
    let store = tempfile::tempdir().unwrap();
    let offset = || stored_in(store.path()).mode(WriteMode::Offset);
    let sent = data(2 * C, 3);
    let server = start(offset()).await;
    let api = Api::new(&server);
    api.setup("o.bin", sent.len() as u64).await.expect(200);
    api.transfer("o.bin", C as u64, &sent[C..])
        .await
        .expect(200);
    let addr = server.addr();
    server.shutdown().await;

    let server = restart_with(offset(), addr).await;
    assert_eq!(server.warnings(), Vec::<String>::new());
    let api = Api::new(&server);
    let answer = api.transfer("o.bin", 0, &sent[..C]).await;
    answer.expect(409);
    assert_eq!(answer.json()["error"], "no_session");
    let answer = api.verify("o.bin").await;
    answer.expect(409);
    assert_eq!(answer.json()["error"], "no_session");
    // Starting over works, and its receipt is saved like a strict one.
    api.setup("o.bin", sent.len() as u64).await.expect(200);
    api.transfer("o.bin", C as u64, &sent[C..])
        .await
        .expect(200);
    api.transfer("o.bin", 0, &sent[..C]).await.expect(200);
    let answer = api.verify("o.bin").await;
    assert_verified(&server, "o.bin", &answer, &sent);
    server.shutdown().await;

    let server = restart_with(offset(), addr).await;
    let answer = Api::new(&server).setup("o.bin", 1).await;
    answer.expect(409);
    assert_eq!(answer.json()["error"], "already_exists");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_stores_and_sinks_save_nothing() {
    for storage in [Storage::TempDir, Storage::Sink] {
        let server = start(config().storage(storage)).await;
        let api = Api::new(&server);
        api.setup("t.bin", 2).await.expect(200);
        api.transfer("t.bin", 0, &[1, 2]).await.expect(200);
        if let Some(dir) = server.store_dir() {
            assert!(!dir.join(STATE_FILE).exists());
        }
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_a_store_in_use_is_refused_naming_the_holder() {
    let store = tempfile::tempdir().unwrap();
    let first = start(stored_in(store.path())).await;
    let api = Api::new(&first);
    let sent = data(C + 5, 3);
    api.upload("kept.bin", &sent, C).await;

    match MockServer::start(stored_in(store.path())).await {
        Err(e @ MockError::StoreInUse { .. }) => {
            let MockError::StoreInUse { path, pid } = &e else {
                unreachable!()
            };
            assert_eq!(path, store.path());
            assert_eq!(*pid, Some(std::process::id()), "{e}");
            let text = e.to_string();
            let expected = format!(
                "store {} is in use by pid {}",
                store.path().display(),
                std::process::id()
            );
            assert!(text.contains(&expected), "{text}");
        }
        Err(other) => panic!("expected StoreInUse, got {other}"),
        Ok(_) => panic!("a second server started on a store in use"),
    }
    // The refused start touched nothing: the first server still has its file.
    let stored = std::fs::read(first.stored_file(DS, "kept.bin").unwrap()).unwrap();
    assert!(stored == sent, "the verified file changed");

    let addr = first.addr();
    first.shutdown().await;
    // Stopped, it lets the store go.
    let again = restart(store.path(), addr).await;
    assert_eq!(
        again.receipt(DS, "kept.bin").unwrap().blake3,
        blake3_hex(&sent)
    );
    again.shutdown().await;
}
