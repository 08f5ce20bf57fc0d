//! Seeded fault injection: which datafile requests fail, and how.
//!
//! Whether a request gets a fault, and which, is a pure function of the seed and
//! of the call the request makes ([`Call`]): its dataset, file name, phase and
//! offset (`previous_size` for a transfer, 0 for setup and verify), and its
//! attempt, how many times this server has seen that same call before, plus one.
//! A keyed blake3 hash of these (the key derived from the seed) gives a uniform
//! number, compared with the rate, and the kind. So the same seed and the same
//! set of calls give the same faults in any arrival order (concurrent uploads
//! replay), and a call sent again gets a fresh draw, independent of the first:
//! at a rate below 1 a retry always gets through eventually.
//!
//! The attempt counters are the only state: one per distinct call on a name
//! whose verify has not succeeded yet, dropped with all of that name's when a
//! verify is answered 200 without a fault (one held by a `stall` keeps them: the
//! client sends that verify again, and its retry must get a fresh draw, not
//! the first one's stall once more). A client that finishes its files therefore leaves about one counter per
//! call of the files it has open (each chunk offset, its setup and its verify);
//! at most [`MAX_COUNTED_CALLS`] are kept, and a server that reaches them (calls
//! on names never verified) forgets all and counts from 1 again.
//!
//! Protocol 2's calls are keyed by method, upload and `Upload-Offset` (see
//! `tus/routes.rs`), and have no verify: a tus call answered 2xx without a
//! fault drops its own counter (the creation POST, one counter for every
//! creation, excepted), a registration answered 200 drops its own and its
//! upload's, and so does an upload's end (termination, expiry, a join that
//! removes it). So a long tus run keeps counters only for calls whose last
//! attempt failed, on uploads not yet ended.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use idb_wire::Phase;

use crate::error::MockError;
use crate::lock::lock;

/// The default fault rate: 0, no request fails.
pub const DEFAULT_FAULT_RATE: f64 = 0.0;

/// The default seed of the fault draws.
pub const DEFAULT_FAULT_SEED: u64 = 0;

/// The most attempt counters kept at once (one per distinct call on a name not
/// verified yet; see the module doc): about 100 bytes each plus the names, so a
/// few MiB at most. Reaching it drops them all, so attempts count from 1 again.
pub const MAX_COUNTED_CALLS: usize = 65_536;

/// How long a `stall` fault holds its answer by default: 30 s, longer than a
/// client's idle timeout should be.
pub const DEFAULT_STALL: Duration = Duration::from_secs(30);

/// The `Retry-After` a `429` fault sends by default: 1 s.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// One way a request can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// `500`: answer 500 without applying the call.
    ServerError,
    /// `429`: answer 429 with `Retry-After`, without applying the call.
    TooManyRequests,
    /// `reset`: read part of the body, then close the connection without any
    /// answer (the client sees a transport error, never a status line).
    Reset,
    /// `stall`: apply the call, then hold the answer for the stall time (a lost or
    /// slow acknowledgement).
    Stall,
    /// `truncate`: store only the first half of a transfer's chunk as if it were
    /// the whole chunk, then answer 500. A transfer the server would refuse anyway
    /// gets its refusal (the offset is checked before the payload); a setup or
    /// verify, which has no payload to cut, gets a plain 500 fault instead.
    Truncate,
}

impl FaultKind {
    /// Every kind, in the order the command line lists them.
    pub const ALL: [FaultKind; 5] = [
        FaultKind::ServerError,
        FaultKind::TooManyRequests,
        FaultKind::Reset,
        FaultKind::Stall,
        FaultKind::Truncate,
    ];

    /// The name on the command line: `500`, `429`, `reset`, `stall`, `truncate`.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::ServerError => "500",
            FaultKind::TooManyRequests => "429",
            FaultKind::Reset => "reset",
            FaultKind::Stall => "stall",
            FaultKind::Truncate => "truncate",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FaultKind {
    type Err = MockError;

    /// Parses a command-line name (case-insensitive, surrounding spaces ignored).
    fn from_str(text: &str) -> Result<Self, MockError> {
        let name = text.trim();
        FaultKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| MockError::UnknownFaultKind {
                kind: name.chars().take(64).collect(),
            })
    }
}

