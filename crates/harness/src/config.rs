//! What to measure: the scenarios, their sizes, latencies and repetitions, and
//! which far end to measure against.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use idb_engine::{Token, UploadConfig};

const MIB: u64 = 1 << 20;

/// The default size of the one large file (`latency`, `bandwidth`, `faults`,
/// `modes`, `chunks`, `protocols`): 1 GiB.
pub const DEFAULT_SIZE: u64 = 1 << 30;

/// The largest `--size`: the single-request ceiling holds the whole file in
/// memory (its body is built before the clock starts), so this bounds the run's
/// memory too.
pub const MAX_SIZE: u64 = 4 << 30;

/// The most the sample-client side uploads by default: a prefix of this size of
/// the large file (it sends one 2 MiB chunk per round trip whatever the size, so
/// its throughput hardly depends on it; at 100 ms a whole 1 GiB would take 52 s a
/// repetition).
pub const DEFAULT_SAMPLE_SIZE: u64 = 128 * MIB;

/// Repetitions of each side by default; the median is reported.
pub const DEFAULT_REPS: usize = 3;

/// The latencies the mock adds to every response in the `latency` sweep.
pub const DEFAULT_LATENCIES: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_millis(10),
    Duration::from_millis(50),
    Duration::from_millis(100),
];

/// The latency of the one-point scenarios (`bandwidth`, `faults`, `modes`,
/// `chunks`, `many-files`, `protocols`): 50 ms, a continent away.
pub const DEFAULT_LATENCY: Duration = Duration::from_millis(50);

/// Files in `many-files` by default.
pub const DEFAULT_FILES: usize = 1000;

/// The size of each `many-files` file by default: 1 MiB.
pub const DEFAULT_FILE_SIZE: u64 = MIB;

/// The per-connection bandwidth cap of `bandwidth` by default: 50 MiB/s (about
/// 420 Mbit/s).
pub const DEFAULT_BANDWIDTH: u64 = 50 * MIB;

/// The fault rate of `faults` by default: 10% of datafile requests (a 1 GiB file
/// in the engine's 64 MiB chunks is about 20 calls: two faults a repetition).
pub const DEFAULT_FAULT_RATE: f64 = 0.10;

/// How long a `stall` fault holds its answer in `faults`: long enough to be a
/// lost acknowledgement, short against the engine's idle timeout.
pub const FAULT_STALL: Duration = Duration::from_millis(500);

/// The fixed chunk sizes of `chunks` (the adaptive engine is measured beside
/// them).
pub const DEFAULT_FIXED_CHUNKS: [u64; 3] = [2 * MIB, 8 * MIB, 64 * MIB];

/// The service's sample client sends this many bytes per transfer: 2 MiB.
pub const SAMPLE_CLIENT_CHUNK: u64 = 2 * MIB;

/// The size of the one file of `journal`: 1 GiB, long enough for the journal to
/// be written several times (every second, or every 256 MiB acknowledged).
pub const DEFAULT_JOURNAL_SIZE: u64 = 1024 * MIB;

/// The fixed chunk size of `journal`: 1 MiB, so an acknowledgement comes often.
pub const DEFAULT_JOURNAL_CHUNK: u64 = MIB;

/// Files in `small-files` by default.
pub const DEFAULT_SMALL_FILES: usize = 3000;

/// The size of each `small-files` file by default: 700 bytes.
pub const DEFAULT_SMALL_FILE_SIZE: u64 = 700;

/// Empty calls timed per point to measure the round trip (the median is used).
pub const DEFAULT_RTT_PROBES: usize = 21;

/// One scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// One large file across a latency sweep (the mock's latency; remotely, the
    /// path's own round trip).
    Latency,
    /// Many small files (1000 x 1 MiB by default), file after file for the
    /// sample client, the CLI's `--parallel` for the engine.
    ManyFiles,
    /// One large file through a per-connection bandwidth cap (the mock's
    /// `--bandwidth`).
    Bandwidth,
    /// One large file with the mock injecting faults; the engine with faults
    /// against the engine without.
    Faults,
    /// One large file into a strict and into an offset-mode mock.
    Modes,
    /// One large file in fixed chunks of 2, 8 and 64 MiB against the adaptive
    /// chunk size.
    Chunks,
    /// What the resume journal costs: one file in 1 MiB chunks with the journal
    /// on a local disk, on tmpfs, and off.
    Journal,
    /// Thousands of tiny files with the state directory on a local disk, on
    /// tmpfs, and none.
    SmallFiles,
    /// One large file by protocol 1 (chunked), by tus in order and by tus
    /// concatenation (partials in parallel, joined at the end), on one mock
    /// serving both.
    Protocols,
}

impl Scenario {
    /// Every scenario, in the order `all` runs them.
    pub const ALL: [Scenario; 9] = [
        Scenario::Latency,
        Scenario::ManyFiles,
        Scenario::Bandwidth,
        Scenario::Faults,
        Scenario::Modes,
        Scenario::Chunks,
        Scenario::Journal,
        Scenario::SmallFiles,
        Scenario::Protocols,
    ];

