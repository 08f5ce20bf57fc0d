//! The results of a run, as written to `results.json` and printed by `--json`:
//! every repetition of every side, the summaries (medians and spread), the model
//! bound and the ratios. Field names are stable: a change of meaning gets a new
//! name and a new [`RESULTS_SCHEMA`]. Fields are added without a new schema
//! (a reader of schema 1 ignores what it does not know): the curl side of the
//! CPU comparison ([`Point::curl`], [`Point::curl_skipped`],
//! [`Point::client_alone_vs_curl`]) came that way.

use serde::Serialize;

use crate::measure::{Cost, median, percentile};
use crate::timeline::Seen;

const MIB: f64 = (1u64 << 20) as f64;
pub(crate) const GIB: f64 = (1u64 << 30) as f64;

/// The version of the results' layout.
pub const RESULTS_SCHEMA: u32 = 1;

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// [`RESULTS_SCHEMA`].
    pub schema: u32,
    /// `idb-harness <version>`.
    pub harness: String,
    /// When the run started, UTC (`YYYYMMDDTHHMMSSZ`).
    pub started_utc: String,
    /// The start of every file name the run uploaded (unique to the run).
    pub run_id: String,
    /// The command line that started it.
    pub command: String,
    /// The machine it ran on (the client's).
    pub machine: Machine,
    /// What the far end was.
    pub far_end: FarEndFacts,
    /// Repetitions of each side.
    pub reps: usize,
    /// The scenarios, in the order run.
    pub scenarios: Vec<ScenarioResult>,
    /// Why the run stopped before its last scenario ended, when it failed
    /// (absent when it did not): the same words as on stderr.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// Facts about the machine, for the record.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// The host name.
    pub hostname: String,
    /// CPUs this process may use.
    pub nproc: usize,
    /// The kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
    /// The CPU model (`/proc/cpuinfo`).
    pub cpu_model: String,
    /// Total memory in bytes (`/proc/meminfo`).
    pub memory_bytes: Option<u64>,
}

/// The far end of a run.
#[derive(Debug, Clone, Serialize)]
pub struct FarEndFacts {
    /// `in-process` (an `idb-mock` on the harness's own runtime threads) or
    /// `remote` (a server given with its URL).
    pub kind: String,
    /// The remote server's URL (`None` in-process: each mock has its own port).
    pub url: Option<String>,
    /// The remote dataset.
    pub dataset: Option<String>,
    /// How the client's CPU time is told from the far end's, for people.
    pub client_cpu: String,
}

/// One scenario's results.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// The scenario's name (`latency`, `many-files`, ...).
    pub name: String,
    /// What it measures, in one line.
    pub title: String,
    /// Why it did not run (a far end without the knob it needs), or `None`.
    pub skipped: Option<String>,
    /// Its points (one per latency of a sweep, per mode, ...).
    pub points: Vec<Point>,
    /// Anything a reader must know to read the numbers right.
    pub notes: Vec<String>,
}

/// One condition of a scenario, with every side measured under it.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// What is particular to it (`50 ms`, `offset mode`, ...).
    pub label: String,
    /// The latency the mock adds to each response, ms (`None`: a remote far end,
    /// whose path has its own).
    pub latency_ms: Option<f64>,
    /// The round trip measured in the run: the median time of an empty call (a
    /// setup of an empty file), ms.
    pub rtt_ms: f64,
    /// Each repetition's median empty call, ms.
    pub rtt_ms_reps: Vec<f64>,
    /// The far ends it ran against.
    pub mocks: Vec<MockFacts>,
    /// The sides.
    pub sides: Vec<Side>,
    /// The one-chunk-in-flight model bound, with RTT and B measured here (`None`
    /// when the point has no engine and ceiling sides).
    pub model: Option<ModelBound>,
    /// Why a point with engine and ceiling sides has no model bound (the
    /// engine spoke tus), or `None`.
    pub model_skipped: Option<String>,
    /// Ratios between the sides' median whole-run throughputs, and (with a
    /// CPU floor) of their CPU per GiB to the floor's.
    pub ratios: Vec<Ratio>,
    /// The CPU floor measured on this point's file (the `latency` scenario's
    /// 0 ms point in-process; `None` elsewhere).
    pub cpu_floor: Option<CpuFloor>,
    /// Why this point has no CPU floor where one is expected (the `latency`
    /// scenario against a far end elsewhere), or `None`.
    pub cpu_floor_skipped: Option<String>,
    /// curl sending the point's file in one request, measured where the CPU
    /// is compared (the `latency` scenario's 0 ms point in-process, its one
    /// point remotely; `None` elsewhere, and where there is no curl).
    pub curl: Option<CurlCpu>,
    /// Why this point has no curl side where one is expected (no `curl` on
    /// `PATH`, or one that does not run), or `None`.
    pub curl_skipped: Option<String>,
    /// The engine's client CPU per GiB over curl's plus blake3 alone's
    /// ([`CurlCpu::client_alone_vs_curl`]); `None` without a curl side.
    pub client_alone_vs_curl: Option<f64>,
    /// Sides this point could not measure on its far end, and why (the
    /// `protocols` scenario's tus sides against a far end without tus or
    /// unable to join partial uploads); empty elsewhere.
    pub skipped_sides: Vec<SkippedSide>,
}