/// Which faults to inject, how often, and with which seed.
///
/// The default injects nothing (`rate` 0); with a rate above 0 and the default
/// kinds, all five kinds are drawn with equal chance.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// The probability that a datafile request gets a fault, from 0 to 1.
    pub rate: f64,
    /// The kinds to draw from (with equal chance; repeat a kind to weight it).
    pub kinds: Vec<FaultKind>,
    /// The seed: the same seed and the same calls give the same faults, in any
    /// order (see the module doc of `faults.rs`: each draw is a hash of the seed
    /// and the call).
    pub seed: u64,
    /// How long a `stall` fault holds its answer.
    pub stall: Duration,
    /// The `Retry-After` of a `429` fault (sent in whole seconds, rounded up).
    pub retry_after: Duration,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            rate: DEFAULT_FAULT_RATE,
            kinds: FaultKind::ALL.to_vec(),
            seed: DEFAULT_FAULT_SEED,
            stall: DEFAULT_STALL,
            retry_after: DEFAULT_RETRY_AFTER,
        }
    }
}

impl FaultConfig {
    /// Faults at `rate`, of the given kinds, with the other knobs at their defaults.
    pub fn new(rate: f64, kinds: impl IntoIterator<Item = FaultKind>) -> Self {
        Self {
            rate,
            kinds: kinds.into_iter().collect(),
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<(), MockError> {
        check_rate(self.rate)?;
        if self.rate > 0.0 && self.kinds.is_empty() {
            return Err(MockError::NoFaultKinds);
        }
        Ok(())
    }
}

fn check_rate(rate: f64) -> Result<(), MockError> {
    if (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(MockError::FaultRate { rate })
    }
}

/// Counts of injected faults, per kind, over the server's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// `500` faults (including `truncate` drawn for a setup or verify).
    pub server_error: u64,
    /// `429` faults.
    pub too_many_requests: u64,
    /// `reset` faults: connections closed without an answer.
    pub reset: u64,
    /// `stall` faults: answers held back after the call was applied.
    pub stall: u64,
    /// `truncate` faults: transfers of which only the first part was stored.
    pub truncate: u64,
    /// Transfers refused because the store is full (507): after
    /// [`crate::MockConfig::disk_full_after`] payload bytes were written, or
    /// when the store's file system is full.
    pub disk_full: u64,
}

impl FaultStats {
    /// All injected faults, the disk-full refusals included.
    pub fn total(&self) -> u64 {
        self.server_error
            + self.too_many_requests
            + self.reset
            + self.stall
            + self.truncate
            + self.disk_full
    }

    /// The count of one kind.
    pub fn of(&self, kind: FaultKind) -> u64 {
        match kind {
            FaultKind::ServerError => self.server_error,
            FaultKind::TooManyRequests => self.too_many_requests,
            FaultKind::Reset => self.reset,
            FaultKind::Stall => self.stall,
            FaultKind::Truncate => self.truncate,
        }
    }

    pub(crate) fn from_counts(counts: [u64; 5], disk_full: u64) -> Self {
        let of = |kind: FaultKind| counts[kind.index()];
        Self {
            server_error: of(FaultKind::ServerError),
            too_many_requests: of(FaultKind::TooManyRequests),
            reset: of(FaultKind::Reset),
            stall: of(FaultKind::Stall),
            truncate: of(FaultKind::Truncate),
            disk_full,
        }
    }
}

/// The index of a kind in a per-kind counter array.
pub(crate) fn counter_index(kind: FaultKind) -> usize {
    kind.index()
}

/// The call a datafile request makes, as far as the fault draw is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call {
    /// The dataset key of the URL.
    pub(crate) dataset: String,
    /// The `filename` field (empty if the request had none).
    pub(crate) filename: String,
    /// The `phase` field (`None` if missing or unknown).
    pub(crate) phase: Option<Phase>,
    /// `previous_size` of a transfer (0 if missing or not a number), 0 for
    /// setup and verify.
    pub(crate) offset: u64,
}

