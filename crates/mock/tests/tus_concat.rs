//! Protocol 2's concatenation on the mock: partials sent in parallel, joined
//! in order by the final POST, byte-exact; what the join refuses.

mod support;

use idb_mock::{MockConfig, S3_MIN_PART, Storage, TusProfile};
use support::tus::{Tus, location, offset_of, register};
use support::{Api, DS, assert_verified_in, config, data, start};

/// `Upload-Concat: final;<urls>`.
fn final_of(urls: &[&str]) -> String {
    format!("final;{}", urls.join(" "))
}

#[tokio::test]
async fn partials_sent_at_once_are_joined_in_order_byte_exact() {
    let server = start(config()).await;
    let tus = Tus::new(&server);
    let bytes = data(250_000, 7);
    let pieces: Vec<&[u8]> = bytes.chunks(100_000).collect();
    let mut urls = Vec::new();
    for piece in &pieces {
        urls.push(tus.create_partial(piece.len() as u64).await);
    }
    // All partials in flight together, each in two PATCHes.
    let sends = urls
        .iter()
        .zip(&pieces)
        .map(|(url, piece)| tus.send_all(url, piece, 60_000));
    futures_util::future::join_all(sends).await;
    let head = tus.head(&urls[0]).await;
    assert_eq!(head.header("upload-concat").as_deref(), Some("partial"));
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let metadata = support::tus::metadata("joined.bin");
    let answer = tus
        .create_with(&[
            ("upload-concat", &final_of(&refs)),
            ("upload-metadata", &metadata),
        ])
        .await;
    let joined = location(&answer);
    let head = tus.head(&joined).await;
    assert_eq!(offset_of(&head), bytes.len() as u64);
    assert_eq!(head.header("upload-length"), Some(bytes.len().to_string()));
    assert_eq!(head.header("upload-concat"), Some(final_of(&refs)));
    // A final upload takes no PATCH.
    tus.patch(&joined, bytes.len() as u64, &[1])
        .await
        .expect(403);
    let api = Api::new(&server);
    let answer = register(&api, &joined, "joined.bin", bytes.len() as u64).await;
    answer.expect(200);
    assert_verified_in(&server, DS, "joined.bin", &answer, &bytes);
    assert_eq!(server.tus_stats().incomplete_registrations, 0);
}

#[tokio::test]
async fn a_join_of_an_unfinished_or_plain_upload_is_refused() {
    let server = start(config()).await;
    let tus = Tus::new(&server);
    let done = tus.create_partial(10).await;
    tus.patch(&done, 0, &[1; 10]).await.expect(204);
    let unfinished = tus.create_partial(10).await;
    tus.patch(&unfinished, 0, &[1; 5]).await.expect(204);
    let plain = tus.create(10, "p.bin").await;
    tus.patch(&plain, 0, &[1; 10]).await.expect(204);
    let unknown = format!("{}nope", tus.endpoint);
    for second in [&unfinished, &plain, &unknown] {
        let answer = tus
            .create_with(&[("upload-concat", &final_of(&[&done, second]))])
            .await;
        answer.expect(400);
    }
    // A final upload's length is the partials' sum: none may be given.
    let answer = tus
        .create_with(&[
            ("upload-concat", &final_of(&[&done])),
            ("upload-length", "10"),
        ])
        .await;
    answer.expect(400);
    let created = server.tus_stats().uploads_created;
    assert_eq!(created, 3, "no final upload was made");
}

#[tokio::test]
async fn a_sink_refuses_a_join_it_cannot_make() {
    let server = start(
        MockConfig::new()
            .tus(true)
            .dataset(DS, support::TOKEN)
            .storage(Storage::Sink),
    )
    .await;
    let tus = Tus::new(&server);
    let partial = tus.create_partial(10).await;
    tus.patch(&partial, 0, &[1; 10]).await.expect(204);
    let answer = tus
        .create_with(&[("upload-concat", &final_of(&[&partial]))])
        .await;
    answer.expect(400);
    assert!(answer.text().contains("sink"), "{}", answer.text());
}

#[tokio::test]
async fn the_s3_profile_refuses_a_partial_under_5_mib_that_is_not_the_last() {
    let server = start(config().tus_profile(TusProfile::S3)).await;
    let tus = Tus::new(&server);
    let small = tus.create_partial(10).await;
    tus.patch(&small, 0, &[1; 10]).await.expect(204);
    let part = data(S3_MIN_PART as usize, 8);
    let big = tus.create_partial(S3_MIN_PART).await;
    tus.patch(&big, 0, &part).await.expect(204);
    let answer = tus
        .create_with(&[("upload-concat", &final_of(&[&small, &big]))])
        .await;
    answer.expect(400);
    // The small one last is fine.
    let answer = tus
        .create_with(&[("upload-concat", &final_of(&[&big, &small]))])
        .await;
    let joined = location(&answer);
    assert_eq!(offset_of(&tus.head(&joined).await), S3_MIN_PART + 10);
}
