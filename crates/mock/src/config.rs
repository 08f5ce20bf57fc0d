use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use idb_wire::WriteMode;

use crate::faults::FaultConfig;
use crate::tls::TlsIdentity;
use crate::tus::{DEFAULT_TUS_EXPIRY, TusProfile};

/// The default largest `bytechunk` the mock accepts before answering 413: 64 MiB.
pub const DEFAULT_MAX_CHUNK: u64 = 64 * 1024 * 1024;

/// The default bandwidth cap per connection: none.
pub const DEFAULT_BANDWIDTH: Option<u64> = None;

/// The default time a client has to send a request's headers (counted from the
/// moment the server starts reading them, so also how long a kept-alive
/// connection may sit idle between requests): 30 s, hyper's own default.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The default time a request body may stop moving, while the server waits for
/// it, before the request is cut: 60 s.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The default most connections served at once: 512. Beyond it a new
/// connection waits in the listen backlog (the kernel's queue) until one ends.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// Where received bytes go.
#[derive(Debug, Clone, Default)]
pub enum Storage {
    /// A fresh temporary directory, removed when the server is dropped (no state
    /// is saved: there is nothing to resume from).
    #[default]
    TempDir,
    /// This directory; files appear as `<dir>/<dataset>/<filename>` after verify.
    /// The server's state is saved in it ([`crate::STATE_FILE`]) and resumed by
    /// a server started on it again (see [`crate::MockServer`]). One server at a
    /// time: it holds [`crate::STORE_LOCK_FILE`] locked while it runs, and a
    /// second server on the same directory is refused at start
    /// ([`crate::MockError::StoreInUse`]).
    Dir(PathBuf),
    /// Keep nothing: count and hash the bytes only (for benchmarks).
    Sink,
}

/// One dataset the mock knows.
#[derive(Debug, Clone)]
pub(crate) struct DatasetConfig {
    pub(crate) key: String,
    pub(crate) token: String,
    pub(crate) published: bool,
}

/// What the mock serves and how it behaves.
///
/// Build it with the methods; every knob has a default that behaves like a fast,
/// healthy server.
#[derive(Clone)]
pub struct MockConfig {
    pub(crate) datasets: Vec<DatasetConfig>,
    /// The address [`crate::MockServer::start`] binds: 127.0.0.1:0 by default.
    pub listen: SocketAddr,
    /// Where bytes go.
    pub storage: Storage,
    /// How long every response is held back, to model a round trip.
    pub latency: Duration,
    /// The largest `bytechunk` accepted; larger ones get 413.
    pub max_chunk: u64,
    /// How long the configured tokens live, counted from the server's start;
    /// `None` for ever. `Some(Duration::ZERO)` makes them already expired.
    /// Tokens added later ([`crate::MockServer::add_token`]) have their own.
    pub token_ttl: Option<Duration>,
    /// How the mock orders the transfers of one file: strict (in order, the
    /// default) or offset (any order, announced on setup).
    pub mode: WriteMode,
    /// Which faults to inject; none by default.
    pub faults: FaultConfig,
    /// The most bytes per second each connection receives (request bodies and
    /// headers alike); `None` for no cap.
    pub bandwidth: Option<u64>,
    // --- HTTPS ---
    /// Serve HTTPS with this certificate and key (`None`: plain HTTP, the
    /// default). [`crate::GeneratedCa`] makes one for the loopback names.
    pub tls: Option<TlsIdentity>,
    // --- Limits against slow or many clients (a hostile client cannot hold the
    // server): see `accept.rs` and `body_idle.rs`.
    /// How long a client may take to send a request's headers; the connection
    /// is closed after it, with no answer.
    pub header_read_timeout: Duration,
    /// How long a request body may stop moving while the server waits for it;
    /// the request is then answered 400 and the connection closed.
    pub body_idle_timeout: Duration,
    /// The most connections served at once; a new connection beyond it waits
    /// to be accepted until one ends (it is not refused).
    pub max_connections: usize,
    /// Model a server that speaks less than the mock: every error (any status
    /// from 400 up, on any route) is answered as a small HTML page
    /// (`text/html`) that gives only the status, never the mock's JSON (no
    /// `expected_offset`, `received` or `error` fields); and in strict mode a
    /// retried chunk identical to bytes already stored gets the 409 of any
    /// other offset mismatch instead of 200. Successes are unchanged. Off by
    /// default.
    pub plain_errors: bool,
    /// Model a full disk: once this many payload bytes were written (across
    /// files, counted from the server's start, in sink mode too), every further
    /// write of payload fails as the OS's `ENOSPC` would, and the transfer is
    /// answered 507 Insufficient Storage (`{"error": "insufficient_storage"}`)
    /// without being applied. A chunk that does not fit is refused whole and
    /// fills the disk. `None` (the default): the disk never fills.
    pub disk_full_after: Option<u64>,
    // --- A cap on the whole server (`throttle.rs`'s shared bucket) ---
    /// The most bytes per second the whole server receives, every connection
    /// together (one token bucket they all draw from, as a real link caps
    /// them all), on top of each connection's [`MockConfig::bandwidth`];
    /// `None` for no cap.
    pub bandwidth_total: Option<u64>,
    // --- Protocol 2, tus (`tus/`) ---
    /// Serve protocol 2 (tus at `/files/` and the registration call), as the
    /// service does today. Off by default: a mock then speaks protocol 1 only,
    /// as a deployment of the documented API, and a client probing for tus
    /// finds nothing (404).
    pub tus: bool,
    /// How the tus endpoint stores PATCH bodies: as tus describes
    /// ([`TusProfile::Plain`], the default) or as the service's server on S3
    /// does ([`TusProfile::S3`]).
    pub tus_profile: TusProfile,
    /// How long an unfinished tus upload lives after its creation or its last
    /// PATCH (in the s3 profile, its last PATCH that stored bytes)
    /// ([`crate::DEFAULT_TUS_EXPIRY`], 7 days, by default); then it is gone
    /// (410).
    pub tus_expiry: Duration,
}

