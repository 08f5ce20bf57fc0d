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

/// The command line as the program reads it: [`Cli`], with an option's
/// environment variable that is set but empty (`IDB_STATE_DIR=`) counting as
/// unset, as a shell's `${VAR:-default}` has it. clap would take it for an
/// empty value and refuse it ("a value is required for '--state-dir <DIR>'"),
/// naming an option the user never gave; it has no setting for this.
pub fn command() -> clap::Command {
    unset_empty_env(<Cli as clap::CommandFactory>::command())
}

/// `command` and its subcommands, with the options whose environment
/// variable is empty reading none.
fn unset_empty_env(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| {
            let empty = arg
                .get_env()
                .and_then(std::env::var_os)
                .is_some_and(|value| value.is_empty());
            if empty { arg.env(None) } else { arg }
        })
        .mut_subcommands(unset_empty_env)
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload files into a draft dataset (the token comes from IDB_TOKEN or --token-file).
    Upload(Box<UploadArgs>),
    /// Run a mock Data Bank server (for tests, demos and measuring a network path).
    MockServer(MockServerArgs),
    /// Start a mock server in this process, upload a generated file to it, and check it.
    Demo(DemoArgs),
    /// Measure the engine against a single-request ceiling, the service's sample
    /// client and a model bound, on an in-process mock or a far end given with
    /// --server (a table or --json on stdout, progress on stderr, evidence in --report).
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print idb's manual page (roff), for `man -l -`; or, with --dir, write a
    /// page for idb and one for each command (idb-upload.1, ...) there.
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write every page into this directory (like ~/.local/share/man/man1)
    /// instead of printing idb's own.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell, like bash or zsh.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The files to upload (each keeps its base name in the dataset); with -r,
    /// directories too.
    #[arg(required_unless_present = "files_from", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub target: Target,
    /// Read the token from this file (otherwise from the IDB_TOKEN environment
    /// variable). If the server refuses the token mid-run, idb waits (see
    /// --token-wait) for a new token in this file and goes on with it.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// With --token-file: how long to wait for a new token after the server
    /// refuses the one in use, like 30m, 2h or 90s (0: stop at once, exit 3).
    #[arg(long, default_value = "30m", value_parser = parse_seconds, value_name = "DURATION")]
    pub token_wait: std::time::Duration,
    /// How often, at most, the progress of unfinished uploads is saved in the state
    /// directory, in seconds (a killed run resends at most about this much); 0
    /// saves after every acknowledged chunk. Saving never holds up the upload.
    #[arg(long, default_value = "1", value_parser = parse_seconds, value_name = "SECS")]
    pub journal_interval: std::time::Duration,
    /// List the files that would be uploaded, their sizes and total, and
    /// estimate the time from a probe of the round trip; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub transfer: TransferArgs,
    // --- Re-runs (receipts) ---
    /// Upload every file even if the state directory has a receipt saying it was
    /// verified earlier (by default such files are skipped); an unfinished
    /// upload still resumes from its journal. The server still refuses a name
    /// it has verified: this does not overwrite.
    #[arg(long)]
    pub force: bool,
}

/// Which dataset on which server, and the state directory that records its
/// uploads (`upload` and `status`).
#[derive(Debug, Args)]
pub struct Target {
    /// The dataset key, like IDB-1234567 (or set IDB_DATASET).
    #[arg(long, env = "IDB_DATASET", value_name = "KEY")]
    pub dataset: Option<String>,
    /// The Data Bank's address (http:// only for a test server).
    #[arg(
        long,
        env = "IDB_SERVER",
        default_value = "https://databank.illinois.edu",
        value_parser = parse_server,
        value_name = "URL"
    )]
    pub server: url::Url,
    /// Where unfinished uploads and receipts of verified files are recorded, so
    /// the same command resumes or skips them (default: $XDG_STATE_HOME/idb, or
    /// ~/.local/state/idb).
    #[arg(long, env = "IDB_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl Target {
    /// `--dataset`, validated (it may come from the environment, so clap does
    /// not require it and it is checked here).
    pub fn dataset_key(&self) -> anyhow::Result<idb_engine::DatasetKey> {
        let Some(key) = &self.dataset else {
            anyhow::bail!(
                "no dataset: pass --dataset KEY or set IDB_DATASET (the key looks like IDB-1234567)"
            );
        };
        idb_engine::DatasetKey::new(key).map_err(|e| anyhow::anyhow!("--dataset: {e}"))
    }
}