    /// The name on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Latency => "latency",
            Scenario::ManyFiles => "many-files",
            Scenario::Bandwidth => "bandwidth",
            Scenario::Faults => "faults",
            Scenario::Modes => "modes",
            Scenario::Chunks => "chunks",
            Scenario::Journal => "journal",
            Scenario::SmallFiles => "small-files",
            Scenario::Protocols => "protocols",
        }
    }

    /// Every name `select` takes, `all` included.
    pub fn names() -> Vec<&'static str> {
        let mut names: Vec<_> = Self::ALL.iter().map(|s| s.as_str()).collect();
        names.push("all");
        names
    }

    /// Parses a comma-separated list of scenario names, or `all`, into the
    /// scenarios to run (in the order given, each once).
    pub fn select(list: &str) -> Result<Vec<Scenario>, UnknownScenario> {
        let mut chosen = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let more = if name.eq_ignore_ascii_case("all") {
                Self::ALL.to_vec()
            } else {
                vec![name.parse()?]
            };
            for scenario in more {
                if !chosen.contains(&scenario) {
                    chosen.push(scenario);
                }
            }
        }
        if chosen.is_empty() {
            return Err(UnknownScenario(list.chars().take(64).collect()));
        }
        Ok(chosen)
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scenario {
    type Err = UnknownScenario;

    fn from_str(text: &str) -> Result<Self, UnknownScenario> {
        let name = text.trim();
        Self::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| UnknownScenario(name.chars().take(64).collect()))
    }
}

/// A scenario name that is not one of the scenarios or `all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownScenario(pub String);

impl fmt::Display for UnknownScenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown scenario {:?}; use one or more of {} (comma-separated)",
            self.0,
            Scenario::names().join(", ")
        )
    }
}

impl std::error::Error for UnknownScenario {}

/// Where the far end is: a mock in this process (its knobs set per scenario),
/// or a server already running elsewhere (such as `idb mock-server --sink` on
/// another host), measured from here.
#[derive(Debug, Clone)]
pub enum FarEnd {
    /// An `idb-mock` started by the harness on its own runtime threads, so the
    /// client's CPU time can be told from the mock's.
    InProcess,
    /// A server already running: its base URL, a draft dataset on it, and that
    /// dataset's token. Only what needs no knob of the server is measured; the
    /// rest is skipped, with the reason in the results.
    Remote {
        /// The server's base URL, like `http://10.0.0.2:8080`.
        url: String,
        /// A dataset key the server accepts uploads into.
        dataset: String,
        /// Its token (never printed; `Debug` redacts it).
        token: Token,
        /// Certificate authorities (PEM files) trusted on top of the system's
        /// for an `https://` server (`--ca-cert`): by the engine, the
        /// harness's own calls and curl.
        ca_certs: Vec<PathBuf>,
    },
}

/// The engine configuration every engine side starts from: the CLI's own
/// defaults, applied to [`UploadConfig::new`]'s. The harness adds only a fresh
/// temporary state directory per repetition (the CLI always keeps one) and what
/// a side varies on purpose (a fixed chunk size, no journal).
#[derive(Clone)]
pub struct EngineDefaults(Arc<dyn Fn(&mut UploadConfig) + Send + Sync>);

impl EngineDefaults {
    /// Defaults applied by `apply` (the CLI passes the values of its options
    /// when none is given).
    pub fn new(apply: impl Fn(&mut UploadConfig) + Send + Sync + 'static) -> Self {
        Self(Arc::new(apply))
    }

    /// The engine library's own defaults, unchanged.
    pub fn engine() -> Self {
        Self::new(|_| {})
    }

    pub(crate) fn apply(&self, config: &mut UploadConfig) {
        (self.0)(config)
    }
}

impl fmt::Debug for EngineDefaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EngineDefaults(..)")
    }
}

