//! Many tus uploads at once hold no file descriptors between requests: each
//! request opens its upload's file and closes it. (Alone in its test binary,
//! so the count of this process's open descriptors is this test's.)

mod support;

use futures_util::stream::{self, StreamExt as _};
use support::tus::{Tus, offset_of};
use support::{config, start};

/// Uploads made: above the usual soft limit of 1024 descriptors, which one
/// open file per upload used to exhaust (500s from about the 1000th).
const UPLOADS: usize = 5000;

/// Requests in flight at once (and so client connections).
const IN_FLIGHT: usize = 16;

/// This process's open file descriptors now.
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_open_uploads_hold_no_file_descriptors() {
    let server = start(config()).await;
    let tus = Tus::new(&server);
    let before = open_descriptors();
    let urls: Vec<String> = stream::iter(0..UPLOADS)
        .map(|_| async {
            let url = tus.create(10, "many.bin").await;
            // A PATCH opens the file too; the upload stays unfinished.
            let answer = tus.patch(&url, 0, &[7; 4]).await;
            answer.expect(204);
            assert_eq!(offset_of(&answer), 4);
            url
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let after = open_descriptors();
    assert_eq!(urls.len(), UPLOADS);
    assert_eq!(server.tus_stats().uploads_created, UPLOADS as u64);
    // The connections of both sides and little else; never one an upload.
    assert!(
        after < before + 4 * IN_FLIGHT + 16,
        "{before} descriptors open before, {after} after {UPLOADS} uploads"
    );
    // They are all still there, and go on.
    let last = urls.last().unwrap();
    let answer = tus.patch(last, 4, &[7; 6]).await;
    assert_eq!(offset_of(&answer), 10);
}
