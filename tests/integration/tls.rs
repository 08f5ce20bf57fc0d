//! HTTPS: a mock serving a certificate from a throwaway authority is refused
//! plainly by default (nothing sent, nothing stored) and trusted with
//! `--ca-cert`, byte-exact, across chunks and a `kill -9`; a bad `--ca-cert` file
//! is named before anything is sent; `idb mock-server` serves HTTPS with a
//! generated authority or with certificate and key files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use idb_mock::{GeneratedCa, MockConfig};

use crate::util::{CHUNK, DS, Dir, JournalWatch, Mock, ServerProcess, TOKEN, assert_same_bytes};

const NAME: &str = "secure.bin";

/// A TLS mock with [`DS`], its certificate issued by a new throwaway authority
/// whose certificate (PEM) is written to `ca.pem` in `dir`; returns the mock
/// and that file.
fn tls_mock(dir: &Dir, config: MockConfig) -> (Mock, PathBuf) {
    let ca = GeneratedCa::generate(&[]).expect("generate a certificate authority");
    let ca_file = dir.write("ca.pem", ca.ca_pem.as_bytes());
    let mock = Mock::start(config.dataset(DS, TOKEN).tls(ca.identity()));
    assert!(mock.url().starts_with("https://"), "{}", mock.url());
    (mock, ca_file)
}

/// `idb upload` of `path` to `server` trusting `ca_file` too, with 64 KiB chunks.
fn upload_trusting(dir: &Dir, server: &str, ca_file: &Path, path: &Path) -> crate::util::Run {
    dir.upload_to(server, DS, "64KiB")
        .token(TOKEN)
        .arg("--ca-cert")
        .arg(ca_file)
        .arg(path)
        .run()
}

#[test]
fn an_unknown_certificate_authority_is_refused_plainly_and_nothing_is_stored() {
    let dir = Dir::new("an_unknown_certificate_authority_is_refused_plainly");
    let (mock, _) = tls_mock(&dir, MockConfig::new());
    let (path, _) = dir.random_file(NAME, 3 * CHUNK);

    let run = dir.upload(&mock, DS).token(TOKEN).arg(&path).run();
    run.expect_code(1)
        .stderr_has("the server's certificate is not trusted")
        .stderr_has("pass --ca-cert")
        .never_shows(TOKEN);
    assert!(run.verified_lines().is_empty(), "{}", run.describe());
    // Refused at the handshake: no request reached the server, and the
    // certificate is not retried as if the network were down.
    assert_eq!(mock.stats().requests, 0, "{}", run.describe());
    assert!(mock.stored_file(DS, NAME).is_none());
    assert!(!run.stderr.contains("retrying"), "{}", run.describe());
}

/// http:// to an HTTPS server: said at once, with the https:// address to
/// try (it was retried as a network error, then "could not reach").
#[test]
fn plain_http_to_an_https_server_is_said_at_once() {
    let dir = Dir::new("plain_http_to_an_https_server_is_said_at_once");
    let (mock, _) = tls_mock(&dir, MockConfig::new());
    let (path, _) = dir.random_file(NAME, 100);
    let plain = mock.url().replacen("https://", "http://", 1);

    let run = dir
        .upload_to(&plain, DS, "64KiB")
        .token(TOKEN)
        .arg(&path)
        .run();

    run.expect_code(1)
        .stderr_has("did not answer in HTTP (as an HTTPS server answers a plain request)")
        .stderr_has(&format!("try {}", mock.url()))
        .never_shows(TOKEN);
    assert!(!run.stderr.contains("retrying"), "{}", run.describe());
}

#[test]
fn with_ca_cert_a_multi_chunk_upload_is_byte_exact() {
    let dir = Dir::new("with_ca_cert_a_multi_chunk_upload_is_byte_exact");
    let (mock, ca_file) = tls_mock(&dir, MockConfig::new());
    let (path, bytes) = dir.random_file(NAME, 5 * CHUNK + 17);

    let run = upload_trusting(&dir, &mock.url(), &ca_file, &path);
    run.expect_code(0)
        .verified_exactly(&[(&path, &bytes)])
        .never_shows(TOKEN);
    mock.assert_stored(DS, NAME, &bytes);
    assert_eq!(mock.accepted(DS, NAME).len(), 6, "six chunks over TLS");
}

