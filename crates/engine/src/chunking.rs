//! Adaptive chunk size: large enough that the round trip is a small part of each
//! call, small enough for the server's limit and the link.

use std::sync::Mutex;
use std::time::Duration;

use idb_read::SharedChunkSize;

/// Grow while the round trip is more than this share of a call's time.
const GROW_WHILE_RTT_SHARE_ABOVE: f64 = 0.1;

/// When growing, aim for chunks whose transfer takes this many round trips (the
/// round trip is then a tenth of the call).
const TARGET_TRANSFER_PER_RTT: f64 = 9.0;

/// Growth per step at most: this many times the chunk just measured.
const MAX_GROWTH_STEP: u64 = 8;

/// The smallest chunk the engine shrinks to on its own (the user's starting size,
/// if smaller, is the floor instead). A server that refuses this is unusable.
pub const MIN_ADAPTIVE_CHUNK: u64 = 64 * 1024;

struct State {
    /// Ceiling: the configured maximum, lowered by 413 answers for the rest of the run.
    max: u64,
    /// The shortest setup/verify call seen: round trip plus the server's fixed cost.
    rtt: Option<Duration>,
}

/// The run's chunk size, shared by every reader through a [`SharedChunkSize`].
pub(crate) struct ChunkSizer {
    size: SharedChunkSize,
    min: u64,
    state: Mutex<State>,
}