/// How many times each call on one name was seen, by (phase, offset).
type Attempts = HashMap<(Option<Phase>, u64), u32>;

/// How many times each call was seen, by (dataset, file name) and then by
/// (phase, offset).
#[derive(Default)]
struct Seen {
    names: HashMap<(String, String), Attempts>,
    /// Counters in `names`, all names together (at most [`MAX_COUNTED_CALLS`]).
    counted: usize,
}

impl Seen {
    /// Counts one more sighting of `call` and returns its attempt (1 the first time).
    fn count(&mut self, call: &Call) -> u32 {
        let name = (call.dataset.clone(), call.filename.clone());
        let known = self
            .names
            .get(&name)
            .is_some_and(|calls| calls.contains_key(&(call.phase, call.offset)));
        if !known && self.counted >= MAX_COUNTED_CALLS {
            self.names.clear();
            self.counted = 0;
        }
        let attempts = self
            .names
            .entry(name)
            .or_default()
            .entry((call.phase, call.offset))
            .or_insert_with(|| {
                self.counted += 1;
                0
            });
        *attempts = attempts.saturating_add(1);
        *attempts
    }

    fn forget(&mut self, dataset: &str, filename: &str) {
        let name = (dataset.to_owned(), filename.to_owned());
        if let Some(calls) = self.names.remove(&name) {
            self.counted -= calls.len();
        }
    }

    /// Drops the counter of one call (and its name's entry once it has none).
    fn forget_call(&mut self, call: &Call) {
        let name = (call.dataset.clone(), call.filename.clone());
        let Some(calls) = self.names.get_mut(&name) else {
            return;
        };
        if calls.remove(&(call.phase, call.offset)).is_some() {
            self.counted -= 1;
        }
        if calls.is_empty() {
            self.names.remove(&name);
        }
    }
}

/// The fault injector of a running server.
pub(crate) struct Faults {
    /// The blake3 key of every draw, derived from the seed.
    key: [u8; 32],
    /// The rate as `f64` bits: read by every draw, changed by `set_rate`.
    rate: AtomicU64,
    kinds: Vec<FaultKind>,
    /// The attempt counters. Held only to count one call, never across an
    /// await; bounded by [`MAX_COUNTED_CALLS`].
    seen: Mutex<Seen>,
    pub(crate) stall: Duration,
    pub(crate) retry_after: Duration,
}

/// What the key of the draws is derived from, with the seed (a blake3 context
/// string: changing it changes every fault of every seed).
const DRAW_CONTEXT: &str = "idb-mock 2025 fault draws of (dataset, file, phase, offset, attempt)";

impl Faults {
    pub(crate) fn new(config: &FaultConfig) -> Result<Self, MockError> {
        config.validate()?;
        Ok(Self {
            key: blake3::derive_key(DRAW_CONTEXT, &config.seed.to_le_bytes()),
            rate: AtomicU64::new(config.rate.to_bits()),
            kinds: config.kinds.clone(),
            seen: Mutex::default(),
            stall: config.stall,
            retry_after: config.retry_after,
        })
    }

    fn rate(&self) -> f64 {
        f64::from_bits(self.rate.load(Ordering::Relaxed))
    }

    /// Whether any request may get a fault (the rate is above 0): when not,
    /// nothing needs to know a request's call, and nothing is counted.
    pub(crate) fn active(&self) -> bool {
        self.rate() > 0.0 && !self.kinds.is_empty()
    }

