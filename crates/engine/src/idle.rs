//! Idle timeouts: give up on a call only when nothing moves, never because a
//! healthy large request takes long.

use std::future::Future;
use std::time::Duration;

use crate::body::Progress;

/// Runs `call` until it finishes, or until `timeout` passes with no new request
/// bytes handed to the connection (then `None`). After the body is out, the
/// clock keeps running, so the answer must start within `timeout` too.
///
/// A body waiting for the run's bandwidth cap is not idle: the clock starts
/// again when its wait ends (so a connection that stops taking bytes after a
/// wait is still caught, `timeout` after the wait's end), however long the cap
/// makes it wait.
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
                let (sent, now) = (progress.get(), tokio::time::Instant::now());
                if sent != seen {
                    seen = sent;
                    last_move = now;
                }
                // Waiting for the bandwidth cap counts as moving, up to now.
                last_move = last_move.max(progress.throttled_until().min(now));
                if now - last_move >= timeout {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body::Body;

    use super::*;
    use crate::bandwidth::Bandwidth;
    use crate::body::{FRAME_BYTES, SegmentedBody};

    /// A body of `frames` whole frames under a cap of `rate`, reporting to
    /// `progress`, and the cap's bucket (for other files' turns).
    fn throttled_body(
        frames: usize,
        rate: u64,
        progress: &Progress,
    ) -> (SegmentedBody, Arc<Bandwidth>) {
        let bucket = Arc::new(Bandwidth::new(rate));
        let body = SegmentedBody::new(
            vec![Bytes::from(vec![1u8; frames * bucket.frame()])],
            progress.clone(),
            Some(Arc::clone(&bucket)),
        );
        (body, bucket)
    }

    /// 256 KiB: what another file sending at once has queued at the bucket
    /// ahead of a body's next frame (64 s at 4 KiB/s, six times the idle
    /// timeout).
    const AHEAD: u64 = FRAME_BYTES as u64;

    /// Asserts `call` is cut under a 10 s idle timeout, `at_least` after the
    /// start and within 3 s more (the watchdog looks every 2.5 s).
    async fn assert_cut_after(
        progress: &Progress,
        call: impl Future<Output = ()>,
        at_least: Duration,
    ) {
        let started = tokio::time::Instant::now();
        assert_eq!(
            with_idle_timeout(progress, Duration::from_secs(10), call).await,
            None
        );
        let waited = started.elapsed();
        assert!(
            waited >= at_least && waited <= at_least + Duration::from_secs(3),
            "{waited:?}"
        );
    }

    /// Polls one frame of `body`, as the connection does when it has room.
    async fn next_frame(body: &mut SegmentedBody) -> bool {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
            .await
            .is_some()
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_waiting_for_the_bandwidth_cap_is_not_idle() {
        let progress = Progress::default();
        // 4 KiB/s, frames of 1 KiB: the body's first frame waits behind
        // another file's 256 KiB, 64 s, six times the idle timeout.
        let (mut body, bucket) = throttled_body(3, 4 * 1024, &progress);
        let started = tokio::time::Instant::now();
        bucket.reserve(AHEAD);
        let sending = async {
            while next_frame(&mut body).await {}
            7
        };
        let out = with_idle_timeout(&progress, Duration::from_secs(10), sending).await;
        assert_eq!(out, Some(7));
        // 256 KiB and 3 KiB at 4 KiB/s, less the burst (one 1 KiB frame).
        assert_eq!(started.elapsed(), Duration::from_millis(64_750 - 250));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_stops_taking_a_throttled_body_times_out_after_the_wait() {
        let progress = Progress::default();
        let (mut body, bucket) = throttled_body(3, 4 * 1024, &progress);
        let stalls = async {
            assert!(next_frame(&mut body).await, "the first frame goes at once");
            // Another file's 256 KiB go first: the second frame's turn comes at
            // 64.25 s, but the connection never asks again (its socket is
            // full: the server stopped reading).
            bucket.reserve(AHEAD);
            let asked_once = std::future::poll_fn(|cx| {
                let _ = Pin::new(&mut body).poll_frame(cx);
                std::task::Poll::Ready(())
            });
            asked_once.await;
            std::future::pending::<()>().await
        };
        assert_cut_after(&progress, stalls, Duration::from_secs(74)).await;
    }

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
        let stalls = async {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(5)).await;
                progress.add(1);
            }
            std::future::pending::<()>().await
        };
        assert_cut_after(&progress, stalls, Duration::from_secs(25)).await;
    }
}
