//! HTTPS: the mock serves the protocol over TLS with a generated certificate
//! authority's certificate, or with certificate and key files; a client that
//! does not trust the authority gets no answer; bad files and a key of another
//! certificate are refused at start.

mod support;

use idb_mock::{GeneratedCa, MockConfig, MockError, MockServer, PemProblem, TlsIdentity};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use support::{AUTH, DS, HANG, TOKEN, URLENCODED, urlencode};

/// A client that trusts only `ca_pem` (or the platform's roots for `None`).
fn client(ca_pem: Option<&str>) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = reqwest::Client::builder().no_proxy().timeout(HANG);
    let builder =
        match ca_pem {
            Some(pem) => builder
                .tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes())
                    .expect("the generated CA parses")]),
            None => builder,
        };
    builder.build().expect("build the HTTP client")
}

/// A TLS mock with [`DS`] serving `identity`.
async fn tls_server(identity: TlsIdentity) -> MockServer {
    MockServer::start(MockConfig::new().dataset(DS, TOKEN).tls(identity))
        .await
        .expect("start the mock")
}

/// A setup of `name` (3 bytes) through `client`.
async fn setup(
    client: &reqwest::Client,
    server: &MockServer,
    name: &str,
) -> Result<u16, reqwest::Error> {
    let response = client
        .post(format!("{}/api/dataset/{DS}/datafile", server.url()))
        .header("authorization", AUTH)
        .header("content-type", URLENCODED)
        .body(urlencode(&[
            ("phase", "setup"),
            ("filename", name),
            ("filesize", "3"),
        ]))
        .send()
        .await?;
    Ok(response.status().as_u16())
}

/// Writes `text` to `name` in `dir` and returns the path.
fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn a_generated_ca_serves_https_that_its_certificate_trusts() {
    let ca = GeneratedCa::generate(&[]).unwrap();
    let server = tls_server(ca.identity()).await;
    assert!(
        server.url().starts_with("https://127.0.0.1:"),
        "{}",
        server.url()
    );
    let status = setup(&client(Some(&ca.ca_pem)), &server, "a.bin").await;
    assert_eq!(status.unwrap(), 200);
    assert_eq!(server.stats().requests, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_gets_no_answer() {
    let ca = GeneratedCa::generate(&[]).unwrap();
    let server = tls_server(ca.identity()).await;
    // The platform's roots, then another throwaway authority.
    let other = GeneratedCa::generate(&[]).unwrap();
    for client in [client(None), client(Some(&other.ca_pem))] {
        let error = setup(&client, &server, "a.bin")
            .await
            .expect_err("an unknown issuer is refused");
        assert!(error.is_connect(), "{error:?}");
    }
    assert_eq!(server.stats().requests, 0, "no request got through");
    server.shutdown().await;
}

#[tokio::test]
async fn certificate_and_key_files_serve_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca = GeneratedCa::generate(&[]).unwrap();
    let cert = write(dir.path(), "cert.pem", &ca.cert_pem);
    let key = write(dir.path(), "key.pem", &ca.key_pem);
    let identity = TlsIdentity::from_pem_files(&cert, &key).unwrap();
    let server = tls_server(identity).await;
    let status = setup(&client(Some(&ca.ca_pem)), &server, "a.bin").await;
    assert_eq!(status.unwrap(), 200);
    server.shutdown().await;
}

#[tokio::test]
async fn unusable_certificate_and_key_files_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = GeneratedCa::generate(&[]).unwrap();
    let cert = write(dir.path(), "cert.pem", &ca.cert_pem);
    let key = write(dir.path(), "key.pem", &ca.key_pem);
    let missing = dir.path().join("missing.pem");
    let not_pem = write(dir.path(), "notes.txt", "just some text\n");
    let truncated = write(dir.path(), "cut.pem", &ca.cert_pem[..ca.cert_pem.len() / 2]);

    let cases = [
        (&missing, &key, &missing, "read"),
        (&cert, &missing, &missing, "read"),
        (&not_pem, &key, &not_pem, "missing"),
        (&cert, &not_pem, &not_pem, "missing"),
        (&truncated, &key, &truncated, "malformed"),
        // A certificate given as the key holds no key.
        (&cert, &cert, &cert, "missing"),
    ];
    for (cert, key, named, kind) in cases {
        let error = TlsIdentity::from_pem_files(cert, key).expect_err("refused");
        let MockError::TlsFile { path, problem, .. } = &error else {
            panic!("{cert:?} {key:?}: {error:?}");
        };
        assert_eq!(path, named, "{error}");
        let matches = match kind {
            "read" => matches!(problem, PemProblem::Read(_)),
            "missing" => matches!(problem, PemProblem::Missing { .. }),
            _ => matches!(problem, PemProblem::Malformed(_)),
        };
        assert!(matches, "{cert:?} {key:?}: expected {kind}, got {error:?}");
        assert!(
            error.to_string().contains(&named.display().to_string()),
            "{error}"
        );
    }
}

#[tokio::test]
async fn a_key_of_another_certificate_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (
        GeneratedCa::generate(&[]).unwrap(),
        GeneratedCa::generate(&[]).unwrap(),
    );
    let cert = write(dir.path(), "cert.pem", &one.cert_pem);
    let key = write(dir.path(), "key.pem", &two.key_pem);
    let identity = TlsIdentity::from_pem_files(&cert, &key).unwrap();
    let started = MockServer::start(MockConfig::new().dataset(DS, TOKEN).tls(identity)).await;
    assert!(
        matches!(started, Err(MockError::Tls(_))),
        "{:?}",
        started.err()
    );
}

#[tokio::test]
async fn a_connection_that_never_finishes_its_handshake_does_not_hold_up_shutdown() {
    let ca = GeneratedCa::generate(&[]).unwrap();
    let server = tls_server(ca.identity()).await;
    // Connected, and silent: the server waits for a ClientHello.
    let mut silent = TcpStream::connect(server.addr()).await.unwrap();
    let ready = client(Some(&ca.ca_pem));
    assert_eq!(setup(&ready, &server, "a.bin").await.unwrap(), 200);
    // Shutdown ends the wait at once, well before the handshake timeout would.
    let shutdown = tokio::time::timeout(idb_mock::TLS_HANDSHAKE_TIMEOUT / 2, server.shutdown());
    shutdown
        .await
        .expect("shutdown does not wait for a handshake");
    let mut byte = [0u8; 1];
    assert_eq!(
        silent.read(&mut byte).await.unwrap(),
        0,
        "the connection is closed"
    );
}
