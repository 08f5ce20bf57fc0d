//! When and how long to wait before sending a call again.

use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How persistent the engine is with calls that may succeed if sent again
/// (connection errors, idle timeouts, 5xx, 429, 408).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// The first backoff; each later one doubles, up to `max_delay`.
    pub base_delay: Duration,
    /// The longest backoff (a server's `Retry-After` may ask for more, up to an hour).
    pub max_delay: Duration,
    /// Give up on a call when it has not succeeded this long after its first
    /// attempt: no attempt starts, and no backoff (nor a server's `Retry-After`)
    /// is waited out, past it. An attempt still moving bytes at the deadline is
    /// let finish (the idle timeout watches it), so a healthy slow chunk is
    /// never cut; waits for a new token after a 401 are not counted.
    pub deadline: Duration,
    /// Seeds the jitter; `None` seeds from the OS. Tests fix it.
    pub seed: Option<u64>,
}

/// The default attempts per call.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;

/// The default deadline of a call ([`RetryPolicy::deadline`]): ten attempts of a
/// full idle timeout (60 s) and their backoffs take about 11 minutes, so this
/// binds only when a server asks for long waits (`Retry-After`).
pub const DEFAULT_CALL_DEADLINE: Duration = Duration::from_secs(15 * 60);

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            deadline: DEFAULT_CALL_DEADLINE,
            seed: None,
        }
    }
}

/// Backoff delays with "equal jitter": half fixed, half random, so that many
/// clients that failed together do not come back together.
pub(crate) struct Backoff {
    policy: RetryPolicy,
    /// Shared by every call of the run; held only to draw a number.
    rng: Mutex<StdRng>,
}

impl Backoff {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        let rng = match policy.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self {
            policy,
            rng: Mutex::new(rng),
        }
    }

    pub(crate) fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The wait before attempt `attempt + 1`, after `attempt` failed. A server's
    /// `Retry-After` is honoured as given.
    pub(crate) fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after;
        }
        let exp = self
            .policy
            .base_delay
            .saturating_mul(1 << attempt.saturating_sub(1).min(20));
        let ceiling = exp.min(self.policy.max_delay);
        let half = ceiling / 2;
        let jitter = self
            .rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .random_range(0.0..=1.0);
        half + half.mul_f64(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff::new(RetryPolicy {
            seed: Some(1),
            ..RetryPolicy::default()
        })
    }

    #[test]
    fn delays_grow_then_stop_growing() {
        let b = backoff();
        let policy = b.policy().clone();
        for attempt in 1..30 {
            let d = b.delay(attempt, None);
            let ceiling = policy
                .base_delay
                .saturating_mul(1 << (attempt - 1).min(20))
                .min(policy.max_delay);
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn retry_after_wins() {
        assert_eq!(
            backoff().delay(3, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(backoff().delay(3, Some(Duration::ZERO)), Duration::ZERO);
    }

    #[test]
    fn same_seed_same_delays() {
        let (a, b) = (backoff(), backoff());
        for attempt in 1..10 {
            assert_eq!(a.delay(attempt, None), b.delay(attempt, None));
        }
    }
}
