//! The shared state of a running mock, built from a [`MockConfig`]: datasets,
//! sessions, faults, knobs, and the signals that shutdown and a pause send to
//! requests in flight.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use idb_wire::WriteMode;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::auth::Datasets;
use crate::config::{MockConfig, Storage};
use crate::error::MockError;
use crate::faults::Faults;
use crate::pause::Pause;
use crate::sessions::Sessions;
use crate::store_lock::StoreLock;
use crate::throttle::SharedBucket;
use crate::tls::TlsIdentity;
use crate::tus::Uploads;

/// Shared state of a running mock.
pub(crate) struct App {
    /// Fixed at start: `add_token` adds tokens, never datasets.
    pub(crate) datasets: Datasets,
    pub(crate) latency: Duration,
    pub(crate) max_chunk: u64,
    pub(crate) sessions: Sessions,
    /// What could not be loaded from the store's saved state, for people.
    pub(crate) warnings: Vec<String>,
    pub(crate) mode: WriteMode,
    pub(crate) faults: Faults,
    /// Bytes per second each connection may receive; `None`: no cap.
    pub(crate) bandwidth: Option<u64>,
    /// The bucket every connection draws from ([`MockConfig::bandwidth_total`]);
    /// `None`: no cap on the whole server.
    pub(crate) bandwidth_total: Option<Arc<SharedBucket>>,
    /// See [`MockConfig::header_read_timeout`].
    pub(crate) header_read_timeout: Duration,
    /// See [`MockConfig::body_idle_timeout`].
    pub(crate) body_idle_timeout: Duration,
    /// See [`MockConfig::max_connections`].
    pub(crate) max_connections: usize,
    /// See [`MockConfig::plain_errors`].
    pub(crate) plain_errors: bool,
    /// See [`MockConfig::tus`].
    pub(crate) serve_tus: bool,
    /// Becomes `true` when shutdown begins: every connection then finishes its
    /// request in flight and closes, and stalled answers and requests held by
    /// a pause are let go at once. Never goes back to `false`.
    pub(crate) closing: watch::Sender<bool>,
    /// Holds datafile requests while a test has paused the server.
    pub(crate) pause: Pause,
    /// Protocol 2's tus uploads (`tus/`).
    pub(crate) tus: Uploads,
    /// The address the server listens on, set once when it starts serving
    /// (a registration's `tus_url` may name it). Written once, read by any
    /// request; never reset.
    pub(crate) bound: OnceLock<SocketAddr>,
    /// Keeps a default temporary store alive as long as the server.
    _temp: Option<tempfile::TempDir>,
    /// A store directory of the caller's is this server's alone while it
    /// runs; let go when the last reference to the state is dropped.
    _store_lock: Option<StoreLock>,
    pub(crate) store: Option<PathBuf>,
    /// Runs the server side of the TLS handshake on every accepted connection
    /// (`None`: plain HTTP).
    pub(crate) tls: Option<TlsAcceptor>,
}

/// The longest timeout taken as given (longer ones mean "never").
const LONGEST_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

impl App {
    fn new(config: &MockConfig) -> Result<Self, MockError> {
        let datasets = Datasets::new(&config.datasets, config.token_ttl)?;
        let faults = Faults::new(&config.faults)?;
        if config.bandwidth == Some(0) || config.bandwidth_total == Some(0) {
            return Err(MockError::ZeroBandwidth);
        }
        let tls = config.tls.as_ref().map(TlsIdentity::acceptor).transpose()?;
        for (zero, limit) in [
            (config.header_read_timeout.is_zero(), "header read timeout"),
            (config.body_idle_timeout.is_zero(), "body idle timeout"),
            (config.max_connections == 0, "connection limit"),
        ] {
            if zero {
                return Err(MockError::ZeroLimit { limit });
            }
        }
        // Only a directory of the caller's is worth saving state into: a
        // temporary store starts empty every time.
        let persist = matches!(config.storage, Storage::Dir(_));
        let mut store_lock = None;
        let (temp, store) = match &config.storage {
            Storage::Sink => (None, None),
            Storage::Dir(path) => {
                std::fs::create_dir_all(path).map_err(|source| MockError::Store {
                    path: path.clone(),
                    source,
                })?;
                // Before anything of the store is read: its state is this
                // server's alone from here on.
                store_lock = Some(StoreLock::acquire(path)?);
                (None, Some(path.clone()))
            }
            Storage::TempDir => {
                let temp = tempfile::Builder::new()
                    .prefix("idb-mock-")
                    .tempdir()
                    .map_err(|source| MockError::Store {
                        path: std::env::temp_dir(),
                        source,
                    })?;
                let path = temp.path().to_path_buf();
                (Some(temp), Some(path))
            }
        };
        let (mut sessions, mut warnings) = Sessions::new(store.clone(), config.mode, persist);
        if config.plain_errors {
            sessions = sessions.refuse_identical_retries();
        }
        if let Some(bytes) = config.disk_full_after {
            sessions = sessions.disk_full_after(bytes);
        }
        let mut tus = Uploads::new(store.clone(), config.tus_profile, config.tus_expiry)
            .on_disk(sessions.disk());
        if persist {
            let (kept, not_restored) = tus
                .keeping_state(|dataset, filename| sessions.receipt(dataset, filename).is_some());
            tus = kept;
            warnings.extend(not_restored);
        }
        Ok(Self {
            datasets,
            latency: config.latency,
            max_chunk: config.max_chunk,
            sessions,
            warnings,
            mode: config.mode,
            faults,
            bandwidth: config.bandwidth,
            bandwidth_total: config.bandwidth_total.map(SharedBucket::new),
            // hyper adds it to the clock, which overflows on a huge one: a
            // year is as good as never.
            header_read_timeout: config.header_read_timeout.min(LONGEST_TIMEOUT),
            body_idle_timeout: config.body_idle_timeout.min(LONGEST_TIMEOUT),
            max_connections: config.max_connections,
            plain_errors: config.plain_errors,
            serve_tus: config.tus,
            closing: watch::Sender::new(false),
            pause: Pause::new(),
            tus,
            bound: OnceLock::new(),
            _temp: temp,
            _store_lock: store_lock,
            store,
            tls,
        })
    }

    /// Builds the state on a blocking thread: loading a store's saved state
    /// hashes the staged bytes of every open upload.
    pub(crate) async fn start(config: MockConfig) -> Result<Arc<Self>, MockError> {
        tokio::task::spawn_blocking(move || Self::new(&config))
            .await
            .map_err(|e| MockError::Serve(io::Error::other(e)))?
            .map(Arc::new)
    }
}
