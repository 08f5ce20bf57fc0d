//! Protocol 2's registration call: a tus upload becomes a verified file, as
//! protocol 1's verify makes one; incomplete and repeated registrations are
//! accepted (as the service does) and counted.

mod support;

use idb_mock::{MockConfig, Storage};
use support::tus::{Tus, register};
use support::{Api, DS, assert_verified_in, blake3_hex, config, data, start};

#[tokio::test]
async fn a_registered_upload_is_a_verified_file_with_the_verify_receipt() {
    let server = start(config()).await;
    let tus = Tus::new(&server);
    let api = Api::new(&server);
    let bytes = data(200_000, 5);
    let url = tus.create(bytes.len() as u64, "r.bin").await;
    tus.send_all(&url, &bytes, 64 * 1024).await;
    let answer = register(&api, &url, "r.bin", bytes.len() as u64).await;
    answer.expect(200);
    assert_verified_in(&server, DS, "r.bin", &answer, &bytes);
    assert_eq!(server.stats().files_verified, 1);
    let stats = server.tus_stats();
    assert_eq!(stats.registrations, 1);
    assert_eq!(stats.incomplete_registrations, 0);
    assert_eq!(stats.repeated_registrations, 0);
    let registrations = server.tus_registrations();
    assert_eq!(registrations.len(), 1);
    assert_eq!(registrations[0].datafile, 1);
    assert_eq!(registrations[0].tus_url, url);
    // The name is now in the dataset: protocol 1 refuses to set it up again.
    api.setup("r.bin", 10).await.expect(409);
}

#[tokio::test]
async fn names_that_differ_only_in_outer_spaces_are_files_of_their_own() {
    let store = tempfile::tempdir().unwrap();
    let server = start(config().storage(idb_mock::Storage::Dir(store.path().to_owned()))).await;
    let tus = Tus::new(&server);
    let api = Api::new(&server);
    for (i, name) in ["dup", " dup", "dup ", "dup\u{a0}"].into_iter().enumerate() {
        let bytes = data(1000 + i, i as u64);
        let url = tus.create(bytes.len() as u64, name).await;
        tus.send_all(&url, &bytes, 64 * 1024).await;
        let answer = register(&api, &url, name, bytes.len() as u64).await;
        answer.expect(200);
        assert_eq!(answer.json()["filename"], name);
        assert_verified_in(&server, DS, name, &answer, &bytes);
    }
    assert_eq!(std::fs::read_dir(store.path().join(DS)).unwrap().count(), 4);
}

#[tokio::test]
async fn a_registration_sent_as_multipart_is_taken_too() {
    let server = start(config()).await;
    let tus = Tus::new(&server);
    let api = Api::new(&server);
    let url = tus.create(10, "m.bin").await;
    tus.patch(&url, 0, &[9; 10]).await.expect(204);
    let form = reqwest::multipart::Form::new()
        .text("tus_url", url)
        .text("filename", "m.bin")
        .text("size", "10");
    let answer = api.send(form).await;
    answer.expect(200);
    assert_eq!(answer.json()["blake3"], blake3_hex(&[9; 10]));
}

#[tokio::test]
async fn an_incomplete_upload_is_registered_as_the_service_would_and_counted() {
    let server = start(config()).await;
    let tus = Tus::new(&server);
    let api = Api::new(&server);
    let url = tus.create(100, "half.bin").await;
    tus.patch(&url, 0, &[1; 40]).await.expect(204);
    // The service trusts `size`: it answers 200 for 100 bytes it does not have.
    let answer = register(&api, &url, "half.bin", 100).await;
    answer.expect(200);
    assert_eq!(answer.json()["size"], 40, "the receipt tells what is there");
    assert_eq!(server.tus_stats().incomplete_registrations, 1);
    let stored = std::fs::read(server.stored_file(DS, "half.bin").unwrap()).unwrap();
    assert_eq!(stored, vec![1; 40]);
    // A complete upload registered with a wrong size is counted as well.
    let url = tus.create(10, "size.bin").await;
    tus.patch(&url, 0, &[1; 10]).await.expect(204);
    register(&api, &url, "size.bin", 11).await.expect(200);
    assert_eq!(server.tus_stats().incomplete_registrations, 2);
}

#[tokio::test]
async fn a_second_registration_makes_a_second_datafile_and_is_counted() {
    let server = start(config()).await;
    let tus = Tus::new(&server);
    let api = Api::new(&server);
    let url = tus.create(10, "twice.bin").await;
    tus.patch(&url, 0, &[3; 10]).await.expect(204);
    register(&api, &url, "twice.bin", 10).await.expect(200);
    register(&api, &url, "twice.bin", 10).await.expect(200);
    assert_eq!(server.stats().files_verified, 2);
    let stats = server.tus_stats();
    assert_eq!((stats.registrations, stats.repeated_registrations), (2, 1));
    let datafiles: Vec<u64> = server
        .tus_registrations()
        .iter()
        .map(|r| r.datafile)
        .collect();
    assert_eq!(datafiles, [1, 2]);
}