    /// Counts `call` and draws its fault, if any. At rate 0 nothing is counted.
    pub(crate) fn draw(&self, call: &Call) -> Option<FaultKind> {
        if !self.active() {
            return None;
        }
        let attempt = lock(&self.seen).count(call);
        self.draw_at(call, attempt)
    }

    /// The fault of `call` at `attempt`: a pure function of the seed, the call
    /// and the attempt (and the rate and kinds).
    fn draw_at(&self, call: &Call, attempt: u32) -> Option<FaultKind> {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        for text in [&call.dataset, &call.filename] {
            // Each text with its length, so no two calls hash the same bytes.
            hasher.update(&(text.len() as u64).to_le_bytes());
            hasher.update(text.as_bytes());
        }
        let phase: u8 = match call.phase {
            None => 0,
            Some(Phase::Setup) => 1,
            Some(Phase::Transfer) => 2,
            Some(Phase::Verify) => 3,
        };
        hasher.update(&[phase]);
        hasher.update(&call.offset.to_le_bytes());
        hasher.update(&attempt.to_le_bytes());
        let digest = hasher.finalize();
        let word = |i: usize| {
            let bytes: [u8; 8] = digest.as_bytes()[i * 8..i * 8 + 8]
                .try_into()
                .expect("8 bytes of a 32-byte digest");
            u64::from_le_bytes(bytes)
        };
        // 53 random bits: a uniform number in [0, 1).
        let roll = (word(0) >> 11) as f64 / (1u64 << 53) as f64;
        if roll >= self.rate() {
            return None;
        }
        // Uniform over the kinds (multiply-shift, no modulo bias to speak of).
        let pick = ((u128::from(word(1)) * self.kinds.len() as u128) >> 64) as usize;
        Some(self.kinds[pick])
    }

    /// Drops the attempt counters of a name whose verify succeeded (and was
    /// answered without a fault).
    pub(crate) fn forget(&self, dataset: &str, filename: &str) {
        lock(&self.seen).forget(dataset, filename);
    }

    /// Drops the attempt counter of one call that succeeded (answered without a
    /// fault): sent again, it is a new call and counts from 1.
    pub(crate) fn forget_call(&self, call: &Call) {
        lock(&self.seen).forget_call(call);
    }

    /// How many attempt counters are kept now (at most [`MAX_COUNTED_CALLS`]).
    pub(crate) fn counted(&self) -> usize {
        lock(&self.seen).counted
    }

