//! Protocol 2's tus 1.0 core on the mock: OPTIONS, creation, PATCH, HEAD,
//! termination, checksums, expiry, the version and token checks, and faults.

mod support;

use idb_mock::{FaultConfig, FaultKind, MockServer, Storage, TUS_MAX_SIZE};
use reqwest::Method;
use support::tus::{OFFSET_OCTET_STREAM, Tus, checksum, metadata, offset_of};
use support::{config, data, start};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn options_advertises_the_version_extensions_max_size_and_checksums() {
    let server = start(config()).await;
    let answer = Tus::new(&server).options().await;
    answer.expect(204);
    assert_eq!(answer.header("tus-version").as_deref(), Some("1.0.0"));
    let extensions = answer.header("tus-extension").unwrap();
    for extension in [
        "creation",
        "creation-defer-length",
        "termination",
        "expiration",
        "concatenation",
        "checksum",
    ] {
        assert!(
            extensions.split(',').any(|e| e == extension),
            "{extensions}"
        );
    }
    assert_eq!(
        answer.header("tus-max-size"),
        Some(TUS_MAX_SIZE.to_string())
    );
    let algorithms = answer.header("tus-checksum-algorithm").unwrap();
    assert!(algorithms.split(',').any(|a| a == "sha1"), "{algorithms}");
}