#[tokio::test]
async fn registration_checks_the_dataset_the_token_and_the_upload() {
    let server = start(
        config()
            .dataset("IDB-2", "tok-2")
            .published_dataset("IDB-3", "tok-3"),
    )
    .await;
    let tus = Tus::new(&server);
    let url = tus.create(10, "x.bin").await;
    tus.patch(&url, 0, &[3; 10]).await.expect(204);
    // The token of another dataset: 401, as for any datafile call.
    let other = Api::for_dataset(&server, DS, "tok-2");
    register(&other, &url, "x.bin", 10).await.expect(401);
    let published = Api::for_dataset(&server, "IDB-3", "tok-3");
    register(&published, &url, "x.bin", 10).await.expect(404);
    let api = Api::new(&server);
    let unknown = format!("{}nope", tus.endpoint);
    register(&api, &unknown, "x.bin", 10).await.expect(404);
    register(&api, "http://elsewhere/upload", "x.bin", 10)
        .await
        .expect(400);
    register(&api, &url, "a/b", 10).await.expect(400);
    assert_eq!(server.tus_stats().registrations, 0);
    assert_eq!(server.stats().files_verified, 0);
}

#[tokio::test]
async fn a_sink_registers_with_the_receipt_of_the_bytes() {
    let server = start(
        MockConfig::new()
            .tus(true)
            .dataset(DS, support::TOKEN)
            .storage(Storage::Sink),
    )
    .await;
    let tus = Tus::new(&server);
    let api = Api::new(&server);
    let bytes = data(70_000, 6);
    let url = tus.create(bytes.len() as u64, "s.bin").await;
    tus.send_all(&url, &bytes, 30_000).await;
    let answer = register(&api, &url, "s.bin", bytes.len() as u64).await;
    answer.expect(200);
    assert_eq!(answer.json()["blake3"], blake3_hex(&bytes));
    assert_eq!(
        server.receipt(DS, "s.bin").unwrap().blake3,
        blake3_hex(&bytes)
    );
}

/// A protocol 1 upload of a name that a tus registration put into the dataset
/// while it was open does not replace the registered file at its verify.
#[tokio::test]
async fn a_verify_never_replaces_a_name_registered_meanwhile() {
    let server = start(config()).await;
    let tus = Tus::new(&server);
    let api = Api::new(&server);
    let chunked = data(1000, 7);
    api.setup("both.bin", chunked.len() as u64)
        .await
        .expect(200);
    api.transfer("both.bin", 0, &chunked).await.expect(200);
    let registered = data(500, 8);
    let url = tus.create(registered.len() as u64, "both.bin").await;
    tus.send_all(&url, &registered, 64 * 1024).await;
    let answer = register(&api, &url, "both.bin", registered.len() as u64).await;
    answer.expect(200);

    let refused = api.verify("both.bin").await;
    refused.expect(409);
    assert_eq!(refused.json()["error"], "already_exists");
    assert_verified_in(&server, DS, "both.bin", &answer, &registered);
}

/// A `tus_url` names an upload by its id at its end: one naming another
/// server must not register this server's upload of the same id.
#[tokio::test]
async fn a_tus_url_of_another_server_is_refused_and_this_servers_own_are_taken() {
    let server = start(config()).await;
    let tus = Tus::new(&server);
    let api = Api::new(&server);
    let addr = server.addr();
    let mut urls = Vec::new();
    for name in ["abs.bin", "path.bin", "localhost.bin"] {
        let url = tus.create(10, name).await;
        tus.patch(&url, 0, &[4; 10]).await.expect(204);
        urls.push(url);
    }
    let path = urls[0].strip_prefix(&server.url()).unwrap().to_owned();
    let other_port = if addr.port() == 1 { 2 } else { addr.port() - 1 };
    for foreign in [
        format!("http://elsewhere.example{path}"),
        format!("http://127.0.0.2:{}{path}", addr.port()),
        format!("http://127.0.0.1:{other_port}{path}"),
        format!("https://127.0.0.1:{}{path}", addr.port()),
        format!("//elsewhere.example{path}"),
    ] {
        let answer = register(&api, &foreign, "abs.bin", 10).await;
        answer.expect(400);
        assert_eq!(answer.json()["error"], "foreign_tus_url", "{foreign}");
    }
    assert_eq!(server.tus_stats().registrations, 0);
    // Its own: the Location as answered, a path, or the bound address by name.
    register(&api, &urls[0], "abs.bin", 10).await.expect(200);
    let path = urls[1].strip_prefix(&server.url()).unwrap();
    register(&api, path, "path.bin", 10).await.expect(200);
    let by_name = urls[2].replace("127.0.0.1", "localhost");
    register(&api, &by_name, "localhost.bin", 10)
        .await
        .expect(200);
    assert_eq!(server.tus_stats().registrations, 3);
}