/// What `idb upload` prints.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print only errors and the summary on stderr (results still go to stdout).
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Also log what the engine does (-v), and every call (-vv), on stderr.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print one JSON object per line on stdout (started, progress, retry,
    /// verified, skipped, failed, interrupted, summary); text for people
    /// goes to stderr only.
    #[arg(long)]
    pub json: bool,
    /// When stderr is not a terminal (a log file), write a progress line this
    /// often, in seconds.
    #[arg(long, default_value = "30", value_parser = parse_seconds, value_name = "SECS")]
    pub progress_interval: std::time::Duration,
}

/// `--server`: an http:// or https:// URL; a missing scheme gets a suggestion.
pub fn parse_server(text: &str) -> Result<url::Url, String> {
    let text = text.trim();
    let suggest = || {
        format!(
            "{text:?} has no http:// or https:// in front: did you mean https://{}?",
            text.trim_start_matches('/')
        )
    };
    match url::Url::parse(text) {
        Ok(mut url) if matches!(url.scheme(), "http" | "https") => {
            if url.host().is_none() {
                return Err(format!("{text:?} has no host name"));
            }
            // `http://host//` is `http://host/` (a doubled slash is a slip):
            // one server, one set of receipts and journals.
            let mut path = url.path().to_owned();
            while path.contains("//") {
                path = path.replace("//", "/");
            }
            url.set_path(&path);
            Ok(url)
        }
        // `localhost:8080` parses as a URL of scheme "localhost".
        Ok(url) if !text.contains("://") && url.cannot_be_a_base() => Err(suggest()),
        Ok(url) => Err(format!(
            "{text:?} is a {}: URL; give an http:// or https:// address",
            url.scheme()
        )),
        Err(url::ParseError::RelativeUrlWithoutBase) => Err(suggest()),
        Err(e) => Err(format!(
            "{text:?} is not a URL ({e}); give one like https://databank.illinois.edu"
        )),
    }
}

/// The help heading of [`SelectArgs`].
const WHICH_FILES: &str = "Which files";

/// Which files: directories, filters, lists and shards (`upload`'s options beside
/// its FILE arguments; `select.rs` turns them into the list of files).
#[derive(Debug, Default, Args)]
pub struct SelectArgs {
    /// Upload the files in the directories given, and in their subdirectories
    /// (symbolic links followed). The dataset is flat: each file keeps only its
    /// base name.
    #[arg(short = 'r', long, help_heading = WHICH_FILES)]
    pub recursive: bool,
    /// Upload only files matching GLOB (repeatable). A glob without `/` is
    /// matched against the file's name (`*.csv`); one with `/` against its path
    /// from the directory given (`raw/**/*.h5`).
    #[arg(long, value_name = "GLOB", help_heading = WHICH_FILES)]
    pub include: Vec<String>,
    /// Leave out files matching GLOB, and everything in directories matching it
    /// (repeatable; wins over --include).
    #[arg(long, value_name = "GLOB", help_heading = WHICH_FILES)]
    pub exclude: Vec<String>,
    /// Also upload the paths listed in LIST, one a line (`-`: standard input).
    #[arg(long, value_name = "LIST", help_heading = WHICH_FILES)]
    pub files_from: Option<PathBuf>,
    /// The --files-from list is separated by NUL bytes (as `find -print0` writes).
    #[arg(short = '0', long, requires = "files_from", help_heading = WHICH_FILES)]
    pub null: bool,
    /// Upload only shard K of N (from 1 to N), split by file name: N runs with
    /// K = 1..N upload every file exactly once (for job arrays).
    #[arg(
        long,
        value_parser = crate::select::parse_shard,
        value_name = "K/N",
        help_heading = WHICH_FILES
    )]
    pub shard: Option<crate::select::Shard>,
}

