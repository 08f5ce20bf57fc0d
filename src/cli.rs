//! The command line, as clap sees it (raw values; each command validates them).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::size::parse_size;

/// Upload research data to the Illinois Data Bank: fast, resumable, verified.
#[derive(Debug, Parser)]
#[command(name = "idb", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload files into a draft dataset (the token comes from IDB_TOKEN or --token-file).
    Upload(UploadArgs),
    /// Run a mock Data Bank server (for tests, demos and measuring a network path).
    MockServer(MockServerArgs),
    /// Start a mock server in this process, upload a generated file to it, and check it.
    Demo(DemoArgs),
    /// Measure the engine against a single-request ceiling and the service's sample
    /// client, on an in-process mock (summary on stdout, evidence in --out).
    Bench(BenchArgs),
    // --- The state directory (receipts, journals): src/status.rs, src/clean.rs ---
    /// Show what the state directory knows of a dataset: unfinished uploads (which
    /// the same upload command resumes) and receipts of verified files (which it
    /// skips). No token needed.
    Status(StatusArgs),
    /// Remove stale journals of unfinished uploads: older than a token's life (3
    /// days), or whose local file changed or vanished since. A journal whose name
    /// an idb is uploading now is kept. Receipts of verified files are never
    /// removed. No token needed.
    Clean(CleanArgs),
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The files to upload (each keeps its base name in the dataset).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The dataset key, like IDB-1234567.
    #[arg(long, env = "IDB_DATASET", value_name = "KEY")]
    pub dataset: String,
    /// The Data Bank's address.
    #[arg(
        long,
        env = "IDB_SERVER",
        default_value = "https://databank.illinois.edu",
        value_name = "URL"
    )]
    pub server: String,
    /// Read the token from this file (otherwise from the IDB_TOKEN environment
    /// variable). If the server refuses the token mid-run, the file is read again:
    /// put a new token there and the run goes on.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Where unfinished uploads are recorded so the same command resumes them
    /// (default: $XDG_STATE_HOME/idb, or ~/.local/state/idb).
    #[arg(long, env = "IDB_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// How often, at most, the progress of unfinished uploads is saved in the state
    /// directory, in seconds (a killed run resends at most about this much); 0
    /// saves after every acknowledged chunk. Saving never holds up the upload.
    #[arg(long, default_value = "1", value_parser = parse_seconds, value_name = "SECS")]
    pub journal_interval: std::time::Duration,
    #[command(flatten)]
    pub transfer: TransferArgs,
    // --- Re-runs (receipts) ---
    /// Upload every file even if the state directory has a receipt saying it was
    /// verified earlier (by default such files are skipped). The server still
    /// refuses a name it has verified: this does not overwrite.
    #[arg(long)]
    pub force: bool,
}

/// A duration in seconds, like `1` or `0.25`.
pub fn parse_seconds(text: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds, like 1 or 0.5"))?;
    std::time::Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("{text} is not a duration: give a number of seconds from 0 up"))
}

/// How files are sent (shared by `upload` and `demo`).
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Bytes per transfer call at the start; doubled while round trips dominate,
    /// halved on 413 or timeouts.
    #[arg(long, default_value = "8MiB", value_parser = parse_size, value_name = "SIZE")]
    pub chunk_size: u64,
    /// Ceiling for the adaptive chunk size (give --chunk-size's value for fixed chunks).
    #[arg(long, default_value = "64MiB", value_parser = parse_size, value_name = "SIZE")]
    pub max_chunk_size: u64,
    /// Files uploaded at once.
    #[arg(long, default_value_t = idb_engine::DEFAULT_PARALLEL, value_name = "N")]
    pub parallel: usize,
    /// Chunks of one file in flight (default: 1 on a strict server, 4 on a server
    /// that writes at offsets; more than 1 on a strict server only causes conflicts).
    #[arg(long, value_name = "W")]
    pub window: Option<usize>,
    /// Chunk bytes held in flight by the whole run.
    #[arg(long, default_value = "512MiB", value_parser = parse_size, value_name = "SIZE")]
    pub memory: u64,
    /// Retry a call when nothing moved for this many seconds.
    #[arg(long, default_value_t = idb_engine::DEFAULT_IDLE_TIMEOUT.as_secs(), value_name = "SECS")]
    pub idle_timeout: u64,
    /// Attempts per call before giving up (connection errors, timeouts, 5xx, 429).
    #[arg(long, default_value_t = idb_engine::DEFAULT_MAX_ATTEMPTS, value_name = "N")]
    pub attempts: u32,
    /// Read files with positional reads instead of a memory map (for files other
    /// programs may truncate while they upload, or file systems where mapping is slow).
    #[arg(long)]
    pub no_mmap: bool,
}

