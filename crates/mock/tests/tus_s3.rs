//! The s3 profile: the service's tus server (tus-ruby-server 2.3 on S3), which
//! stores a PATCH body of at least one part whole and silently drops a shorter
//! one that does not end the file; S3's part limits; the trap its own 5 MiB
//! client falls into on files over 10000 x 5 MiB; what it does to expiry and
//! to OPTIONS.

mod support;

use std::time::SystemTime;

use idb_mock::{MockConfig, S3_MAX_PARTS, S3_MIN_PART, Storage, TusProfile, s3_part_size};
use support::tus::{Tus, location, offset_of, register};
use support::{Api, DS, TOKEN, assert_verified_in, config, data, start};

const PART: usize = S3_MIN_PART as usize;

#[tokio::test]
async fn a_body_longer_than_a_part_is_stored_whole_its_tail_merged_into_the_last_part() {
    let server = start(config().tus_profile(TusProfile::S3)).await;
    let tus = Tus::new(&server);
    let bytes = data(3 * PART + 1000, 9);
    let url = tus.create(bytes.len() as u64, "s3.bin").await;
    // 1.5 parts, not the end of the file: one part of 1.5 x 5 MiB, all kept.
    let first = PART + PART / 2;
    let answer = tus.patch(&url, 0, &bytes[..first]).await;
    answer.expect(204);
    assert_eq!(offset_of(&answer), first as u64);
    assert_eq!(server.tus_stats().bytes_dropped, 0);
    assert_eq!(offset_of(&tus.head(&url).await), first as u64);
    // The rest ends the file.
    let answer = tus.patch(&url, first as u64, &bytes[first..]).await;
    answer.expect(204);
    assert_eq!(offset_of(&answer), bytes.len() as u64);
    let api = Api::new(&server);
    let answer = register(&api, &url, "s3.bin", bytes.len() as u64).await;
    answer.expect(200);
    assert_verified_in(&server, DS, "s3.bin", &answer, &bytes);
}

#[tokio::test]
async fn a_body_shorter_than_a_part_that_does_not_end_the_file_is_dropped_whole() {
    let server = start(config().tus_profile(TusProfile::S3)).await;
    let tus = Tus::new(&server);
    let bytes = data(2 * PART + 1000, 13);
    let url = tus.create(bytes.len() as u64, "mid.bin").await;
    tus.patch(&url, 0, &bytes[..PART]).await.expect(204);
    // Half a part in the middle: answered 204, none of it kept.
    let answer = tus
        .patch(&url, S3_MIN_PART, &bytes[PART..PART + PART / 2])
        .await;
    answer.expect(204);
    assert_eq!(offset_of(&answer), S3_MIN_PART, "the offset does not move");
    assert_eq!(server.tus_stats().bytes_dropped, S3_MIN_PART / 2);
    assert_eq!(server.tus_stats().patches_applied, 1);
    // A client that adopts the answered offset sends it again, with the rest.
    let answer = tus.patch(&url, S3_MIN_PART, &bytes[PART..]).await;
    assert_eq!(offset_of(&answer), bytes.len() as u64);
    let answer = register(&Api::new(&server), &url, "mid.bin", bytes.len() as u64).await;
    assert_verified_in(&server, DS, "mid.bin", &answer, &bytes);
}

#[tokio::test]
async fn a_body_shorter_than_a_part_stores_nothing_unless_it_ends_the_file() {
    let server = start(config().tus_profile(TusProfile::S3)).await;
    let tus = Tus::new(&server);
    let url = tus.create(1000, "small.bin").await;
    let answer = tus.patch(&url, 0, &[1; 600]).await;
    answer.expect(204);
    assert_eq!(offset_of(&answer), 0, "600 bytes of 1000 are dropped");
    let answer = tus.patch(&url, 0, &[1; 1000]).await;
    assert_eq!(
        offset_of(&answer),
        1000,
        "the whole file in one body is kept"
    );
}

#[tokio::test]
async fn a_deferred_length_never_drops_a_short_body() {
    let server = start(config().tus_profile(TusProfile::S3)).await;
    let tus = Tus::new(&server);
    let url = location(&tus.create_with(&[("upload-defer-length", "1")]).await);
    let answer = tus.patch(&url, 0, &[1; 600]).await;
    answer.expect(204);
    assert_eq!(offset_of(&answer), 600);
    assert_eq!(server.tus_stats().bytes_dropped, 0);
}

