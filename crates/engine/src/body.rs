//! A request body made of `Bytes` segments, sent in order without copying them.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// An HTTP body over a [`idb_wire::MultipartBody`]'s segments with an exact size,
/// so the request carries a `Content-Length` (servers behind Rack and the like
/// handle that better than chunked encoding).
pub(crate) struct SegmentedBody {
    segments: VecDeque<Bytes>,
    remaining: u64,
}

impl SegmentedBody {
    pub(crate) fn new(segments: Vec<Bytes>) -> Self {
        let remaining = segments.iter().map(|s| s.len() as u64).sum();
        Self {
            segments: segments.into_iter().filter(|s| !s.is_empty()).collect(),
            remaining,
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
        let next = self.segments.pop_front();
        if let Some(segment) = &next {
            self.remaining -= segment.len() as u64;
        }
        Poll::Ready(next.map(|s| Ok(Frame::data(s))))
    }

    fn is_end_stream(&self) -> bool {
        self.segments.is_empty()
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
    fn yields_segments_in_order_with_exact_size() {
        let mut body = SegmentedBody::new(vec![
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"cde"),
        ]);
        assert_eq!(body.size_hint().exact(), Some(5));
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) {
            out.extend_from_slice(&frame.into_data().unwrap());
            assert_eq!(body.size_hint().exact(), Some(5 - out.len() as u64));
        }
        assert_eq!(out, b"abcde");
        assert!(body.is_end_stream());
    }
}
