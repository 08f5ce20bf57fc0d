//! Idle timeouts: give up on a call only when nothing moves, never because a
//! healthy large request takes long.

use std::future::Future;
use std::time::Duration;

use crate::body::Progress;

/// Runs `call` until it finishes, or until `timeout` passes with no new request
/// bytes handed to the connection (then `None`). After the body is out, the
/// clock keeps running, so the answer must start within `timeout` too.
pub(crate) async fn with_idle_timeout<T>(
    progress: &Progress,
    timeout: Duration,
    call: impl Future<Output = T>,
) -> Option<T> {
    tokio::pin!(call);
    let mut seen = progress.get();
    // Check a few times per timeout, so a stall is noticed within 1.25 x timeout.
    let tick = (timeout / 4).max(Duration::from_millis(1));
    let mut last_move = tokio::time::Instant::now();
    loop {
        tokio::select! {
            // An answer that is ready wins over a tick that would call it stalled.
            biased;
            done = &mut call => return Some(done),
            _ = tokio::time::sleep(tick) => {
                let now = progress.get();
                if now != seen {
                    seen = now;
                    last_move = tokio::time::Instant::now();
                } else if last_move.elapsed() >= timeout {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_call_that_never_moves_times_out() {
        let progress = Progress::default();
        let out = with_idle_timeout(
            &progress,
            Duration::from_secs(10),
            std::future::pending::<()>(),
        )
        .await;
        assert_eq!(out, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_call_that_keeps_moving_is_not_cut() {
        let progress = Progress::default();
        // A minute of sending, six times the timeout, moving every 5 seconds.
        let moving = async {
            for _ in 0..12 {
                tokio::time::sleep(Duration::from_secs(5)).await;
                progress.add(1);
            }
            7
        };
        let out = with_idle_timeout(&progress, Duration::from_secs(10), moving).await;
        assert_eq!(out, Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_stops_moving_times_out() {
        let progress = Progress::default();
        let started = tokio::time::Instant::now();
        let stalls = async {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(5)).await;
                progress.add(1);
            }
            std::future::pending::<()>().await
        };
        assert_eq!(
            with_idle_timeout(&progress, Duration::from_secs(10), stalls).await,
            None
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(25) && waited <= Duration::from_secs(28),
            "{waited:?}"
        );
    }
}