/// A side a point did not measure, because its far end cannot serve it.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedSide {
    /// The key it would have had.
    pub key: String,
    /// What it is, for people.
    pub label: String,
    /// Why it was not measured, and what would let it run.
    pub reason: String,
}

/// The CPU floor: the file carried over a loopback TCP connection by a plain
/// `sendfile` -> `recv` loop (one sender thread, one receiver thread, a reused
/// receive buffer), hashed with blake3 once on each side; and blake3 of the
/// file alone on one thread. CPU seconds per GiB are each thread's own CPU
/// clock (user and system) over the file's GiB, medians of the repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct CpuFloor {
    /// Bytes carried and hashed per repetition (the point's file).
    pub bytes: u64,
    /// Repetitions of each measurement (floor and blake3 alone, alternating).
    pub reps: usize,
    /// The file's blake3 (64 hex digits).
    pub blake3: String,
    /// What the receiver's blake3 of the bytes it received was (equal to
    /// `blake3` in every repetition, or the run fails).
    pub receiver_blake3: String,
    /// The sender's `sendfile` calls.
    pub sendfile_cpu_s_per_gib: f64,
    /// The sender's blake3 of the file.
    pub sender_blake3_cpu_s_per_gib: f64,
    /// The sender's mapping of the file and its unmapping (the page tables
    /// its hashing filled, torn down).
    pub sender_map_cpu_s_per_gib: f64,
    /// The receiver's `recv` calls.
    pub recv_cpu_s_per_gib: f64,
    /// The receiver's blake3 of what it received.
    pub receiver_blake3_cpu_s_per_gib: f64,
    /// The floor: both threads together, every part.
    pub floor_cpu_s_per_gib: Spread,
    /// blake3 of the file alone, on one thread.
    pub blake3_cpu_s_per_gib: Spread,
    /// The floor's wall time (median), s.
    pub wall_s: f64,
}

/// The curl side of the CPU comparison: `curl` as a child process sending the
/// point's file in one `transfer` request (multipart, the payload streamed
/// from the file by curl itself) to the same far end as the sides, between a
/// `setup` and a `verify` sent by the harness; curl's CPU time is the child's
/// user and system time as `wait4` returns it when the child is reaped
/// (startup included). blake3 alone is measured in the same repetitions,
/// alternating with curl.
#[derive(Debug, Clone, Serialize)]
pub struct CurlCpu {
    /// The curl binary that ran.
    pub binary: String,
    /// Its version: the first line of `curl --version`.
    pub version: String,
    /// Its arguments in the last repetition (the token is read from a header
    /// file, `--header @FILE`, written with mode 0600 in a private temporary
    /// directory and removed after the call: never an argument).
    pub args: Vec<String>,
    /// Bytes sent per repetition (the point's file).
    pub bytes: u64,
    /// Repetitions.
    pub reps: usize,
    /// curl's CPU seconds (user and system) per GiB sent.
    pub curl_cpu_s_per_gib: Spread,
    /// blake3 of the file alone, on one thread, per GiB.
    pub blake3_cpu_s_per_gib: Spread,
    /// The engine's client CPU seconds per GiB: the median of the point's
    /// `engine` side.
    pub engine_client_cpu_s_per_gib: f64,
    /// `engine_client_cpu_s_per_gib / (curl_cpu_s_per_gib.median +
    /// blake3_cpu_s_per_gib.median)`: the client alone against curl sending
    /// the same bytes in one request plus hashing them once.
    pub client_alone_vs_curl: f64,
    /// curl's wall time, from its start to its exit, s.
    pub wall_s: Spread,
    /// Bytes over curl's wall time, MiB/s (median).
    pub whole_mib_s: f64,
    /// The file's blake3 (64 hex digits).
    pub blake3: String,
    /// The bytes the far end's verify receipt says it received (equal to
    /// `bytes` in every repetition, or the run fails).
    pub receipt_size: u64,
    /// The blake3 the far end's verify receipt gives (equal to `blake3` in
    /// every repetition, or the run fails).
    pub receipt_blake3: String,
}

