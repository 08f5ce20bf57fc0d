//! The raw results of a run, as written to `results.json`: every repetition of
//! every side, the medians, and the ratios computed from them.

use serde::Serialize;

use crate::measure::{Cost, median};

const MIB: f64 = (1u64 << 20) as f64;

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// `idb-harness <version>`.
    pub harness: String,
    /// When the run started, UTC (`YYYYMMDDTHHMMSSZ`).
    pub started_utc: String,
    /// The command line that started it.
    pub command: String,
    /// The machine it ran on.
    pub machine: Machine,
    /// Repetitions of each side.
    pub reps: usize,
    /// The scenarios, in the order run.
    pub scenarios: Vec<ScenarioResult>,
}

/// Facts about the machine, for the record.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs this process may use.
    pub nproc: usize,
    /// The kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
    /// The CPU model (`/proc/cpuinfo`).
    pub cpu_model: String,
    /// Total memory in bytes (`/proc/meminfo`).
    pub memory_bytes: Option<u64>,
}

/// One mock server a scenario used.
#[derive(Debug, Clone, Serialize)]
pub struct MockFacts {
    /// How the sides refer to it.
    pub label: String,
    /// The latency added to every response, in milliseconds.
    pub latency_ms: f64,
    /// `strict` or `offset`.
    pub mode: String,
    /// `sink`: bytes are counted and hashed, not kept.
    pub storage: String,
    /// The largest chunk it accepts.
    pub max_chunk: u64,
}

/// One scenario's results.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// `ceiling`, `latency` or `many-files`.
    pub name: String,
    /// What it measures, in one line.
    pub title: String,
    /// The mocks it ran against.
    pub mocks: Vec<MockFacts>,
    /// The sides, each with every repetition.
    pub sides: Vec<Side>,
    /// Ratios between sides' medians.
    pub ratios: Vec<Ratio>,
    /// The one-chunk-in-flight model (`latency` only).
    pub model: Option<ModelBound>,
    /// Anything a reader must know to read the numbers right.
    pub notes: Vec<String>,
}

/// One side of a comparison: the same work, done one way, repeated.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// A short key (`engine`, `sample-client`, ...).
    pub key: String,
    /// What it is, for people.
    pub label: String,
    /// The [`MockFacts::label`] of the mock it ran against.
    pub mock: String,
    /// Files per repetition.
    pub files: usize,
    /// Bytes per repetition.
    pub bytes: u64,
    /// The engine's settings (`None` for the harness's own clients).
    pub engine: Option<crate::EngineSettings>,
    /// Every repetition, in order (the `latency` scenario's B side has several
    /// requests per repetition, all listed, with the same [`Rep::rep`]).
    pub reps: Vec<Rep>,
    /// Medians over the repetitions (each column on its own).
    pub median: Medians,
}

/// One repetition of a side.
#[derive(Debug, Clone, Serialize)]
pub struct Rep {
    /// 0-based.
    pub rep: usize,
    /// Wall time of the measured part, seconds.
    pub wall_s: f64,
    /// Bytes / wall time, MiB/s.
    pub mib_per_s: f64,
    /// User CPU time of the whole process (mock included), seconds.
    pub cpu_user_s: f64,
    /// System CPU time of the whole process (mock included), seconds.
    pub cpu_sys_s: f64,
    /// Peak RSS of the whole process during the part, MiB (`None`: the peak could
    /// not be reset before the part).
    pub peak_rss_mib: Option<f64>,
    /// Files verified with the expected blake3 (always all of them: a broken
    /// upload fails the run instead).
    pub verified_files: usize,
    /// Calls the engine retried (0 for the harness's clients, which never retry).
    pub retries: u64,
    /// Times the engine realigned to the server's offset.
    pub realigned: u64,
    /// Requests the mock answered during the part.
    pub requests: u64,
    /// The engine's chunk size at the end.
    pub final_chunk_size: Option<u64>,
    /// The most chunk bytes the engine held at once (read ahead and in flight).
    pub peak_chunk_bytes: Option<u64>,
    /// The single request's transfer call alone, seconds.
    pub transfer_s: Option<f64>,
}