#[tokio::test]
async fn an_upload_in_patches_reaches_its_length_and_head_tells_the_offset() {
    let server = start(config()).await;
    let tus = Tus::new(&server);
    let bytes = data(300_000, 1);
    let url = tus.create(bytes.len() as u64, "a.bin").await;
    assert!(url.starts_with(&tus.endpoint), "{url}");
    let head = tus.head(&url).await;
    head.expect(200);
    assert_eq!(offset_of(&head), 0);
    assert_eq!(head.header("upload-length"), Some("300000".to_owned()));
    assert_eq!(head.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(head.header("tus-resumable").as_deref(), Some("1.0.0"));
    assert_eq!(head.header("upload-metadata"), Some(metadata("a.bin")));
    assert!(head.header("upload-expires").is_some());
    tus.send_all(&url, &bytes, 128 * 1024).await;
    let head = tus.head(&url).await;
    assert_eq!(offset_of(&head), 300_000);
    assert_eq!(
        head.header("upload-expires"),
        None,
        "a finished upload does not expire"
    );
    let stats = server.stats();
    assert_eq!(stats.chunks_accepted, 3);
    assert_eq!(stats.bytes_accepted, 300_000);
    assert_eq!(server.tus_stats().patches_applied, 3);
}

#[tokio::test]
async fn a_patch_at_another_offset_is_409_and_stores_nothing() {
    let server = start(config()).await;
    let tus = Tus::new(&server);
    let url = tus.create(100, "a.bin").await;
    tus.patch(&url, 0, &[1; 40]).await.expect(204);
    for wrong in [0, 39, 41, 90] {
        let answer = tus.patch(&url, wrong, &[2; 10]).await;
        answer.expect(409);
        assert_eq!(offset_of(&answer), 40);
    }
    assert_eq!(offset_of(&tus.head(&url).await), 40);
    assert_eq!(server.stats().bytes_accepted, 40);
}

#[tokio::test]
async fn a_body_past_the_length_is_413_and_stores_nothing() {
    let server = start(config()).await;
    let tus = Tus::new(&server);
    let url = tus.create(100, "a.bin").await;
    tus.patch(&url, 0, &[1; 160]).await.expect(413);
    assert_eq!(offset_of(&tus.head(&url).await), 0);
    tus.patch(&url, 0, &[1; 100]).await.expect(204);
    let too_long = (TUS_MAX_SIZE + 1).to_string();
    tus.create_with(&[("upload-length", &too_long)])
        .await
        .expect(413);
}

#[tokio::test]
async fn a_checksum_that_differs_is_460_and_stores_nothing() {
    let server = start(config()).await;
    let tus = Tus::new(&server);
    let url = tus.create(30, "a.bin").await;
    let body = data(10, 2);
    let wrong = checksum("sha1", &data(10, 3));
    let answer = tus
        .patch_with(&url, 0, &body, &[("upload-checksum", &wrong)])
        .await;
    answer.expect(460);
    assert_eq!(offset_of(&tus.head(&url).await), 0);
    assert_eq!(server.tus_stats().checksum_mismatches, 1);
    let mut offset = 0;
    for algorithm in ["sha1", "sha256", "sha512"] {
        let sum = checksum(algorithm, &body);
        let answer = tus
            .patch_with(&url, offset, &body, &[("upload-checksum", &sum)])
            .await;
        answer.expect(204);
        offset += 10;
        assert_eq!(offset_of(&answer), offset);
    }
    let url = tus.create(30, "b.bin").await;
    tus.patch_with(&url, 0, &body, &[("upload-checksum", "md5 AAAA")])
        .await
        .expect(400);
}

#[tokio::test]
async fn a_request_without_tus_resumable_1_0_0_is_412() {
    let server = start(config()).await;
    let tus = Tus::new(&server);
    for version in ["", "0.2.2"] {
        let answer = tus
            .create_with(&[("upload-length", "10"), ("tus-resumable", version)])
            .await;
        answer.expect(412);
        assert_eq!(answer.header("tus-version").as_deref(), Some("1.0.0"));
    }
    assert_eq!(server.tus_stats().uploads_created, 0);
}

#[tokio::test]
async fn tus_requests_need_a_known_token_of_any_dataset() {
    let server = start(config().dataset("IDB-2", "tok-2")).await;
    let tus = Tus::new(&server);
    for auth in ["", "Token token=nope"] {
        let answer = tus
            .create_with(&[("upload-length", "10"), ("authorization", auth)])
            .await;
        answer.expect(401);
    }
    // Another dataset's token: the dataset is checked at registration only.
    let answer = tus
        .create_with(&[
            ("upload-length", "10"),
            ("authorization", "Token token=tok-2"),
        ])
        .await;
    answer.expect(201);
    server.expire_tokens();
    tus.create_with(&[("upload-length", "10")])
        .await
        .expect(401);
}

#[tokio::test]
async fn a_patch_must_be_offset_octet_stream_with_an_offset() {
    let server = start(config()).await;
    let tus = Tus::new(&server);
    let url = tus.create(10, "a.bin").await;
    let answer = tus
        .request(
            Method::PATCH,
            &url,
            &[
                ("upload-offset", "0"),
                ("content-type", "application/octet-stream"),
            ],
            vec![0; 10],
        )
        .await;
    answer.expect(415);
    let answer = tus
        .request(
            Method::PATCH,
            &url,
            &[("content-type", OFFSET_OCTET_STREAM)],
            vec![0; 10],
        )
        .await;
    answer.expect(400);
    assert_eq!(offset_of(&tus.head(&url).await), 0);
}

#[tokio::test]
async fn a_terminated_upload_is_gone() {
    let server = start(config()).await;
    let tus = Tus::new(&server);
    let url = tus.create(10, "a.bin").await;
    tus.patch(&url, 0, &[1; 5]).await.expect(204);
    tus.delete(&url).await.expect(204);
    tus.head(&url).await.expect(404);
    tus.patch(&url, 5, &[1; 5]).await.expect(404);
    tus.delete(&url).await.expect(404);
}

#[tokio::test]
async fn an_unfinished_upload_past_its_expiry_is_gone_and_a_finished_one_stays() {
    let server = start(config()).await;
    let tus = Tus::new(&server);
    let open = tus.create(10, "a.bin").await;
    let done = tus.create(10, "b.bin").await;
    tus.patch(&done, 0, &[1; 10]).await.expect(204);
    let answer = tus.patch(&open, 0, &[1; 5]).await;
    answer.expect(204);
    assert!(answer.header("upload-expires").unwrap().ends_with(" GMT"));
    server.expire_tus_uploads();
    tus.head(&open).await.expect(410);
    tus.patch(&open, 5, &[1; 5]).await.expect(410);
    assert_eq!(offset_of(&tus.head(&done).await), 10);
}

#[tokio::test]
async fn a_deferred_length_is_given_by_a_later_patch() {
    let server = start(config()).await;
    let tus = Tus::new(&server);
    let answer = tus.create_with(&[("upload-defer-length", "1")]).await;
    // The creation answer says when the unfinished upload expires.
    assert!(answer.header("upload-expires").unwrap().ends_with(" GMT"));
    let url = support::tus::location(&answer);
    let head = tus.head(&url).await;
    assert_eq!(head.header("upload-defer-length").as_deref(), Some("1"));
    tus.patch(&url, 0, &[1; 10]).await.expect(204);
    // A PATCH refused at a wrong offset does not set the length either.
    tus.patch_with(&url, 3, &[2; 5], &[("upload-length", "99")])
        .await
        .expect(409);
    let head = tus.head(&url).await;
    assert_eq!(head.header("upload-defer-length").as_deref(), Some("1"));
    let answer = tus
        .patch_with(&url, 10, &[2; 5], &[("upload-length", "15")])
        .await;
    answer.expect(204);
    let head = tus.head(&url).await;
    assert_eq!(head.header("upload-length").as_deref(), Some("15"));
    assert_eq!(offset_of(&head), 15);
    // Neither a length nor a deferred one: 400.
    tus.create_with(&[]).await.expect(400);
}

#[tokio::test]
async fn a_body_that_breaks_off_stores_nothing() {
    let server = start(config()).await;
    let tus = Tus::new(&server);
    let url = tus.create(1000, "a.bin").await;
    let path = url.strip_prefix(&server.url()).unwrap();
    let mut stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {}\r\nTus-Resumable: 1.0.0\r\n\
         Authorization: {}\r\nUpload-Offset: 0\r\nContent-Type: {OFFSET_OCTET_STREAM}\r\n\
         Content-Length: 1000\r\n\r\n",
        server.addr(),
        support::AUTH
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[7; 500]).await.unwrap();
    // Wait until the mock has the request and its first bytes, then cut it.
    server.wait_for_requests(2).await;
    drop(stream);
    // Whatever moment the cut reaches the server, nothing was committed: the
    // PATCH at 0 is taken whole.
    let bytes = data(1000, 4);
    tus.patch(&url, 0, &bytes).await.expect(204);
    assert_eq!(offset_of(&tus.head(&url).await), 1000);
    assert_eq!(server.stats().bytes_accepted, 1000);
}

