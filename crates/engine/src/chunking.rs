//! Adaptive chunk size: large enough that the round trip is a small part of each
//! call, small enough for the server's limit and the link.
//!
//! On a strict server one chunk of a file is in flight, so the link idles for
//! one round trip per chunk. Chunks are sized so that this idle round trip is
//! at most [`IDLE_SHARE`] of a chunk's time: at 400 Mbit/s and 20 ms that is
//! about 32 MiB (the earlier target of a tenth left a shaped link idle a tenth
//! of the time). The first chunk is sized from the first setup's round trip,
//! not left at the starting size for the ramp-up to correct.

use std::sync::Mutex;
use std::time::Duration;

use idb_read::SharedChunkSize;

/// The share of a chunk's time the idle round trip may take: grow while it is
/// more.
const IDLE_SHARE: f64 = 0.03;

/// When growing, aim for chunks whose transfer takes this many round trips: the
/// round trip is then [`IDLE_SHARE`] of the call (about 32).
const TARGET_TRANSFER_PER_RTT: f64 = (1.0 - IDLE_SHARE) / IDLE_SHARE;

/// The rate the first chunk is sized for, before any chunk was measured: 1
/// Gbit/s, a research network's usual uplink. On a slower link the first chunk
/// takes longer (the idle timeout counts only time with nothing moving), and the
/// size shrinks after it (see [`SHRINK_BELOW_SHARE`]); a faster one is caught
/// up with by growth.
const FIRST_CHUNK_RATE: f64 = 125_000_000.0;

/// Shrink when the round trip is less than this share of a chunk's call (the
/// chunk took over 8 times the target: a link far slower than the size
/// assumed), to the target, never below the starting size: a chunk lost to a
/// broken connection then costs less to send again.
const SHRINK_BELOW_SHARE: f64 = IDLE_SHARE / 8.0;

/// Growth per step at most: this many times the chunk just measured.
const MAX_GROWTH_STEP: u64 = 8;

/// The smallest chunk the engine shrinks to on its own (the user's starting size,
/// if smaller, is the floor instead). A server that refuses this is unusable.
pub const MIN_ADAPTIVE_CHUNK: u64 = 64 * 1024;

/// Chunks of the run's size rounded down to whole multiples of a granule (at
/// least one), the last one whatever remains: tus servers on S3 store whole
/// parts only, so every PATCH but the last must be whole parts.
#[derive(Debug, Clone)]
pub(crate) struct Aligned {
    size: SharedChunkSize,
    granule: u64,
}

impl idb_read::ChunkPolicy for Aligned {
    fn next_len(&mut self, _: u64, _: u64) -> u64 {
        (self.size.get() / self.granule).max(1) * self.granule
    }
}

struct State {
    /// Ceiling: the configured maximum, lowered by 413 answers for the rest of the run.
    max: u64,
    /// Ceiling of the first size, from the run's memory budget and parallelism.
    first_max: u64,
    /// The shortest setup/verify call seen: round trip plus the server's fixed cost.
    rtt: Option<Duration>,
}

/// The run's chunk size, shared by every reader through a [`SharedChunkSize`].
pub(crate) struct ChunkSizer {
    size: SharedChunkSize,
    /// The starting size: the floor of shrinking for a slow link.
    start: u64,
    min: u64,
    state: Mutex<State>,
}

