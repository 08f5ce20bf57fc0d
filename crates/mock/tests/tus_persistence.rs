//! Tus uploads in a store over real HTTP across a restart: a new server on
//! the same store serves an unfinished upload at the offset the first one
//! acknowledged, and a final upload of a concatenation whole; bytes past the
//! saved offset are cut off and bytes short of it win; an info file that
//! cannot be used is set aside with a warning; bytes without info and the
//! info of a terminated upload are gone.

mod support;

use std::path::{Path, PathBuf};

use idb_mock::{MockConfig, MockServer, Storage, TusProfile};
use support::tus::{Tus, location, metadata, offset_of, register};
use support::{AUTH, Api, DS, assert_verified, config, data, start};

fn stored_in(store: &Path) -> MockConfig {
    config().storage(Storage::Dir(store.to_owned()))
}

/// A new server on `store`, where `server` was (stopped here).
async fn restart(server: MockServer, config: MockConfig) -> MockServer {
    let addr = server.addr();
    server.shutdown().await;
    let server = start(config.listen(addr)).await;
    assert_eq!(server.addr(), addr);
    server
}

/// Where the bytes of the upload at `url` are kept in `store`.
fn bytes_of(store: &Path, url: &str) -> PathBuf {
    let id = url.rsplit('/').next().unwrap();
    store.join("+tus").join(id)
}