/// One far end a point used.
#[derive(Debug, Clone, Serialize)]
pub struct MockFacts {
    /// How the sides refer to it.
    pub label: String,
    /// `in-process` or `remote`.
    pub kind: String,
    /// The latency added to every response, ms (`None`: not known, remote).
    pub latency_ms: Option<f64>,
    /// `strict` or `offset` (`None`: not known, remote).
    pub mode: Option<String>,
    /// The per-connection bandwidth cap, bytes per second (`None`: none known).
    pub bandwidth: Option<u64>,
    /// The cap on the whole server, every connection together, bytes per
    /// second (`None`: none known).
    pub bandwidth_total: Option<u64>,
    /// The fault rate (`None`: none known).
    pub fault_rate: Option<f64>,
    /// The largest chunk it accepts (`None`: not known, remote).
    pub max_chunk: Option<u64>,
    /// The tus profile it serves besides protocol 1 (`plain` or `s3`; `None`:
    /// no tus, or not known, remote).
    pub tus_profile: Option<String>,
    /// Where it keeps the bytes: `sink` (counted and hashed only) or
    /// `temporary directory` (`None`: not known, remote).
    pub storage: Option<String>,
}

/// What a side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The engine, as `idb upload` runs it (or with one setting varied).
    Engine,
    /// One request carrying the whole file: what the path allows.
    Ceiling,
    /// The service's sample client's pattern: 2 MiB, one call after another.
    SampleClient,
}

/// One side of a comparison: the same work, done one way, repeated.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// A short key, unique in its point (`engine`, `ceiling`, `sample-client`,
    /// `engine-fixed-2MiB`, ...). The CLI's defaults are always `engine`.
    pub key: String,
    /// What it is.
    pub role: Role,
    /// What it is, for people.
    pub label: String,
    /// The [`MockFacts::label`] of the far end it ran against.
    pub mock: String,
    /// Files per repetition.
    pub files: usize,
    /// Bytes per repetition.
    pub bytes: u64,
    /// The engine's settings (`None` for the harness's own clients).
    pub engine: Option<crate::EngineSettings>,
    /// Every repetition, in order.
    pub reps: Vec<Rep>,
    /// Medians and spread over the repetitions.
    pub summary: Summary,
}

/// One repetition of a side. Times are the client's.
#[derive(Debug, Clone, Serialize)]
pub struct Rep {
    /// 0-based.
    pub rep: usize,
    /// Wall time from the first setup sent to the last verify answered, s.
    pub wall_s: f64,
    /// Whole-run throughput: bytes / wall time, MiB/s.
    pub whole_mib_s: f64,
    /// Sustained throughput: over the middle 80% of the bytes, MiB/s (see the
    /// README's definition).
    pub sustained_mib_s: Option<f64>,
    /// Calls timed (every attempt of every call: setup, transfers, verify).
    pub calls: usize,
    /// The median call's time, ms (`None`: not recordable).
    pub request_ms_p50: Option<f64>,
    /// The 99th percentile call's time, ms.
    pub request_ms_p99: Option<f64>,
    /// Calls the engine retried (0 for the harness's clients, which never retry).
    pub retries: u64,
    /// Times the engine realigned to the server's offset.
    pub realigned: u64,
    /// The client's CPU time, user and system, s.
    pub client_cpu_s: f64,
    /// The client's CPU seconds per GiB sent.
    pub client_cpu_s_per_gib: f64,
    /// The in-process mock's CPU time, s (`None`: remote).
    pub far_end_cpu_s: Option<f64>,
    /// The in-process mock's CPU seconds per GiB (`None`: remote).
    pub far_end_cpu_s_per_gib: Option<f64>,
    /// Peak RSS of the process during the repetition, MiB (in-process, the mock
    /// is in the same process; `None`: the peak could not be reset).
    pub peak_rss_mib: Option<f64>,
    /// The engine's chunk size at the end.
    pub final_chunk_size: Option<u64>,
    /// The single request's transfer call alone, s.
    pub transfer_s: Option<f64>,
    /// The protocol the engine spoke: `chunked` or `tus` (`None` for the
    /// harness's own clients, which speak protocol 1).
    pub protocol: Option<String>,
    /// tus uploads the in-process mock created during the repetition: 1 for a
    /// file sent in order, its partials and the joined one for a file sent by
    /// concatenation, 0 for protocol 1 (`None`: a mock without tus, or a far
    /// end elsewhere).
    pub tus_uploads: Option<u64>,
}