#[test]
fn a_killed_upload_over_tls_resumes_where_the_server_is() {
    let dir = Dir::new("a_killed_upload_over_tls_resumes_where_the_server_is");
    // 5 ms a response: slow enough to stop midway.
    let (mock, ca_file) = tls_mock(&dir, MockConfig::new().latency(Duration::from_millis(5)));
    let size = 40 * CHUNK + 123;
    let (path, bytes) = dir.random_file(NAME, size);
    let upload = || {
        dir.upload(&mock, DS)
            .token(TOKEN)
            .arg("--ca-cert")
            .arg(&ca_file)
            .args(["--journal-interval", "0"])
            .arg(&path)
    };

    let mut watch = JournalWatch::new(&dir);
    let running = upload().spawn();
    mock.block_on(mock.wait_for_chunks(8));
    watch.wait_for_write();
    let killed = running.kill9();
    assert!(killed.status.code().is_none(), "{}", killed.describe());

    let run = upload().run();
    run.expect_code(0)
        .verified_exactly(&[(&path, &bytes)])
        .stderr_has("resuming");
    mock.assert_stored(DS, NAME, &bytes);
    // One session from 0 to the end: the resumed run went on, never set up again.
    let mut end = 0;
    for (offset, len) in mock.accepted(DS, NAME) {
        assert_eq!(offset, end, "the upload restarted or skipped at {offset}");
        end = offset + len;
    }
    assert_eq!(end, size as u64);
}

#[test]
fn a_bad_ca_cert_file_is_refused_naming_it_before_anything_is_sent() {
    let dir = Dir::new("a_bad_ca_cert_file_is_refused_naming_it");
    let (mock, ca_file) = tls_mock(&dir, MockConfig::new());
    let (path, _) = dir.random_file(NAME, CHUNK);
    let pem = std::fs::read_to_string(&ca_file).unwrap();
    let cases = [
        (dir.join("no-such-ca.pem"), "cannot read it"),
        (
            dir.write("notes.txt", b"not a certificate\n"),
            "holds no certificate",
        ),
        (
            dir.write("cut.pem", &pem.as_bytes()[..pem.len() / 2]),
            "not valid PEM",
        ),
    ];
    for (bad, why) in cases {
        let run = dir
            .upload(&mock, DS)
            .token(TOKEN)
            .arg("--ca-cert")
            .arg(&ca_file)
            .arg("--ca-cert")
            .arg(&bad)
            .arg(&path)
            .run();
        run.expect_code(2)
            .stderr_has(&bad.display().to_string())
            .stderr_has("--ca-cert")
            .stderr_has(why);
    }
    assert_eq!(mock.stats().requests, 0);
}

#[test]
fn mock_server_serves_https_with_a_generated_authority() {
    let dir = Dir::new("mock_server_serves_https_with_a_generated_authority");
    let store = dir.join("store");
    let ca_file = dir.join("mock-ca.pem");
    let server = ServerProcess::start(
        &dir,
        &[
            "--listen",
            "127.0.0.1:0",
            "--dataset",
            &format!("{DS}:{TOKEN}"),
            "--store",
            store.to_str().unwrap(),
            "--tls-self-signed",
            ca_file.to_str().unwrap(),
        ],
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let (path, bytes) = dir.random_file(NAME, 3 * CHUNK + 5);

    let refused = dir
        .upload_to(&server.url, DS, "64KiB")
        .token(TOKEN)
        .arg(&path)
        .run();
    refused.expect_code(1).stderr_has("not trusted");

    let run = upload_trusting(&dir, &server.url, &ca_file, &path);
    run.expect_code(0).verified_exactly(&[(&path, &bytes)]);
    let stored = std::fs::read(store.join(DS).join(NAME)).expect("the stored copy");
    assert_same_bytes("the file in --store", &bytes, &stored);

    let (status, _, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("--ca-cert"),
        "says how to trust it: {stderr}"
    );
}

#[test]
fn mock_server_serves_https_with_certificate_and_key_files() {
    let dir = Dir::new("mock_server_serves_https_with_certificate_and_key_files");
    let ca = GeneratedCa::generate(&[]).expect("generate a certificate authority");
    let ca_file = dir.write("ca.pem", ca.ca_pem.as_bytes());
    let cert = dir.write("server.pem", ca.cert_pem.as_bytes());
    let key = dir.write("server.key", ca.key_pem.as_bytes());
    let tls = |cert: &Path, key: &Path| {
        vec![
            "--listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--dataset".to_owned(),
            format!("{DS}:{TOKEN}"),
            "--tls-cert".to_owned(),
            cert.display().to_string(),
            "--tls-key".to_owned(),
            key.display().to_string(),
        ]
    };
    let args = tls(&cert, &key);
    let server = ServerProcess::start(&dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let (path, bytes) = dir.random_file(NAME, 2 * CHUNK + 1);
    let run = upload_trusting(&dir, &server.url, &ca_file, &path);
    run.expect_code(0).verified_exactly(&[(&path, &bytes)]);
    let (status, _, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");

    // A key that is not PEM is refused at start, naming the file.
    let run = dir.idb(["mock-server"]).args(tls(&cert, &ca_file)).run();
    run.expect_code(1)
        .stderr_has(&ca_file.display().to_string())
        .stderr_has("private key");
}
