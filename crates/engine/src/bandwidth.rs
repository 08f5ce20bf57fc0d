//! The run's bandwidth cap (`UploadConfig::bandwidth`): one token bucket that
//! every transfer body of the run draws from as it hands bytes to the HTTP
//! client, so the cap holds for the run as a whole, whatever the number of
//! files and connections.
//!
//! The bucket is kept as a schedule (the "generic cell rate algorithm"): the
//! instant by which everything reserved so far is paid for at the rate. A body
//! about to hand over a frame reserves its bytes and gets the instant it may
//! hand them over; it sleeps until then (a tokio timer: no polling, no lock
//! held while it waits). Reservations are served in the order they are made,
//! and a body reserves its next frame only once the previous one went out, so
//! files sending at once take turns frame by frame.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::body::FRAME_BYTES;

/// How far a run may get ahead of its cap after a pause, as time at the cap's
/// rate: 50 ms worth of bytes, or one body frame if that is more (a frame is
/// handed over whole). Small, so no stretch of the run much longer than this is
/// faster than the cap.
pub const BANDWIDTH_BURST: Duration = Duration::from_millis(50);

/// The longest a capped body's frame takes at the cap's rate: frames are cut
/// to a quarter second of bytes when the rate is low, so a body still moves
/// several times a second (a server cuts a body that sends nothing for a
/// while: the mock after 60 s), rather than 256 KiB at a time.
const FRAME_TIME_DIVISOR: u64 = 4;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A token bucket shared by every transfer body of a run.
#[derive(Debug)]
pub(crate) struct Bandwidth {
    /// Bytes per second, at least 1.
    rate: u64,
    /// [`BANDWIDTH_BURST`], or one frame's time at `rate` if longer.
    burst: Duration,
    /// The bytes a body hands over at once: [`FRAME_BYTES`], or a quarter
    /// second at `rate` if that is less (at least 1).
    frame: usize,
    /// The instant by which every byte reserved so far is paid for at `rate`
    /// (`None` before the first reservation). Locked only to read and move it,
    /// never across an await, so a frame costs one short critical section.
    paid_until: Mutex<Option<Instant>>,
}

impl Bandwidth {
    /// A bucket for `rate` bytes per second (0 is taken as 1; the configuration
    /// refuses 0 before it gets here).
    pub(crate) fn new(rate: u64) -> Self {
        let rate = rate.max(1);
        let frame = (rate / FRAME_TIME_DIVISOR).clamp(1, FRAME_BYTES as u64);
        let burst = BANDWIDTH_BURST.max(time_at(rate, frame));
        Self {
            rate,
            burst,
            frame: frame as usize,
            paid_until: Mutex::new(None),
        }
    }

    /// The most bytes a body hands over at once under this cap.
    pub(crate) fn frame(&self) -> usize {
        self.frame
    }

    /// How far the run may get ahead of the rate.
    #[cfg(test)]
    pub(crate) fn burst(&self) -> Duration {
        self.burst
    }

    /// Reserves `n` bytes and says when they may be sent: now, or the instant
    /// by which the bytes reserved before them and these are paid for, less the
    /// burst. A reservation is never taken back (a call abandoned while it
    /// waits costs the run at most that one frame's time).
    pub(crate) fn reserve(&self, n: u64) -> Instant {
        let now = Instant::now();
        let cost = time_at(self.rate, n);
        let paid = {
            let mut paid_until = self.paid_until.lock().unwrap_or_else(|e| e.into_inner());
            // Time not used while nothing was sent is not saved up beyond the burst.
            let start = paid_until.map_or(now, |t| t.max(now));
            let paid = start + cost;
            *paid_until = Some(paid);
            paid
        };
        paid.checked_sub(self.burst).map_or(now, |at| at.max(now))
    }

    /// Waits until `n` more bytes may be sent.
    #[cfg(test)]
    pub(crate) async fn take(&self, n: u64) {
        tokio::time::sleep_until(self.reserve(n)).await;
    }
}