async fn faulty_server(kind: FaultKind) -> MockServer {
    let faults = FaultConfig {
        seed: 1,
        ..FaultConfig::new(0.0, [kind])
    };
    start(config().faults(faults).storage(Storage::Sink)).await
}

#[tokio::test]
async fn an_injected_500_on_a_patch_applies_nothing() {
    let server = faulty_server(FaultKind::ServerError).await;
    let tus = Tus::new(&server);
    let url = tus.create(100, "a.bin").await;
    server.set_fault_rate(1.0).unwrap();
    let answer = tus.patch(&url, 0, &[1; 100]).await;
    answer.expect(500);
    assert_eq!(answer.header("tus-resumable").as_deref(), Some("1.0.0"));
    server.set_fault_rate(0.0).unwrap();
    assert_eq!(offset_of(&tus.head(&url).await), 0);
    assert_eq!(server.stats().faults.of(FaultKind::ServerError), 1);
}

#[tokio::test]
async fn an_injected_truncate_on_a_patch_stores_half_and_head_tells() {
    let server = faulty_server(FaultKind::Truncate).await;
    let tus = Tus::new(&server);
    let url = tus.create(100, "a.bin").await;
    server.set_fault_rate(1.0).unwrap();
    tus.patch(&url, 0, &[1; 100]).await.expect(500);
    server.set_fault_rate(0.0).unwrap();
    assert_eq!(offset_of(&tus.head(&url).await), 50);
    assert_eq!(server.stats().faults.of(FaultKind::Truncate), 1);
}

#[tokio::test]
async fn an_injected_429_on_a_tus_request_says_when_to_retry() {
    let server = faulty_server(FaultKind::TooManyRequests).await;
    let tus = Tus::new(&server);
    server.set_fault_rate(1.0).unwrap();
    let answer = tus.create_with(&[("upload-length", "10")]).await;
    answer.expect(429);
    assert!(answer.header("retry-after").is_some());
    assert_eq!(server.tus_stats().uploads_created, 0);
}
