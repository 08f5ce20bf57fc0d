//! A mock Illinois Data Bank server, faithful to the chunked upload API.
//!
//! `idb-mock` answers protocol 1, the chunked upload API (setup, transfers, verify), as its
//! "mock contract" describes, so tests and benchmarks can run against a real HTTP
//! server on 127.0.0.1 in seconds. It owns: datasets and tokens (each with its own
//! expiry; more can be added to a running server, in process or through the
//! loopback-only `POST /admin/tokens`), upload sessions in strict mode (transfers
//! in order) or offset mode (each chunk written at its offset, in any order),
//! storage (a directory, or a sink that keeps only a hash), the saved state of a
//! store directory (`+state.json`: a server started again on the same directory
//! resumes its strict uploads and keeps its receipts; one server per store,
//! [`STORE_LOCK_FILE`]), and knobs: latency, the chunk limit, a bandwidth cap
//! per connection and one on the whole server, seeded fault injection (500, 429, reset connections, stalled
//! answers, truncated chunks; drawn for each call, so the same calls meet the
//! same faults in any order of arrival), a disk that fills after so many bytes
//! ([`MockConfig::disk_full_after`]: 507), plain HTML errors (a server that speaks less than
//! the mock: [`MockConfig::plain_errors`]), limits against slow and many
//! clients (a header read timeout, a body idle timeout, a connection limit);
//! and HTTPS, with a certificate and key given or one issued by a throwaway
//! certificate authority.
//!
//! It also serves protocol 2, the service's current path: tus 1.0 at
//! [`TUS_PATH`] (creation, deferred length, termination, expiration,
//! concatenation, checksum) and the registration call that makes a tus upload a
//! verified file, with a [`TusProfile::S3`] that imitates the service's server
//! (a PATCH body shorter than one part of [`s3_part_size`] that does not end
//! the file silently dropped whole, S3's part limits);
//! [`MockServer::tus_stats`] and [`MockServer::tus_registrations`] show what
//! it did, incomplete and repeated registrations included.
//!
//! Main types: [`MockConfig`] (what to serve), [`MockServer`] (a running server
//! with its URL and inspection methods such as [`MockServer::accepted`],
//! [`MockServer::stats`] and [`MockServer::wait_for_chunks`], and test controls:
//! [`MockServer::pause`] / [`MockServer::resume`] hold datafile requests as they
//! arrive, [`MockServer::wait_for_requests`] waits for them to arrive, so a test
//! acts at a known moment without sleeping), [`serve`] (run on a listener you
//! bound, until a shutdown future resolves), [`WriteMode`] (from `idb-wire`),
//! [`FaultConfig`], [`TlsIdentity`] and [`GeneratedCa`] (what HTTPS serves).
//!
//! ```no_run
//! # async fn example() -> Result<(), idb_mock::MockError> {
//! use idb_mock::{FaultConfig, FaultKind, MockConfig, MockServer, WriteMode};
//!
//! let config = MockConfig::new()
//!     .dataset("IDB-1", "secret-token")
//!     .mode(WriteMode::Offset)
//!     .faults(FaultConfig { seed: 7, ..FaultConfig::new(0.1, [FaultKind::ServerError]) })
//!     .bandwidth(Some(12 << 20)); // 12 MiB/s per connection
//! let server = MockServer::start(config).await?; // bound to 127.0.0.1:0
//! println!("upload to {}", server.url());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! It never imports the engine and never prints (the CLI does; what a start
//! could not load is in [`MockServer::warnings`]). A strict transfer's payload
//! is streamed into its session as it arrives (written and hashed on a blocking
//! thread of its own, a few pieces in flight), never held whole, when its
//! fields come before it, as every known client sends them; otherwise, and in
//! offset mode, one chunk of a request is held. An offset session also holds
//! the chunks that arrived ahead of the contiguous prefix, until it reaches them.
#![deny(missing_docs)]

mod accept;
mod admin;
mod app;
mod assembly;
mod auth;
mod body;
mod body_idle;
mod call_peek;
mod config;
mod counters;
mod datafile;
mod disk_space;
mod error;
mod faults;
mod handle;
mod html_errors;
mod layout;
mod lock;
mod pause;
mod payload_feed;
mod persist;
mod reply;
mod restore;
mod sessions;
mod store_lock;
mod throttle;
mod tls;
mod tus;

pub use accept::serve;
pub use admin::ADMIN_TOKENS_PATH;
pub use config::{
    DEFAULT_BANDWIDTH, DEFAULT_BODY_IDLE_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CHUNK,
    DEFAULT_MAX_CONNECTIONS, MockConfig, Storage,
};
pub use counters::Stats;
pub use error::MockError;
pub use faults::{
    DEFAULT_FAULT_RATE, DEFAULT_FAULT_SEED, DEFAULT_RETRY_AFTER, DEFAULT_STALL, FaultConfig,
    FaultKind, FaultStats, MAX_COUNTED_CALLS,
};
pub use handle::MockServer;
pub use layout::STORE_LOCK_FILE;
// Defined in the wire crate, which the client shares; re-exported so that
// `idb_mock::WriteMode` keeps working.
pub use idb_wire::{VerifyReceipt, WriteMode};
pub use persist::{MAX_PERSISTED_LOG, STATE_FILE, STATE_VERSION};
pub use throttle::BANDWIDTH_BURST;
pub use tls::{GeneratedCa, LOOPBACK_NAMES, PemProblem, TLS_HANDSHAKE_TIMEOUT, TlsIdentity};
pub use tus::{
    DEFAULT_TUS_EXPIRY, S3_MAX_PART, S3_MAX_PARTS, S3_MIN_PART, TUS_EXTENSIONS, TUS_MAX_SIZE,
    TUS_PATH, TUS_VERSION, TusProfile, TusRegistration, TusStats, s3_part_size,
};
