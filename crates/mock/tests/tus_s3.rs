//! The s3 profile: the service's tus server on S3, whose PATCH bodies are cut
//! into parts and whose short non-final tails are silently dropped; and the
//! trap its own 5 MiB client falls into on files over 10000 x 5 MiB.

mod support;

use idb_mock::{MockConfig, S3_MAX_PARTS, S3_MIN_PART, Storage, TusProfile, s3_part_size};
use support::tus::{Tus, offset_of, register};
use support::{Api, DS, TOKEN, assert_verified_in, config, data, start};

const PART: usize = S3_MIN_PART as usize;

#[tokio::test]
async fn a_short_tail_that_does_not_end_the_file_is_dropped_without_a_word() {
    let server = start(config().tus_profile(TusProfile::S3)).await;
    let tus = Tus::new(&server);
    let bytes = data(3 * PART + 1000, 9);
    let url = tus.create(bytes.len() as u64, "s3.bin").await;
    // 1.5 parts: the half part is dropped, and the answer says only 1 part.
    let answer = tus.patch(&url, 0, &bytes[..PART + PART / 2]).await;
    answer.expect(204);
    assert_eq!(offset_of(&answer), S3_MIN_PART);
    assert_eq!(server.tus_stats().bytes_dropped, S3_MIN_PART / 2);
    assert_eq!(offset_of(&tus.head(&url).await), S3_MIN_PART);
    // A client that adopts the answered offset goes on from there; the last
    // PATCH ends the file, so its short tail is kept.
    let answer = tus.patch(&url, S3_MIN_PART, &bytes[PART..]).await;
    answer.expect(204);
    assert_eq!(offset_of(&answer), bytes.len() as u64);
    let api = Api::new(&server);
    let answer = register(&api, &url, "s3.bin", bytes.len() as u64).await;
    answer.expect(200);
    assert_verified_in(&server, DS, "s3.bin", &answer, &bytes);
}

#[tokio::test]
async fn a_body_shorter_than_a_part_stores_nothing_unless_it_ends_the_file() {
    let server = start(config().tus_profile(TusProfile::S3)).await;
    let tus = Tus::new(&server);
    let url = tus.create(1000, "small.bin").await;
    let answer = tus.patch(&url, 0, &[1; 600]).await;
    answer.expect(204);
    assert_eq!(offset_of(&answer), 0, "600 bytes of 1000 are no whole part");
    let answer = tus.patch(&url, 0, &[1; 1000]).await;
    assert_eq!(
        offset_of(&answer),
        1000,
        "the whole file in one body is kept"
    );
}

/// The trap: the service's own tus client sends 5 MiB PATCHes. On a file over
/// 10000 x 5 MiB the part size is above 5 MiB, so every PATCH is a short tail
/// that does not end the file: dropped, answered 204, the offset never moves.
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
    // PATCHes of whole parts do move it.
    let whole = data(part as usize, 11);
    let answer = tus.patch(&url, 0, &whole).await;
    assert_eq!(offset_of(&answer), part);
}
