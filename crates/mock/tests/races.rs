//! Calls on one upload at the same time (a client's retry racing its original,
//! two clients on one name): every answer is one the protocol has (200, or a
//! 409 that says why), never a 500 of the server's own making, and what is
//! stored is what was verified.

mod support;

use std::path::Path;

use idb_mock::{MockServer, Storage};
use support::{Answer, Api, DS, blake3_hex, config, data, start};

/// Uploads raced at once in each test: races are likelier the more there are.
const UPLOADS: usize = 48;

/// Chunk size of these tests.
const C: usize = 16 * 1024;

async fn stored_server(store: &Path) -> MockServer {
    start(config().storage(Storage::Dir(store.to_owned()))).await
}

/// The bytes of upload `i`: two chunks and a bit.
fn bytes_of(i: usize) -> Vec<u8> {
    data(2 * C + 100 + i, i as u64)
}

/// Asserts `answer` is a verify receipt of `sent`.
#[track_caller]
fn assert_receipt(answer: &Answer, sent: &[u8]) {
    answer.expect(200);
    let body = answer.json();
    assert_eq!(body["size"], sent.len() as u64, "{body}");
    assert_eq!(body["blake3"], blake3_hex(sent), "{body}");
}

/// Asserts `answer` is a verify that came too early: 409 naming what arrived.
#[track_caller]
fn assert_early_verify(answer: &Answer, sent: &[u8]) {
    answer.expect(409);
    let body = answer.json();
    assert_eq!(body["expected"], sent.len() as u64, "{body}");
    assert!(body["received"].as_u64().is_some(), "{body}");
}

/// Asserts the server's stored copy of `name` is `sent`.
#[track_caller]
fn assert_stored(server: &MockServer, name: &str, sent: &[u8]) {
    let path = server.stored_file(DS, name).expect("a verified file");
    let stored = std::fs::read(&path).expect("read the stored file");
    assert!(
        stored == sent,
        "{name}: the stored bytes differ from the bytes sent"
    );
}

/// Sends every chunk of `sent` but the last, after a setup.
async fn all_but_the_last(api: &Api, name: &str, sent: &[u8]) {
    api.setup(name, sent.len() as u64).await.expect(200);
    for offset in (0..2 * C).step_by(C) {
        api.transfer(name, offset as u64, &sent[offset..offset + C])
            .await
            .expect(200);
    }
}

/// Sends every chunk of `sent`, after a setup.
async fn every_chunk(api: &Api, name: &str, sent: &[u8]) {
    all_but_the_last(api, name, sent).await;
    api.transfer(name, 2 * C as u64, &sent[2 * C..])
        .await
        .expect(200);
}

/// Runs `race(api, i)` for every upload at once.
async fn race_all<F, Fut>(server: &MockServer, race: F)
where
    F: Fn(Api, usize) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut races = tokio::task::JoinSet::new();
    for i in 0..UPLOADS {
        races.spawn(race(Api::new(server), i));
    }
    while let Some(done) = races.join_next().await {
        done.expect("a race panicked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_verifies_of_one_upload_at_once_both_get_the_receipt() {
    let store = tempfile::tempdir().unwrap();
    let server = stored_server(store.path()).await;
    race_all(&server, |api, i| async move {
        let name = format!("twice-{i}.bin");
        let sent = bytes_of(i);
        every_chunk(&api, &name, &sent).await;
        let (a, b) = tokio::join!(api.verify(&name), api.verify(&name));
        assert_receipt(&a, &sent);
        assert_receipt(&b, &sent);
    })
    .await;
    for i in 0..UPLOADS {
        assert_stored(&server, &format!("twice-{i}.bin"), &bytes_of(i));
    }
    assert_eq!(server.stats().files_verified, UPLOADS as u64);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_verify_racing_the_last_transfer_is_answered_200_or_409() {
    let store = tempfile::tempdir().unwrap();
    let server = stored_server(store.path()).await;
    race_all(&server, |api, i| async move {
        let name = format!("last-{i}.bin");
        let sent = bytes_of(i);
        all_but_the_last(&api, &name, &sent).await;
        let (transfer, verify) = tokio::join!(
            api.transfer(&name, 2 * C as u64, &sent[2 * C..]),
            api.verify(&name)
        );
        match verify.status {
            // The verify came first: the transfer is then the protocol's to
            // take, and a second verify gets the receipt.
            409 => {
                assert_early_verify(&verify, &sent);
                transfer.expect(200);
                assert_receipt(&api.verify(&name).await, &sent);
            }
            // The transfer came first; the verify saw every byte.
            _ => {
                transfer.expect(200);
                assert_receipt(&verify, &sent);
            }
        }
    })
    .await;
    for i in 0..UPLOADS {
        assert_stored(&server, &format!("last-{i}.bin"), &bytes_of(i));
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_setup_racing_a_verify_never_spoils_the_verified_file() {
    let store = tempfile::tempdir().unwrap();
    let server = stored_server(store.path()).await;
    race_all(&server, |api, i| async move {
        let name = format!("reset-{i}.bin");
        let sent = bytes_of(i);
        every_chunk(&api, &name, &sent).await;
        let (setup, verify) = tokio::join!(api.setup(&name, sent.len() as u64), api.verify(&name));
        match setup.status {
            // The setup came first and started the file over: the verify
            // then finds none of it.
            200 => {
                assert_early_verify(&verify, &sent);
                assert_eq!(verify.json()["received"], 0, "{}", verify.text());
            }
            // The verify came first: the name is taken.
            _ => {
                setup.expect(409);
                assert_eq!(setup.json()["error"], "already_exists", "{}", setup.text());
                assert_receipt(&verify, &sent);
            }
        }
    })
    .await;
    for i in 0..UPLOADS {
        let name = format!("reset-{i}.bin");
        if server.receipt(DS, &name).is_some() {
            assert_stored(&server, &name, &bytes_of(i));
        }
    }
    server.shutdown().await;
}