/// A duration in seconds, like `1` or `0.25`, or with a unit, like `500ms` or
/// `2m`.
pub fn parse_seconds(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    match text.parse::<f64>() {
        Ok(secs) => std::time::Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{text} is not a duration: give a number of seconds from 0 up")),
        Err(_) => humantime::parse_duration(text).map_err(|_| {
            format!("{text:?} is not a duration: write seconds (1, 0.5) or with a unit (500ms, 2m)")
        }),
    }
}

/// A duration above zero, as [`parse_seconds`] reads it.
pub fn parse_positive_seconds(text: &str) -> Result<std::time::Duration, String> {
    let duration = parse_seconds(text)?;
    if duration.is_zero() {
        return Err(format!("{text} is too short: give a duration above 0"));
    }
    Ok(duration)
}

/// `--window`: 1 to [`idb_engine::MAX_WINDOW`] chunks of a file in flight.
fn parse_window(text: &str) -> Result<usize, String> {
    let max = idb_engine::MAX_WINDOW;
    let range = format!(
        "give 1 to {max} chunks of a file in flight (each holds a connection and an open \
         file; more only queue at the server)"
    );
    match text.trim().parse::<usize>() {
        Ok(window) if (1..=max).contains(&window) => Ok(window),
        Ok(0) => Err(format!("0 chunks in flight would send nothing; {range}")),
        Ok(_) => Err(format!("more than {max}; {range}")),
        Err(_) => Err(format!("not a whole number; {range}")),
    }
}