/// The names in `store`'s tus directory, sorted.
fn tus_files(store: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store.join("+tus"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_serves_an_unfinished_upload_at_its_offset() {
    let store = tempfile::tempdir().unwrap();
    let sent = data(300_000, 1);
    let server = start(stored_in(store.path())).await;
    let tus = Tus::new(&server);
    let url = tus.create(sent.len() as u64, "a.bin").await;
    tus.patch(&url, 0, &sent[..131_072]).await.expect(204);

    let server = restart(server, stored_in(store.path())).await;
    assert_eq!(server.warnings(), Vec::<String>::new());
    let tus = Tus::new(&server);
    let head = tus.head(&url).await;
    head.expect(200);
    assert_eq!(offset_of(&head), 131_072);
    assert_eq!(head.header("upload-length"), Some("300000".to_owned()));
    assert_eq!(head.header("upload-metadata"), Some(metadata("a.bin")));
    assert!(head.header("upload-expires").is_some());
    let answer = tus.patch(&url, 131_072, &sent[131_072..]).await;
    answer.expect(204);
    assert_eq!(offset_of(&answer), 300_000);
    // Its blake3 was rebuilt from the bytes: the receipt covers all of them.
    let api = Api::new(&server);
    let answer = register(&api, &url, "a.bin", 300_000).await;
    assert_verified(&server, "a.bin", &answer, &sent);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_upload_survives_and_its_joined_partials_leave_nothing() {
    let store = tempfile::tempdir().unwrap();
    let config = || stored_in(store.path()).tus_profile(TusProfile::S3);
    let sent = data(12 << 20, 2);
    let (first, second) = sent.split_at(6 << 20);
    let server = start(config()).await;
    let tus = Tus::new(&server);
    let mut urls = Vec::new();
    for part in [first, second] {
        let url = tus.create_partial(part.len() as u64).await;
        tus.patch(&url, 0, part).await.expect(204);
        urls.push(url);
    }
    let answer = tus
        .create_with(&[("upload-concat", &format!("final;{}", urls.join(" ")))])
        .await;
    answer.expect(201);
    let joined = location(&answer);
    // The s3 profile removed the partials, and their info with them.
    let id = joined.rsplit('/').next().unwrap();
    assert_eq!(
        tus_files(store.path()),
        [id.to_owned(), format!("{id}.info")]
    );

    let server = restart(server, config()).await;
    let tus = Tus::new(&server);
    let head = tus.head(&joined).await;
    head.expect(200);
    assert_eq!(offset_of(&head), sent.len() as u64);
    assert_eq!(tus.head(&urls[0]).await.status, 404);
    let api = Api::new(&server);
    let answer = register(&api, &joined, "joined.bin", sent.len() as u64).await;
    assert_verified(&server, "joined.bin", &answer, &sent);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_past_the_saved_offset_are_cut_off_and_bytes_short_of_it_win() {
    let store = tempfile::tempdir().unwrap();
    let sent = data(200_000, 3);
    let server = start(stored_in(store.path())).await;
    let tus = Tus::new(&server);
    let long = tus.create(sent.len() as u64, "long.bin").await;
    let short = tus.create(sent.len() as u64, "short.bin").await;
    for url in [&long, &short] {
        tus.patch(url, 0, &sent[..65_536]).await.expect(204);
    }
    let addr = server.addr();
    server.shutdown().await;
    // A PATCH that was being written when the server died, never answered.
    let mut grown = std::fs::read(bytes_of(store.path(), &long)).unwrap();
    grown.extend_from_slice(&[0xEE; 5000]);
    std::fs::write(bytes_of(store.path(), &long), grown).unwrap();
    // Bytes lost under the saved count.
    let cut = std::fs::File::options()
        .write(true)
        .open(bytes_of(store.path(), &short))
        .unwrap();
    cut.set_len(10_000).unwrap();
    drop(cut);

    // The temporary file of an info write the server died in.
    let temporary = store.path().join("+tus").join(".0123.info.AbCdEf");
    std::fs::write(&temporary, b"{").unwrap();
    let server = start(stored_in(store.path()).listen(addr)).await;
    assert!(!temporary.exists());
    let held = std::fs::metadata(bytes_of(store.path(), &long))
        .unwrap()
        .len();
    assert_eq!(held, 65_536, "the unanswered bytes are gone");
    // The dropped offset is saved: bytes a PATCH leaves past it now (the
    // server dying mid-body) are cut at the next start.
    let addr = server.addr();
    server.shutdown().await;
    let mut grown = std::fs::read(bytes_of(store.path(), &short)).unwrap();
    grown.extend_from_slice(&[0xEE; 20_000]);
    std::fs::write(bytes_of(store.path(), &short), grown).unwrap();
    let server = start(stored_in(store.path()).listen(addr)).await;
    let tus = Tus::new(&server);
    let api = Api::new(&server);
    for (url, name, offset) in [(&long, "long.bin", 65_536), (&short, "short.bin", 10_000)] {
        assert_eq!(offset_of(&tus.head(url).await), offset, "{name}");
        let answer = tus.patch(url, offset, &sent[offset as usize..]).await;
        answer.expect(204);
        let answer = register(&api, url, name, sent.len() as u64).await;
        assert_verified(&server, name, &answer, &sent);
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_info_is_set_aside_and_bytes_without_info_are_removed() {
    let store = tempfile::tempdir().unwrap();
    let server = start(stored_in(store.path())).await;
    let tus = Tus::new(&server);
    let bad = tus.create(1000, "bad.bin").await;
    let gone = tus.create(1000, "gone.bin").await;
    tus.delete(&gone).await.expect(204);
    let bad_bytes = bytes_of(store.path(), &bad);
    let bad_id = bad.rsplit('/').next().unwrap();
    assert_eq!(
        tus_files(store.path()),
        [bad_id.to_owned(), format!("{bad_id}.info")],
        "a terminated upload leaves nothing"
    );
    let addr = server.addr();
    server.shutdown().await;
    std::fs::write(
        store.path().join("+tus").join(format!("{bad_id}.info")),
        b"{",
    )
    .unwrap();
    // A creation the server died answering: bytes, no info.
    std::fs::write(store.path().join("+tus").join("0123abcd"), b"xyz").unwrap();

    let server = start(stored_in(store.path()).listen(addr)).await;
    let warnings = server.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with(&format!("tus upload {bad_id} in "))
            && warnings[0].contains("could not be restored")
            && warnings[0].ends_with(&format!("{bad_id}.info.bad")),
        "{warnings:?}"
    );
    assert_eq!(Tus::new(&server).head(&bad).await.status, 404);
    // The set-aside info keeps its bytes for inspection; the orphan is gone.
    assert!(bad_bytes.exists());
    assert_eq!(
        tus_files(store.path()),
        [bad_id.to_owned(), format!("{bad_id}.info.bad")]
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_store_saves_no_tus_state() {
    let server = start(config().storage(Storage::TempDir)).await;
    let tus = Tus::new(&server);
    let url = tus.create(1000, "a.bin").await;
    tus.patch(&url, 0, &data(500, 4)).await.expect(204);
    let dir = server.store_dir().unwrap().join("+tus");
    let names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "the bytes alone: {names:?}");
    server.shutdown().await;
}

/// What the registration lookup says of the upload at `url`.
async fn looked_up(server: &MockServer, url: &str) -> serde_json::Value {
    let answer = reqwest::Client::new()
        .get(format!(
            "{}/api/dataset/{DS}/datafile?{}",
            server.url(),
            support::urlencode(&[("tus_url", url)])
        ))
        .header("authorization", AUTH)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_is_still_known_to_the_lookup_after_a_restart() {
    let store = tempfile::tempdir().unwrap();
    let sent = data(70_000, 5);
    let server = start(stored_in(store.path())).await;
    let tus = Tus::new(&server);
    let url = tus.create(sent.len() as u64, "r.bin").await;
    tus.send_all(&url, &sent, 64 * 1024).await;
    let answer = register(&Api::new(&server), &url, "r.bin", sent.len() as u64).await;
    answer.expect(200);
    let before = looked_up(&server, &url).await;
    assert_eq!(before["registered"], true, "{before}");

    let server = restart(server, stored_in(store.path())).await;
    // A client that lost the answer asks, and must not register it again.
    assert_eq!(looked_up(&server, &url).await, before);
    assert_eq!(server.tus_registrations().len(), 1);
    server.shutdown().await;
}

/// The `.info` of the upload at `url` in `store`, changed by `edit`.
fn edit_info(store: &Path, url: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut path = bytes_of(store, url).into_os_string();
    path.push(".info");
    let mut info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut info);
    std::fs::write(&path, serde_json::to_vec(&info).unwrap()).unwrap();
}

/// A server killed while applying a registration (saved with its upload
/// first, as being applied; then the dataset's record; then the upload's
/// again) answers the lookup by what the dataset has: registered if the
/// dataset has the file, not registered (and open to a registration) if not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_cut_short_by_a_kill_is_known_by_what_the_dataset_has() {
    let store = tempfile::tempdir().unwrap();
    let sent = data(5000, 6);
    let server = start(stored_in(store.path())).await;
    let tus = Tus::new(&server);
    let applied = tus.create(sent.len() as u64, "applied.bin").await;
    let cut = tus.create(sent.len() as u64, "cut.bin").await;
    for url in [&applied, &cut] {
        tus.send_all(url, &sent, 64 * 1024).await;
    }
    let answer = register(&Api::new(&server), &applied, "applied.bin", 5000).await;
    answer.expect(200);
    let addr = server.addr();
    server.shutdown().await;
    // Killed before the upload's second save: the dataset has the file.
    edit_info(store.path(), &applied, |info| {
        info["registered"][0]["datafile"] = 0.into();
    });
    // Killed before the dataset's record: the dataset has no such file.
    let mut pending = serde_json::json!({});
    edit_info(store.path(), &applied, |info| {
        pending = info["registered"][0].clone();
    });
    pending["filename"] = "cut.bin".into();
    pending["tus_url"] = cut.clone().into();
    edit_info(store.path(), &cut, |info| {
        info["registered"] = serde_json::json!([pending]);
    });

    let server = start(stored_in(store.path()).listen(addr)).await;
    assert_eq!(server.warnings(), Vec::<String>::new());
    assert_eq!(looked_up(&server, &applied).await["registered"], true);
    assert_eq!(looked_up(&server, &cut).await["registered"], false);
    let answer = register(&Api::new(&server), &cut, "cut.bin", 5000).await;
    assert_verified(&server, "cut.bin", &answer, &sent);
    server.shutdown().await;
}