impl ChunkSizer {
    /// Starts at `start`; adapts within `min(start, MIN_ADAPTIVE_CHUNK)..=max`;
    /// the first setup sizes it up to `first_max` at most.
    pub(crate) fn new(start: u64, max: u64, first_max: u64) -> Self {
        Self {
            size: SharedChunkSize::new(start),
            start,
            min: start.min(MIN_ADAPTIVE_CHUNK),
            state: Mutex::new(State {
                max,
                first_max,
                rtt: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The policy readers plan with: it follows every change made here, in
    /// whole multiples of `granule` (but the last chunk; see [`Aligned`]).
    pub(crate) fn policy(&self, granule: u64) -> Aligned {
        Aligned {
            size: self.size.clone(),
            granule: granule.max(1),
        }
    }

    pub(crate) fn current(&self) -> u64 {
        self.size.get()
    }

    /// A setup call took `elapsed`. The run's first one sizes the chunks for a
    /// link of [`FIRST_CHUNK_RATE`] (never below the current size, at most the
    /// first ceiling); every one bounds the round trip.
    pub(crate) fn observe_setup(&self, elapsed: Duration) {
        let mut s = self.lock();
        if s.rtt.is_none() {
            let first = (TARGET_TRANSFER_PER_RTT * elapsed.as_secs_f64() * FIRST_CHUNK_RATE) as u64;
            let current = self.size.get();
            self.size
                .set(current.max(first.min(s.first_max).min(s.max)));
        }
        s.rtt = Some(s.rtt.map_or(elapsed, |rtt| rtt.min(elapsed)));
    }

    /// A verify call took `elapsed`: an upper bound on the round trip (it may
    /// include long server work, so it sizes nothing).
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
        let share = rtt.as_secs_f64() / elapsed.as_secs_f64();
        let transfer = elapsed.saturating_sub(rtt).as_secs_f64().max(1e-6);
        let target = (TARGET_TRANSFER_PER_RTT * rtt.as_secs_f64() * len as f64 / transfer) as u64;
        if share < SHRINK_BELOW_SHARE {
            // Far slower than the size assumed: to the target, not below the
            // start, never growing here.
            let current = self.size.get();
            self.size.set(current.min(target.max(self.start)));
            return;
        }
        if share > IDLE_SHARE {
            // Aim straight for the size whose transfer takes TARGET_TRANSFER_PER_RTT
            // round trips at the rate this chunk went, but grow at most
            // MAX_GROWTH_STEP times this chunk per step. Measured from this chunk,
            // not the current size: chunks read ahead at an older size must not
            // compound the growth, and a short last chunk never lowers it.
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
    fn the_first_round_trip_sizes_the_first_chunk() {
        // 50 ms: 32 round trips at 1 Gbit/s is about 200 MB; the maximum holds.
        let sizer = ChunkSizer::new(8 * MIB, 64 * MIB, 64 * MIB);
        sizer.observe_setup(Duration::from_millis(50));
        assert_eq!(sizer.current(), 64 * MIB);
        // 10 ms: about 40 MB.
        let sizer = ChunkSizer::new(8 * MIB, 1024 * MIB, 1024 * MIB);
        sizer.observe_setup(Duration::from_millis(10));
        let expected = TARGET_TRANSFER_PER_RTT * 0.010 * FIRST_CHUNK_RATE;
        assert!(
            (sizer.current() as f64 - expected).abs() < 1024.0,
            "{}",
            sizer.current()
        );
        // Only the first call sizes it.
        let now = sizer.current();
        sizer.observe_setup(Duration::from_millis(50));
        assert_eq!(sizer.current(), now);
        // A local round trip asks for less than the start: it stays.
        let sizer = ChunkSizer::new(8 * MIB, 64 * MIB, 64 * MIB);
        sizer.observe_setup(Duration::from_micros(200));
        assert_eq!(sizer.current(), 8 * MIB);
    }

    #[test]
    fn the_first_chunk_fits_the_memory_share_and_a_slow_link_shrinks_it() {
        // 50 ms asks for about 200 MB; the memory share caps it at 40 MiB.
        let sizer = ChunkSizer::new(8 * MIB, 1024 * MIB, 40 * MIB);
        sizer.observe_setup(Duration::from_millis(50));
        assert_eq!(sizer.current(), 40 * MIB);
        // A verify's time sizes nothing.
        let sizer = ChunkSizer::new(8 * MIB, 64 * MIB, 64 * MIB);
        sizer.observe_small_call(Duration::from_millis(50));
        assert_eq!(sizer.current(), 8 * MIB);
        sizer.observe_setup(Duration::from_millis(50));
        assert_eq!(sizer.current(), 8 * MIB, "the round trip was known");
        // 40 MiB took 5 minutes at a 50 ms round trip (a link near 1 Mbit/s):
        // down to the target, but not below the start.
        let sizer = ChunkSizer::new(8 * MIB, 1024 * MIB, 40 * MIB);
        sizer.observe_setup(Duration::from_millis(50));
        sizer.after_chunk(40 * MIB, Duration::from_secs(300));
        assert_eq!(sizer.current(), 8 * MIB);
    }

    #[test]
    fn aims_for_an_idle_round_trip_of_three_percent() {
        let sizer = ChunkSizer::new(MIB, 1024 * MIB, 1024 * MIB);
        // A 100 µs round trip: the first chunk stays at the start.
        sizer.observe_setup(Duration::from_micros(100));
        assert_eq!(sizer.current(), MIB);
        // 1 MiB in 1.1 ms: the round trip is 9% of the call. The target (32
        // round trips at this rate, about 3.4 MB) is within one step of 8x.
        sizer.after_chunk(MIB, Duration::from_micros(1100));
        let rate = MIB as f64 / 0.001;
        let target = TARGET_TRANSFER_PER_RTT * 0.0001 * rate;
        assert!(
            (sizer.current() as f64 - target).abs() < 1024.0,
            "{} vs {target}",
            sizer.current()
        );
        // A chunk whose round trip is 2% of its call: no growth.
        let now = sizer.current();
        sizer.after_chunk(now, Duration::from_millis(5));
        assert_eq!(sizer.current(), now);
        // One step grows at most 8x the chunk measured.
        let sizer = ChunkSizer::new(MIB, 1024 * MIB, 1024 * MIB);
        sizer.observe_setup(Duration::from_micros(100));
        sizer.after_chunk(MIB, Duration::from_micros(101));
        assert_eq!(sizer.current(), 8 * MIB);
        // Chunks read ahead at the older size do not pull it back.
        sizer.after_chunk(MIB, Duration::from_micros(1100));
        assert_eq!(sizer.current(), 8 * MIB);
    }

    #[test]
    fn grows_while_the_round_trip_dominates_up_to_the_maximum() {
        let sizer = ChunkSizer::new(8 * MIB, 64 * MIB, 64 * MIB);
        sizer.after_chunk(8 * MIB, Duration::from_millis(60));
        assert_eq!(sizer.current(), 8 * MIB, "no round-trip estimate yet");
        // 1 ms: the first chunk is sized at about 4 MB, below the start.
        sizer.observe_setup(Duration::from_millis(1));
        assert_eq!(sizer.current(), 8 * MIB);
        // 1 ms of a 2 ms call is the round trip: grow, here straight to the top.
        sizer.after_chunk(8 * MIB, Duration::from_millis(2));
        assert_eq!(sizer.current(), 64 * MIB);
        // A short last chunk says nothing.
        sizer.after_chunk(MIB, Duration::from_millis(1));
        assert_eq!(sizer.current(), 64 * MIB);
    }

    #[test]
    fn stays_when_the_transfer_dominates() {
        let sizer = ChunkSizer::new(8 * MIB, 64 * MIB, 64 * MIB);
        sizer.observe_setup(Duration::from_millis(1));
        sizer.after_chunk(8 * MIB, Duration::from_millis(80));
        assert_eq!(sizer.current(), 8 * MIB);
    }

    #[test]
    fn too_large_lowers_the_ceiling_for_good() {
        let sizer = ChunkSizer::new(8 * MIB, 64 * MIB, 64 * MIB);
        sizer.too_large(8 * MIB).unwrap();
        assert_eq!(sizer.current(), 4 * MIB);
        sizer.observe_setup(Duration::from_millis(50));
        assert_eq!(sizer.current(), 4 * MIB, "the ceiling holds");
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
        let sizer = ChunkSizer::new(4096, 64 * MIB, 64 * MIB);
        sizer.after_timeout();
        assert_eq!(
            sizer.current(),
            4096,
            "a start below the floor is the floor"
        );
        let sizer = ChunkSizer::new(MIB, 64 * MIB, 64 * MIB);
        for _ in 0..10 {
            sizer.after_timeout();
        }
        assert_eq!(sizer.current(), MIN_ADAPTIVE_CHUNK);
    }
}
