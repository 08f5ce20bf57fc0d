//! How many transfer calls the whole run keeps in flight: additive increase,
//! multiplicative decrease, like TCP, so a struggling server gets room. A
//! limit lowered to start small ([`Congestion::start_at`]) first grows by one
//! slot per success (doubling per round of calls, like TCP's slow start) until
//! the first sign of trouble.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// At most one decrease per this interval: one burst of errors is one signal.
const DECREASE_INTERVAL: Duration = Duration::from_secs(1);

/// A call slower per byte than this many times the smoothed rate counts as the
/// server struggling (response times climbing).
const SLOW_FACTOR: f64 = 4.0;

/// Weight of a new sample in the smoothed seconds-per-byte.
const EWMA_WEIGHT: f64 = 0.2;

/// Calls shorter than this never count as slow (noise on fast paths).
const SLOW_FLOOR: Duration = Duration::from_millis(250);

struct State {
    /// The allowed number of calls in flight (fractional so increases are slow).
    limit: f64,
    /// Growing by one slot per success, not one per limit's worth: from
    /// [`Congestion::start_at`] to the first decrease.
    slow_start: bool,
    in_flight: usize,
    last_decrease: Option<Instant>,
    seconds_per_byte: Option<f64>,
}

/// The run's limit on transfer calls in flight.
pub(crate) struct Congestion {
    max: usize,
    state: Mutex<State>,
    /// Wakes callers waiting for a slot when one frees or the limit grows.
    freed: Notify,
}

/// A slot for one call; dropping it frees the slot.
pub(crate) struct Slot<'a>(&'a Congestion);

impl Congestion {
    /// Starts at `max` calls in flight, never goes above it or below one.
    pub(crate) fn new(max: usize) -> Self {
        let state = State {
            limit: max as f64,
            slow_start: false,
            in_flight: 0,
            last_decrease: None,
            seconds_per_byte: None,
        };
        Self {
            max: max.max(1),
            state: Mutex::new(state),
            freed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most calls ever in flight.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// The current limit, rounded down.
    #[cfg(test)]
    pub(crate) fn limit(&self) -> usize {
        (self.lock().limit as usize).max(1)
    }

    /// Waits for a free slot.
    pub(crate) async fn acquire(&self) -> Slot<'_> {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Register before checking, so a release between check and wait is seen.
            freed.as_mut().enable();
            {
                let mut s = self.lock();
                if s.in_flight < (s.limit as usize).max(1) {
                    s.in_flight += 1;
                    return Slot(self);
                }
            }
            freed.await;
        }
    }

    /// A call succeeded: grow by about one slot per limit's worth of successes
    /// (one slot per success in slow start); shrink instead if it was far
    /// slower per byte than usual.
    pub(crate) fn on_success(&self, bytes: u64, elapsed: Duration) {
        let mut s = self.lock();
        let rate = elapsed.as_secs_f64() / bytes.max(1) as f64;
        let slow = s
            .seconds_per_byte
            .is_some_and(|avg| rate > SLOW_FACTOR * avg)
            && elapsed > SLOW_FLOOR;
        s.seconds_per_byte = Some(match s.seconds_per_byte {
            Some(avg) => avg + EWMA_WEIGHT * (rate - avg),
            None => rate,
        });
        if slow {
            Self::decrease(&mut s);
        } else {
            let step = if s.slow_start { 1.0 } else { 1.0 / s.limit };
            s.limit = (s.limit + step).min(self.max as f64);
            drop(s);
            self.freed.notify_waiters();
        }
    }

    /// Lowers the limit to `start` calls (at most; not below one), to grow
    /// from there in slow start while answers stay fast.
    pub(crate) fn start_at(&self, start: usize) {
        let mut s = self.lock();
        s.limit = s.limit.min(start.max(1) as f64);
        s.slow_start = s.limit < self.max as f64;
    }

    /// A call failed in a way that suggests overload (5xx, 429, timeout, reset).
    pub(crate) fn on_trouble(&self) {
        Self::decrease(&mut self.lock());
    }

    fn decrease(s: &mut State) {
        // Any sign of trouble ends the slow start, even one inside the
        // interval of an earlier decrease.
        s.slow_start = false;
        let now = Instant::now();
        if s.last_decrease
            .is_some_and(|at| now - at < DECREASE_INTERVAL)
        {
            return;
        }
        s.last_decrease = Some(now);
        s.limit = (s.limit / 2.0).max(1.0);
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
        self.0.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn slots_are_bounded_by_the_limit() {
        let c = Congestion::new(2);
        let a = c.acquire().await;
        let _b = c.acquire().await;
        assert!(
            c.acquire().now_or_never().is_none(),
            "a third call must wait"
        );
        drop(a);
        assert!(c.acquire().now_or_never().is_some());
    }

    #[tokio::test]
    async fn trouble_halves_and_success_recovers_slowly() {
        let c = Congestion::new(8);
        c.on_trouble();
        assert_eq!(c.limit(), 4);
        c.on_trouble(); // within the interval: the same burst
        assert_eq!(c.limit(), 4);
        // Recovery takes about `limit` successes per extra slot.
        for _ in 0..3 {
            c.on_success(1 << 20, Duration::from_millis(10));
        }
        assert_eq!(c.limit(), 4);
        for _ in 0..40 {
            c.on_success(1 << 20, Duration::from_millis(10));
        }
        assert_eq!(c.limit(), 8, "never above the maximum");
    }

    #[tokio::test]
    async fn a_low_start_doubles_per_round_until_trouble() {
        let c = Congestion::new(12);
        c.start_at(2);
        assert_eq!(c.limit(), 2);
        for _ in 0..2 {
            c.on_success(1 << 20, Duration::from_millis(10));
        }
        assert_eq!(c.limit(), 4, "one round of 2 calls doubles 2");
        for _ in 0..4 {
            c.on_success(1 << 20, Duration::from_millis(10));
        }
        assert_eq!(c.limit(), 8);
        c.on_trouble();
        assert_eq!(c.limit(), 4);
        for _ in 0..3 {
            c.on_success(1 << 20, Duration::from_millis(10));
        }
        assert_eq!(c.limit(), 4, "after trouble, about one slot per round");
        for _ in 0..2 {
            c.on_success(1 << 20, Duration::from_millis(10));
        }
        assert_eq!(c.limit(), 5);
        for _ in 0..100 {
            c.on_success(1 << 20, Duration::from_millis(10));
        }
        assert_eq!(c.limit(), 12, "never above the maximum");
    }

    #[tokio::test]
    async fn trouble_right_after_a_decrease_still_ends_the_slow_start() {
        let c = Congestion::new(12);
        c.on_trouble();
        c.start_at(2);
        // Within the interval of the decrease: no halving, but no more
        // doubling either.
        c.on_trouble();
        assert_eq!(c.limit(), 2);
        for _ in 0..2 {
            c.on_success(1 << 20, Duration::from_millis(10));
        }
        assert_eq!(c.limit(), 2, "one slot per round now, not per success");
    }

    #[tokio::test]
    async fn a_much_slower_call_counts_as_trouble() {
        let c = Congestion::new(8);
        for _ in 0..5 {
            c.on_success(1 << 20, Duration::from_millis(100));
        }
        c.on_success(1 << 20, Duration::from_secs(2));
        assert_eq!(c.limit(), 4);
    }
}