/// How files are sent (shared by `upload` and `demo`).
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// The adaptive chunk size's start: the first setup's round trip may size
    /// the first chunks larger (up to --max-chunk-size); doubled while round
    /// trips dominate, shrunk no lower than this on a slow link, halved down to
    /// 64 KiB on 413 or timeouts.
    #[arg(long, default_value = "8MiB", value_parser = parse_size, value_name = "SIZE")]
    pub chunk_size: u64,
    /// Ceiling for the adaptive chunk size (give --chunk-size's value for fixed
    /// chunks) [default: 64MiB, or --chunk-size when that is larger]
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub max_chunk_size: Option<u64>,
    /// Files uploaded at once.
    #[arg(long, default_value_t = idb_engine::DEFAULT_PARALLEL, value_name = "N")]
    pub parallel: usize,
    /// Chunks of one file in flight on a server that writes each chunk at its
    /// offset (default: 4, at most 64); a strict server always takes one at a
    /// time. By tus concatenation one file may have --parallel x W partials in
    /// flight.
    #[arg(long, value_parser = parse_window, value_name = "W")]
    pub window: Option<usize>,
    /// Chunk bytes held in flight by the whole run.
    #[arg(long, default_value = "512MiB", value_parser = parse_size, value_name = "SIZE")]
    pub memory: u64,
    /// Retry a call when nothing moved for this long, in seconds (or with a
    /// unit: 500ms, 2m).
    #[arg(
        long,
        default_value = "60",
        value_parser = parse_positive_seconds,
        value_name = "SECS"
    )]
    pub idle_timeout: std::time::Duration,
    /// Attempts per call before giving up (connection errors, timeouts, 5xx, 429).
    #[arg(
        long,
        default_value_t = idb_engine::DEFAULT_MAX_ATTEMPTS,
        value_parser = clap::value_parser!(u32).range(1..),
        value_name = "N"
    )]
    pub attempts: u32,
    /// Read files with positional reads instead of a memory map (for files other
    /// programs may truncate while they upload, or file systems where mapping is slow).
    #[arg(long)]
    pub no_mmap: bool,

    // --- The upload protocol (`--protocol`, tus options) ---
    /// Which protocol to speak: `auto` asks the server (tus 1.0 at
    /// <server>/files/ when it answers, the service's current path; else the
    /// documented chunked API), `chunked` or `tus` forces one.
    #[arg(long, default_value = "auto", value_name = "PROTOCOL")]
    pub protocol: idb_engine::Protocol,
    /// tus: PATCH bodies are whole multiples of this part size (by default
    /// the service's rule for each file, max(5 MiB, size / 10000)).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub tus_part_size: Option<u64>,
    /// tus: send each file as one upload in order, never as partial uploads
    /// in parallel joined at the end (concatenation).
    #[arg(long)]
    pub no_concat: bool,
    /// tus: send no Upload-Checksum with PATCH bodies, even when the server
    /// checks them (saves hashing each body once more on each side; the
    /// end-to-end blake3 comparison stays).
    #[arg(long)]
    pub no_tus_checksum: bool,
    // --- The run's bandwidth cap (`--bwlimit`) ---
    /// Cap the upload rate of the whole run, all files and connections together,
    /// at RATE bytes per second (like 4MiB, 100M or 12MiB/s). Default: no cap.
    #[arg(long, value_parser = parse_bwlimit, value_name = "RATE")]
    pub bwlimit: Option<u64>,

    // --- Trust: private certificate authorities (`--ca-cert`) ---
    /// Also trust the certificate authority in PEM (repeatable), on top of the
    /// system's: for a server whose certificate a private CA issued. Certificates
    /// are always verified; there is no way to turn that off.
    #[arg(long = "ca-cert", value_name = "PEM")]
    pub ca_certs: Vec<PathBuf>,
    // --- Knowing when to give up (`--call-deadline`, `--file-deadline`) ---
    /// Stop retrying a call (a setup, a chunk, a verify) this long after its
    /// first attempt, like 15m or 90s: no attempt starts, and no wait is
    /// begun, past it (an attempt still sending is let finish).
    #[arg(long, default_value = "15m", value_parser = parse_positive_seconds, value_name = "DURATION")]
    pub call_deadline: std::time::Duration,
    /// Give up on a file not verified this long after its upload began, like
    /// 12h (default: no limit); the same command goes on from where it stopped.
    #[arg(long, value_parser = parse_positive_seconds, value_name = "DURATION")]
    pub file_deadline: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct MockServerArgs {
    /// Address to listen on (port 0 picks a free port; the first line printed tells it).
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = parse_listen, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// A draft dataset and a token that may upload into it (repeatable).
    #[arg(long = "dataset", required = true, value_name = "KEY:TOKEN")]
    pub datasets: Vec<String>,
    /// Mark a dataset as published: it then refuses uploads with 404 (repeatable).
    #[arg(long = "published", value_name = "KEY")]
    pub published: Vec<String>,
    /// Store files in this directory (default: a temporary directory, removed on exit).
    /// The server's state is saved in DIR/+state.json (tus uploads beside their bytes
    /// in DIR/+tus) after every change, so a server started again on the same DIR (and
    /// address) lets strict-mode and tus uploads continue where they stopped and keeps
    /// verified names; offset-mode uploads start over.
    #[arg(long, value_name = "DIR", conflicts_with = "sink")]
    pub store: Option<PathBuf>,
    /// Keep no bytes: count and hash only (for measuring throughput).
    #[arg(long)]
    pub sink: bool,
    /// Hold every response back this long, to model a distant server.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub latency_ms: u64,
    /// Largest chunk accepted; larger ones get 413.
    #[arg(long, default_value = "64MiB", value_parser = crate::size::parse_nonzero_size, value_name = "SIZE")]
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
    /// Seed of the fault draws: the same seed and the same calls (file, phase,
    /// offset, attempt) give the same faults, in any order of arrival.
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

    // --- HTTPS (src/mock_server.rs `with_tls`) ---
    /// Serve HTTPS with this certificate (PEM: the server's certificate first,
    /// then any intermediates); needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key", help_heading = "HTTPS")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_cert",
        help_heading = "HTTPS"
    )]
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS with a certificate for localhost, 127.0.0.1 and ::1 (and the
    /// --listen address) signed by a throwaway certificate authority made at
    /// start, and write that authority's certificate (PEM) to CA_FILE for
    /// clients: `idb upload --ca-cert CA_FILE`. CA_FILE is replaced.
    #[arg(
        long,
        value_name = "CA_FILE",
        conflicts_with = "tls_cert",
        help_heading = "HTTPS"
    )]
    pub tls_self_signed: Option<PathBuf>,
    // --- Limits against slow or many clients (src/mock_server.rs) ---
    /// Close a connection that has not sent a request's headers within SECS (also
    /// how long a kept-alive connection may sit idle between requests).
    #[arg(
        long,
        default_value_t = idb_mock::DEFAULT_HEADER_READ_TIMEOUT.as_secs(),
        value_name = "SECS"
    )]
    pub header_timeout: u64,
    /// Cut a request whose body sends nothing for SECS while the server waits for
    /// it (answered 400, connection closed).
    #[arg(
        long,
        default_value_t = idb_mock::DEFAULT_BODY_IDLE_TIMEOUT.as_secs(),
        value_name = "SECS"
    )]
    pub body_timeout: u64,
    /// Serve at most N connections at once; a connection beyond them waits to be
    /// accepted until one ends (it is not refused).
    #[arg(long, default_value_t = idb_mock::DEFAULT_MAX_CONNECTIONS, value_name = "N")]
    pub max_connections: usize,
    // --- A server that speaks less than the mock (src/mock_server.rs) ---
    /// Answer every error as a plain HTML page that gives only the status (no
    /// JSON, no offsets), and a retried identical chunk with 409 like any other
    /// offset mismatch (strict mode): the model of a server whose errors are not
    /// the mock's.
    #[arg(long)]
    pub plain_errors: bool,
    // --- A full disk (src/mock_server.rs) ---
    /// Fill the disk after SIZE payload bytes (all files, counted from start, in
    /// --sink mode too): every later write of payload fails as ENOSPC would, and
    /// that transfer is answered 507 Insufficient Storage, not applied.
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub disk_full_after: Option<u64>,
    // --- A cap on the whole server (src/mock_server.rs) ---
    /// Cap what all connections together receive at RATE per second (like
    /// 50MiB), as a real link caps them all; on top of --bandwidth.
    #[arg(long, value_parser = parse_bandwidth_total, value_name = "RATE")]
    pub bandwidth_total: Option<u64>,
    // --- Protocol 2, tus at <url>/files/ (src/mock_server.rs) ---
    /// Serve protocol 2 as well, as the service does today: tus 1.0 at
    /// <url>/files/ and the registration call. Without it the mock speaks
    /// protocol 1 only (a deployment of the documented API).
    #[arg(long)]
    pub tus: bool,
    /// How the tus endpoint stores PATCH bodies: `plain` (every byte, as tus
    /// describes) or `s3` (as the service's server on S3: a body shorter than
    /// one part of max(5 MiB, length/10000) that does not end the file is
    /// silently dropped whole; partials are removed by their join; OPTIONS
    /// needs the token). Needs --tus.
    #[arg(
        long,
        default_value = "plain",
        value_name = "PROFILE",
        requires = "tus"
    )]
    pub tus_profile: idb_mock::TusProfile,
    /// How long an unfinished tus upload lives after its last PATCH, in
    /// seconds (7 days by default, as the service); then it is gone (410).
    #[arg(long, value_name = "SECS", requires = "tus")]
    pub tus_expiry: Option<u64>,
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
    parse_rate(
        text,
        "a bandwidth of 0 lets nothing through; leave --bandwidth out for no cap",
    )
}