/// Everything a run needs. [`BenchConfig::new`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The scenarios, run in this order.
    pub scenarios: Vec<Scenario>,
    /// The far end.
    pub far_end: FarEnd,
    /// The engine's defaults (the CLI's).
    pub engine_defaults: EngineDefaults,
    /// Fired to stop the run early (Ctrl-C): the engine's sides stop at once,
    /// no side starts, and the run ends with an error, its temporary data
    /// removed. Call [`crate::stop_children`] too, to stop a curl it waits for.
    pub cancel: idb_engine::Cancel,
    /// Repetitions of each side (at least 1); sides alternate, and medians are
    /// reported with the spread.
    pub reps: usize,
    /// The size of the one large file.
    pub size: u64,
    /// The most the sample-client side uploads: a prefix of the large file of
    /// this size (labelled as such), or the whole file if it is smaller.
    pub sample_size: u64,
    /// The latencies of the `latency` sweep (in-process only; remotely the
    /// path's own round trip is the one point).
    pub latencies: Vec<Duration>,
    /// The latency of the one-point scenarios (in-process only).
    pub latency: Duration,
    /// Files in `many-files`.
    pub files: usize,
    /// The size of each `many-files` file.
    pub file_size: u64,
    /// The per-connection cap of `bandwidth`, bytes per second.
    pub bandwidth: u64,
    /// The fault rate of `faults`.
    pub fault_rate: f64,
    /// The fixed chunk sizes of `chunks`.
    pub fixed_chunks: Vec<u64>,
    /// The size of the one file of `journal`.
    pub journal_size: u64,
    /// Files in `small-files`.
    pub small_files: usize,
    /// The size of each `small-files` file.
    pub small_file_size: u64,
    /// A per-connection cap for `protocols`, bytes per second (`None`, the
    /// default: none): a path where each connection is the limit, so files
    /// sent over several connections at once go faster.
    pub protocols_bandwidth: Option<u64>,
    /// Empty calls timed per point to measure the round trip.
    pub rtt_probes: usize,
    /// Where `results.json`, `report.md`, the plot and `command.txt` go
    /// (created).
    pub out_dir: PathBuf,
    /// Where the generated data goes (a temporary directory inside it, removed at
    /// the end); `None` for the system's temporary directory.
    pub data_dir: Option<PathBuf>,
    /// The command line that started the run, recorded with the results.
    pub command_line: String,
    /// The curl that sends the file in one request for the CPU comparison
    /// ([`crate::CurlCpu`]); [`BenchConfig::new`] takes the `curl` on `PATH`.
    /// `None`: no curl side, and the results say why.
    pub curl: Option<PathBuf>,
}

impl BenchConfig {
    /// Every scenario with the default sizes, in-process, writing to `out_dir`.
    pub fn new(out_dir: PathBuf) -> Self {
        Self {
            scenarios: Scenario::ALL.to_vec(),
            far_end: FarEnd::InProcess,
            engine_defaults: EngineDefaults::engine(),
            cancel: idb_engine::Cancel::new(),
            reps: DEFAULT_REPS,
            size: DEFAULT_SIZE,
            sample_size: DEFAULT_SAMPLE_SIZE,
            latencies: DEFAULT_LATENCIES.to_vec(),
            latency: DEFAULT_LATENCY,
            files: DEFAULT_FILES,
            file_size: DEFAULT_FILE_SIZE,
            bandwidth: DEFAULT_BANDWIDTH,
            fault_rate: DEFAULT_FAULT_RATE,
            fixed_chunks: DEFAULT_FIXED_CHUNKS.to_vec(),
            journal_size: DEFAULT_JOURNAL_SIZE,
            small_files: DEFAULT_SMALL_FILES,
            small_file_size: DEFAULT_SMALL_FILE_SIZE,
            protocols_bandwidth: None,
            rtt_probes: DEFAULT_RTT_PROBES,
            out_dir,
            data_dir: None,
            command_line: String::new(),
            curl: crate::curl_upload::on_path(),
        }
    }

    /// The sample client's file size.
    pub fn sample_size(&self) -> u64 {
        self.sample_size.clamp(1, self.size.max(1))
    }

    /// Checks the values (also done by [`crate::run`]): a caller can tell bad input
    /// apart from a failed run.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.scenarios.is_empty(), "no scenario to run");
        anyhow::ensure!(self.reps >= 1, "--reps must be at least 1");
        anyhow::ensure!(self.size >= 1, "--size must be at least 1 byte");
        anyhow::ensure!(
            self.size <= MAX_SIZE,
            "--size must be at most 4 GiB: the single-request ceiling sends the whole file \
             in one request held in memory"
        );
        anyhow::ensure!(
            self.sample_size >= 1,
            "--sample-size must be at least 1 byte"
        );
        anyhow::ensure!(
            !self.latencies.is_empty(),
            "--latencies needs at least one value"
        );
        anyhow::ensure!(self.files >= 1, "--files must be at least 1");
        anyhow::ensure!(self.file_size >= 1, "--file-size must be at least 1 byte");
        anyhow::ensure!(
            self.file_size.saturating_mul(self.files as u64) <= MAX_SIZE,
            "--files x --file-size must be at most 4 GiB: the ceiling of many-files sends \
             all of it in one request held in memory"
        );
        anyhow::ensure!(self.bandwidth >= 1, "--bandwidth must be at least 1 byte/s");
        anyhow::ensure!(
            self.protocols_bandwidth != Some(0),
            "--protocols-bandwidth must be at least 1 byte/s"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.fault_rate),
            "--fault-rate must be a probability from 0 to 1"
        );
        anyhow::ensure!(
            self.fixed_chunks.iter().all(|&c| c >= 1),
            "--fixed-chunks must be at least 1 byte each"
        );
        anyhow::ensure!(
            self.rtt_probes >= 1,
            "at least one round-trip probe is needed"
        );
        Ok(())
    }
}