    /// Changes the rate from now on; the counters stay.
    pub(crate) fn set_rate(&self, rate: f64) -> Result<(), MockError> {
        check_rate(rate)?;
        if rate > 0.0 && self.kinds.is_empty() {
            return Err(MockError::NoFaultKinds);
        }
        self.rate.store(rate.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// `Retry-After` in whole seconds, rounded up.
    pub(crate) fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        d.as_secs() + u64::from(d.subsec_nanos() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_print() {
        for kind in FaultKind::ALL {
            assert_eq!(kind.as_str().parse::<FaultKind>().unwrap(), kind);
            assert_eq!(kind.to_string(), kind.as_str());
        }
        assert_eq!(" Reset ".parse::<FaultKind>().unwrap(), FaultKind::Reset);
        assert!(matches!(
            "bogus".parse::<FaultKind>(),
            Err(MockError::UnknownFaultKind { kind }) if kind == "bogus"
        ));
    }

    #[test]
    fn rates_are_probabilities() {
        for bad in [-0.1, 1.01, f64::NAN, f64::INFINITY] {
            let config = FaultConfig::new(bad, FaultKind::ALL);
            assert!(matches!(
                Faults::new(&config),
                Err(MockError::FaultRate { .. })
            ));
        }
        assert!(matches!(
            Faults::new(&FaultConfig::new(0.5, [])),
            Err(MockError::NoFaultKinds)
        ));
        // No kinds is fine while nothing is injected.
        assert!(Faults::new(&FaultConfig::new(0.0, [])).is_ok());
    }

    fn call(file: &str, phase: Phase, offset: u64) -> Call {
        Call {
            dataset: "IDB-1".to_owned(),
            filename: file.to_owned(),
            phase: Some(phase),
            offset,
        }
    }

    fn injector(seed: u64, rate: f64) -> Faults {
        Faults::new(&FaultConfig {
            seed,
            ..FaultConfig::new(rate, FaultKind::ALL)
        })
        .unwrap()
    }

    /// The requests of three uploads: setup, transfers at their offsets (some
    /// sent twice, as retries are), verify.
    fn requests() -> Vec<Call> {
        let mut calls = Vec::new();
        for (file, chunks) in [("a.bin", 6u64), ("b.bin", 1), ("c.bin", 9)] {
            calls.push(call(file, Phase::Setup, 0));
            for i in 0..chunks {
                calls.push(call(file, Phase::Transfer, i * 1000));
                if i % 3 == 0 {
                    calls.push(call(file, Phase::Transfer, i * 1000));
                }
            }
            calls.push(call(file, Phase::Verify, 0));
            calls.push(call(file, Phase::Verify, 0));
        }
        calls
    }

    /// Draws for `calls` in this order; returns each call with its attempt
    /// (its n-th sighting) and its fault, sorted, so two orders compare.
    fn drawn(faults: &Faults, calls: &[Call]) -> Vec<(String, u8, u64, u32, Option<FaultKind>)> {
        let mut sightings: HashMap<(String, Option<Phase>, u64), u32> = HashMap::new();
        let mut out: Vec<_> = calls
            .iter()
            .map(|c| {
                let n = sightings
                    .entry((c.filename.clone(), c.phase, c.offset))
                    .or_default();
                *n += 1;
                let phase = c.phase.map_or(0, |p| p as u8 + 1);
                (c.filename.clone(), phase, c.offset, *n, faults.draw(c))
            })
            .collect();
        out.sort_by(|a, b| (&a.0, a.1, a.2, a.3).cmp(&(&b.0, b.1, b.2, b.3)));
        out
    }

    #[test]
    fn the_same_calls_in_another_order_get_the_same_faults() {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        let calls = requests();
        let in_order = drawn(&injector(7, 0.5), &calls);
        for shuffle_seed in 0..5 {
            let mut shuffled = calls.clone();
            shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(shuffle_seed));
            assert_eq!(drawn(&injector(7, 0.5), &shuffled), in_order);
        }
        // Uploads interleaved as concurrent ones are: one call of each in turn.
        let mut interleaved = Vec::new();
        let by_file: Vec<Vec<Call>> = ["a.bin", "b.bin", "c.bin"]
            .iter()
            .map(|f| calls.iter().filter(|c| c.filename == *f).cloned().collect())
            .collect();
        for i in 0..by_file.iter().map(Vec::len).max().unwrap() {
            interleaved.extend(by_file.iter().filter_map(|calls| calls.get(i).cloned()));
        }
        assert_eq!(drawn(&injector(7, 0.5), &interleaved), in_order);
        assert!(in_order.iter().any(|d| d.4.is_none()));
        assert!(in_order.iter().any(|d| d.4.is_some()));
    }

    #[test]
    fn another_seed_gives_other_faults() {
        let calls = requests();
        let a = drawn(&injector(7, 0.5), &calls);
        assert_ne!(a, drawn(&injector(8, 0.5), &calls));
        assert_eq!(a, drawn(&injector(7, 0.5), &calls));
    }

    #[test]
    fn every_kind_is_drawn() {
        let faults = injector(3, 0.5);
        let drawn: Vec<_> = (0..400)
            .map(|i| faults.draw(&call("k.bin", Phase::Transfer, i)))
            .collect();
        assert!(drawn.contains(&None));
        for kind in FaultKind::ALL {
            assert!(drawn.contains(&Some(kind)), "{kind} never drawn");
        }
    }

    #[test]
    fn a_retried_call_gets_an_independent_draw_and_gets_through_eventually() {
        // At a rate of 0.9, every one of 50 calls sent again and again gets
        // through within a bounded number of attempts (0.9^200 is 7e-10 a call,
        // and the draws are fixed by the seed, so this cannot flake)...
        let faults = injector(11, 0.9);
        let mut first_faulted_then_through = 0;
        for offset in 0..50 {
            let c = call("r.bin", Phase::Transfer, offset * 4096);
            let through = (1..=200)
                .find(|_| faults.draw(&c).is_none())
                .unwrap_or_else(|| panic!("call at {offset} never got through"));
            if through > 1 {
                first_faulted_then_through += 1;
            }
        }
        // ...so attempts 2, 3, ... are not a copy of attempt 1's draw.
        assert!(first_faulted_then_through > 0);
        // The attempt is part of the draw: attempt 1 and 2 of one call differ
        // for some calls.
        let fresh = injector(11, 0.5);
        let differs = (0..100).any(|i| {
            let c = call("d.bin", Phase::Transfer, i);
            fresh.draw_at(&c, 1) != fresh.draw_at(&c, 2)
        });
        assert!(differs);
    }

    #[test]
    fn a_verified_name_forgets_its_attempts() {
        let faults = injector(5, 0.5);
        let c = call("v.bin", Phase::Transfer, 0);
        let first: Vec<_> = (0..6).map(|_| faults.draw(&c)).collect();
        faults.forget("IDB-1", "v.bin");
        assert_eq!(lock(&faults.seen).counted, 0);
        assert!(lock(&faults.seen).names.is_empty());
        // Counted from 1 again: the same draws.
        let again: Vec<_> = (0..6).map(|_| faults.draw(&c)).collect();
        assert_eq!(first, again);
    }

    #[test]
    fn a_call_that_succeeded_forgets_only_its_own_attempts() {
        let faults = injector(5, 0.5);
        let done = call("t.bin", Phase::Transfer, 0);
        let open = call("t.bin", Phase::Transfer, 4096);
        let first: Vec<_> = (0..4).map(|_| faults.draw(&done)).collect();
        faults.draw(&open);
        faults.forget_call(&done);
        assert_eq!(faults.counted(), 1, "the other call keeps its counter");
        faults.forget_call(&open);
        assert_eq!(faults.counted(), 0);
        assert!(
            lock(&faults.seen).names.is_empty(),
            "an empty name is dropped"
        );
        let again: Vec<_> = (0..4).map(|_| faults.draw(&done)).collect();
        assert_eq!(first, again, "counted from 1 again");
    }

    #[test]
    fn the_counters_are_bounded() {
        let faults = injector(5, 0.5);
        for i in 0..(MAX_COUNTED_CALLS as u64 + 10) {
            faults.draw(&call("big.bin", Phase::Transfer, i));
        }
        let seen = lock(&faults.seen);
        assert!(seen.counted <= MAX_COUNTED_CALLS);
        assert_eq!(
            seen.counted,
            seen.names.values().map(HashMap::len).sum::<usize>()
        );
    }

    #[test]
    fn rate_one_always_and_zero_never() {
        let faults = Faults::new(&FaultConfig::new(1.0, [FaultKind::Stall])).unwrap();
        let c = call("s.bin", Phase::Setup, 0);
        assert!((0..100).all(|_| faults.draw(&c) == Some(FaultKind::Stall)));
        faults.set_rate(0.0).unwrap();
        assert!(!faults.active());
        assert!((0..100).all(|_| faults.draw(&c).is_none()));
        assert!(faults.set_rate(2.0).is_err());
    }

    #[test]
    fn retry_after_rounds_up() {
        let mut config = FaultConfig::new(1.0, [FaultKind::TooManyRequests]);
        for (given, secs) in [(0, 0), (1, 1), (1500, 2), (7000, 7)] {
            config.retry_after = Duration::from_millis(given);
            assert_eq!(Faults::new(&config).unwrap().retry_after_secs(), secs);
        }
    }
}
