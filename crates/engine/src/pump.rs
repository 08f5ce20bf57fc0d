//! The pump: one file's chunks from its reader to the server, as one `select!`
//! over the next chunk, the calls in flight and the stop signal, so that no call
//! waits for the reader, the reader for a call, or either for the journal.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use idb_read::{Chunk, Delivery, Reader};
use idb_wire::{Outcome, Phase, WriteMode};

use crate::calls::{Failed, Failure};
use crate::client::Answer;
use crate::open_file::{FileState, OpenFile};
use crate::protocol::Protocol;
use crate::run::Run;
use crate::stop::{self, StopKind};
use crate::{Error, Event, RestartReason};

/// Growth of the chunk size (over the chunk just acknowledged) that makes the
/// chunks already read ahead at the old size worth dropping.
pub(crate) const REPLAN_GROWTH: u64 = 4;

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
    /// A chunk's answer was lost, and the server refused it when sent again
    /// without naming an offset: take `offset..to` as received and go on from
    /// `to` (the next answer settles it).
    Guess {
        /// Where the chunk starts.
        offset: u64,
        /// Where it ends.
        to: u64,
        /// The refusal's HTTP status.
        status: u16,
    },
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
            // What the server named beats a guess.
            PumpEnd::Guess { .. } => 3,
            PumpEnd::Realign { .. } => 4,
            PumpEnd::StartOver(_) => 5,
            PumpEnd::Failed(_) => 6,
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
    /// Refused with an answer that has no rule of its own here.
    Refused {
        answer: Answer,
        offset: u64,
        len: u64,
        /// As in [`ChunkEnd::Realign`].
        uncertain: bool,
    },
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
                // A stop that came once every byte was sent and, now, every one
                // acknowledged: without a journal the file is verified within
                // the grace (see `verify_left_to_next_run`), which takes the
                // reader's end, the whole file's hash; it comes right after the
                // last chunk (the stop may merely have been seen first).
                if matches!(end, PumpEnd::Stopped)
                    && self.journal.is_none()
                    && state.acked.prefix == f.size
                {
                    tokio::select! {
                        biased;
                        kind = stop::changed(&mut stop, stop_seen) => {
                            if kind == StopKind::Now {
                                return PumpEnd::Stopped;
                            }
                        }
                        delivery = reader.next() => {
                            if let Ok(Delivery::End(hash)) = delivery {
                                state.hash = hash;
                                return PumpEnd::Done;
                            }
                        }
                    }
                }
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
                // upload resumed from may lag the server: anywhere before the
                // server's first answer; after acknowledgements (a server ahead
                // of the journal takes resumed chunks inside what it holds as
                // identical retries), only inside this very chunk, the one that
                // crosses its end, until the server names an offset. Anything
                // else is someone else's bytes.
                if expected < state.acked.prefix {
                    return Some(PumpEnd::StartOver(RestartReason::ServerLostBytes));
                }
                let forward = expected > state.acked.prefix;
                let lost_answer = uncertain && expected > offset && expected <= offset + len;
                let ours = unanswered.values().any(|&end| end == expected);
                let journal_lag = (state.acked.from_journal && expected <= f.size)
                    || (state.acked.may_lag && expected > offset && expected < offset + len);
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
            ChunkEnd::Refused {
                answer,
                offset,
                len,
                uncertain,
            } => {
                unanswered.remove(&offset);
                Some(self.refused_chunk(f, state, answer, offset, len, uncertain))
            }
            ChunkEnd::Failed(e) => Some(PumpEnd::Failed(e)),
        }
    }

    /// A chunk refused by an answer that [`says_nothing`] (a server whose errors
    /// are web pages), or by one the pump has no rule for (the file fails).
    ///
    /// - A guess being checked is wrong, or cannot be told right: start over.
    /// - A 409 on a strict server after a lost answer: it most likely holds the
    ///   chunk already, and refuses it as the wrong offset. Take it as received
    ///   and let the next answer settle it.
    /// - A resumed upload refused before the server confirmed anything: the
    ///   server has no usable upload of the file (it forgot it, or holds another
    ///   offset it will not name): start over, once (a setup is not a resume).
    fn refused_chunk(
        &self,
        f: &OpenFile,
        state: &FileState,
        answer: Answer,
        offset: u64,
        len: u64,
        uncertain: bool,
    ) -> PumpEnd {
        if says_nothing(&answer) {
            let status = answer.status;
            if state.acked.guessing() {
                return PumpEnd::StartOver(RestartReason::AnswerLostUnconfirmed { status });
            }
            if status == 409
                && uncertain
                && state.mode == WriteMode::Strict
                && offset == state.acked.prefix
            {
                return PumpEnd::Guess {
                    offset,
                    to: offset + len,
                    status,
                };
            }
            if state.acked.from_journal {
                return PumpEnd::StartOver(RestartReason::ResumeRefused { status });
            }
        }
        PumpEnd::Failed(self.refusal(f, Phase::Transfer, offset, len, answer))
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
                ..
            }) => match answer.outcome {
                Outcome::Realign { expected_offset } => ChunkEnd::Realign {
                    expected: expected_offset,
                    offset,
                    len,
                    uncertain,
                },
                Outcome::TooLarge => ChunkEnd::TooLarge { len },
                Outcome::NoSession => ChunkEnd::SessionLost,
                _ => ChunkEnd::Refused {
                    answer,
                    offset,
                    len,
                    uncertain,
                },
            },
            Err(Failed {
                failure: Failure::Error(e),
                ..
            }) => ChunkEnd::Failed(e),
        }
    }
}

/// Whether `answer` refuses a call without saying anything the engine can act
/// on: a 400, 404, 409 or 410 with no offset, no count and no `no_session` (as
/// a server whose errors are web pages answers).
pub(crate) fn says_nothing(answer: &Answer) -> bool {
    matches!(answer.outcome, Outcome::Rejected | Outcome::NotFound)
        && matches!(answer.status, 400 | 404 | 409 | 410)
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