/// `--listen`: an IP address and a port (a host name is not looked up).
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "{text:?} is not an IP address and port; write it like 127.0.0.1:8080, \
             0.0.0.0:8080 (every interface) or [::1]:8080 (a host name such as localhost \
             is not looked up)"
        )
    })
}

/// A rate: a size per second (like 12MiB, or 12MiB/s), not zero (`zero`
/// says why).
fn parse_rate(text: &str, zero: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let size = trimmed
        .strip_suffix("/s")
        .or_else(|| trimmed.strip_suffix("/S"))
        .unwrap_or(trimmed);
    match parse_size(size)? {
        0 => Err(zero.to_owned()),
        rate => Ok(rate),
    }
}

/// `--bandwidth-total`: a size per second, not zero.
fn parse_bandwidth_total(text: &str) -> Result<u64, String> {
    parse_rate(
        text,
        "a total bandwidth of 0 lets nothing through; leave --bandwidth-total out for no cap",
    )
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

// ---------------------------------------------------------------------------
// `idb bench` (src/bench.rs)
// ---------------------------------------------------------------------------

/// The help heading of the far end's options.
const FAR_END: &str = "Far end (default: a mock in this process)";

/// The help heading of the sizes and knobs.
const BENCH_SIZES: &str = "Sizes and knobs";

#[derive(Debug, Args)]
#[command(
    after_help = "Two hosts: run `idb mock-server --sink --max-chunk 4GiB --listen 0.0.0.0:8080 \
    --dataset IDB-BENCH:TOKEN` on the far host, then `IDB_TOKEN=TOKEN idb bench --server \
    http://FAR:8080 --dataset IDB-BENCH` here. Scenarios that need a knob of the mock (bandwidth, \
    faults, modes) are skipped against a far end given with --server, saying so; so are the \
    protocols scenario's tus sides that far end cannot serve (start it with --tus, and without \
    --sink for concatenation)."
)]
pub struct BenchArgs {
    /// Which scenarios to run, comma-separated: latency, many-files, bandwidth,
    /// faults, modes, chunks, journal, small-files, protocols, or all.
    #[arg(long, default_value = "all", value_name = "LIST")]
    pub scenario: String,
    /// Repetitions of each side; medians and the spread are reported.
    #[arg(long, default_value_t = idb_harness::DEFAULT_REPS as u64,
          value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub reps: u64,
    /// Print the results as one JSON document on stdout (instead of the table).
    #[arg(long)]
    pub json: bool,
    /// Where the evidence goes: results.json, report.md, the plot
    /// (throughput-vs-rtt.svg) and command.txt (default: target/harness/<UTC time>).
    #[arg(long, alias = "out", value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Where the generated test data goes (default: the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    // --- The far end ---
    /// Measure against this server (such as `idb mock-server --sink` on another
    /// host) instead of a mock in this process. The token comes from IDB_TOKEN or
    /// --token-file, as for `idb upload`.
    #[arg(long, value_parser = parse_server, value_name = "URL", requires = "dataset",
          help_heading = FAR_END)]
    pub server: Option<url::Url>,
    /// With --server: a dataset on it to upload into (every name is new: the run's
    /// time and a random tag start each one).
    #[arg(long, value_name = "KEY", requires = "server", help_heading = FAR_END)]
    pub dataset: Option<String>,
    /// With --server: read the token from this file (otherwise from IDB_TOKEN).
    #[arg(long, value_name = "PATH", requires = "server", help_heading = FAR_END)]
    pub token_file: Option<PathBuf>,
    /// With an https:// --server: also trust the certificate authority in PEM
    /// (repeatable), on top of the system's, as `idb upload --ca-cert` does (for
    /// `idb mock-server --tls-self-signed CA_FILE`); the engine, the harness's
    /// own calls and curl all use it.
    #[arg(long = "ca-cert", value_name = "PEM", requires = "server", help_heading = FAR_END)]
    pub ca_certs: Vec<PathBuf>,

    // --- Sizes and knobs ---
    /// Size of the one large file (latency, bandwidth, faults, modes, chunks,
    /// protocols), at most 4GiB.
    #[arg(long, default_value = "1GiB", value_parser = parse_size, value_name = "SIZE",
          help_heading = BENCH_SIZES)]
    pub size: u64,
    /// The sample client uploads only the first SIZE of the large file (it sends
    /// one 2 MiB chunk per round trip whatever the size; labelled as such).
    #[arg(long, default_value = "128MiB", value_parser = parse_size, value_name = "SIZE",
          help_heading = BENCH_SIZES)]
    pub sample_size: u64,
    /// The latencies of the latency sweep, in milliseconds (in-process only).
    #[arg(long, value_delimiter = ',', default_value = "0,10,50,100", value_name = "MS,...",
          help_heading = BENCH_SIZES)]
    pub latencies: Vec<u64>,
    /// The latency of the other scenarios, in milliseconds (in-process only).
    #[arg(long, default_value_t = idb_harness::DEFAULT_LATENCY.as_millis() as u64,
          value_name = "MS", help_heading = BENCH_SIZES)]
    pub latency_ms: u64,
    /// Files in many-files.
    #[arg(long, default_value_t = idb_harness::DEFAULT_FILES as u64,
          value_parser = clap::value_parser!(u64).range(1..), value_name = "N",
          help_heading = BENCH_SIZES)]
    pub files: u64,
    /// Size of each many-files file.
    #[arg(long, default_value = "1MiB", value_parser = parse_size, value_name = "SIZE",
          help_heading = BENCH_SIZES)]
    pub file_size: u64,
    /// The per-connection cap of the bandwidth scenario, per second (like 50MiB).
    #[arg(long, default_value = "50MiB", value_parser = parse_bandwidth, value_name = "RATE",
          help_heading = BENCH_SIZES)]
    pub bandwidth: u64,
    /// The share of requests the faults scenario's mock faults (0 to 1).
    #[arg(long, default_value_t = idb_harness::DEFAULT_FAULT_RATE,
          value_parser = parse_fault_rate, value_name = "P", help_heading = BENCH_SIZES)]
    pub fault_rate: f64,
    /// The fixed chunk sizes of the chunks scenario.
    #[arg(long, value_delimiter = ',', default_value = "2MiB,8MiB,64MiB",
          value_parser = parse_size, value_name = "SIZE,...", help_heading = BENCH_SIZES)]
    pub fixed_chunks: Vec<u64>,
    /// Size of the one file of the journal scenario.
    #[arg(long, default_value = "1GiB", value_parser = parse_size, value_name = "SIZE",
          help_heading = BENCH_SIZES)]
    pub journal_size: u64,
    /// Files in small-files.
    #[arg(long, default_value_t = idb_harness::DEFAULT_SMALL_FILES as u64,
          value_parser = clap::value_parser!(u64).range(1..), value_name = "N",
          help_heading = BENCH_SIZES)]
    pub small_files: u64,
    /// Size of each small-files file.
    #[arg(long, default_value = "700", value_parser = parse_size, value_name = "SIZE",
          help_heading = BENCH_SIZES)]
    pub small_file_size: u64,
    /// Empty calls timed per point to measure the round trip.
    #[arg(long, default_value_t = idb_harness::DEFAULT_RTT_PROBES as u64,
          value_parser = clap::value_parser!(u64).range(1..), value_name = "N",
          help_heading = BENCH_SIZES)]
    pub rtt_probes: u64,
    // --- The protocols scenario ---
    /// A per-connection cap for the protocols scenario, per second (like
    /// 50MiB; default: none): a path where each connection is the limit
    /// (in-process only).
    #[arg(long, value_parser = parse_bandwidth, value_name = "RATE",
          help_heading = BENCH_SIZES)]
    pub protocols_bandwidth: Option<u64>,
}

