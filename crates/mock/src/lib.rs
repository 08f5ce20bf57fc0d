//! A mock Illinois Data Bank server, faithful to the chunked upload API.
//!
//! `idb-mock` answers protocol 1 of `PROTOCOL.md` (setup, ordered transfers,
//! verify) as its "mock contract" describes, so tests and benchmarks can run
//! against a real HTTP server on 127.0.0.1 in seconds. It owns: datasets and tokens
//! (with expiry), upload sessions, storage (a directory, or a sink that keeps only a
//! hash), and knobs such as latency and the chunk limit.
//!
//! Main types: [`MockConfig`] (what to serve), [`MockServer`] (a running server
//! with its URL and inspection methods), [`serve`] (run on a listener you bound,
//! until a shutdown future resolves).
//!
//! ```no_run
//! # async fn example() -> Result<(), idb_mock::MockError> {
//! use idb_mock::{MockConfig, MockServer};
//!
//! let config = MockConfig::new().dataset("IDB-1", "secret-token");
//! let server = MockServer::start(config).await?; // bound to 127.0.0.1:0
//! println!("upload to {}", server.url());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! It never imports the engine, never prints (the CLI does), and never keeps more
//! than one chunk of a request in memory.
#![deny(missing_docs)]

mod body;
mod config;
mod error;
mod server;
mod sessions;

pub use config::{DEFAULT_MAX_CHUNK, MockConfig, Storage};
pub use error::MockError;
pub use idb_wire::VerifyReceipt;
pub use server::{MockServer, serve};
pub use sessions::Stats;
