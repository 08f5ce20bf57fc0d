use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use idb_read::{ReadMode, ReaderConfig};
use idb_wire::{DatasetKey, Token};

use crate::RetryPolicy;
use url::Url;

/// The default chunk size: 8 MiB, four times the service's sample client.
pub const DEFAULT_CHUNK_SIZE: u64 = 8 * 1024 * 1024;

/// The largest chunk size accepted from a user: 1 GiB. A chunk is held in memory
/// while it is sent, so this also bounds memory.
pub const MAX_CHUNK_SIZE: u64 = 1024 * 1024 * 1024;

/// How long to wait for a TCP (and TLS) connection before giving up.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The default ceiling for the adaptive chunk size: 64 MiB.
pub const DEFAULT_MAX_CHUNK_SIZE: u64 = 64 * 1024 * 1024;

/// Files uploaded at once by default. The service runs on a handful of request
/// threads: a polite client keeps few requests in flight.
pub const DEFAULT_PARALLEL: usize = 3;

/// The default budget of chunk bytes in flight for the whole run: 512 MiB.
pub const DEFAULT_MEMORY: u64 = 512 * 1024 * 1024;

/// Give up on a call when nothing moved (no request byte out, no answer) this long.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Until the server has answered anything in a run, a call with nothing moving
/// is given up after this long instead of the idle timeout. A run's first calls
/// are setups (a few hundred bytes, no heavy work for the server), so a server
/// silent this long is more likely not listening than slow; with three
/// attempts a silent server is reported after about 90 seconds, not 10 minutes.
pub const DEFAULT_FIRST_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// No deadline per file by default: a file of 2 TiB on a slow path may rightly
/// take days, and each call is bounded already (attempts, idle timeout, call
/// deadline).
pub const DEFAULT_FILE_DEADLINE: Option<Duration> = None;

/// How often, at most, the journal writer writes what changed: a killed run
/// resends at most about this much work.
pub const DEFAULT_JOURNAL_INTERVAL: Duration = Duration::from_secs(1);

/// Bytes acknowledged that make the journal writer write before its interval.
pub const DEFAULT_JOURNAL_BYTES: u64 = 256 * 1024 * 1024;

/// How long the calls in flight may take to be answered after a [`crate::Cancel`]
/// before they are abandoned: long enough for a chunk on a slow path to land,
/// short enough for a person at Ctrl-C.
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(5);

/// A source of a new token, asked after a 401 (for example: read the token
/// file again, or wait for a person to put a new token there). `None` means
/// there is none. Asked by one call at a time; the others wait for its answer.
#[derive(Clone)]
pub struct TokenRefresh(Arc<dyn Fn() -> RefreshFuture + Send + Sync>);

/// What a [`TokenRefresh`] returns: the token to use now, when it has one.
type RefreshFuture = Pin<Box<dyn Future<Output = Option<Token>> + Send>>;

impl TokenRefresh {
    /// Wraps a function returning the token to use now, at once.
    pub fn new(fetch: impl Fn() -> Option<Token> + Send + Sync + 'static) -> Self {
        Self(Arc::new(move || {
            let token = fetch();
            Box::pin(std::future::ready(token))
        }))
    }

    /// Wraps a function that may wait for a new token (a stopped run drops the
    /// wait).
    pub fn waiting<F>(fetch: impl Fn() -> F + Send + Sync + 'static) -> Self
    where
        F: Future<Output = Option<Token>> + Send + 'static,
    {
        Self(Arc::new(move || Box::pin(fetch())))
    }

    /// Asks for the token to use now (what the engine does after a 401).
    pub async fn fetch(&self) -> Option<Token> {
        (self.0)().await
    }
}

impl std::fmt::Debug for TokenRefresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenRefresh(..)")
    }
}

/// Which upload protocol a run speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// Ask the server (OPTIONS on its tus endpoint): tus when it answers as a
    /// tus 1.0.0 server, else the chunked API.
    #[default]
    Auto,
    /// Protocol 1, the documented chunked API (setup, transfer, verify).
    Chunked,
    /// Protocol 2, tus 1.0 at `<server>/files/` and a registration call.
    Tus,
}

impl Protocol {
    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Auto => "auto",
            Protocol::Chunked => "chunked",
            Protocol::Tus => "tus",
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(Protocol::Auto),
            "chunked" => Ok(Protocol::Chunked),
            "tus" => Ok(Protocol::Tus),
            other => Err(format!(
                "unknown protocol {other:?}; use auto, chunked or tus"
            )),
        }
    }
}

