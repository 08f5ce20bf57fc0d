//! A request body made of `Bytes` segments, sent in order without copying them,
//! counting the bytes handed to the connection so a stalled upload can be told
//! from a slow one, and (for transfer calls under a cap) waiting for the run's
//! bandwidth bucket before each frame.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::bandwidth::Bandwidth;

/// The largest frame handed to the connection at once. Large payloads are cut
/// (zero-copy) into frames of this size so progress is visible while they go out.
pub(crate) const FRAME_BYTES: usize = 256 * 1024;

/// How a request's body is getting on, shared with the idle watchdog: the bytes
/// handed to the connection so far, and until when the body is waiting for the
/// run's bandwidth cap (a wait the watchdog must not take for a stall).
#[derive(Debug, Clone)]
pub(crate) struct Progress(Arc<ProgressCounts>);

#[derive(Debug)]
struct ProgressCounts {
    bytes: AtomicU64,
    /// The instant `throttled_until` counts from.
    created: Instant,
    /// Nanoseconds after `created` until which the body waits for the bandwidth
    /// cap (0: it never waited).
    throttled_until: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Self(Arc::new(ProgressCounts {
            bytes: AtomicU64::new(0),
            created: Instant::now(),
            throttled_until: AtomicU64::new(0),
        }))
    }
}

impl Progress {
    pub(crate) fn get(&self) -> u64 {
        self.0.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn add(&self, n: u64) {
        self.0.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// The end of the body's latest wait for the bandwidth cap (the instant the
    /// progress was made at, if it never waited).
    pub(crate) fn throttled_until(&self) -> Instant {
        let nanos = self.0.throttled_until.load(Ordering::Relaxed);
        self.0.created + std::time::Duration::from_nanos(nanos)
    }

    /// Says the body waits for the bandwidth cap until `at`.
    fn throttle_until(&self, at: Instant) {
        let nanos = at.saturating_duration_since(self.0.created).as_nanos();
        self.0
            .throttled_until
            .fetch_max(nanos.min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
    }
}

/// A body's turn at the run's bandwidth bucket: each frame is reserved when the
/// connection asks for it, and handed over when the bucket says.
struct Throttle {
    bucket: Arc<Bandwidth>,
    /// The wait for the front frame's turn, reused across frames (made at the
    /// first wait, inside the runtime).
    sleep: Option<Pin<Box<Sleep>>>,
    /// Whether the front frame is reserved and `sleep` runs to its turn.
    waiting: bool,
}

impl Throttle {
    /// Ready once `n` bytes may go: reserves them on the first call, then sleeps
    /// (registering the waker with the timer, so nothing polls in between).
    fn poll_turn(&mut self, n: u64, progress: &Progress, cx: &mut Context<'_>) -> Poll<()> {
        if !self.waiting {
            let at = self.bucket.reserve(n);
            if at <= Instant::now() {
                return Poll::Ready(());
            }
            progress.throttle_until(at);
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(at),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            self.waiting = true;
        }
        if let Some(sleep) = &mut self.sleep {
            ready!(sleep.as_mut().poll(cx));
        }
        self.waiting = false;
        Poll::Ready(())
    }
}

/// An HTTP body over a [`idb_wire::MultipartBody`]'s segments with an exact size,
/// so the request carries a `Content-Length` (servers behind Rack and the like
/// handle that better than chunked encoding).
pub(crate) struct SegmentedBody {
    frames: VecDeque<Bytes>,
    remaining: u64,
    progress: Progress,
    /// The run's bandwidth cap, for transfer bodies when one is set; `None`
    /// otherwise, so an uncapped body does no more than hand its frames over.
    throttle: Option<Throttle>,
}

impl SegmentedBody {
    /// A body over `segments`; with `bandwidth`, each frame waits for its turn
    /// at that bucket before it is handed to the connection.
    pub(crate) fn new(
        segments: Vec<Bytes>,
        progress: Progress,
        bandwidth: Option<Arc<Bandwidth>>,
    ) -> Self {
        let remaining = segments.iter().map(|s| s.len() as u64).sum();
        let frame = bandwidth.as_ref().map_or(FRAME_BYTES, |b| b.frame());
        let mut frames = VecDeque::new();
        for mut segment in segments {
            while segment.len() > frame {
                frames.push_back(segment.split_to(frame));
            }
            if !segment.is_empty() {
                frames.push_back(segment);
            }
        }
        Self {
            frames,
            remaining,
            progress,
            throttle: bandwidth.map(|bucket| Throttle {
                bucket,
                sleep: None,
                waiting: false,
            }),
        }
    }
}

impl Body for SegmentedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let (Some(throttle), Some(front)) = (&mut this.throttle, this.frames.front()) {
            ready!(throttle.poll_turn(front.len() as u64, &this.progress, cx));
        }
        let next = this.frames.pop_front();
        if let Some(frame) = &next {
            let n = frame.len() as u64;
            this.remaining -= n;
            this.progress.add(n);
        }
        Poll::Ready(next.map(|s| Ok(Frame::data(s))))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    #[test]
    fn yields_everything_in_order_with_exact_size_and_progress() {
        let big = Bytes::from(vec![7u8; FRAME_BYTES * 2 + 5]);
        let progress = Progress::default();
        let mut body = SegmentedBody::new(
            vec![
                Bytes::from_static(b"ab"),
                Bytes::new(),
                big.clone(),
                Bytes::from_static(b"cde"),
            ],
            progress.clone(),
            None,
        );
        let total = 2 + big.len() as u64 + 3;
        assert_eq!(body.size_hint().exact(), Some(total));
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) {
            let frame = frame.into_data().unwrap();
            assert!(frame.len() <= FRAME_BYTES);
            out.extend_from_slice(&frame);
            assert_eq!(body.size_hint().exact(), Some(total - out.len() as u64));
            assert_eq!(progress.get(), out.len() as u64);
        }
        let expected: Vec<u8> = [&b"ab"[..], &big, b"cde"].concat();
        assert_eq!(out, expected);
        assert!(body.is_end_stream());
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_body_goes_at_the_rate_and_is_polled_only_when_its_turn_comes() {
        const RATE: u64 = 4 * 1024 * 1024;
        let frames = 12;
        let progress = Progress::default();
        let bucket = Arc::new(Bandwidth::new(RATE));
        let mut body = SegmentedBody::new(
            vec![Bytes::from(vec![3u8; frames * FRAME_BYTES])],
            progress.clone(),
            Some(bucket.clone()),
        );
        let started = Instant::now();
        let mut polls = 0;
        let mut sent = 0;
        loop {
            let frame = std::future::poll_fn(|cx| {
                polls += 1;
                Pin::new(&mut body).poll_frame(cx)
            })
            .await;
            let Some(Ok(frame)) = frame else { break };
            sent += frame.into_data().unwrap().len();
            assert_eq!(progress.get(), sent as u64);
        }
        assert_eq!(sent, frames * FRAME_BYTES);
        // 3 MiB at 4 MiB/s is 750 ms; the first frame (the burst) went at once.
        let expected = std::time::Duration::from_millis(750) - bucket.burst();
        // (Timers tick in whole milliseconds.)
        let took = started.elapsed();
        let tick = std::time::Duration::from_millis(1);
        assert!(took >= expected && took <= expected + tick, "{took:?}");
        // Woken by the timer once per wait, never spinning: at most two polls a
        // frame (the one that waits, the one that takes it), and the end.
        assert!(polls <= 2 * frames + 1, "{polls} polls for {frames} frames");
        assert_eq!(progress.throttled_until(), started + expected);
    }
}
