use std::time::Duration;

use idb_read::{ReadMode, ReaderConfig};
use idb_wire::{DatasetKey, Token};
use url::Url;

/// The default chunk size: 8 MiB, four times the service's sample client.
pub const DEFAULT_CHUNK_SIZE: u64 = 8 * 1024 * 1024;

/// The largest chunk size accepted from a user: 1 GiB. A chunk is held in memory
/// while it is sent, so this also bounds memory.
pub const MAX_CHUNK_SIZE: u64 = 1024 * 1024 * 1024;

/// How long to wait for a TCP (and TLS) connection before giving up.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// What to upload to and how.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// The Data Bank's base URL, such as `https://databank.illinois.edu`.
    pub server: Url,
    /// The dataset the files go into.
    pub dataset: DatasetKey,
    /// The dataset's upload token (redacted in `Debug`).
    pub token: Token,
    /// Bytes per `transfer` call, 1 to [`MAX_CHUNK_SIZE`].
    pub chunk_size: u64,
    /// The connect timeout.
    pub connect_timeout: Duration,
    /// How files are read (memory-mapped by default).
    pub read_mode: ReadMode,
    /// The reader thread's settings (prefetch depth, hashing, page release).
    pub reader: ReaderConfig,
}

impl UploadConfig {
    /// A configuration with default chunk size and timeouts.
    pub fn new(server: Url, dataset: DatasetKey, token: Token) -> Self {
        Self {
            server,
            dataset,
            token,
            chunk_size: DEFAULT_CHUNK_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_mode: ReadMode::Auto,
            reader: ReaderConfig::default(),
        }
    }

    /// Sets [`UploadConfig::read_mode`].
    pub fn read_mode(mut self, mode: ReadMode) -> Self {
        self.read_mode = mode;
        self
    }

    /// Sets [`UploadConfig::chunk_size`].
    pub fn chunk_size(mut self, bytes: u64) -> Self {
        self.chunk_size = bytes;
        self
    }
}