#[derive(Debug, Args)]
pub struct MockServerArgs {
    /// Address to listen on (port 0 picks a free port; the first line printed tells it).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// A draft dataset and a token that may upload into it (repeatable).
    #[arg(long = "dataset", required = true, value_name = "KEY:TOKEN")]
    pub datasets: Vec<String>,
    /// Mark a dataset as published: it then refuses uploads with 404 (repeatable).
    #[arg(long = "published", value_name = "KEY")]
    pub published: Vec<String>,
    /// Store files in this directory (default: a temporary directory, removed on exit).
    /// The server's state is saved in DIR/+state.json after every change, so a server
    /// started again on the same DIR (and address) lets strict-mode uploads continue
    /// where they stopped and keeps verified names; offset-mode uploads start over.
    #[arg(long, value_name = "DIR", conflicts_with = "sink")]
    pub store: Option<PathBuf>,
    /// Keep no bytes: count and hash only (for measuring throughput).
    #[arg(long)]
    pub sink: bool,
    /// Hold every response back this long, to model a distant server.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub latency_ms: u64,
    /// Largest chunk accepted; larger ones get 413.
    #[arg(long, default_value = "64MiB", value_parser = parse_size, value_name = "SIZE")]
    pub max_chunk: u64,
    /// Tokens expire this many seconds after the server starts (0: already expired).
    #[arg(long, value_name = "SECS")]
    pub token_ttl: Option<u64>,
    /// strict: transfers must come in order (the documented API); offset: each chunk
    /// is written at its offset, in any order (announced on setup).
    #[arg(
        long,
        default_value = "strict",
        value_parser = parse_mode,
        value_name = "MODE"
    )]
    pub mode: idb_mock::WriteMode,
    /// Probability (0 to 1) that a datafile request gets an injected fault.
    #[arg(
        long,
        default_value_t = idb_mock::DEFAULT_FAULT_RATE,
        value_parser = parse_fault_rate,
        value_name = "P"
    )]
    pub fault_rate: f64,
    /// The faults to draw from, comma-separated: 500, 429, reset, stall, truncate.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "500,429,reset,stall,truncate",
        value_parser = parse_fault_kind,
        value_name = "LIST"
    )]
    pub fault_kinds: Vec<idb_mock::FaultKind>,
    /// Seed of the fault RNG: the same seed and request order give the same faults.
    #[arg(long, default_value_t = idb_mock::DEFAULT_FAULT_SEED, value_name = "N")]
    pub seed: u64,
    /// How long a `stall` fault holds its answer, in milliseconds.
    #[arg(
        long,
        default_value_t = idb_mock::DEFAULT_STALL.as_millis() as u64,
        value_name = "N"
    )]
    pub stall_ms: u64,
    /// The Retry-After a `429` fault sends, in seconds.
    #[arg(
        long,
        default_value_t = idb_mock::DEFAULT_RETRY_AFTER.as_secs(),
        value_name = "SECS"
    )]
    pub retry_after: u64,
    /// Cap what each connection receives at RATE per second (like 12MiB).
    #[arg(long, value_parser = parse_bandwidth, value_name = "RATE")]
    pub bandwidth: Option<u64>,
}

