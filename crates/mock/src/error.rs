use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use thiserror::Error;

/// Why the mock server could not start or run.
///
/// A variant with a `source` does not repeat it in its own message: printed with
/// its chain (as `anyhow`'s `{:#}` does) each cause is said once.
#[derive(Debug, Error)]
pub enum MockError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: io::Error,
    },
    /// The storage directory could not be created or used.
    #[error("cannot use storage directory {path}")]
    Store {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// Another server (in this process or another) serves the same store
    /// directory: two servers on one store would replace each other's files.
    #[error(
        "store {} is in use by {}; stop that server first, or give this one another store directory",
        path.display(),
        holder(*pid)
    )]
    StoreInUse {
        /// The store directory.
        path: PathBuf,
        /// The process holding it, as it wrote in the lock file (`None` if it
        /// had not written it yet).
        pid: Option<u32>,
    },
    /// The server stopped with an I/O error.
    #[error("the mock server failed")]
    Serve(#[source] io::Error),
    /// A configured dataset key that cannot be a Data Bank dataset key.
    #[error("dataset key {key:?} is not valid: {reason}")]
    BadDatasetKey {
        /// The key given (at most 64 characters of it).
        key: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A token (configured or added) that cannot be sent in an `Authorization`
    /// header. The token itself is never part of the error.
    #[error("the token given for dataset {dataset} is not valid: {reason}")]
    BadToken {
        /// The dataset it was given for (at most 64 characters of its key).
        dataset: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The same dataset key configured twice.
    #[error(
        "dataset {key} is given twice; give each dataset once, with its token (add more tokens \
         to a running server through the admin route)"
    )]
    DuplicateDataset {
        /// The key.
        key: String,
    },
    /// One token given to two datasets: a Data Bank token opens one dataset only.
    #[error(
        "datasets {first} and {second} are given the same token; a Data Bank token opens one \
         dataset only, so give each dataset its own"
    )]
    SharedToken {
        /// The dataset that has the token already.
        first: String,
        /// The dataset it was given to again.
        second: String,
    },
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
    /// A limit of zero (a timeout or a connection limit), which would refuse
    /// every request.
    #[error("a {limit} of 0 would refuse every request; give a value above 0")]
    ZeroLimit {
        /// Which limit (like "header read timeout").
        limit: &'static str,
    },
    /// A token was offered for a dataset key this server does not serve.
    #[error("this mock server has no dataset {dataset}; start it with --dataset {dataset}:TOKEN")]
    UnknownDataset {
        /// The key given (at most 64 characters of it).
        dataset: String,
    },

    // --- HTTPS (`MockConfig::tls`, tls.rs) ---
    /// A TLS certificate or private key file cannot be used.
    #[error("cannot use {} as the server's TLS {what}", path.display())]
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
        "cannot serve TLS with this certificate and key (check that the key belongs to the \
         certificate)"
    )]
    Tls(#[source] rustls::Error),
    /// The throwaway certificate authority or its server certificate could not be made.
    #[error("cannot generate a TLS certificate")]
    TlsGenerate(#[source] rcgen::Error),
}

/// Who holds a store, for [`MockError::StoreInUse`].
fn holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "another server that is starting".to_owned(),
    }
}

/// The first 64 characters of a name given by the caller, for an error.
pub(crate) fn cut(text: &str) -> String {
    text.chars().take(64).collect()
}

/// The rule a [`idb_wire::WireError`] about a key or token says was broken.
pub(crate) fn rule(error: &idb_wire::WireError) -> &'static str {
    match error {
        idb_wire::WireError::BadDatasetKey { reason, .. }
        | idb_wire::WireError::BadToken { reason } => reason,
        // The checks used here return only the two variants above.
        _ => "it breaks the protocol's rules",
    }
}