impl Rep {
    pub(crate) fn new(rep: usize, bytes: u64, files: usize, cost: Cost, requests: u64) -> Self {
        let wall_s = cost.wall.as_secs_f64();
        Self {
            rep,
            wall_s,
            mib_per_s: bytes as f64 / MIB / wall_s.max(1e-9),
            cpu_user_s: cost.cpu_user.as_secs_f64(),
            cpu_sys_s: cost.cpu_system.as_secs_f64(),
            peak_rss_mib: cost.peak_rss.map(|b| b as f64 / MIB),
            verified_files: files,
            retries: 0,
            realigned: 0,
            requests,
            final_chunk_size: None,
            peak_chunk_bytes: None,
            transfer_s: None,
        }
    }
}

/// Medians of a side's repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct Medians {
    /// Wall time, seconds.
    pub wall_s: f64,
    /// Throughput, MiB/s.
    pub mib_per_s: f64,
    /// User + system CPU time, seconds.
    pub cpu_s: f64,
    /// Peak RSS, MiB.
    pub peak_rss_mib: Option<f64>,
    /// Retries.
    pub retries: f64,
}

impl Medians {
    pub(crate) fn of(reps: &[Rep]) -> Self {
        let m = |f: fn(&Rep) -> f64| median(reps.iter().map(f)).unwrap_or(f64::NAN);
        Self {
            wall_s: m(|r| r.wall_s),
            mib_per_s: m(|r| r.mib_per_s),
            cpu_s: m(|r| r.cpu_user_s + r.cpu_sys_s),
            peak_rss_mib: median(reps.iter().filter_map(|r| r.peak_rss_mib)),
            retries: m(|r| r.retries as f64),
        }
    }
}

/// A ratio of two sides' median throughputs (or of a side to the model bound).
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// What is divided by what, for people.
    pub name: String,
    /// The value.
    pub value: f64,
    /// The target it should reach, if there is one.
    pub target: Option<f64>,
    /// Whether it reached the target (`None` without one).
    pub meets_target: Option<bool>,
}

impl Ratio {
    pub(crate) fn new(name: String, value: f64, target: Option<f64>) -> Self {
        Self {
            name,
            value,
            target,
            meets_target: target.map(|t| value >= t),
        }
    }
}

/// The model bound of a sequential, one-chunk-in-flight client:
/// `c / (RTT + c / B)`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelBound {
    /// c: the engine's chunk size at the end of its runs (median), bytes.
    pub chunk_size: u64,
    /// The mock's latency, ms.
    pub latency_ms: f64,
    /// The median empty call without latency, ms (each repetition's median of
    /// [`crate::BenchConfig::rtt_probes`] calls, then the median of those).
    pub empty_call_ms: f64,
    /// Each repetition's median empty call, ms.
    pub empty_call_ms_reps: Vec<f64>,
    /// RTT = latency + empty call, ms.
    pub rtt_ms: f64,
    /// B: the path's bandwidth for a chunk of c bytes, MiB/s: requests carrying
    /// the file's first c bytes, no latency; c over the transfer call's time less
    /// one empty call (median over all of them). With it, `c / B` is the time the
    /// path takes to carry one chunk of the engine's size.
    pub bandwidth_mib_s: f64,
    /// The bound, MiB/s.
    pub bound_mib_s: f64,
    /// The bound for the whole upload: the file's chunks at `RTT + c/B` each, plus
    /// the setup and verify round trips, MiB/s (for reference; the ramp from the
    /// engine's starting chunk is still left out).
    pub bound_with_setup_verify_mib_s: f64,
    /// B measured the same way with one request carrying the whole file, MiB/s
    /// (for reference: the mock holds a whole request body in memory, so a very
    /// large single request is slower per byte than a chunk-sized one).
    pub bandwidth_whole_file_mib_s: f64,
    /// The bound computed with [`ModelBound::bandwidth_whole_file_mib_s`], MiB/s.
    pub bound_whole_file_mib_s: f64,
    /// The engine's median throughput, MiB/s.
    pub engine_mib_s: f64,
    /// Engine / bound.
    pub ratio: f64,
}
