//! Trust over HTTPS, against a mock whose certificate a throwaway authority
//! issued: refused by default as an untrusted certificate (not retried, nothing
//! sent), trusted with `ca_certs` on top of the platform's roots, refused for a
//! name it was not issued for; unusable `ca_certs` files are configuration
//! errors naming the file.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;

use idb_engine::{CaCertProblem, CertificateProblem, Error, NoEvents, Uploader};
use idb_mock::{GeneratedCa, MockConfig, MockServer, WriteMode};

use support::{Read, assert_exact, config, data, failure, mock, upload, write};

/// A TLS mock (strict) listening on `listen`, and its authority's certificate
/// (PEM) written to `ca.pem` in `dir`.
async fn tls_server(dir: &std::path::Path, listen: SocketAddr) -> (MockServer, PathBuf) {
    let ca = GeneratedCa::generate(&[]).unwrap();
    let ca_file = write(dir, "ca.pem", ca.ca_pem.as_bytes());
    let config: MockConfig = mock(WriteMode::Strict).tls(ca.identity()).listen(listen);
    (MockServer::start(config).await.unwrap(), ca_file)
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Uploads `path` to `server` trusting `ca_certs` too; returns why the
/// certificate was refused (and the file failed).
async fn refused(server: &MockServer, ca_certs: Vec<PathBuf>, path: PathBuf) -> CertificateProblem {
    let mut config = config(server, 4096, Read::Default);
    config.ca_certs = ca_certs;
    let report = upload(config, &[path], &NoEvents).await;
    let error = failure(&report, 0);
    // Every file would meet it: the run stops, and there is nothing to resume.
    assert!(error.is_fatal_for_run() && !error.worth_resuming());
    match error {
        Error::UntrustedCertificate { problem, .. } => problem.clone(),
        other => panic!("expected an untrusted certificate, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unknown_authority_fails_the_run_as_an_untrusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = tls_server(dir.path(), loopback()).await;
    let path = write(dir.path(), "a.bin", &data(10_000, 1));

    let problem = refused(&server, Vec::new(), path).await;
    assert!(
        matches!(
            problem,
            CertificateProblem::UnknownIssuer {
                with_ca_certs: false
            }
        ),
        "{problem:?}"
    );
    assert_eq!(server.stats().requests, 0, "refused at the handshake");
}

#[tokio::test]
async fn ca_certs_are_trusted_on_top_of_the_platform_roots() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ca_file) = tls_server(dir.path(), loopback()).await;
    let bytes = data(5 * 4096 + 3, 2);
    let path = write(dir.path(), "b.bin", &bytes);

    let mut config = config(&server, 4096, Read::Default);
    config.ca_certs = vec![ca_file];
    let report = upload(config, std::slice::from_ref(&path), &NoEvents).await;
    assert_exact(&server, &report, &[(path, bytes)]);
}

#[tokio::test]
async fn another_authoritys_certificate_is_still_unknown_with_ca_certs() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = tls_server(dir.path(), loopback()).await;
    let other = GeneratedCa::generate(&[]).unwrap();
    let other_file = write(dir.path(), "other-ca.pem", other.ca_pem.as_bytes());
    let path = write(dir.path(), "c.bin", &data(100, 3));

    let problem = refused(&server, vec![other_file], path).await;
    assert!(
        matches!(
            problem,
            CertificateProblem::UnknownIssuer {
                with_ca_certs: true
            }
        ),
        "{problem:?}"
    );
}

#[tokio::test]
async fn a_certificate_for_other_names_is_refused_as_the_wrong_name() {
    let dir = tempfile::tempdir().unwrap();
    // 127.0.0.2 is loopback too, but not a name the certificate is for.
    let (server, ca_file) = tls_server(dir.path(), "127.0.0.2:0".parse().unwrap()).await;
    let path = write(dir.path(), "d.bin", &data(100, 4));

    let problem = refused(&server, vec![ca_file], path).await;
    assert!(
        matches!(problem, CertificateProblem::WrongName { .. }),
        "{problem:?}"
    );
    assert_eq!(server.stats().requests, 0);
}

/// Whether a problem is the one a case expects.
type Expected = fn(&CaCertProblem) -> bool;

#[tokio::test]
async fn unusable_ca_cert_files_are_configuration_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start(mock(WriteMode::Strict)).await.unwrap();
    let garbage_block = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let cases: [(PathBuf, Expected); 4] = [
        (dir.path().join("missing.pem"), |p| {
            matches!(p, CaCertProblem::Read(_))
        }),
        (write(dir.path(), "empty.pem", b""), |p| {
            matches!(p, CaCertProblem::NoCertificate)
        }),
        (
            write(
                dir.path(),
                "cut.pem",
                b"-----BEGIN CERTIFICATE-----\nMIIB\n",
            ),
            |p| matches!(p, CaCertProblem::Malformed(_)),
        ),
        (
            write(dir.path(), "garbage.pem", garbage_block.as_bytes()),
            |p| matches!(p, CaCertProblem::Unusable { number: 1, .. }),
        ),
    ];
    for (file, expected) in cases {
        let mut config = config(&server, 4096, Read::Default);
        config.ca_certs = vec![file.clone()];
        match Uploader::new(config) {
            Err(Error::CaCert { path, problem }) => {
                assert_eq!(path, file);
                assert!(expected(&problem), "{}: {problem:?}", file.display());
            }
            Err(other) => panic!("{}: {other:?}", file.display()),
            Ok(_) => panic!("{} was accepted", file.display()),
        }
    }
}
