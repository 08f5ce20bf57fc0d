//! What to measure: the scenarios and their sizes, latencies and repetitions.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// The default size of the one file of `ceiling` and `latency`: 1 GiB.
pub const DEFAULT_SIZE: u64 = 1 << 30;

/// The largest `--size`: the ceiling's one request holds the whole file in memory,
/// once in the client and once in the mock, so this bounds the run's memory too.
pub const MAX_SIZE: u64 = 4 << 30;

/// Repetitions of each side by default; the median is reported.
pub const DEFAULT_REPS: usize = 3;

/// The latency the `latency` scenario's mock adds to every response: 50 ms.
pub const DEFAULT_LATENCY: Duration = Duration::from_millis(50);

/// Files in the `many-files` scenario by default.
pub const DEFAULT_FILES: usize = 200;

/// The size of each `many-files` file by default: 4 MiB.
pub const DEFAULT_FILE_SIZE: u64 = 4 * MIB;

/// The latency the `many-files` scenario's mock adds to every response: 20 ms.
pub const DEFAULT_MANY_FILES_LATENCY: Duration = Duration::from_millis(20);

/// Files the engine uploads at once in `many-files` by default (the mock is not the
/// service, so more than the engine's polite default of 3; that one is measured too).
pub const DEFAULT_BENCH_PARALLEL: usize = 8;

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

/// Empty calls timed to estimate the bare round trip (the median is used).
pub const DEFAULT_RTT_PROBES: usize = 21;

/// One scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// One file: the engine against one request carrying the whole file, no latency.
    Ceiling,
    /// One file, 50 ms per response: the engine against the sample-client pattern and
    /// the one-chunk-in-flight model bound.
    Latency,
    /// Many small files, 20 ms per response: the engine against the sample-client
    /// pattern file after file.
    ManyFiles,
    /// What the resume journal costs: one file in 1 MiB chunks with the journal
    /// on a local disk, on tmpfs, and off.
    Journal,
    /// Thousands of tiny files with the CLI's defaults (journal on), the state
    /// directory on a local disk, on tmpfs, and none.
    SmallFiles,
}

impl Scenario {
    /// Every scenario, in the order `all` runs them.
    pub const ALL: [Scenario; 5] = [
        Scenario::Ceiling,
        Scenario::Latency,
        Scenario::ManyFiles,
        Scenario::Journal,
        Scenario::SmallFiles,
    ];

    /// The name on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Ceiling => "ceiling",
            Scenario::Latency => "latency",
            Scenario::ManyFiles => "many-files",
            Scenario::Journal => "journal",
            Scenario::SmallFiles => "small-files",
        }
    }

    /// Parses a scenario's name, or `all`, into the scenarios to run.
    pub fn select(name: &str) -> Result<Vec<Scenario>, UnknownScenario> {
        let name = name.trim();
        if name.eq_ignore_ascii_case("all") {
            return Ok(Self::ALL.to_vec());
        }
        name.parse().map(|s| vec![s])
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
            "unknown scenario {:?}; use ceiling, latency, many-files, journal, small-files \
             or all",
            self.0
        )
    }
}

impl std::error::Error for UnknownScenario {}

/// Everything a run needs. [`BenchConfig::new`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The scenarios, run in this order.
    pub scenarios: Vec<Scenario>,
    /// Repetitions of each side (at least 1); sides alternate, and medians are
    /// reported.
    pub reps: usize,
    /// The size of the one file of `ceiling` and `latency`.
    pub size: u64,
    /// The file size the sample-client side of `latency` uploads; `None` for
    /// [`BenchConfig::size`]. A smaller one keeps that side affordable (it sends
    /// one 2 MiB chunk per round trip whatever the size; only its setup and verify
    /// weigh a little more) and is labelled in the summary.
    pub sample_size: Option<u64>,
    /// The latency of the `latency` scenario's mock.
    pub latency: Duration,
    /// Files in `many-files`.
    pub files: usize,
    /// The size of each `many-files` file.
    pub file_size: u64,
    /// The latency of the `many-files` scenario's mock.
    pub many_files_latency: Duration,
    /// Files the engine uploads at once in `many-files` (the engine's default is
    /// measured as well).
    pub parallel: usize,
    /// The size of the one file of `journal`.
    pub journal_size: u64,
    /// Files in `small-files`.
    pub small_files: usize,
    /// The size of each `small-files` file.
    pub small_file_size: u64,
    /// Empty calls timed per repetition to estimate the bare round trip.
    pub rtt_probes: usize,
    /// Where `results.json`, `summary.md` and `command.txt` go (created).
    pub out_dir: PathBuf,
    /// Where the generated data goes (a temporary directory inside it, removed at
    /// the end); `None` for the system's temporary directory.
    pub data_dir: Option<PathBuf>,
    /// The command line that started the run, recorded in `command.txt`.
    pub command_line: String,
}

impl BenchConfig {
    /// Every scenario with the default sizes, writing to `out_dir`.
    pub fn new(out_dir: PathBuf) -> Self {
        Self {
            scenarios: Scenario::ALL.to_vec(),
            reps: DEFAULT_REPS,
            size: DEFAULT_SIZE,
            sample_size: None,
            latency: DEFAULT_LATENCY,
            files: DEFAULT_FILES,
            file_size: DEFAULT_FILE_SIZE,
            many_files_latency: DEFAULT_MANY_FILES_LATENCY,
            parallel: DEFAULT_BENCH_PARALLEL,
            journal_size: DEFAULT_JOURNAL_SIZE,
            small_files: DEFAULT_SMALL_FILES,
            small_file_size: DEFAULT_SMALL_FILE_SIZE,
            rtt_probes: DEFAULT_RTT_PROBES,
            out_dir,
            data_dir: None,
            command_line: String::new(),
        }
    }

    /// The sample client's file size in `latency`.
    pub fn sample_size(&self) -> u64 {
        self.sample_size.unwrap_or(self.size).min(self.size)
    }

    /// Checks the values (also done by [`crate::run`]): a caller can tell bad input
    /// apart from a failed run.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.scenarios.is_empty(), "no scenario to run");
        anyhow::ensure!(self.reps >= 1, "--reps must be at least 1");
        anyhow::ensure!(self.size >= 1, "--size must be at least 1 byte");
        anyhow::ensure!(
            self.sample_size() >= 1,
            "--sample-size must be at least 1 byte"
        );
        anyhow::ensure!(self.files >= 1, "--files must be at least 1");
        anyhow::ensure!(self.file_size >= 1, "--file-size must be at least 1 byte");
        anyhow::ensure!(self.parallel >= 1, "--parallel must be at least 1");
        anyhow::ensure!(
            self.rtt_probes >= 1,
            "at least one round-trip probe is needed"
        );
        anyhow::ensure!(
            self.size <= MAX_SIZE,
            "--size must be at most 4 GiB: the ceiling sends the whole file in one request \
             held in memory"
        );
        Ok(())
    }
}