impl std::fmt::Debug for MockConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens are fake here, but the habit is the same everywhere: never print them.
        let keys: Vec<_> = self
            .datasets
            .iter()
            .map(|d| (&d.key, d.published))
            .collect();
        f.debug_struct("MockConfig")
            .field("datasets", &keys)
            .field("listen", &self.listen)
            .field("storage", &self.storage)
            .field("latency", &self.latency)
            .field("max_chunk", &self.max_chunk)
            .field("token_ttl", &self.token_ttl)
            .field("mode", &self.mode)
            .field("faults", &self.faults)
            .field("bandwidth", &self.bandwidth)
            .field("tls", &self.tls)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("body_idle_timeout", &self.body_idle_timeout)
            .field("max_connections", &self.max_connections)
            .field("plain_errors", &self.plain_errors)
            .field("disk_full_after", &self.disk_full_after)
            .field("bandwidth_total", &self.bandwidth_total)
            .field("tus", &self.tus)
            .field("tus_profile", &self.tus_profile)
            .field("tus_expiry", &self.tus_expiry)
            .finish()
    }
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            datasets: Vec::new(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            storage: Storage::default(),
            latency: Duration::ZERO,
            max_chunk: DEFAULT_MAX_CHUNK,
            token_ttl: None,
            mode: WriteMode::default(),
            faults: FaultConfig::default(),
            bandwidth: DEFAULT_BANDWIDTH,
            tls: None,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            plain_errors: false,
            disk_full_after: None,
            bandwidth_total: DEFAULT_BANDWIDTH,
            tus: false,
            tus_profile: TusProfile::default(),
            tus_expiry: DEFAULT_TUS_EXPIRY,
        }
    }
}

impl MockConfig {
    /// A server with no datasets, on 127.0.0.1:0, storing into a temp dir.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a draft dataset `key` that accepts `token`. Each key may be added
    /// once, and each token given to one dataset only (as on the Data Bank);
    /// the server refuses anything else when it starts
    /// ([`crate::MockError::DuplicateDataset`], [`crate::MockError::SharedToken`]).
    /// More tokens for a dataset: [`crate::MockServer::add_token`].
    pub fn dataset(mut self, key: &str, token: &str) -> Self {
        self.datasets.push(DatasetConfig {
            key: key.into(),
            token: token.into(),
            published: false,
        });
        self
    }