impl Rep {
    pub(crate) fn new(rep: usize, bytes: u64, cost: Cost, seen: &Seen) -> Self {
        let wall_s = cost.wall.as_secs_f64();
        let gib = (bytes as f64 / GIB).max(f64::MIN_POSITIVE);
        let client_cpu_s = cost.client_cpu.as_secs_f64();
        let far_end_cpu_s = cost.far_end_cpu.map(|c| c.as_secs_f64());
        Self {
            rep,
            wall_s,
            whole_mib_s: bytes as f64 / MIB / wall_s.max(1e-9),
            sustained_mib_s: seen.sustained_mib_s,
            calls: seen.calls_ms.len(),
            request_ms_p50: percentile(&seen.calls_ms, 50.0),
            request_ms_p99: percentile(&seen.calls_ms, 99.0),
            retries: 0,
            realigned: 0,
            client_cpu_s,
            client_cpu_s_per_gib: client_cpu_s / gib,
            far_end_cpu_s,
            far_end_cpu_s_per_gib: far_end_cpu_s.map(|c| c / gib),
            peak_rss_mib: cost.peak_rss.map(|b| b as f64 / MIB),
            final_chunk_size: None,
            transfer_s: None,
            protocol: None,
            tus_uploads: None,
        }
    }
}

/// A median with the smallest and largest value it is the median of.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    /// The median.
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Spread {
    /// `None` when there are no finite values.
    pub(crate) fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        Some(Self {
            median: median(values.iter().copied())?,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }
}

/// Medians and spread of a side's repetitions, each column on its own.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Whole-run throughput, MiB/s.
    pub whole_mib_s: Spread,
    /// Sustained throughput, MiB/s (`None`: no repetition had one).
    pub sustained_mib_s: Option<Spread>,
    /// Wall time, s.
    pub wall_s: Spread,
    /// The median of the repetitions' median call times, ms.
    pub request_ms_p50: Option<f64>,
    /// The median of the repetitions' 99th percentile call times, ms.
    pub request_ms_p99: Option<f64>,
    /// Retries (median).
    pub retries: f64,
    /// The client's CPU seconds per GiB.
    pub client_cpu_s_per_gib: Spread,
    /// The in-process mock's CPU seconds per GiB (median; `None`: remote).
    pub far_end_cpu_s_per_gib: Option<f64>,
    /// Peak RSS, MiB (median).
    pub peak_rss_mib: Option<f64>,
}

impl Summary {
    pub(crate) fn of(reps: &[Rep]) -> Self {
        let spread = |f: fn(&Rep) -> f64| {
            Spread::of(reps.iter().map(f)).unwrap_or(Spread {
                median: 0.0,
                min: 0.0,
                max: 0.0,
            })
        };
        let opt = |f: fn(&Rep) -> Option<f64>| median(reps.iter().filter_map(f));
        Self {
            whole_mib_s: spread(|r| r.whole_mib_s),
            sustained_mib_s: Spread::of(reps.iter().filter_map(|r| r.sustained_mib_s)),
            wall_s: spread(|r| r.wall_s),
            request_ms_p50: opt(|r| r.request_ms_p50),
            request_ms_p99: opt(|r| r.request_ms_p99),
            retries: median(reps.iter().map(|r| r.retries as f64)).unwrap_or(0.0),
            client_cpu_s_per_gib: spread(|r| r.client_cpu_s_per_gib),
            far_end_cpu_s_per_gib: opt(|r| r.far_end_cpu_s_per_gib),
            peak_rss_mib: opt(|r| r.peak_rss_mib),
        }
    }
}

/// A ratio of two medians (or of a side to the model bound).
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// A stable key: `engine/ceiling`, `engine/sample-client`, `engine/model`,
    /// or `SIDE/SIDE` for the others.
    pub key: String,
    /// What is divided by what, for people.
    pub name: String,
    /// The value.
    pub value: f64,
    /// The target it should reach, if there is one (shown, never asserted).
    pub target: Option<f64>,
    /// Which side of the target is good: throughput ratios reach at least
    /// theirs, CPU ratios stay at most at theirs.
    pub target_is: TargetIs,
    /// Whether it reached the target (`None` without one).
    pub meets_target: Option<bool>,
}

