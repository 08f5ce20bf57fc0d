//! What a side's client saw, on its own clock: when bytes were acknowledged, how
//! long each call took, and the sustained throughput that follows.
//!
//! **Sustained throughput** is the rate over the middle 80% of a run's bytes:
//! `0.8 x bytes / (t90 - t10)`, where `tX` is the moment X% of the bytes had
//! been acknowledged. Acknowledged bytes over time are taken as a line through
//! the acknowledgements (each call's bytes flowing evenly over the time since the
//! previous acknowledgement), starting from the moment the first file's setup
//! was answered with nothing acknowledged. It leaves out the setup, the ramp-up
//! of the chunk size in the first tenth and the last chunks, the verify and the
//! tail in the last tenth; the whole-run throughput (bytes over the wall time,
//! first setup sent to last verify answered) counts everything.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The share of the bytes cut off at each end for the sustained throughput.
pub const SUSTAINED_CUT: f64 = 0.10;

/// A side's record of one repetition. Shared by the tasks of a run: one short
/// lock per event.
pub(crate) struct Timeline {
    started: Instant,
    inner: Mutex<Recorded>,
}

#[derive(Default)]
struct Recorded {
    /// When the first setup was answered.
    first_setup: Option<Duration>,
    /// (when, bytes acknowledged so far), in the order they came.
    acks: Vec<(Duration, u64)>,
    /// How long each call took, milliseconds.
    calls_ms: Vec<f64>,
}

/// What a timeline says, once the repetition is over.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    /// MiB/s over the middle 80% of the bytes (`None`: nothing acknowledged).
    pub(crate) sustained_mib_s: Option<f64>,
    /// Every call's time, milliseconds.
    pub(crate) calls_ms: Vec<f64>,
}

impl Timeline {
    /// A timeline whose clock starts now.
    pub(crate) fn start() -> Self {
        Self {
            started: Instant::now(),
            inner: Mutex::new(Recorded::default()),
        }
    }

    fn recorded(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A setup was answered (only the first one counts).
    pub(crate) fn setup_answered(&self) {
        let at = self.started.elapsed();
        self.recorded().first_setup.get_or_insert(at);
    }

    /// `len` more bytes were acknowledged.
    pub(crate) fn acked(&self, len: u64) {
        let mut recorded = self.recorded();
        // Read under the lock: acknowledgements of files sent at once are then
        // recorded in time order, as `reached` needs.
        let at = self.started.elapsed();
        let total = recorded.acks.last().map_or(0, |&(_, b)| b) + len;
        recorded.acks.push((at, total));
    }

    /// A call took `took`.
    pub(crate) fn call(&self, took: Duration) {
        self.recorded().calls_ms.push(took.as_secs_f64() * 1e3);
    }

    /// Calls timed elsewhere, in milliseconds (the engine's own timings).
    pub(crate) fn calls_ms(&self, calls: impl IntoIterator<Item = f64>) {
        self.recorded().calls_ms.extend(calls);
    }

    /// What was seen.
    pub(crate) fn seen(&self) -> Seen {
        let recorded = self.recorded();
        let start = recorded
            .first_setup
            .or_else(|| recorded.acks.first().map(|a| a.0))
            .unwrap_or_default();
        let mut points = vec![(start.as_secs_f64(), 0.0)];
        points.extend(
            recorded
                .acks
                .iter()
                .map(|&(at, bytes)| (at.as_secs_f64().max(start.as_secs_f64()), bytes as f64)),
        );
        Seen {
            sustained_mib_s: sustained(&points),
            calls_ms: recorded.calls_ms.clone(),
        }
    }
}

/// When `target` bytes were reached on the line through `points` (seconds,
/// cumulative bytes; both non-decreasing).
fn reached(points: &[(f64, f64)], target: f64) -> Option<f64> {
    points.windows(2).find_map(|w| {
        let ((t0, b0), (t1, b1)) = (w[0], w[1]);
        (b1 >= target && b1 > b0).then(|| t0 + (t1 - t0) * ((target - b0) / (b1 - b0)).max(0.0))
    })
}

/// MiB/s over the middle of the bytes, as the module says.
pub(crate) fn sustained(points: &[(f64, f64)]) -> Option<f64> {
    let total = points.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let low = reached(points, total * SUSTAINED_CUT)?;
    let high = reached(points, total * (1.0 - SUSTAINED_CUT))?;
    let span = high - low;
    let bytes = total * (1.0 - 2.0 * SUSTAINED_CUT);
    (span > 0.0).then(|| bytes / span / (1u64 << 20) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = (1u64 << 20) as f64;

    #[test]
    fn a_steady_line_is_its_own_rate() {
        // 100 MiB at 10 MiB/s, after a 1 s setup.
        let points = [(1.0, 0.0), (11.0, 100.0 * MIB)];
        let rate = sustained(&points).unwrap();
        assert!((rate - 10.0).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn a_slow_start_and_a_slow_tail_are_left_out() {
        // 5 MiB in the first 5 s, then 90 MiB at 90 MiB/s, then 5 MiB in 5 s.
        let points = [
            (0.0, 0.0),
            (5.0, 5.0 * MIB),
            (6.0, 95.0 * MIB),
            (11.0, 100.0 * MIB),
        ];
        let rate = sustained(&points).unwrap();
        assert!((rate - 90.0).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn one_call_carrying_everything_is_its_transfer_rate() {
        let points = [(0.5, 0.0), (2.5, 64.0 * MIB)];
        assert!((sustained(&points).unwrap() - 32.0).abs() < 1e-9);
    }

    #[test]
    fn nothing_acknowledged_has_no_rate() {
        assert_eq!(sustained(&[(0.0, 0.0)]), None);
        assert_eq!(sustained(&[]), None);
    }

    #[test]
    fn calls_timed_here_and_elsewhere_are_kept() {
        let timeline = Timeline::start();
        timeline.call(Duration::from_millis(3));
        timeline.calls_ms([5.0, 7.0]);
        assert_eq!(timeline.seen().calls_ms, [3.0, 5.0, 7.0]);
    }
}