// ---------------------------------------------------------------------------
// `--bwlimit`
// ---------------------------------------------------------------------------

/// `--bwlimit`: a size per second (an optional `/s` suffix is allowed), not zero.
fn parse_bwlimit(text: &str) -> Result<u64, String> {
    parse_rate(
        text,
        "--bwlimit 0 would send nothing; give a rate like 4MiB (per second), or leave \
         --bwlimit out for no cap",
    )
}

#[cfg(test)]
mod deadline_tests {
    use clap::Parser;

    use super::{Cli, Command};

    #[test]
    fn the_call_deadline_defaults_to_the_engines_and_the_file_deadline_to_none() {
        let cli = Cli::try_parse_from(["idb", "upload", "f"]).unwrap();
        let Command::Upload(args) = cli.command else {
            panic!("an upload");
        };
        assert_eq!(
            args.transfer.call_deadline,
            idb_engine::DEFAULT_CALL_DEADLINE
        );
        assert_eq!(
            args.transfer.file_deadline,
            idb_engine::DEFAULT_FILE_DEADLINE
        );
    }

    #[test]
    fn the_chunk_ceiling_is_64_mib_or_the_chunk_size_when_larger_unless_given() {
        let ceiling = |args: &[&str]| {
            let cli =
                Cli::try_parse_from(["idb", "upload"].iter().chain(args).chain(&["f"])).unwrap();
            let Command::Upload(args) = cli.command else {
                panic!("an upload");
            };
            (args.transfer.max_chunk(), args.transfer.check().is_ok())
        };
        assert_eq!(ceiling(&[]), (idb_engine::DEFAULT_MAX_CHUNK_SIZE, true));
        assert_eq!(ceiling(&["--chunk-size", "128MiB"]), (128 << 20, true));
        assert_eq!(
            ceiling(&["--chunk-size", "1MiB", "--max-chunk-size", "1MiB"]),
            (1 << 20, true)
        );
        assert!(!ceiling(&["--chunk-size", "2MiB", "--max-chunk-size", "1MiB"]).1);
    }
}