/// Which side of a [`Ratio`]'s target is good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetIs {
    /// The value should be the target or more (throughput).
    AtLeast,
    /// The value should be the target or less (CPU per GiB).
    AtMost,
}

impl Ratio {
    /// A ratio that should reach at least its target.
    pub(crate) fn new(key: String, name: String, value: f64, target: Option<f64>) -> Self {
        Self {
            key,
            name,
            value,
            target,
            target_is: TargetIs::AtLeast,
            meets_target: target.map(|t| value >= t),
        }
    }

    /// A ratio that should stay at most at its target.
    pub(crate) fn at_most(key: String, name: String, value: f64, target: Option<f64>) -> Self {
        Self {
            target_is: TargetIs::AtMost,
            meets_target: target.map(|t| value <= t),
            ..Self::new(key, name, value, target)
        }
    }
}

/// How far past one connection's B the engine's several connections must go
/// together before B is taken as each connection's own: past the ceiling's
/// spread from one repetition to the next.
const PER_CONNECTION_EVIDENCE: f64 = 1.1;

/// The model bound of a sequential, one-chunk-in-flight client,
/// `c / (RTT + c / B)` (times the files in flight, at most B), with RTT and B
/// measured in the same point.
#[derive(Debug, Clone, Serialize)]
pub struct ModelBound {
    /// c: the engine's chunk size at the end of its repetitions (median), or the
    /// file size if smaller, bytes.
    pub chunk_size: u64,
    /// RTT: the point's median empty call, ms.
    pub rtt_ms: f64,
    /// B: the ceiling's bytes over its transfer call's time less one RTT, MiB/s.
    pub bandwidth_mib_s: f64,
    /// Files the engine has in flight at once (its `--parallel`, at most the
    /// files there are).
    pub files_at_once: usize,
    /// Whether B is taken as each connection's own rather than the path's:
    /// the engine's connections together went more than a tenth past the one
    /// connection of the ceiling, so the far end or the path caps each
    /// connection (the mock's `--bandwidth`, or a TCP window on a long path)
    /// rather than all together.
    pub bandwidth_per_connection: bool,
    /// The bound in steady state: `files_at_once x c / (RTT + c/B)`, at most B
    /// unless [`Self::bandwidth_per_connection`], MiB/s.
    pub bound_mib_s: f64,
    /// The bound for the whole upload, setup and verify round trips counted:
    /// each file costs `(chunks + 2) x RTT + size/B`, `files_at_once` at a time
    /// (their bytes sharing B, unless [`Self::bandwidth_per_connection`]),
    /// MiB/s (the ramp from the engine's first chunk size is left out).
    pub bound_with_setup_verify_mib_s: f64,
    /// The engine's median whole-run throughput, MiB/s.
    pub engine_mib_s: f64,
    /// Engine / bound.
    pub ratio: f64,
    /// Engine / the bound with setup and verify.
    pub ratio_with_setup_verify: f64,
}

