//! The body idle timeout: a request body that stops moving while the server
//! waits for it is cut.
//!
//! Only the time the server spends waiting for the client's next bytes counts:
//! the clock starts when a read of the body finds nothing there, and stops
//! when bytes come. A request held by a pause, a latency or a server still busy
//! with the previous piece is never the client's fault, so it never counts.

use std::error::Error;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// What a body's reader gets when the body stopped moving for the timeout.
#[derive(Debug)]
pub(crate) struct BodyStalled {
    idle: Duration,
}

impl fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request body sent nothing for {} ms",
            self.idle.as_millis()
        )
    }
}

impl Error for BodyStalled {}

/// A request body whose reads fail with [`BodyStalled`] once the server waited
/// `idle` for its next bytes.
pub(crate) struct IdleTimeout<B> {
    inner: B,
    idle: Duration,
    /// Armed (reset to now + `idle`) when a read finds no bytes and
    /// `waiting` was false; one timer a request, reset rather than made anew.
    timer: Pin<Box<Sleep>>,
    /// Whether the reader is waiting for bytes (the timer runs).
    waiting: bool,
}

impl<B> IdleTimeout<B> {
    /// `inner`, cut after `idle` without bytes while read.
    pub(crate) fn new(inner: B, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
        }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    this.timer.as_mut().reset(Instant::now() + this.idle);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.waiting = false;
                        let stalled = BodyStalled { idle: this.idle };
                        Poll::Ready(Some(Err(Box::new(stalled))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures_util::FutureExt;
    use http_body_util::{BodyExt, StreamBody};
    use tokio::sync::mpsc;

    use super::*;

    /// A body fed by a channel (so the test decides when bytes come), cut
    /// after `idle`.
    fn body(
        idle: Duration,
    ) -> (
        mpsc::Sender<Bytes>,
        IdleTimeout<impl Body<Data = Bytes, Error = Infallible> + Unpin>,
    ) {
        let (send, mut receive) = mpsc::channel::<Bytes>(4);
        let frames = futures_util::stream::poll_fn(move |cx| {
            receive
                .poll_recv(cx)
                .map(|b| b.map(|b| Ok::<_, Infallible>(Frame::data(b))))
        });
        (send, IdleTimeout::new(StreamBody::new(frames), idle))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_moving_is_cut_after_the_idle_time() {
        let (send, mut body) = body(Duration::from_secs(5));
        send.send(Bytes::from_static(b"abc")).await.unwrap();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "abc");
        let started = Instant::now();
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(error.is::<BodyStalled>(), "{error}");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        drop(send);
    }

    #[tokio::test(start_paused = true)]
    async fn time_between_reads_is_not_counted() {
        let (send, mut body) = body(Duration::from_secs(5));
        // The server is busy for longer than the idle time before it reads:
        // the bytes were there all along.
        send.send(Bytes::from_static(b"abc")).await.unwrap();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(body.frame().await.unwrap().is_ok());
        // Waiting just short of the idle time, then bytes: no cut.
        {
            let mut read = Box::pin(body.frame());
            assert!((&mut read).now_or_never().is_none());
            tokio::time::advance(Duration::from_secs(4)).await;
            send.send(Bytes::from_static(b"def")).await.unwrap();
            assert!(read.await.unwrap().is_ok());
        }
        drop(send);
        assert!(body.frame().await.is_none());
    }
}