/// How long `n` bytes take at `rate` bytes per second, rounded up to the next
/// nanosecond so the cap is never exceeded.
fn time_at(rate: u64, n: u64) -> Duration {
    let nanos = (u128::from(n) * NANOS_PER_SEC).div_ceil(u128::from(rate));
    Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const MIB: u64 = 1024 * 1024;

    /// Takes `total` bytes in pieces of `piece`, returning when the last piece
    /// could go.
    async fn send(bucket: &Bandwidth, total: u64, piece: u64) -> Instant {
        let mut left = total;
        while left > 0 {
            let n = left.min(piece);
            bucket.take(n).await;
            left -= n;
        }
        Instant::now()
    }

    #[test]
    fn the_burst_is_50ms_or_one_frame_whichever_is_longer() {
        // 4 MiB/s: 50 ms is 205 KiB, less than a 256 KiB frame (62.5 ms).
        assert_eq!(
            Bandwidth::new(4 * MIB).burst(),
            Duration::from_micros(62_500)
        );
        // 100 MiB/s: a frame takes 2.5 ms, so 50 ms it is.
        assert_eq!(Bandwidth::new(100 * MIB).burst(), BANDWIDTH_BURST);
    }

    #[test]
    fn at_low_rates_a_frame_is_a_quarter_second_of_bytes() {
        // 1 KiB/s: frames of 256 bytes, so a body moves 4 times a second,
        // not once in 256 s; the burst is one such frame.
        let slow = Bandwidth::new(1024);
        assert_eq!(slow.frame(), 256);
        assert_eq!(slow.burst(), Duration::from_millis(250));
        assert_eq!(Bandwidth::new(1).frame(), 1);
        // From 1 MiB/s up, the whole 256 KiB frame.
        assert_eq!(Bandwidth::new(MIB).frame(), FRAME_BYTES);
        assert_eq!(Bandwidth::new(4 * MIB).frame(), FRAME_BYTES);
    }

    #[tokio::test(start_paused = true)]
    async fn n_bytes_at_rate_r_take_n_over_r_less_the_burst() {
        for (rate, total) in [
            (4 * MIB, 12 * MIB),
            (100 * MIB, 300 * MIB),
            (64 * 1024, 2 * MIB),
        ] {
            let bucket = Bandwidth::new(rate);
            let start = Instant::now();
            let piece = FRAME_BYTES as u64;
            let done = send(&bucket, total, piece).await;
            let expected = time_at(rate, total);
            let took = done - start;
            // The first burst goes at once; after it, the rate; the last piece is
            // handed over when its bytes are paid for less the burst.
            assert!(
                took <= expected && took + bucket.burst() >= expected,
                "{total} bytes at {rate} B/s took {took:?}, expected {expected:?} less at most {:?}",
                bucket.burst()
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_rested_bucket_lets_only_the_burst_through_at_once() {
        let bucket = Bandwidth::new(4 * MIB);
        // Idle for a minute: nothing is saved up beyond the burst.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let start = Instant::now();
        let frame = FRAME_BYTES as u64;
        assert_eq!(bucket.reserve(frame), start, "the first frame goes at once");
        // The next frame waits for its own bytes' time.
        assert_eq!(bucket.reserve(frame), start + time_at(4 * MIB, frame));
    }

    #[tokio::test(start_paused = true)]
    async fn two_consumers_share_the_rate_and_finish_together() {
        let rate = 4 * MIB;
        let each = 6 * MIB;
        let bucket = Arc::new(Bandwidth::new(rate));
        let start = Instant::now();
        let frame = FRAME_BYTES as u64;
        let a = tokio::spawn({
            let bucket = bucket.clone();
            async move { send(&bucket, each, frame).await }
        });
        let b = tokio::spawn({
            let bucket = bucket.clone();
            async move { send(&bucket, each, frame).await }
        });
        let (a, b) = (a.await.unwrap() - start, b.await.unwrap() - start);
        // Together they sent at the rate: 12 MiB in 3 s (less the burst)...
        let both = time_at(rate, 2 * each);
        let last = a.max(b);
        assert!(
            last <= both && last + bucket.burst() >= both,
            "the later one ended at {last:?}, expected {both:?}"
        );
        // ...and took turns: neither got ahead by more than a frame, so each
        // ended within two frames' time of the end (not one at half time).
        let two_frames = time_at(rate, 2 * frame);
        assert!(
            a.min(b) + two_frames + bucket.burst() >= both,
            "one ended at {:?}, long before {both:?}: they did not take turns",
            a.min(b)
        );
    }
}
