use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use thiserror::Error;

/// Why the mock server could not start or run.
#[derive(Debug, Error)]
pub enum MockError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: io::Error,
    },
    /// The storage directory could not be created or used.
    #[error("cannot use storage directory {path}: {source}")]
    Store {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("the mock server failed: {0}")]
    Serve(#[source] io::Error),
    /// A dataset key or token in the configuration is not valid.
    #[error("invalid mock configuration: {0}")]
    Config(#[from] idb_wire::WireError),
    /// A fault rate that is not a probability.
    #[error("the fault rate {rate} is not a probability; give a number from 0 to 1")]
    FaultRate {
        /// The rate given.
        rate: f64,
    },
    /// Faults are on (rate above 0) but no kinds to draw from were given.
    #[error(
        "faults are enabled but no fault kinds are given; name at least one of 500, 429, reset, stall, truncate"
    )]
    NoFaultKinds,
    /// A fault kind name that is not one of `500`, `429`, `reset`, `stall`, `truncate`.
    #[error("unknown fault kind {kind:?}; use 500, 429, reset, stall or truncate")]
    UnknownFaultKind {
        /// The name given (at most 64 characters of it).
        kind: String,
    },
    /// A bandwidth cap of 0 bytes per second, which would let nothing through.
    #[error("a bandwidth of 0 bytes per second lets nothing through; leave it unset for no cap")]
    ZeroBandwidth,
    /// A token was offered for a dataset key this server does not serve.
    #[error("this mock server has no dataset {dataset}; start it with --dataset {dataset}:TOKEN")]
    UnknownDataset {
        /// The key given (at most 64 characters of it).
        dataset: String,
    },

    // --- HTTPS (`MockConfig::tls`, tls.rs) ---
    /// A TLS certificate or private key file cannot be used.
    #[error("cannot use {} as the server's TLS {what}: {problem}", path.display())]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// What it was given as: `certificate` or `private key`.
        what: &'static str,
        /// What is wrong with it.
        #[source]
        problem: crate::tls::PemProblem,
    },
    /// rustls cannot serve with the certificate and key (the key does not belong
    /// to the certificate, or is of a kind it does not support).
    #[error(
        "cannot serve TLS with this certificate and key: {0}; check that the key belongs to \
         the certificate"
    )]
    Tls(#[source] rustls::Error),
    /// The throwaway certificate authority or its server certificate could not be made.
    #[error("cannot generate a TLS certificate: {0}")]
    TlsGenerate(#[source] rcgen::Error),
}
