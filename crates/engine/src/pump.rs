//! The pump: one file's chunks from its reader to the server, as one `select!`
//! over the next chunk, the calls in flight and the stop signal, so that no call
//! waits for the reader, the reader for a call, or either for the journal.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use idb_read::{Chunk, Delivery, Reader};
use idb_wire::{Outcome, Phase};

use crate::calls::{Failed, Failure};
use crate::open_file::{FileState, OpenFile};
use crate::protocol::Protocol;
use crate::run::Run;
use crate::stop::{self, StopKind};
use crate::{Error, Event, RestartReason};

/// Growth of the chunk size (over the chunk just acknowledged) that makes the
/// chunks already read ahead at the old size worth dropping.
const REPLAN_GROWTH: u64 = 4;

/// Why a pump ended. Every end but `Failed` comes after the calls in flight
/// finished (or, for a stop from outside, were abandoned).
#[derive(Debug)]
pub(crate) enum PumpEnd {
    /// Every chunk of the plan is acknowledged; the file's hash is complete.
    Done,
    /// The chunk size grew well past the chunks read ahead: read on from the
    /// acknowledged offset at the new size (not a failure; not counted).
    Replan,
    /// The server refused a chunk as too large and the size shrank: go on from
    /// the acknowledged offset.
    Shrink,
    /// The server holds `to` bytes (a 409 named it): go on from there.
    Realign {
        /// The offset the server named (the smallest, if several did).
        to: u64,
    },
    /// Set up again from byte 0, for this reason: the server has no open upload
    /// of this file, or holds fewer bytes than it acknowledged (then every byte it
    /// ends with is one this upload sent).
    StartOver(RestartReason),
    /// The run is stopping.
    Stopped,
    /// The file cannot be uploaded.
    Failed(Error),
}

impl PumpEnd {
    /// Which end wins when two happen before the calls in flight drain.
    fn rank(&self) -> u8 {
        match self {
            PumpEnd::Done | PumpEnd::Replan => 0,
            PumpEnd::Stopped => 1,
            PumpEnd::Shrink => 2,
            PumpEnd::Realign { .. } => 3,
            PumpEnd::StartOver(_) => 4,
            PumpEnd::Failed(_) => 5,
        }
    }
}

/// How one chunk's sending ended.
enum ChunkEnd {
    Acked {
        offset: u64,
        len: u64,
        elapsed: Duration,
    },
    /// 409: the server holds `expected` bytes.
    Realign {
        expected: u64,
        offset: u64,
        len: u64,
        /// An earlier attempt of this chunk may have been applied (its answer was
        /// lost): the server may hold part or all of it.
        uncertain: bool,
    },
    TooLarge {
        len: u64,
    },
    SessionLost,
    Failed(Error),
}

