//! Seeded fault injection: which datafile requests fail, and how.
//!
//! Every request on the datafile endpoint draws from one seeded RNG, in the order
//! requests arrive: with probability `rate` it gets a fault, whose kind is drawn
//! from the configured kinds. The same seed and the same order of requests give
//! the same faults, so a failing test or benchmark can be replayed.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::MockError;
use crate::lock::lock;

/// The default fault rate: 0, no request fails.
pub const DEFAULT_FAULT_RATE: f64 = 0.0;

/// The default seed of the fault RNG.
pub const DEFAULT_FAULT_SEED: u64 = 0;

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
    /// The RNG seed: the same seed and the same request order give the same faults.
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
}

impl FaultStats {
    /// All injected faults.
    pub fn total(&self) -> u64 {
        self.server_error + self.too_many_requests + self.reset + self.stall + self.truncate
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

    pub(crate) fn from_counts(counts: [u64; 5]) -> Self {
        let of = |kind: FaultKind| counts[kind.index()];
        Self {
            server_error: of(FaultKind::ServerError),
            too_many_requests: of(FaultKind::TooManyRequests),
            reset: of(FaultKind::Reset),
            stall: of(FaultKind::Stall),
            truncate: of(FaultKind::Truncate),
        }
    }
}

/// The index of a kind in a per-kind counter array.
pub(crate) fn counter_index(kind: FaultKind) -> usize {
    kind.index()
}

/// What changes while the server runs: the RNG and the rate.
struct Dice {
    rng: StdRng,
    rate: f64,
}

/// The fault injector of a running server.
pub(crate) struct Faults {
    /// One RNG for all connections. The mutex serialises the draws, so that one
    /// seed gives one sequence in the order requests arrive; it is held only for
    /// the two draws, never across an await.
    dice: Mutex<Dice>,
    kinds: Vec<FaultKind>,
    pub(crate) stall: Duration,
    pub(crate) retry_after: Duration,
}

impl Faults {
    pub(crate) fn new(config: &FaultConfig) -> Result<Self, MockError> {
        config.validate()?;
        Ok(Self {
            dice: Mutex::new(Dice {
                rng: StdRng::seed_from_u64(config.seed),
                rate: config.rate,
            }),
            kinds: config.kinds.clone(),
            stall: config.stall,
            retry_after: config.retry_after,
        })
    }

    /// Draws the fault of the next request, if any. At rate 0 nothing is drawn,
    /// so the RNG only advances while faults are on.
    pub(crate) fn draw(&self) -> Option<FaultKind> {
        let mut dice = lock(&self.dice);
        if dice.rate <= 0.0 || self.kinds.is_empty() {
            return None;
        }
        let roll: f64 = dice.rng.random();
        if roll >= dice.rate {
            return None;
        }
        let pick = dice.rng.random_range(0..self.kinds.len());
        Some(self.kinds[pick])
    }

    /// Changes the rate from now on; the RNG goes on where it is.
    pub(crate) fn set_rate(&self, rate: f64) -> Result<(), MockError> {
        check_rate(rate)?;
        if rate > 0.0 && self.kinds.is_empty() {
            return Err(MockError::NoFaultKinds);
        }
        lock(&self.dice).rate = rate;
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

    #[test]
    fn same_seed_same_draws() {
        let draws = |seed| {
            let faults = Faults::new(&FaultConfig {
                seed,
                ..FaultConfig::new(0.5, FaultKind::ALL)
            })
            .unwrap();
            (0..200).map(|_| faults.draw()).collect::<Vec<_>>()
        };
        let a = draws(7);
        assert_eq!(a, draws(7));
        assert_ne!(a, draws(8));
        assert!(a.iter().any(Option::is_none));
        for kind in FaultKind::ALL {
            assert!(a.contains(&Some(kind)), "{kind} never drawn");
        }
    }

    #[test]
    fn rate_one_always_and_zero_never() {
        let faults = Faults::new(&FaultConfig::new(1.0, [FaultKind::Stall])).unwrap();
        assert!((0..100).all(|_| faults.draw() == Some(FaultKind::Stall)));
        faults.set_rate(0.0).unwrap();
        assert!((0..100).all(|_| faults.draw().is_none()));
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
