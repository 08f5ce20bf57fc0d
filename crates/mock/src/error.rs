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
}
