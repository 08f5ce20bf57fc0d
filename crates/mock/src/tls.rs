//! HTTPS for the mock: the certificate and key it serves ([`TlsIdentity`]), a
//! throwaway certificate authority that signs one for the loopback names
//! ([`GeneratedCa`]), and the acceptor the accept loop hands each connection to.
//!
//! The mock speaks HTTP/1.1 only, so it offers only that in ALPN; rustls runs on
//! ring, as in the engine (no C toolchain needed).

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use thiserror::Error;
use tokio_rustls::TlsAcceptor;

use crate::error::MockError;

/// How long a client may take to complete the TLS handshake after it connects:
/// a connection that never finishes one is closed instead of holding a task.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The names a [`GeneratedCa`]'s server certificate is always valid for: the
/// loopback addresses and `localhost`, where tests and demos reach the mock.
pub const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The certificate chain and private key the mock serves HTTPS with (see
/// [`crate::MockConfig::tls`]).
#[derive(Clone)]
pub struct TlsIdentity {
    /// The server's certificate first, then any intermediates.
    chain: Vec<CertificateDer<'static>>,
    /// Shared: a private key is not `Clone` (rustls takes its own copy).
    key: Arc<PrivateKeyDer<'static>>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TlsIdentity")
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// Why a TLS certificate or key file cannot be used.
#[derive(Debug, Error)]
pub enum PemProblem {
    /// The file cannot be read.
    #[error("cannot read it")]
    Read(#[source] io::Error),
    /// Its PEM text is malformed.
    #[error("it is not valid PEM")]
    Malformed(#[source] pem::Error),
    /// It is PEM, but holds no block of the kind needed.
    #[error("it holds no {block} block (-----BEGIN {block}-----)")]
    Missing {
        /// The kind of block looked for, like `CERTIFICATE` or `PRIVATE KEY`.
        block: &'static str,
    },
}

impl TlsIdentity {
    /// Reads a certificate file (PEM: the server's certificate first, then any
    /// intermediates) and its private key file (PEM: PKCS#8, PKCS#1 or SEC1).
    /// Whether they belong together is checked when a server starts with them
    /// ([`MockError::Tls`]).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, MockError> {
        let problem = |path: &Path, what, problem| MockError::TlsFile {
            path: path.to_path_buf(),
            what,
            problem,
        };
        let cert_pem =
            std::fs::read(cert).map_err(|e| problem(cert, "certificate", PemProblem::Read(e)))?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| problem(cert, "certificate", PemProblem::Malformed(e)))?;
        if chain.is_empty() {
            let missing = PemProblem::Missing {
                block: "CERTIFICATE",
            };
            return Err(problem(cert, "certificate", missing));
        }
        let key_pem =
            std::fs::read(key).map_err(|e| problem(key, "private key", PemProblem::Read(e)))?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            let why = match e {
                pem::Error::NoItemsFound => PemProblem::Missing {
                    block: "PRIVATE KEY",
                },
                e => PemProblem::Malformed(e),
            };
            problem(key, "private key", why)
        })?;
        Ok(Self {
            chain,
            key: Arc::new(key_der),
        })
    }

    /// The acceptor that runs the server side of the handshake with this
    /// certificate. Fails when the key does not match the certificate or is of
    /// a kind rustls cannot use.
    pub(crate) fn acceptor(&self) -> Result<TlsAcceptor, MockError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(MockError::Tls)?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(MockError::Tls)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// A throwaway certificate authority made in memory, and a server certificate it
/// signed for [`LOOPBACK_NAMES`] and any other names asked for: HTTPS for tests
/// and demos, which a client trusts by adding [`GeneratedCa::ca_pem`] to its roots
/// (`idb upload --ca-cert`) and no one else does.
///
/// Keys are ECDSA P-256, made anew each time; nothing is written anywhere.
pub struct GeneratedCa {
    /// The authority's certificate (PEM): what a client adds to its roots.
    pub ca_pem: String,
    /// The server's certificate (PEM), as `--tls-cert` reads it.
    pub cert_pem: String,
    /// The server's private key (PEM, PKCS#8), as `--tls-key` reads it.
    pub key_pem: String,
    identity: TlsIdentity,
}

impl std::fmt::Debug for GeneratedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedCa").finish_non_exhaustive()
    }
}

impl GeneratedCa {
    /// Makes the authority and a server certificate valid for
    /// [`LOOPBACK_NAMES`] and `hosts` (DNS names or IP addresses).
    pub fn generate(hosts: &[String]) -> Result<Self, MockError> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().map_err(MockError::TlsGenerate)?;
        let mut ca = CertificateParams::new(Vec::new()).map_err(MockError::TlsGenerate)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        // A name of its own: a client that trusts another throwaway authority
        // then finds no issuer of this name, rather than one whose key differs.
        let name = format!(
            "idb mock-server throwaway CA {:016x}",
            rand::random::<u64>()
        );
        ca.distinguished_name.push(DnType::CommonName, name);
        let ca_cert = ca.self_signed(&ca_key).map_err(MockError::TlsGenerate)?;
        let issuer = Issuer::new(ca, ca_key);

        let names: Vec<String> = LOOPBACK_NAMES
            .iter()
            .map(|n| (*n).to_owned())
            .chain(hosts.iter().cloned())
            .collect();
        let server_key = KeyPair::generate().map_err(MockError::TlsGenerate)?;
        let mut server = CertificateParams::new(names).map_err(MockError::TlsGenerate)?;
        server
            .distinguished_name
            .push(DnType::CommonName, "idb mock-server");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server
            .signed_by(&server_key, &issuer)
            .map_err(MockError::TlsGenerate)?;
        let key = PrivatePkcs8KeyDer::from(server_key.serialize_der());
        Ok(Self {
            ca_pem: ca_cert.pem(),
            cert_pem: server_cert.pem(),
            key_pem: server_key.serialize_pem(),
            identity: TlsIdentity {
                chain: vec![server_cert.der().clone()],
                key: Arc::new(key.into()),
            },
        })
    }

    /// The server's certificate and key, for [`crate::MockConfig::tls`].
    pub fn identity(&self) -> TlsIdentity {
        self.identity.clone()
    }
}
