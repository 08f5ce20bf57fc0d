//! Handing a transfer's payload, piece by piece as it arrives, from the
//! connection's task to the blocking thread that applies it to its session.
//!
//! The connection's task parses the body and sends each piece of the payload
//! (a slice of the buffer the connection read it into) down a bounded channel; the
//! session's worker, on tokio's blocking pool, writes and hashes each piece and
//! drops it. So a payload is never held whole, its hashing runs on another core
//! than the connection's reading, and a connection whose worker falls behind
//! stops reading its socket (backpressure to the client) instead of queuing
//! bytes. The end is explicit: a feed dropped without [`PayloadFeed::finish`]
//! (the body broke, was too large or malformed, or the request was dropped)
//! tells the worker to undo what it did.

use bytes::Bytes;
use tokio::sync::mpsc;

/// The most pieces of a payload waiting between the connection's task and its
/// worker: 16. A piece is at most what one read of the connection brought
/// (hyper reads at most about 400 KiB at a time), so a request holds at most
/// about 6.4 MiB of its payload in flight, whatever the chunk size.
pub(crate) const PIECES_IN_FLIGHT: usize = 16;

/// One message to the worker.
enum Feed {
    /// The next bytes of the payload, in order.
    Piece(Bytes),
    /// The body was read whole and well-formed: apply the payload.
    End,
}

/// The sending side, held by the connection's task.
pub(crate) struct PayloadFeed {
    /// Bounded by [`PIECES_IN_FLIGHT`]; dropping it without an `End` means
    /// "undo".
    tx: mpsc::Sender<Feed>,
}

/// The receiving side, held by the worker.
pub(crate) struct PayloadPieces {
    rx: mpsc::Receiver<Feed>,
    /// Whether [`Feed::End`] arrived.
    complete: bool,
}

/// A feed and its receiving side.
pub(crate) fn payload_feed() -> (PayloadFeed, PayloadPieces) {
    let (tx, rx) = mpsc::channel(PIECES_IN_FLIGHT);
    (
        PayloadFeed { tx },
        PayloadPieces {
            rx,
            complete: false,
        },
    )
}

impl PayloadFeed {
    /// Hands `piece` to the worker, waiting while [`PIECES_IN_FLIGHT`] are
    /// queued. A worker that is gone (it ended early) drops it.
    pub(crate) async fn send(&self, piece: Bytes) {
        let _ = self.tx.send(Feed::Piece(piece)).await;
    }

    /// Tells the worker the payload is whole: it applies it and answers.
    pub(crate) async fn finish(self) {
        let _ = self.tx.send(Feed::End).await;
    }
}

impl PayloadPieces {
    /// The next piece, or `None` at the end (whole or not: see
    /// [`PayloadPieces::complete`]). Blocks the calling thread: call it on a
    /// blocking thread only.
    pub(crate) fn next_piece(&mut self) -> Option<Bytes> {
        if self.complete {
            return None;
        }
        match self.rx.blocking_recv() {
            Some(Feed::Piece(piece)) => Some(piece),
            Some(Feed::End) => {
                self.complete = true;
                None
            }
            None => None,
        }
    }

    /// After [`PayloadPieces::next_piece`] gave `None`: whether the payload
    /// came whole (apply it) or not (undo).
    pub(crate) fn complete(&self) -> bool {
        self.complete
    }

    /// Reads to the end, dropping the pieces; returns [`PayloadPieces::complete`].
    pub(crate) fn drain(&mut self) -> bool {
        while self.next_piece().is_some() {}
        self.complete
    }
}