#[cfg(test)]
mod bwlimit_tests {
    use super::parse_bwlimit;

    #[test]
    fn rates_are_sizes_per_second_with_an_optional_per_second_suffix() {
        let cases = [
            ("4MiB", 4 << 20),
            ("12MiB/s", 12 << 20),
            ("100M", 100 << 20),
            ("100M/s", 100 << 20),
            ("5MB/S", 5_000_000),
            (" 1k/s ", 1024),
            ("1", 1),
        ];
        for (text, rate) in cases {
            assert_eq!(parse_bwlimit(text), Ok(rate), "{text}");
        }
    }

    #[test]
    fn a_zero_or_malformed_rate_is_refused_naming_the_option() {
        for zero in ["0", "0MiB/s", "0.0001K"] {
            let error = parse_bwlimit(zero).expect_err(zero);
            assert!(error.contains("--bwlimit"), "{zero}: {error}");
        }
        for bad in ["", "/s", "fast", "4MiB/h", "4MiB/s/s"] {
            assert!(parse_bwlimit(bad).is_err(), "{bad}");
        }
    }
}

// --- The state directory: `idb status` and `idb clean` ---

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: Target,
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
    #[arg(long, env = "IDB_SERVER", value_parser = parse_server, value_name = "URL")]
    pub server: Option<url::Url>,
    /// The state directory (default: $XDG_STATE_HOME/idb, or ~/.local/state/idb).
    #[arg(long, env = "IDB_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Say what would be removed, and remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_doubled_slash_in_the_server_address_is_one() {
        for (given, is) in [
            ("http://127.0.0.1:8080//", "http://127.0.0.1:8080/"),
            ("https://h/a//b///", "https://h/a/b/"),
            ("https://h", "https://h/"),
        ] {
            assert_eq!(super::parse_server(given).unwrap().as_str(), is, "{given}");
        }
    }

    use std::time::Duration;

    use clap::Parser;

    use super::*;

    #[test]
    fn durations_are_seconds_or_have_a_unit() {
        assert_eq!(parse_seconds("1"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_seconds(" 0.25 "), Ok(Duration::from_millis(250)));
        assert_eq!(parse_seconds("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_seconds("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_seconds("soon").unwrap_err().contains("500ms"));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_positive_seconds("0").is_err());
        assert!(parse_positive_seconds("0s").is_err());
    }

    #[test]
    fn the_idle_timeout_defaults_to_the_engines() {
        let cli = Cli::try_parse_from(["idb", "upload", "--dataset", "D", "f"]).unwrap();
        let Command::Upload(args) = cli.command else {
            panic!("not an upload");
        };
        assert_eq!(args.transfer.idle_timeout, idb_engine::DEFAULT_IDLE_TIMEOUT);
    }
}

#[cfg(test)]
mod rate_tests {
    use super::{parse_bandwidth, parse_bandwidth_total, parse_bwlimit};

    /// Every rate option takes the same forms: `--bwlimit 12MiB/s` was taken,
    /// the mock's and bench's `--bandwidth 12MiB/s` refused.
    #[test]
    fn every_rate_option_takes_a_size_per_second_with_or_without_per_second() {
        for parse in [parse_bandwidth, parse_bandwidth_total, parse_bwlimit] {
            assert_eq!(parse("12MiB/s"), Ok(12 << 20));
            assert_eq!(parse("12MiB"), Ok(12 << 20));
            assert_eq!(parse(" 50MB/S "), Ok(50_000_000));
            assert!(parse("0/s").is_err());
            assert!(parse("12MiB/h").is_err());
        }
    }
}
