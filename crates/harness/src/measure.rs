//! What one measured part costs: wall time, the client's CPU time (user and
//! system: the process's, less the in-process mock's threads when there is one),
//! the mock's CPU time, and the process's peak resident memory; and the
//! statistics the results are made of (medians, percentiles).

use std::time::{Duration, Instant};

use crate::mock_runtime::MockRuntime;

/// `/proc/self/clear_refs`: writing `5` resets the peak RSS (`VmHWM`) to the
/// current RSS (Linux 4.0 and later).
const CLEAR_REFS: &str = "/proc/self/clear_refs";

/// Where `VmHWM` (peak RSS) is read.
const STATUS: &str = "/proc/self/status";

/// Process CPU time so far.
#[derive(Debug, Clone, Copy, Default)]
struct CpuTime {
    user: Duration,
    system: Duration,
}

fn cpu_time() -> CpuTime {
    // SAFETY: `getrusage` only writes into the struct we pass, which is a plain
    // C struct for which all-zero bytes are a valid value.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return CpuTime::default();
        }
        usage
    };
    CpuTime {
        user: timeval(usage.ru_utime),
        system: timeval(usage.ru_stime),
    }
}

/// A `timeval` (as `getrusage` and `wait4` give CPU times) as a duration
/// (negative parts as zero).
pub(crate) fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
}

/// A `timespec` as a duration (negative parts as zero).
pub(crate) fn timespec(ts: libc::timespec) -> Duration {
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// The CPU time of the calling thread, user and system
/// (`CLOCK_THREAD_CPUTIME_ID`; zero where the clock cannot be read).
pub(crate) fn own_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes only into the timespec we pass.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    timespec(ts)
}

/// Resets the peak RSS to the current RSS; `false` where that is not possible.
fn reset_peak_rss() -> bool {
    std::fs::write(CLEAR_REFS, "5").is_ok()
}

/// `VmHWM` in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string(STATUS).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// A measurement in progress: started just before the timed part.
pub(crate) struct Meter<'a> {
    started: Instant,
    cpu: CpuTime,
    /// The in-process mock's runtime and its CPU time at the start.
    mock: Option<(&'a MockRuntime, Duration)>,
    rss_reset: bool,
}

/// What a timed part cost.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cost {
    pub(crate) wall: Duration,
    /// The client's CPU time, user and system: the process's less the
    /// in-process mock's threads.
    pub(crate) client_cpu: Duration,
    /// The in-process mock's CPU time (`None` for a far end elsewhere).
    pub(crate) far_end_cpu: Option<Duration>,
    /// Peak RSS of the whole process during the part; `None` when the peak could
    /// not be reset first (it would include earlier parts).
    pub(crate) peak_rss: Option<u64>,
}

impl<'a> Meter<'a> {
    /// Resets the peak RSS, then starts the clocks; `mock` is the in-process
    /// mock's runtime, whose threads' CPU time is not the client's.
    pub(crate) fn start(mock: Option<&'a MockRuntime>) -> Self {
        let rss_reset = reset_peak_rss();
        Self {
            mock: mock.map(|m| (m, m.cpu())),
            cpu: cpu_time(),
            rss_reset,
            started: Instant::now(),
        }
    }

    /// Stops the clocks and reads the peak RSS.
    pub(crate) fn stop(self) -> Cost {
        let wall = self.started.elapsed();
        let cpu = cpu_time();
        let far_end_cpu = self.mock.map(|(m, before)| m.cpu().saturating_sub(before));
        let process = (cpu.user + cpu.system).saturating_sub(self.cpu.user + self.cpu.system);
        Cost {
            wall,
            client_cpu: process.saturating_sub(far_end_cpu.unwrap_or_default()),
            far_end_cpu,
            peak_rss: if self.rss_reset { peak_rss() } else { None },
        }
    }
}

/// The `p`-th percentile (0 to 100) of `values` by nearest rank; `None` when
/// there are none.
pub(crate) fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut values: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

/// The median of `values` (the mean of the middle two for an even count); `None`
/// when there are none.
pub(crate) fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median([]), None);
        assert_eq!(median([3.0]), Some(3.0));
        assert_eq!(median([5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median([f64::NAN, 2.0]), Some(2.0));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentile(&[], 50.0), None);
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(50.0));
        assert_eq!(percentile(&values, 99.0), Some(99.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[7.0], 50.0), Some(7.0));
    }

    #[test]
    fn meter_reports_time_and_memory() {
        let meter = Meter::start(None);
        let block = vec![1u8; 8 << 20];
        std::hint::black_box(&block);
        let cost = meter.stop();
        assert!(cost.wall > Duration::ZERO);
        if let Some(peak) = cost.peak_rss {
            assert!(peak >= 8 << 20, "{peak}");
        }
    }
}
