//! Whom the client trusts: the platform's certificate authorities, plus private
//! ones from [`crate::UploadConfig::ca_certs`]; and what a refused server
//! certificate becomes ([`CertificateProblem`]).
//!
//! Verification is always on. The roots are the platform's (through reqwest's
//! `rustls-platform-verifier`: on Linux the system bundle, which `SSL_CERT_FILE`
//! and `SSL_CERT_DIR` may point elsewhere; the system verifier on macOS and
//! Windows), and a private authority is added to them, never put in their place.

use std::io;
use std::path::{Path, PathBuf};

use crate::Error;
use rustls::CertificateError;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::{self, PemObject};
use thiserror::Error;

/// Why a `--ca-cert` file cannot be used as a certificate authority.
#[derive(Debug, Error)]
pub enum CaCertProblem {
    /// The file cannot be read.
    #[error("cannot read it: {0}")]
    Read(#[source] io::Error),
    /// Its PEM text is malformed.
    #[error("it is not valid PEM ({})", pem_problem(.0))]
    Malformed(#[source] pem::Error),
    /// It holds no `CERTIFICATE` block.
    #[error("it holds no certificate (no -----BEGIN CERTIFICATE----- block)")]
    NoCertificate,
    /// A certificate in it cannot be a root of trust (it does not parse).
    #[error("its certificate number {number} cannot be used: {source}")]
    Unusable {
        /// Which certificate in the file, from 1.
        number: usize,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
}

/// Why the server's certificate was refused.
#[derive(Debug, Clone, Error)]
pub enum CertificateProblem {
    /// No trusted authority issued it: a private certificate authority, or a
    /// self-signed certificate.
    #[error(
        "it was not issued by a certificate authority that this system{} trusts; if it is a \
         private CA, pass --ca-cert with the CA's certificate (PEM)",
        if *with_ca_certs { " or --ca-cert" } else { "" }
    )]
    UnknownIssuer {
        /// Whether private authorities were given (and did not issue it either).
        with_ca_certs: bool,
    },
    /// It is not valid for the host name in the server address.
    #[error("{detail}; check the server address")]
    WrongName {
        /// What rustls said (the name asked for and the names it is valid for).
        detail: String,
    },
    /// It has expired or is not valid yet.
    #[error("{detail}; check this computer's clock, or tell the server's operator")]
    OutOfDate {
        /// What rustls said (the dates).
        detail: String,
    },
    /// Anything else (revoked, not for servers, an unknown critical extension).
    #[error("{detail}; the server's operator must fix its certificate")]
    Other {
        /// What rustls said.
        detail: String,
    },
}

/// Reads the certificate authorities of `paths` (PEM, one or more certificates
/// each), checked one by one so an error names its file.
pub fn load_ca_certs(paths: &[PathBuf]) -> Result<Vec<reqwest::Certificate>, Error> {
    let mut certs = Vec::new();
    for path in paths {
        let problem = |problem| Error::CaCert {
            path: path.clone(),
            problem,
        };
        for der in read_pem_certs(path).map_err(problem)? {
            certs.push(reqwest::Certificate::from_der(&der).map_err(Error::Client)?);
        }
    }
    Ok(certs)
}

/// The certificates of one PEM file, each checked to be usable as a root.
fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaCertProblem> {
    let text = std::fs::read(path).map_err(CaCertProblem::Read)?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(CaCertProblem::Malformed)?;
    if certs.is_empty() {
        return Err(CaCertProblem::NoCertificate);
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, der) in certs.iter().enumerate() {
        roots
            .add(der.clone())
            .map_err(|source| CaCertProblem::Unusable {
                number: i + 1,
                source,
            })?;
    }
    Ok(certs)
}

/// PEM errors for people: the markers as text, not as byte lists.
fn pem_problem(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "a {} block has no END line; is the file cut short?",
            String::from_utf8_lossy(end_marker).trim()
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "a malformed BEGIN line: {}",
            String::from_utf8_lossy(line).trim()
        ),
        other => other.to_string(),
    }
}

