//! Protocol 2's tus 1.0 core on the mock: OPTIONS, creation, PATCH, HEAD,
//! termination, checksums, expiry, the version and token checks, and faults.

mod support;

use base64::Engine as _;
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
    assert_eq!(algorithms, "sha1,sha256,sha384,sha512,md5,crc32");
}

/// A sink keeps no bytes to join partials with: it does not offer
/// concatenation, so a client sends a file in order rather than send every
/// partial and then fail the join.
#[tokio::test]
async fn a_sink_does_not_offer_concatenation() {
    let server = start(config().storage(Storage::Sink)).await;
    let answer = Tus::new(&server).options().await;
    answer.expect(204);
    let extensions = answer.header("tus-extension").unwrap();
    assert!(
        !extensions.split(',').any(|e| e == "concatenation"),
        "{extensions}"
    );
    assert!(
        extensions.split(',').any(|e| e == "creation"),
        "{extensions}"
    );
}

/// Tus asks no authorisation of OPTIONS, and the plain profile answers it to
/// anyone; every other tus call needs a known token (401 before any other
/// check, as the service's token check comes before its tus server).
#[tokio::test]
async fn options_needs_no_token_but_every_other_tus_call_does() {
    let server = start(config()).await;
    let tus = Tus::new(&server);
    let url = tus.create(10, "a.bin").await;
    let no_token = [("authorization", ""), ("tus-resumable", "")];
    for target in [tus.endpoint.as_str(), url.as_str()] {
        let answer = tus
            .request(Method::OPTIONS, target, &no_token, Vec::new())
            .await;
        answer.expect(204);
        assert_eq!(answer.header("tus-version").as_deref(), Some("1.0.0"));
    }
    let no_token = [("authorization", "")];
    let post = tus
        .request(Method::POST, &tus.endpoint, &no_token, Vec::new())
        .await;
    let patch = tus
        .patch_with(&url, 0, &[1; 10], &[("authorization", "")])
        .await;
    let head = tus.request(Method::HEAD, &url, &no_token, Vec::new()).await;
    let delete = tus
        .request(Method::DELETE, &url, &no_token, Vec::new())
        .await;
    for answer in [post, patch, head, delete] {
        answer.expect(401);
        assert_eq!(answer.header("tus-resumable").as_deref(), Some("1.0.0"));
    }
    // Without a token the version is not even looked at.
    tus.request(
        Method::HEAD,
        &url,
        &[("authorization", ""), ("tus-resumable", "")],
        Vec::new(),
    )
    .await
    .expect(401);
    assert_eq!(offset_of(&tus.head(&url).await), 0);
    assert_eq!(server.tus_stats().uploads_created, 1);
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
    patch_once_per_checksum(&tus, &url, &body, &["sha1", "sha256", "sha512"]).await;
    assert_eq!(server.tus_stats().checksums_matched, 3);
    let url = tus.create(30, "b.bin").await;
    tus.patch_with(&url, 0, &body, &[("upload-checksum", "adler32 AAAA")])
        .await
        .expect(400);
}

/// PATCHes `body` from offset 0 once per algorithm, each with its checksum,
/// each answered 204 at the next offset.
async fn patch_once_per_checksum(tus: &Tus, url: &str, body: &[u8], algorithms: &[&str]) {
    let mut offset = 0;
    for algorithm in algorithms {
        let sum = checksum(algorithm, body);
        let answer = tus
            .patch_with(url, offset, body, &[("upload-checksum", &sum)])
            .await;
        answer.expect(204);
        offset += body.len() as u64;
        assert_eq!(offset_of(&answer), offset);
    }
}