impl<P: Protocol> Run<'_, P> {
    /// Sends the reader's chunks, up to `window` in flight, until the plan is done
    /// or something asks for a restart.
    pub(crate) async fn pump(
        &self,
        f: &OpenFile,
        reader: &Reader,
        window: usize,
        state: &mut FileState,
    ) -> PumpEnd {
        // Chunks being sent. Once an end is decided no new chunk is taken, but
        // the ones in flight are let finish, so what the server holds is known.
        let mut in_flight = FuturesUnordered::new();
        let mut ending: Option<PumpEnd> = None;
        let mut stop = self.stop.watch();
        let mut stop_seen = None;
        // Chunks sent in this pump and not acknowledged yet: offset -> end.
        let mut unanswered = BTreeMap::new();
        loop {
            if in_flight.is_empty()
                && let Some(end) = ending.take()
            {
                return end;
            }
            let taking = ending.is_none() && in_flight.len() < window;
            tokio::select! {
                // A stop first, then answers (they free the window), then reading.
                biased;
                kind = stop::changed(&mut stop, stop_seen) => {
                    stop_seen = Some(kind);
                    match kind {
                        StopKind::Now => return PumpEnd::Stopped,
                        // Let the calls in flight finish; a replan would only
                        // start a reader to stop it.
                        StopKind::Drain => {
                            if matches!(ending, None | Some(PumpEnd::Replan)) {
                                ending = Some(PumpEnd::Stopped);
                            }
                        }
                    }
                }
                Some(end) = in_flight.next(), if !in_flight.is_empty() => {
                    if let Some(end) = self.chunk_ended(f, end, state, &ending, &mut unanswered) {
                        if let PumpEnd::Failed(e) = end {
                            return PumpEnd::Failed(e);
                        }
                        if ending.as_ref().is_none_or(|now| end.rank() >= now.rank()) {
                            ending = Some(merge(ending.take(), end));
                        }
                    }
                }
                delivery = reader.next(), if taking => match delivery {
                    Ok(Delivery::Chunk { chunk, hash_after }) => {
                        if let Some(hash) = hash_after {
                            state.hash = hash;
                        }
                        // After a restart on an offset server, parts of this range
                        // may be acknowledged already: send only what is missing.
                        for piece in state.acked.missing(&chunk) {
                            unanswered.insert(piece.offset, piece.end());
                            in_flight.push(self.send_chunk(f, piece));
                        }
                    }
                    Ok(Delivery::End(hash)) => {
                        state.hash = hash;
                        ending = Some(PumpEnd::Done);
                    }
                    Err(e) => return PumpEnd::Failed(e.into()),
                },
            }
        }
    }

    /// Books a finished chunk; returns the end it asks for, if any.
    fn chunk_ended(
        &self,
        f: &OpenFile,
        end: ChunkEnd,
        state: &mut FileState,
        ending: &Option<PumpEnd>,
        unanswered: &mut BTreeMap<u64, u64>,
    ) -> Option<PumpEnd> {
        match end {
            ChunkEnd::Acked {
                offset,
                len,
                elapsed,
            } => {
                unanswered.remove(&offset);
                let before = state.acked.prefix;
                state.acked.add(offset, len);
                self.sizer.after_chunk(len, elapsed);
                self.emit(Event::ChunkAcked {
                    path: f.path.clone(),
                    offset,
                    len,
                });
                if state.acked.prefix > before {
                    self.record_progress(state);
                }
                // Chunks read ahead at a size far below the new one would each
                // cost a round trip: drop them and read on at the new size.
                let grown = self.sizer.current() >= len.saturating_mul(REPLAN_GROWTH);
                (ending.is_none() && grown).then_some(PumpEnd::Replan)
            }
            ChunkEnd::Realign {
                expected,
                offset,
                len,
                uncertain,
            } => {
                unanswered.remove(&offset);
                // Only bytes this upload sent may be taken as stored. Behind what
                // was acknowledged: the server lost bytes, or someone else reset
                // the upload and sent their own; which, it cannot say, so start
                // over. Ahead: follow it when it ends inside this very chunk whose
                // earlier answer was lost, or exactly where another chunk this
                // upload sent ends (several in flight), or when the journal this
                // upload resumed from may lag the server. Anything else is someone
                // else's bytes.
                if expected < state.acked.prefix {
                    return Some(PumpEnd::StartOver(RestartReason::ServerLostBytes));
                }
                let forward = expected > state.acked.prefix;
                let lost_answer = uncertain && expected > offset && expected <= offset + len;
                let ours = unanswered.values().any(|&end| end == expected);
                let journal_lag = state.acked.from_journal && expected <= f.size;
                if forward && !lost_answer && !ours && !journal_lag {
                    return Some(PumpEnd::Failed(Error::OffsetConflict {
                        path: f.path.clone(),
                        sent: offset,
                        expected,
                    }));
                }
                Some(PumpEnd::Realign { to: expected })
            }
            ChunkEnd::TooLarge { len } => Some(match self.sizer.too_large(len) {
                Ok(()) => PumpEnd::Shrink,
                Err(()) => PumpEnd::Failed(Error::ChunkTooLarge {
                    path: f.path.clone(),
                    len,
                }),
            }),
            ChunkEnd::SessionLost => Some(PumpEnd::StartOver(RestartReason::ServerForgot)),
            ChunkEnd::Failed(e) => Some(PumpEnd::Failed(e)),
        }
    }

    /// Sends one chunk with retries, holding a slot of the run's concurrency
    /// limit (its bytes are already leased from the run's memory by the reader,
    /// and return when this future drops them).
    async fn send_chunk(&self, f: &OpenFile, chunk: Chunk) -> ChunkEnd {
        let len = chunk.bytes.len() as u64;
        let offset = chunk.offset;
        let _slot = self.congestion.acquire().await;
        let result = self
            .retrying(f, Phase::Transfer, offset, || {
                // Retries send the same `Bytes` again: a cheap clone, no re-read.
                self.protocol
                    .send(f.file_ref(), offset, chunk.bytes.clone())
            })
            .await;
        match result {
            Ok(done) => {
                self.congestion.on_success(len, done.elapsed);
                ChunkEnd::Acked {
                    offset,
                    len,
                    elapsed: done.elapsed,
                }
            }
            Err(Failed {
                failure: Failure::Answer(answer),
                uncertain,
            }) => match answer.outcome {
                Outcome::Realign { expected_offset } => ChunkEnd::Realign {
                    expected: expected_offset,
                    offset,
                    len,
                    uncertain,
                },
                Outcome::TooLarge => ChunkEnd::TooLarge { len },
                Outcome::NoSession => ChunkEnd::SessionLost,
                _ => ChunkEnd::Failed(self.refusal(f, Phase::Transfer, offset, len, answer)),
            },
            Err(Failed {
                failure: Failure::Error(e),
                ..
            }) => ChunkEnd::Failed(e),
        }
    }
}

/// Two ends decided before the calls in flight drained: realigns keep the
/// smallest offset (the server holds at least that much, and no more is sure).
fn merge(now: Option<PumpEnd>, new: PumpEnd) -> PumpEnd {
    match (now, new) {
        (Some(PumpEnd::Realign { to: a }), PumpEnd::Realign { to: b }) => {
            PumpEnd::Realign { to: a.min(b) }
        }
        (_, new) => new,
    }
}
