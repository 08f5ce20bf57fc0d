//! A request body made of `Bytes` segments, sent in order without copying them,
//! counting the bytes handed to the connection so a stalled upload can be told
//! from a slow one.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// The largest frame handed to the connection at once. Large payloads are cut
/// (zero-copy) into frames of this size so progress is visible while they go out.
const FRAME_BYTES: usize = 256 * 1024;

/// Bytes of a request handed to the connection so far, shared with the idle
/// watchdog.
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress(Arc<AtomicU64>);

impl Progress {
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

/// An HTTP body over a [`idb_wire::MultipartBody`]'s segments with an exact size,
/// so the request carries a `Content-Length` (servers behind Rack and the like
/// handle that better than chunked encoding).
pub(crate) struct SegmentedBody {
    frames: VecDeque<Bytes>,
    remaining: u64,
    progress: Progress,
}

impl SegmentedBody {
    pub(crate) fn new(segments: Vec<Bytes>, progress: Progress) -> Self {
        let remaining = segments.iter().map(|s| s.len() as u64).sum();
        let mut frames = VecDeque::new();
        for mut segment in segments {
            while segment.len() > FRAME_BYTES {
                frames.push_back(segment.split_to(FRAME_BYTES));
            }
            if !segment.is_empty() {
                frames.push_back(segment);
            }
        }
        Self {
            frames,
            remaining,
            progress,
        }
    }
}

impl Body for SegmentedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = self.frames.pop_front();
        if let Some(frame) = &next {
            let n = frame.len() as u64;
            self.remaining -= n;
            self.progress.add(n);
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
}
