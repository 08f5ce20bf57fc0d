//! Bandwidth caps on what the server receives: a token bucket in front of each
//! socket's reads (per connection), and one bucket shared by every connection
//! (the whole server, as a real link caps them all together).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Duration, Instant, Sleep};

use crate::lock::lock;

/// The most a capped connection can save up while idle, as time at its rate:
/// 10 ms. Timers tick in milliseconds, so the bucket must hold a few ticks' worth
/// to reach the rate; kept that small, no window longer than this sees more than
/// the rate.
pub const BANDWIDTH_BURST: Duration = Duration::from_millis(10);

/// Refills at `rate` bytes per second up to `capacity`; starts empty, so by any
/// time `t` after the connection was accepted at most `rate * t` bytes were read.
/// Integer arithmetic: a wait computed for `n` tokens always yields `n` tokens.
#[derive(Debug)]
struct Bucket {
    rate: u64,
    capacity: u64,
    tokens: u64,
    /// The time up to which refills are counted (the remainder of a token carries
    /// over to the next refill).
    refilled: Instant,
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

impl Bucket {
    fn new(rate: u64) -> Self {
        Self {
            rate,
            capacity: {
                let burst = u128::from(rate) * BANDWIDTH_BURST.as_nanos() / NANOS_PER_SEC;
                (burst as u64).max(1)
            },
            tokens: 0,
            refilled: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_nanos();
        let earned = elapsed * u128::from(self.rate) / NANOS_PER_SEC;
        let room = u128::from(self.capacity - self.tokens);
        if earned >= room {
            self.tokens = self.capacity;
            self.refilled = now;
        } else {
            // `earned < capacity`, so it fits in u64.
            self.tokens += earned as u64;
            let spent = earned * NANOS_PER_SEC / u128::from(self.rate);
            self.refilled += Duration::from_nanos(spent as u64);
        }
    }

    /// What the bucket earns in a timer tick (a millisecond), at least 1 and
    /// at most its capacity.
    fn tick_worth(&self) -> u64 {
        (self.rate / 1000).clamp(1, self.capacity)
    }

    /// When the bucket will hold `want` tokens (`1 <= want <= capacity`).
    fn ready_at(&self, want: u64) -> Instant {
        let missing = u128::from(want.saturating_sub(self.tokens));
        let nanos = (missing * NANOS_PER_SEC).div_ceil(u128::from(self.rate));
        self.refilled + Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64)
    }
}

/// The bucket of the whole server ([`crate::MockConfig::bandwidth_total`]),
/// shared by every connection's [`Throttled`]. Its lock is held only to refill,
/// take or give back tokens, never across a read or a wait.
pub(crate) struct SharedBucket(Mutex<Bucket>);

impl SharedBucket {
    /// A bucket of `rate` bytes per second (0 is treated as 1: the
    /// configuration refuses 0 before it gets here), starting empty now.
    pub(crate) fn new(rate: u64) -> Arc<Self> {
        Arc::new(Self(Mutex::new(Bucket::new(rate.max(1)))))
    }
}

/// A stream whose reads are capped at a rate, its own and the server's; writes
/// pass through.
pub(crate) struct Throttled<S> {
    inner: S,
    /// This connection's cap; `None`: none.
    bucket: Option<Bucket>,
    /// The whole server's cap; `None`: none.
    total: Option<Arc<SharedBucket>>,
    /// The wait for a bucket to refill, reused across reads.
    sleep: Pin<Box<Sleep>>,
}

impl<S> Throttled<S> {
    /// `rate` in bytes per second for this connection, and the server's
    /// `total` bucket; `None` for no cap. A rate of 0 is treated as 1 (the
    /// configuration refuses 0 before it gets here).
    pub(crate) fn new(inner: S, rate: Option<u64>, total: Option<Arc<SharedBucket>>) -> Self {
        Self {
            inner,
            bucket: rate.map(|rate| Bucket::new(rate.max(1))),
            total,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Throttled<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.bucket.is_none() && this.total.is_none() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        // Wait for a timer tick's worth in each bucket (or the bytes the
        // caller can take, when fewer), then read what both hold: a small
        // request is never held back for more than its own bytes' time, and a
        // read is never of a few bytes. (Waiting for one byte's worth woke
        // within the same millisecond tick, again and again, each wake reading
        // a byte or two: a capped connection cost a whole core.) The server's
        // tokens are taken before the read, so connections reading at once
        // never spend the same ones, and what the read did not use is given
        // back after it.
        let room = buf.remaining() as u64;
        let allowed = loop {
            let now = Instant::now();
            let mut allowed = room;
            let mut ready_at = None;
            if let Some(bucket) = this.bucket.as_mut() {
                bucket.refill(now);
                let want = bucket.tick_worth().min(room);
                if bucket.tokens < want {
                    ready_at = Some(bucket.ready_at(want));
                }
                allowed = allowed.min(bucket.tokens);
            }
            if let (Some(total), None) = (&this.total, ready_at) {
                let mut total = lock(&total.0);
                total.refill(now);
                let want = total.tick_worth().min(room);
                if total.tokens < want {
                    ready_at = Some(total.ready_at(want));
                } else {
                    allowed = allowed.min(total.tokens);
                    total.tokens -= allowed;
                }
            }
            match ready_at {
                None => break allowed,
                Some(at) => {
                    this.sleep.as_mut().reset(at);
                    ready!(this.sleep.as_mut().poll(cx));
                }
            }
        };
        // At least one byte: the buffer has room and the buckets hold `allowed`.
        // A view of at most `allowed` bytes of the caller's buffer: initialising
        // it first lets `advance` below stay safe.
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(allowed as usize));
        let read = Pin::new(&mut this.inner).poll_read(cx, &mut limited);
        let n = match &read {
            Poll::Ready(Ok(())) => limited.filled().len() as u64,
            Poll::Ready(Err(_)) | Poll::Pending => 0,
        };
        if let Some(total) = &this.total {
            let mut total = lock(&total.0);
            total.tokens = (total.tokens + (allowed - n)).min(total.capacity);
        }
        ready!(read)?;
        buf.advance(n as usize);
        if let Some(bucket) = this.bucket.as_mut() {
            bucket.tokens -= n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Throttled<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// With time paused, reading N bytes at R bytes/s takes N/R of (virtual) time.
    #[tokio::test(start_paused = true)]
    async fn reads_no_faster_than_the_rate() {
        let data = vec![7u8; 300 * 1024];
        let rate = 100 * 1024;
        let mut reader = Throttled::new(&data[..], Some(rate), None);
        let start = Instant::now();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, data);
        let took = start.elapsed();
        assert!(took >= Duration::from_secs(3), "took {took:?}");
        // And not much slower: the cap is a cap, not a stall.
        assert!(took < Duration::from_millis(3050), "took {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_buys_at_most_one_burst() {
        let data = vec![1u8; 300 * 1024];
        let mut reader = Throttled::new(&data[..], Some(100 * 1024), None);
        tokio::time::advance(Duration::from_secs(100)).await;
        let start = Instant::now();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.unwrap();
        // 100 s idle saved up only 10 ms worth.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(2990), "took {took:?}");
        assert!(took < Duration::from_millis(3050), "took {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_read_waits_only_for_its_own_bytes() {
        let data = [5u8; 100];
        let mut reader = Throttled::new(&data[..], Some(1000), None);
        let start = Instant::now();
        let mut out = [0u8; 100];
        reader.read_exact(&mut out).await.unwrap();
        let took = start.elapsed();
        // 100 bytes at 1000 B/s: 0.1 s (and a timer tick or so), not a second.
        assert!(took >= Duration::from_millis(100), "took {took:?}");
        assert!(took < Duration::from_millis(150), "took {took:?}");
    }

    /// Two connections reading at once under one server-wide bucket of R
    /// bytes/s take (in paused time) as long as one reading both's bytes: the
    /// cap is on the sum, not on each.
    #[tokio::test(start_paused = true)]
    async fn a_shared_bucket_caps_the_sum_of_two_readers() {
        let rate = 100 * 1024;
        let total = SharedBucket::new(rate);
        let a = vec![1u8; 150 * 1024];
        let b = vec![2u8; 150 * 1024];
        let mut first = Throttled::new(&a[..], None, Some(Arc::clone(&total)));
        let mut second = Throttled::new(&b[..], None, Some(Arc::clone(&total)));
        let start = Instant::now();
        let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
        let (read_a, read_b) = tokio::join!(
            first.read_to_end(&mut out_a),
            second.read_to_end(&mut out_b)
        );
        read_a.unwrap();
        read_b.unwrap();
        assert_eq!((out_a, out_b), (a, b));
        // 300 KiB at 100 KiB/s: 3 s for both together (each alone would take 1.5 s).
        let took = start.elapsed();
        assert!(took >= Duration::from_secs(3), "took {took:?}");
        assert!(took < Duration::from_millis(3050), "took {took:?}");
    }

    /// Under both caps a reader gets the lower: its own rate here, with the
    /// server's bucket much larger.
    #[tokio::test(start_paused = true)]
    async fn the_lower_of_the_two_caps_holds() {
        let data = vec![3u8; 200 * 1024];
        let total = SharedBucket::new(10 * 1024 * 1024);
        let mut reader = Throttled::new(&data[..], Some(100 * 1024), Some(total));
        let start = Instant::now();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, data);
        let took = start.elapsed();
        assert!(took >= Duration::from_secs(2), "took {took:?}");
        assert!(took < Duration::from_millis(2050), "took {took:?}");
    }

    /// A reader under `rate` that counts the reads it is asked for.
    struct Counted<'a> {
        data: &'a [u8],
        reads: usize,
    }

    impl AsyncRead for Counted<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads += 1;
            Pin::new(&mut self.data).poll_read(cx, buf)
        }
    }

    /// Regression: a capped connection woke again within the same timer tick
    /// to read the byte or two earned meanwhile, costing a whole core at 1
    /// MiB/s. On the real clock, each read takes at least a tick's worth.
    #[tokio::test]
    async fn a_capped_reader_reads_at_least_a_tick_s_worth_at_a_time() {
        let data = vec![9u8; 64 * 1024];
        let rate = 1024 * 1024;
        let mut reader = Throttled::new(
            Counted {
                data: &data,
                reads: 0,
            },
            Some(rate),
            None,
        );
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, data);
        // A tick's worth a read, plus the small reads while read_to_end's
        // buffer grows from 32 bytes and the one that finds the end.
        let most = data.len() as u64 / (rate / 1000) + 12;
        assert!(
            reader.inner.reads as u64 <= most,
            "{} reads, at most {most}",
            reader.inner.reads
        );
    }

    #[tokio::test(start_paused = true)]
    async fn uncapped_reads_do_not_wait() {
        let data = vec![1u8; 1 << 20];
        let mut reader = Throttled::new(&data[..], None, None);
        let start = Instant::now();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