/// `--mode`: `strict` or `offset`.
fn parse_mode(text: &str) -> Result<idb_mock::WriteMode, String> {
    text.parse().map_err(|e: idb_wire::WireError| e.to_string())
}

/// `--fault-rate`: a probability from 0 to 1.
fn parse_fault_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text.trim().parse().map_err(|_| {
        format!("{text:?} is not a number; give a probability from 0 to 1, like 0.05")
    })?;
    if !(0.0..=1.0).contains(&rate) {
        return Err(format!(
            "{text} is not a probability; give a number from 0 to 1, like 0.05 for 5% of requests"
        ));
    }
    Ok(rate)
}

/// One name of `--fault-kinds`.
fn parse_fault_kind(text: &str) -> Result<idb_mock::FaultKind, String> {
    text.parse().map_err(|e: idb_mock::MockError| e.to_string())
}

/// `--bandwidth`: a size per second, not zero.
fn parse_bandwidth(text: &str) -> Result<u64, String> {
    match parse_size(text)? {
        0 => Err("a bandwidth of 0 lets nothing through; leave --bandwidth out for no cap".into()),
        rate => Ok(rate),
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Size of the generated test file.
    #[arg(long, default_value = "256MiB", value_parser = parse_size, value_name = "SIZE")]
    pub size: u64,
    /// Latency the in-process mock adds to every response.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub latency_ms: u64,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which scenario to run: ceiling, latency, many-files, journal, small-files, or
    /// all of them.
    #[arg(
        long,
        default_value = "all",
        value_parser = ["ceiling", "latency", "many-files", "journal", "small-files", "all"],
        value_name = "NAME"
    )]
    pub scenario: String,
    /// Size of the one file of `ceiling` and `latency` (at most 4GiB).
    #[arg(long, default_value = "1GiB", value_parser = parse_size, value_name = "SIZE")]
    pub size: u64,
    /// Upload only a prefix of this size with the sample client in `latency`, to save
    /// time (it sends one 2 MiB chunk per round trip whatever the size; labelled in
    /// the summary). Default: --size.
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub sample_size: Option<u64>,
    /// Repetitions of each side; medians are reported.
    #[arg(long, default_value_t = idb_harness::DEFAULT_REPS as u64,
          value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub reps: u64,
    /// Where results.json, summary.md and command.txt go
    /// (default: target/harness/<UTC timestamp>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Files the engine uploads at once in `many-files` (its default, 3, is measured too).
    #[arg(long, default_value_t = idb_harness::DEFAULT_BENCH_PARALLEL as u64,
          value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub parallel: u64,
    /// Files in `many-files`.
    #[arg(long, default_value_t = idb_harness::DEFAULT_FILES as u64,
          value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub files: u64,
    /// Size of each `many-files` file.
    #[arg(long, default_value = "4MiB", value_parser = parse_size, value_name = "SIZE")]
    pub file_size: u64,
}

// --- The state directory: `idb status` and `idb clean` ---

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The dataset key, like IDB-1234567.
    #[arg(long, env = "IDB_DATASET", value_name = "KEY")]
    pub dataset: String,
    /// The Data Bank's address (as given to `idb upload`).
    #[arg(
        long,
        env = "IDB_SERVER",
        default_value = "https://databank.illinois.edu",
        value_name = "URL"
    )]
    pub server: String,
    /// The state directory (default: $XDG_STATE_HOME/idb, or ~/.local/state/idb).
    #[arg(long, env = "IDB_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Receipts of verified files are never removed: they are what lets \
    `idb upload` skip files it verified earlier."
)]
pub struct CleanArgs {
    /// Only journals of uploads into this dataset (default: every dataset).
    #[arg(long, env = "IDB_DATASET", value_name = "KEY")]
    pub dataset: Option<String>,
    /// Only journals of uploads to this server (default: every server).
    #[arg(long, env = "IDB_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// The state directory (default: $XDG_STATE_HOME/idb, or ~/.local/state/idb).
    #[arg(long, env = "IDB_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Say what would be removed, and remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}