    /// Adds a published dataset: it exists but takes no uploads (404).
    pub fn published_dataset(mut self, key: &str, token: &str) -> Self {
        self.datasets.push(DatasetConfig {
            key: key.into(),
            token: token.into(),
            published: true,
        });
        self
    }

    /// Marks an already added dataset as published.
    pub fn publish(mut self, key: &str) -> Self {
        for d in self.datasets.iter_mut().filter(|d| d.key == key) {
            d.published = true;
        }
        self
    }

    /// Sets [`MockConfig::storage`].
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// Sets [`MockConfig::latency`].
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Sets [`MockConfig::max_chunk`].
    pub fn max_chunk(mut self, bytes: u64) -> Self {
        self.max_chunk = bytes;
        self
    }

    /// Sets [`MockConfig::token_ttl`].
    pub fn token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = Some(ttl);
        self
    }

    /// Sets [`MockConfig::mode`].
    pub fn mode(mut self, mode: WriteMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets [`MockConfig::faults`]. The rate and kinds are checked when the server
    /// starts ([`crate::MockError::FaultRate`], [`crate::MockError::NoFaultKinds`]).
    pub fn faults(mut self, faults: FaultConfig) -> Self {
        self.faults = faults;
        self
    }

    /// Sets [`MockConfig::bandwidth`], in bytes per second per connection
    /// (`Some(0)` is refused when the server starts: [`crate::MockError::ZeroBandwidth`]).
    pub fn bandwidth(mut self, bytes_per_second: Option<u64>) -> Self {
        self.bandwidth = bytes_per_second;
        self
    }

    /// Sets [`MockConfig::listen`].
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Sets [`MockConfig::tls`]: serve HTTPS with `identity` (a key that does
    /// not belong to the certificate is refused when the server starts:
    /// [`crate::MockError::Tls`]).
    pub fn tls(mut self, identity: TlsIdentity) -> Self {
        self.tls = Some(identity);
        self
    }

    /// Sets [`MockConfig::header_read_timeout`] (zero is refused when the
    /// server starts: [`crate::MockError::ZeroLimit`]).
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Sets [`MockConfig::body_idle_timeout`] (zero is refused when the server
    /// starts: [`crate::MockError::ZeroLimit`]).
    pub fn body_idle_timeout(mut self, timeout: Duration) -> Self {
        self.body_idle_timeout = timeout;
        self
    }

    /// Sets [`MockConfig::max_connections`] (zero is refused when the server
    /// starts: [`crate::MockError::ZeroLimit`]).
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
        self
    }

    /// Sets [`MockConfig::plain_errors`].
    pub fn plain_errors(mut self, plain: bool) -> Self {
        self.plain_errors = plain;
        self
    }

    /// Sets [`MockConfig::disk_full_after`]: the disk fills after `bytes`
    /// payload bytes.
    pub fn disk_full_after(mut self, bytes: u64) -> Self {
        self.disk_full_after = Some(bytes);
        self
    }

    /// Sets [`MockConfig::bandwidth_total`], in bytes per second for all
    /// connections together (`Some(0)` is refused when the server starts:
    /// [`crate::MockError::ZeroBandwidth`]).
    pub fn bandwidth_total(mut self, bytes_per_second: Option<u64>) -> Self {
        self.bandwidth_total = bytes_per_second;
        self
    }

    /// Sets [`MockConfig::tus`]: serve protocol 2 as well.
    pub fn tus(mut self, serve: bool) -> Self {
        self.tus = serve;
        self
    }

    /// Sets [`MockConfig::tus_profile`].
    pub fn tus_profile(mut self, profile: TusProfile) -> Self {
        self.tus_profile = profile;
        self
    }

    /// Sets [`MockConfig::tus_expiry`].
    pub fn tus_expiry(mut self, expiry: Duration) -> Self {
        self.tus_expiry = expiry;
        self
    }

    /// The keys of the configured datasets.
    pub fn dataset_keys(&self) -> impl Iterator<Item = &str> {
        self.datasets.iter().map(|d| d.key.as_str())
    }
}
