//! The `idb` transfer engine: uploads files to an Illinois Data Bank dataset.
//!
//! `idb-engine` owns the client side of the chunked upload protocol: checking the
//! files before anything is sent, `setup`, ordered `transfer` calls (chunks come
//! from an `idb-read` reader thread running ahead of the network) whose
//! `previous_size` is the byte offset, `verify`, and an end-to-end blake3 check of
//! what the server received. Every failure becomes a typed [`Error`] that says
//! what happened, to which file, and what to do.
//!
//! Main types: [`UploadConfig`] (server, dataset, token, chunk size, state
//! directory), [`Uploader`] (checks files from their metadata, then runs uploads),
//! [`CheckedFiles`], [`Event`] / [`EventSink`] (progress for a UI), [`Cancel`]
//! (stop a run from outside, its journals written), [`Report`] (what happened to
//! each file), [`StateDir`] (what the state directory holds between runs:
//! unfinished uploads, [`ReceiptRecord`]s of verified ones that a re-run skips,
//! and cleaning stale journals).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use idb_engine::{UploadConfig, Uploader, NoEvents};
//! use idb_wire::{DatasetKey, Token};
//!
//! let config = UploadConfig::new(
//!     "https://databank.illinois.edu".parse().unwrap(),
//!     DatasetKey::new("IDB-1234567")?,
//!     Token::new(&std::env::var("IDB_TOKEN").unwrap_or_default())?,
//! );
//! let uploader = Uploader::new(config)?;
//! let files = match uploader.check(&["data.h5".into()]) {
//!     Ok(files) => files,
//!     Err(problems) => panic!("fix these first: {problems:?}"),
//! };
//! let report = uploader.upload(files, &NoEvents).await;
//! assert!(report.all_done());
//! # Ok(()) }
//! ```
//!
//! It never prints and never exits: progress goes out as events, results as values.
//! The token travels only in a sensitive `Authorization` header, and whatever a
//! server sends back is cleaned where it enters the engine (every token of the
//! run scrubbed out, control characters escaped, at most [`SERVER_TEXT_LIMIT`]
//! characters) before it reaches an error, an event or the log.
//! Over HTTPS the token goes only to a server whose certificate verifies (the
//! platform's roots, plus [`UploadConfig::ca_certs`]; there is no way to turn
//! verification off).
#![deny(missing_docs)]

mod acked;
mod bandwidth;
mod body;
mod calls;
mod chunking;
mod client;
mod config;
mod congestion;
mod error;
mod event;
mod file_upload;
mod idle;
mod journal;
mod journal_writer;
mod name_lock;
mod negotiate;
mod open_file;
mod preflight;
mod protocol;
mod pump;
mod receipts;
mod resume;
mod retry;
mod run;
mod saved_path;
mod server_text;
mod state;
mod stop;
mod tls;
mod tus;
mod upload;

pub use bandwidth::BANDWIDTH_BURST;
pub use chunking::MIN_ADAPTIVE_CHUNK;
pub use config::{
    DEFAULT_CANCEL_GRACE, DEFAULT_CHUNK_SIZE, DEFAULT_CONNECT_TIMEOUT, DEFAULT_FILE_DEADLINE,
    DEFAULT_FIRST_ANSWER_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_JOURNAL_BYTES,
    DEFAULT_JOURNAL_INTERVAL, DEFAULT_MAX_CHUNK_SIZE, DEFAULT_MEMORY, DEFAULT_PARALLEL,
    MAX_CHUNK_SIZE, Protocol, TokenRefresh, UploadConfig,
};
pub use error::{Error, NameProblem};
pub use event::{Event, EventSink, NoEvents, RestartReason, bytes_text};
pub use idb_read::{Change, ReadError, ReadMode, ReaderConfig, mapped_path_at};
pub use idb_wire::Phase;
pub use idb_wire::{DatasetKey, Token, VerifyReceipt};
pub use receipts::{DamagedReceipts, RECEIPT_VERSION, ReceiptRecord};
pub use retry::{DEFAULT_CALL_DEADLINE, DEFAULT_MAX_ATTEMPTS, RetryPolicy};
pub use server_text::{SERVER_TEXT_LIMIT, escape_controls};
pub use state::{
    CleanOutcome, Cleaned, CleanedDamaged, JournalSummary, LocalFile, ReadReceipts, STALE_AFTER,
    Scope, Stale, StateDir, UnusableJournal,
};
pub use stop::Cancel;
pub use tls::{
    CaCertProblem, CertificateProblem, certificate_problem, load_ca_certs, scheme_problem,
};

/// Chunks in flight per file on a server that writes at offsets, unless the user
/// says otherwise.
pub const DEFAULT_OFFSET_WINDOW: usize = 4;
/// The most chunks in flight per file (`UploadConfig::window`): each is a
/// connection and an open file, and by tus concatenation one file may have
/// `parallel` times this many; past a few dozen they only queue at the server
/// (the mock serves 512 connections at once, the service a handful of threads).
pub const MAX_WINDOW: usize = 64;
pub use upload::{CheckedFiles, FileOutcome, FileReport, Known, KnownByReceipts, Report, Uploader};