/// When a call to `server` failed because the server speaks the other scheme
/// (an `https://` address answered in plain HTTP, an `http://` one with what
/// is no HTTP, as an HTTPS server answers): the engine's words for it
/// ([`crate::Error::NotTls`], [`crate::Error::NotHttp`]), with the address to
/// try. `None` for any other failure.
pub fn scheme_problem(error: &reqwest::Error, server: &url::Url) -> Option<crate::Error> {
    let chain = crate::client::error_chain(error);
    if chain.contains("InvalidContentType") {
        return Some(crate::Error::NotTls {
            server: server.clone(),
            plain: swap_scheme(server, "https", "http")?,
        });
    }
    if chain.contains("invalid HTTP version parsed") {
        return Some(crate::Error::NotHttp {
            server: server.clone(),
            https: swap_scheme(server, "http", "https")?,
        });
    }
    None
}

/// `server` over `scheme` instead, on the same port, when it was given over
/// `given`.
pub(crate) fn swap_scheme(server: &url::Url, given: &str, scheme: &str) -> Option<String> {
    if server.scheme() != given {
        return None;
    }
    let port = server.port_or_known_default();
    let mut other = server.clone();
    other.set_scheme(scheme).ok()?;
    other.set_port(port).ok()?;
    Some(other.to_string())
}

/// Why the server's certificate was refused, when a call's TLS handshake failed
/// for that (`None` for any other failure; `with_ca_certs`: the run added
/// private CAs). Sending again cannot help: the run stops with what to do
/// ([`Error::UntrustedCertificate`]).
pub fn certificate_problem(
    error: &reqwest::Error,
    with_ca_certs: bool,
) -> Option<CertificateProblem> {
    let problem = match certificate_error(error)? {
        // A bad signature: a trusted authority has the issuer's name but not
        // its key (a private CA made again under the same name).
        CertificateError::UnknownIssuer | CertificateError::BadSignature => {
            CertificateProblem::UnknownIssuer { with_ca_certs }
        }
        e @ (CertificateError::NotValidForName
        | CertificateError::NotValidForNameContext { .. }) => CertificateProblem::WrongName {
            detail: certificate_text(e),
        },
        e @ (CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. }) => CertificateProblem::OutOfDate {
            detail: certificate_text(e),
        },
        e => CertificateProblem::Other {
            detail: certificate_text(e),
        },
    };
    Some(problem)
}

/// A certificate error's text: it may quote names from the server's
/// certificate, so it is escaped and cut like anything else a server says.
fn certificate_text(error: &CertificateError) -> String {
    let text = error.to_string();
    let escaped = crate::escape_controls(&text);
    escaped.chars().take(crate::SERVER_TEXT_LIMIT).collect()
}

/// The certificate error somewhere in `error`'s sources.
fn certificate_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a CertificateError> {
    match rustls_error(error)? {
        rustls::Error::InvalidCertificate(certificate) => Some(certificate),
        _ => None,
    }
}

/// The error for an HTTP client that could not be built: said plainly when the
/// platform has no certificate authorities at all (a minimal container without
/// a CA bundle), since the platform verifier then refuses to start.
pub(crate) fn client_error(error: reqwest::Error) -> Error {
    match rustls_error(&error) {
        Some(rustls::Error::General(message)) if message.contains("No CA certificates") => {
            Error::NoSystemRoots
        }
        _ => Error::Client(error),
    }
}

/// The rustls error somewhere in `error`'s sources. An `io::Error` that wraps
/// another error does not list it as its source, so it is looked into.
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            return rustls_error(inner);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_error_is_found_inside_io_errors() {
        let tls = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let wrapped = io::Error::new(io::ErrorKind::InvalidData, tls);
        let outer = io::Error::other(wrapped);
        assert!(matches!(
            certificate_error(&outer),
            Some(CertificateError::UnknownIssuer)
        ));
        let other = io::Error::new(io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert!(certificate_error(&other).is_none());
    }

    #[test]
    fn pem_problems_name_the_markers_as_text() {
        let cut = b"-----BEGIN CERTIFICATE-----\nMIIB\n";
        let error = CertificateDer::pem_slice_iter(cut)
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        assert_eq!(
            pem_problem(&error),
            "a CERTIFICATE block has no END line; is the file cut short?"
        );
    }
}