impl ChunkSizer {
    /// Starts at `start`; adapts within `min(start, MIN_ADAPTIVE_CHUNK)..=max`.
    pub(crate) fn new(start: u64, max: u64) -> Self {
        Self {
            size: SharedChunkSize::new(start),
            min: start.min(MIN_ADAPTIVE_CHUNK),
            state: Mutex::new(State { max, rtt: None }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The policy readers plan with: it follows every change made here.
    pub(crate) fn policy(&self) -> SharedChunkSize {
        self.size.clone()
    }

    pub(crate) fn current(&self) -> u64 {
        self.size.get()
    }

    /// A setup or verify call took `elapsed`: an upper bound on the round trip.
    pub(crate) fn observe_small_call(&self, elapsed: Duration) {
        let mut s = self.lock();
        s.rtt = Some(s.rtt.map_or(elapsed, |rtt| rtt.min(elapsed)));
    }

    /// A chunk of `len` bytes was acknowledged after `elapsed`: grow to twice it
    /// while the round trip is a large share of such a call.
    pub(crate) fn after_chunk(&self, len: u64, elapsed: Duration) {
        let s = self.lock();
        let Some(rtt) = s.rtt else { return };
        if elapsed.is_zero() {
            return;
        }
        if rtt.as_secs_f64() / elapsed.as_secs_f64() > GROW_WHILE_RTT_SHARE_ABOVE {
            // Aim straight for the size whose transfer takes TARGET_TRANSFER_PER_RTT
            // round trips at the rate this chunk went, but grow at most
            // MAX_GROWTH_STEP times this chunk per step. Measured from this chunk,
            // not the current size: chunks read ahead at an older size must not
            // compound the growth, and a short last chunk never lowers it.
            let transfer = elapsed.saturating_sub(rtt).as_secs_f64().max(1e-6);
            let rate = len as f64 / transfer;
            let target = (TARGET_TRANSFER_PER_RTT * rtt.as_secs_f64() * rate) as u64;
            let step = target.min(len.saturating_mul(MAX_GROWTH_STEP));
            let current = self.size.get();
            self.size.set(current.max(step).min(s.max));
        }
    }

    /// Raises the size to at least `bytes` (within the ceiling): a resumed upload
    /// starts at the size its last run had adapted to.
    pub(crate) fn at_least(&self, bytes: u64) {
        let max = self.lock().max;
        self.size.set(self.size.get().max(bytes.min(max)));
    }

    /// A call made no progress for the idle timeout: halve.
    pub(crate) fn after_timeout(&self) {
        let current = self.size.get();
        self.size.set((current / 2).max(self.min));
    }

    /// The server refused `len` bytes as too large (413): halve the ceiling for the
    /// rest of the run. `Err` if `len` was already the smallest allowed size.
    pub(crate) fn too_large(&self, len: u64) -> Result<(), ()> {
        if len <= self.min {
            return Err(());
        }
        let mut s = self.lock();
        s.max = s.max.min((len / 2).max(self.min));
        self.size.set(self.size.get().min(s.max));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn aims_for_transfers_of_nine_round_trips() {
        let sizer = ChunkSizer::new(MIB, 1024 * MIB);
        sizer.observe_small_call(Duration::from_millis(50));
        // 1 MiB in 60 ms with a 50 ms round trip: 100 MiB/s. Nine round trips of
        // transfer at that rate is 45 MiB, but one step grows at most 8x.
        sizer.after_chunk(MIB, Duration::from_millis(60));
        assert_eq!(sizer.current(), 8 * MIB);
        // 8 MiB in 130 ms: 100 MiB/s again; the target, 45 MiB, is now in reach.
        sizer.after_chunk(8 * MIB, Duration::from_millis(130));
        let target = 45 * MIB;
        assert!(
            sizer.current().abs_diff(target) < 1024,
            "{}",
            sizer.current()
        );
        // Chunks read ahead at the older size do not pull it back or push it on.
        let now = sizer.current();
        sizer.after_chunk(MIB, Duration::from_millis(60));
        assert_eq!(sizer.current(), now);
    }

    #[test]
    fn grows_while_the_round_trip_dominates_up_to_the_maximum() {
        let sizer = ChunkSizer::new(8 * MIB, 64 * MIB);
        sizer.after_chunk(8 * MIB, Duration::from_millis(60));
        assert_eq!(sizer.current(), 8 * MIB, "no round-trip estimate yet");
        sizer.observe_small_call(Duration::from_millis(50));
        // 50 ms of a 60 ms call is the round trip: grow, here straight to the top.
        sizer.after_chunk(8 * MIB, Duration::from_millis(60));
        assert_eq!(sizer.current(), 64 * MIB);
        // A short last chunk says nothing.
        sizer.after_chunk(MIB, Duration::from_millis(51));
        assert_eq!(sizer.current(), 64 * MIB);
    }

    #[test]
    fn stays_when_the_transfer_dominates() {
        let sizer = ChunkSizer::new(8 * MIB, 64 * MIB);
        sizer.observe_small_call(Duration::from_millis(1));
        sizer.after_chunk(8 * MIB, Duration::from_millis(80));
        assert_eq!(sizer.current(), 8 * MIB);
    }

    #[test]
    fn too_large_lowers_the_ceiling_for_good() {
        let sizer = ChunkSizer::new(8 * MIB, 64 * MIB);
        sizer.too_large(8 * MIB).unwrap();
        assert_eq!(sizer.current(), 4 * MIB);
        sizer.observe_small_call(Duration::from_millis(50));
        sizer.after_chunk(4 * MIB, Duration::from_millis(55));
        assert_eq!(sizer.current(), 4 * MIB, "the ceiling holds");
        while sizer.current() > MIN_ADAPTIVE_CHUNK {
            let len = sizer.current();
            sizer.too_large(len).unwrap();
        }
        assert_eq!(sizer.too_large(MIN_ADAPTIVE_CHUNK), Err(()));
    }

    #[test]
    fn timeouts_halve_down_to_the_floor() {
        let sizer = ChunkSizer::new(4096, 64 * MIB);
        sizer.after_timeout();
        assert_eq!(
            sizer.current(),
            4096,
            "a start below the floor is the floor"
        );
        let sizer = ChunkSizer::new(MIB, 64 * MIB);
        for _ in 0..10 {
            sizer.after_timeout();
        }
        assert_eq!(sizer.current(), MIN_ADAPTIVE_CHUNK);
    }
}