/// What to upload to and how.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// The Data Bank's base URL, such as `https://databank.illinois.edu`.
    pub server: Url,
    /// The dataset the files go into.
    pub dataset: DatasetKey,
    /// The dataset's upload token (redacted in `Debug`).
    pub token: Token,
    /// Bytes per `transfer` call at the start, 1 to [`MAX_CHUNK_SIZE`]; the engine
    /// doubles it while round trips dominate and halves it on 413 or timeouts.
    pub chunk_size: u64,
    /// The ceiling of the adaptive chunk size (set it to `chunk_size` for fixed
    /// chunks).
    pub max_chunk_size: u64,
    /// Files uploaded at once.
    pub parallel: usize,
    /// Chunks of one file in flight on a server that writes at offsets (`None`:
    /// [`crate::DEFAULT_OFFSET_WINDOW`]); a strict server always gets 1. A file
    /// sent as tus partials may have `parallel` times this many in flight (the
    /// run's whole window, which starts at 2 for partials).
    pub window: Option<usize>,
    /// Chunk bytes the run may hold at once, read ahead and in flight together:
    /// readers lease every chunk from this budget before reading it. (Each
    /// file's read-ahead is also bounded by `reader.read_ahead_bytes`.)
    pub memory: u64,
    /// Give up on a call (and retry it) when nothing moved for this long.
    pub idle_timeout: Duration,
    /// Until the server answered anything in this run, give up on a call when
    /// nothing moved for this long, if shorter than `idle_timeout`
    /// ([`DEFAULT_FIRST_ANSWER_TIMEOUT`]); such silences, like connection
    /// failures, stop the run after 3 attempts (or `retry.max_attempts`, if
    /// fewer): [`crate::Error::NoAnswer`].
    pub first_answer_timeout: Duration,
    /// Give up on a file not verified this long after its turn came: its calls
    /// in flight are abandoned (a verify in flight is let finish), what the
    /// server acknowledged is kept in the journal ([`crate::Error::FileDeadline`]).
    /// `None`: no limit ([`DEFAULT_FILE_DEADLINE`]).
    pub file_deadline: Option<Duration>,
    /// Retries of calls that may succeed when sent again, and each call's
    /// deadline ([`RetryPolicy::deadline`]).
    pub retry: RetryPolicy,
    /// The state directory ([`crate::state::StateDir`]): where each upload
    /// records how far the server got, so a killed run resumes (`journal/`), where
    /// the lock file lives that keeps two processes from uploading the same name
    /// (`journal/uploads.lock`), and where verified uploads leave receipts, so a
    /// re-run skips them (`receipts/`). `None`: nothing recorded or locked, every
    /// run starts with setup and skips nothing.
    pub state_dir: Option<PathBuf>,
    /// Ignore receipts: upload every file even if a receipt says it was verified
    /// (the server still decides: it may refuse a name it holds already).
    pub force: bool,
    /// How often, at most, the journal is written ([`DEFAULT_JOURNAL_INTERVAL`];
    /// zero writes after every acknowledgement, still off the acknowledgement's
    /// path).
    pub journal_interval: Duration,
    /// Acknowledged bytes that make the journal be written before its interval.
    pub journal_bytes: u64,
    /// Where a new token comes from when the server refuses the current one.
    pub token_refresh: Option<TokenRefresh>,
    /// The connect timeout.
    pub connect_timeout: Duration,
    /// After a [`crate::Cancel`], how long calls in flight may still be answered
    /// ([`DEFAULT_CANCEL_GRACE`]; zero abandons them at once).
    pub cancel_grace: Duration,
    /// How files are read (memory-mapped by default).
    pub read_mode: ReadMode,
    /// The reader thread's settings (prefetch depth, hashing, page release).
    pub reader: ReaderConfig,
    /// A cap on the bytes the uploader sends, in bytes per second, for all files
    /// and connections together (`None`: no cap; 0 is refused). Transfer bodies
    /// wait for their turn at one shared token bucket as they are handed to the
    /// HTTP client, frame by frame, at most [`crate::BANDWIDTH_BURST`] ahead of the
    /// rate; setup and verify bodies (a few hundred bytes) are not held back.
    pub bandwidth: Option<u64>,
    // --- Protocol ---
    /// Which upload protocol to speak ([`Protocol::Auto`] by default: tus when
    /// the server serves it, else the chunked API).
    pub protocol: Protocol,
    /// Protocol 2: send a file as partial uploads in parallel, joined at the
    /// end, when the server serves concatenation (on by default).
    pub tus_concat: bool,
    /// Protocol 2: the part size PATCH bodies are whole multiples of (`None`:
    /// the service's rule, `max(5 MiB, ceil(size / 10000))` for each file).
    pub tus_part_size: Option<u64>,
    /// Protocol 2: send `Upload-Checksum` with every PATCH when the server
    /// serves the checksum extension (on by default; off saves hashing each
    /// body once more on each side).
    pub tus_checksum: bool,
    // --- Trust ---
    /// Private certificate authorities (PEM files, one or more certificates
    /// each) trusted on top of the platform's, for a server whose certificate
    /// one of them issued. Verification cannot be turned off.
    pub ca_certs: Vec<PathBuf>,
}

impl UploadConfig {
    /// A configuration with default chunk size and timeouts.
    pub fn new(server: Url, dataset: DatasetKey, token: Token) -> Self {
        Self {
            server,
            dataset,
            token,
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_chunk_size: DEFAULT_MAX_CHUNK_SIZE,
            parallel: DEFAULT_PARALLEL,
            window: None,
            memory: DEFAULT_MEMORY,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            first_answer_timeout: DEFAULT_FIRST_ANSWER_TIMEOUT,
            file_deadline: DEFAULT_FILE_DEADLINE,
            retry: RetryPolicy::default(),
            state_dir: None,
            force: false,
            journal_interval: DEFAULT_JOURNAL_INTERVAL,
            journal_bytes: DEFAULT_JOURNAL_BYTES,
            token_refresh: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            cancel_grace: DEFAULT_CANCEL_GRACE,
            read_mode: ReadMode::Auto,
            reader: ReaderConfig {
                // The pump keeps the newest hash state for the journal.
                hash_snapshots: true,
                ..ReaderConfig::default()
            },
            bandwidth: None,
            protocol: Protocol::Auto,
            tus_concat: true,
            tus_part_size: None,
            tus_checksum: true,
            ca_certs: Vec::new(),
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

    /// Fixed chunks: sets both [`UploadConfig::chunk_size`] and
    /// [`UploadConfig::max_chunk_size`] (413 answers may still lower it).
    pub fn fixed_chunk_size(mut self, bytes: u64) -> Self {
        self.chunk_size = bytes;
        self.max_chunk_size = bytes;
        self
    }
}