impl ModelBound {
    /// The bound for `files` files of `file_size` bytes, `at_once` at a time, in
    /// chunks of `chunk_size`, with `rtt_s` and `bandwidth` (MiB/s).
    pub(crate) fn new(
        chunk_size: u64,
        file_size: u64,
        files: usize,
        at_once: usize,
        rtt_s: f64,
        bandwidth_mib_s: f64,
        engine_mib_s: f64,
    ) -> Self {
        let at_once = at_once.clamp(1, files.max(1));
        let c_bytes = chunk_size.clamp(1, file_size.max(1));
        let c = c_bytes as f64 / MIB;
        let b = bandwidth_mib_s.max(f64::MIN_POSITIVE);
        let per_connection = at_once > 1 && engine_mib_s > b * PER_CONNECTION_EVIDENCE;
        // The bytes' time of the whole upload: all of them through one B, or
        // each round's files side by side, each through its own.
        let file = file_size as f64 / MIB;
        let total = file * files as f64;
        let rounds = files.div_ceil(at_once).max(1) as f64;
        let (bound, bytes_s) = if per_connection {
            (at_once as f64 * c / (rtt_s + c / b), rounds * file / b)
        } else {
            ((at_once as f64 * c / (rtt_s + c / b)).min(b), total / b)
        };
        let chunks = file_size.div_ceil(c_bytes).max(1) as f64;
        let whole = total / (rounds * (chunks + 2.0) * rtt_s + bytes_s);
        Self {
            chunk_size: c_bytes,
            rtt_ms: rtt_s * 1e3,
            bandwidth_mib_s,
            files_at_once: at_once,
            bandwidth_per_connection: per_connection,
            bound_mib_s: bound,
            bound_with_setup_verify_mib_s: whole,
            engine_mib_s,
            ratio: engine_mib_s / bound,
            ratio_with_setup_verify: engine_mib_s / whole,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_bound_of_one_file() {
        // 64 MiB chunks at 50 ms and 640 MiB/s: 64 / (0.05 + 0.1) MiB/s.
        let m = ModelBound::new(64 << 20, 1 << 30, 1, 3, 0.05, 640.0, 300.0);
        assert!((m.bound_mib_s - 64.0 / 0.15).abs() < 1e-9, "{m:?}");
        assert_eq!(m.files_at_once, 1);
        // 16 chunks plus setup and verify: 18 round trips, plus 1024/640 s.
        let whole = 1024.0 / (18.0 * 0.05 + 1.6);
        assert!((m.bound_with_setup_verify_mib_s - whole).abs() < 1e-9);
        assert!((m.ratio - 300.0 / (64.0 / 0.15)).abs() < 1e-9);
    }

    #[test]
    fn files_in_flight_multiply_the_bound_up_to_the_bandwidth() {
        let m = ModelBound::new(64 << 20, 1 << 20, 1000, 3, 0.05, 100.0, 10.0);
        assert_eq!(m.chunk_size, 1 << 20, "a chunk is at most the file");
        let one = 1.0 / (0.05 + 0.01);
        assert!((m.bound_mib_s - 3.0 * one).abs() < 1e-9, "{m:?}");
        let capped = ModelBound::new(1 << 20, 1 << 20, 1000, 3, 0.0, 100.0, 10.0);
        assert!((capped.bound_mib_s - 100.0).abs() < 1e-9);
        assert!(!m.bandwidth_per_connection && !capped.bandwidth_per_connection);
    }

    #[test]
    fn connections_that_together_pass_one_connections_bandwidth_each_get_it() {
        // Three files at once reached 280 MiB/s where one connection carried
        // 100: the far end caps each connection, so each gets its own B.
        let m = ModelBound::new(1 << 20, 1 << 20, 999, 3, 0.0, 100.0, 280.0);
        assert!(m.bandwidth_per_connection, "{m:?}");
        assert!((m.bound_mib_s - 300.0).abs() < 1e-9, "{m:?}");
        assert!((m.ratio - 280.0 / 300.0).abs() < 1e-9);
        // 333 rounds of three 1 MiB files side by side, each round 3 round
        // trips (setup, one transfer, verify) of 10 ms and 1 MiB at 100 MiB/s.
        let m = ModelBound::new(1 << 20, 1 << 20, 999, 3, 0.01, 100.0, 200.0);
        let whole = 999.0 / (333.0 * (3.0 * 0.01 + 0.01));
        assert!(
            (m.bound_with_setup_verify_mib_s - whole).abs() < 1e-9,
            "{m:?}"
        );
        // Within a tenth of B it is noise, not evidence; one file at a time
        // never is.
        assert!(
            !ModelBound::new(1 << 20, 1 << 20, 999, 3, 0.0, 100.0, 109.0).bandwidth_per_connection
        );
        assert!(
            !ModelBound::new(1 << 20, 1 << 30, 1, 3, 0.0, 100.0, 280.0).bandwidth_per_connection
        );
    }

    #[test]
    fn cpu_ratios_meet_their_target_from_below() {
        let under = Ratio::at_most("k".into(), "n".into(), 1.1, Some(1.15));
        assert_eq!(
            (under.target_is, under.meets_target),
            (TargetIs::AtMost, Some(true))
        );
        let over = Ratio::at_most("k".into(), "n".into(), 1.2, Some(1.15));
        assert_eq!(over.meets_target, Some(false));
        let throughput = Ratio::new("k".into(), "n".into(), 1.2, Some(1.15));
        assert_eq!(
            (throughput.target_is, throughput.meets_target),
            (TargetIs::AtLeast, Some(true))
        );
    }

    #[test]
    fn spreads() {
        let s = Spread::of([3.0, 1.0, 2.0, f64::NAN]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert!(Spread::of([]).is_none());
    }
}