/// md5 and crc32, as the service offers them; crc32 in its server's format,
/// the base64 of the CRC's decimal text (the CRC's four bytes are a mismatch).
#[tokio::test]
async fn md5_and_crc32_checksums_are_checked_in_the_services_format() {
    let server = start(config()).await;
    let tus = Tus::new(&server);
    let body = data(10, 5);
    let url = tus.create(20, "c.bin").await;
    let crc_bytes = format!(
        "crc32 {}",
        base64::engine::general_purpose::STANDARD.encode(crc32fast::hash(&body).to_be_bytes())
    );
    for wrong in [checksum("md5", &data(10, 6)), crc_bytes] {
        tus.patch_with(&url, 0, &body, &[("upload-checksum", &wrong)])
            .await
            .expect(460);
    }
    patch_once_per_checksum(&tus, &url, &body, &["md5", "crc32"]).await;
    let stats = server.tus_stats();
    assert_eq!((stats.checksum_mismatches, stats.checksums_matched), (2, 2));
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

/// A call on an upload that is not there (a partial a join removed) and
/// stalled gets a fresh draw when sent again, as every retried call does: it
/// once drew its first attempt again each time, stalled for ever.
#[tokio::test]
async fn a_stalled_call_on_a_missing_upload_draws_afresh_when_sent_again() {
    let faults = FaultConfig {
        seed: 7,
        stall: std::time::Duration::from_millis(1),
        ..FaultConfig::new(0.5, [FaultKind::Stall])
    };
    let server = start(config().faults(faults).storage(Storage::Sink)).await;
    let tus = Tus::new(&server);
    let stalls = || server.stats().faults.of(FaultKind::Stall);
    // The first missing upload whose HEAD stalls (a pure function of the seed).
    let mut stalled = None;
    for n in 0..64 {
        let url = format!("{}{n:032x}", tus.endpoint);
        let before = stalls();
        tus.head(&url).await.expect(404);
        if stalls() > before {
            stalled = Some(url);
            break;
        }
    }
    let url = stalled.expect("half of the draws stall");
    let mut through = false;
    for _ in 0..32 {
        let before = stalls();
        tus.head(&url).await.expect(404);
        through |= stalls() == before;
    }
    assert!(through, "every retry of the stalled HEAD stalled again");
}

/// Sends what `send` makes until it is answered `status` (faults are drawn
/// afresh for every attempt, so a rate below 1 lets it through); the answer.
async fn until<F, Fut>(status: u16, mut send: F) -> support::Answer
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = support::Answer>,
{
    for _ in 0..100 {
        let answer = send().await;
        if answer.status == status {
            return answer;
        }
        assert!(
            answer.status == 500 || answer.status == 429,
            "only injected faults stand in the way: {}",
            answer.status
        );
    }
    panic!("never answered {status} in 100 attempts");
}

/// Tus calls have no verify to drop their fault counters: each drops its own
/// when it succeeds, and an upload's go when it ends. A long run of uploads
/// under faults then leaves only the creation POST's one counter, where it
/// used to leave one per call and, past MAX_COUNTED_CALLS, reset everyone's.
#[tokio::test]
async fn a_tus_run_under_faults_leaves_no_fault_counters_behind() {
    let faults = FaultConfig {
        seed: 3,
        ..FaultConfig::new(0.3, [FaultKind::ServerError, FaultKind::TooManyRequests])
    };
    let server = start(config().faults(faults)).await;
    let tus = Tus::new(&server);
    let api = support::Api::new(&server);
    for i in 0..20 {
        let name = format!("f{i}.bin");
        let bytes = data(30, i);
        let meta = metadata(&name);
        let headers = [("upload-length", "30"), ("upload-metadata", meta.as_str())];
        let created = until(201, || tus.create_with(&headers)).await;
        let url = support::tus::location(&created);
        for offset in [0, 10, 20] {
            let piece = &bytes[offset..offset + 10];
            until(204, || tus.patch(&url, offset as u64, piece)).await;
        }
        let head = until(200, || tus.head(&url)).await;
        assert_eq!(offset_of(&head), 30);
        until(200, || support::tus::register(&api, &url, &name, 30)).await;
    }
    assert!(server.stats().faults.total() > 0, "faults were drawn");
    assert_eq!(server.fault_attempt_counters(), 1, "the creation POST's");
    // An upload whose last PATCH failed keeps that counter until it ends.
    let headers = [("upload-length", "10")];
    let url = support::tus::location(&until(201, || tus.create_with(&headers)).await);
    server.set_fault_rate(1.0).unwrap();
    tus.patch(&url, 0, &[1; 10]).await;
    server.set_fault_rate(0.0).unwrap();
    assert_eq!(server.fault_attempt_counters(), 2);
    tus.delete(&url).await.expect(204);
    assert_eq!(server.fault_attempt_counters(), 1);
}