/// A body under 5 MiB stored while the length was deferred is an S3 part under
/// S3's minimum: once a part follows it, S3 refuses to complete the object, so
/// the completing PATCH fails (500) every time and the upload never ends.
#[tokio::test]
async fn a_short_part_sent_while_the_length_was_deferred_makes_the_upload_uncompletable() {
    let server = start(config().tus_profile(TusProfile::S3)).await;
    let tus = Tus::new(&server);
    let url = location(&tus.create_with(&[("upload-defer-length", "1")]).await);
    tus.patch(&url, 0, &[1; 1000]).await.expect(204);
    for _ in 0..2 {
        let answer = tus
            .patch_with(&url, 1000, &[2; 1000], &[("upload-length", "2000")])
            .await;
        answer.expect(500);
        assert!(
            answer.text().contains("never complete"),
            "{}",
            answer.text()
        );
        assert_eq!(offset_of(&tus.head(&url).await), 1000);
    }
    // The same file with its length known from the start completes.
    let url = tus.create(2000, "known.bin").await;
    let answer = tus.patch(&url, 0, &[1; 2000]).await;
    assert_eq!(offset_of(&answer), 2000);
}

/// The trap: the service's own tus client sends 5 MiB PATCHes. On a file over
/// 10000 x 5 MiB the part size is above 5 MiB, so every PATCH is a body
/// shorter than a part that does not end the file: dropped, answered 204, the
/// offset never moves.
#[tokio::test]
async fn five_mib_patches_to_a_file_over_10000_parts_make_no_progress() {
    let sink = MockConfig::new()
        .tus(true)
        .dataset(DS, TOKEN)
        .storage(Storage::Sink)
        .tus_profile(TusProfile::S3);
    let server = start(sink).await;
    let tus = Tus::new(&server);
    // A virtual length: the sink only counts and hashes what it is sent.
    let length = S3_MIN_PART * S3_MAX_PARTS + S3_MIN_PART;
    let part = s3_part_size(Some(length));
    assert!(part > S3_MIN_PART);
    let url = tus.create(length, "huge.bin").await;
    let five_mib = data(PART, 10);
    for _ in 0..3 {
        let answer = tus.patch(&url, 0, &five_mib).await;
        answer.expect(204);
        assert_eq!(offset_of(&answer), 0);
    }
    assert_eq!(offset_of(&tus.head(&url).await), 0);
    assert_eq!(server.stats().chunks_accepted, 0);
    assert_eq!(server.tus_stats().bytes_dropped, 3 * S3_MIN_PART);
    // A PATCH of one whole part does move it, and so does a longer one,
    // whole (its tail merged into its last part).
    let whole = data(part as usize, 11);
    let answer = tus.patch(&url, 0, &whole).await;
    assert_eq!(offset_of(&answer), part);
    let longer = data(part as usize + 1000, 12);
    let answer = tus.patch(&url, part, &longer).await;
    assert_eq!(offset_of(&answer), 2 * part + 1000);
}

/// The service's server answers a fresh `Upload-Expires` for a PATCH it
/// stored nothing of, but its storage expires by the last part stored: the
/// upload's life does not move.
#[tokio::test]
async fn a_dropped_patch_moves_upload_expires_but_not_the_uploads_life() {
    let server = start(config().tus_profile(TusProfile::S3)).await;
    let tus = Tus::new(&server);
    let url = tus.create(3 * S3_MIN_PART, "exp.bin").await;
    let created: SystemTime = server.tus_upload_expiry(&url).unwrap();
    let answer = tus.patch(&url, 0, &[1; 1000]).await;
    answer.expect(204);
    assert_eq!(offset_of(&answer), 0);
    assert!(answer.header("upload-expires").is_some());
    assert_eq!(server.tus_upload_expiry(&url), Some(created));
    // A PATCH that stores bytes does move it.
    tus.patch(&url, 0, &data(PART, 14)).await.expect(204);
    assert!(server.tus_upload_expiry(&url).unwrap() > created);
}

#[tokio::test]
async fn a_join_removes_its_partials() {
    let server = start(config().tus_profile(TusProfile::S3)).await;
    let tus = Tus::new(&server);
    let first = tus.create_partial(S3_MIN_PART).await;
    tus.patch(&first, 0, &data(PART, 15)).await.expect(204);
    let last = tus.create_partial(10).await;
    tus.patch(&last, 0, &[1; 10]).await.expect(204);
    let answer = tus
        .create_with(&[("upload-concat", &format!("final;{first} {last}"))])
        .await;
    let joined = location(&answer);
    assert_eq!(offset_of(&tus.head(&joined).await), S3_MIN_PART + 10);
    tus.head(&first).await.expect(404);
    tus.head(&last).await.expect(404);
}

/// The service wraps its whole tus endpoint in its token check: OPTIONS
/// without a token is 401 there (the plain profile answers it, as tus says).
#[tokio::test]
async fn options_without_a_token_is_401_as_the_service_answers_it() {
    let server = start(config().tus_profile(TusProfile::S3)).await;
    let tus = Tus::new(&server);
    let answer = tus
        .request(
            reqwest::Method::OPTIONS,
            &tus.endpoint,
            &[("tus-resumable", ""), ("authorization", "")],
            Vec::new(),
        )
        .await;
    answer.expect(401);
    tus.options().await.expect(204);
}
