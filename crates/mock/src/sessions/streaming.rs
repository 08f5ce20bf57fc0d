//! A strict transfer whose payload streams in: each piece is checked, written
//! and hashed as it arrives, and the whole is committed or undone at the end.
//!
//! The answer is the one [`Sessions::apply`] gives the same chunk held whole:
//! past the declared size 400, at the expected offset 200, an identical retry
//! 200, any other offset 409 with `expected_offset`. Bytes at the expected
//! offset are written and hashed before the chunk's end is known, so the end
//! decides: a chunk that went past the declared size, or a body that did not
//! come whole (too large, malformed, broken off), puts the hash state back and
//! cuts the staged file back to what was received; nothing else saw the
//! session meanwhile (its name's lock and its own are held throughout).

use std::os::unix::fs::FileExt;

use serde_json::json;

use super::{Key, Order, Sessions, Strict, not_saved};
use crate::lock::lock;
use crate::payload_feed::PayloadPieces;
use crate::reply::Reply;

/// What a streamed chunk is, from its offset.
enum Plan {
    /// At the expected offset: written and hashed as it comes; the hash state
    /// before it, to put back if the chunk is not taken.
    Append(Box<blake3::Hasher>),
    /// Behind it: perhaps a retry of bytes held already, compared as it comes.
    Compare(Retry),
    /// Anything else: 409 (or 400 if it goes past the declared size).
    Refuse,
}

/// The comparison of a chunk behind the expected offset with what is held.
enum Retry {
    /// Store mode: with the staged bytes; `false` once a byte differs or the
    /// chunk runs past what was received.
    Stored(bool),
    /// Sink mode: hashed onto the state before the last chunk
    /// ([`Strict::retry_of_last`]).
    Last(Box<blake3::Hasher>),
    /// Sink mode, not at the last chunk's offset: cannot be a retry.
    Not,
}

impl Sessions {
    /// Applies one strict transfer of the chunk that `pieces` brings, starting
    /// at `offset`. `None` when the pieces did not come whole: nothing was
    /// changed (the caller answers the body's problem).
    pub(crate) fn stream_transfer(
        &self,
        key: &Key,
        offset: u64,
        mut pieces: PayloadPieces,
    ) -> Option<Reply> {
        let name = self.name(key);
        // Held to the end of the call (see `names`).
        let _one_call_at_a_time = lock(&name);
        let Some(session) = self.session(key) else {
            return pieces.drain().then(|| Self::no_session(key));
        };
        let mut guard = lock(&session);
        let s = &mut *guard;
        let declared = s.declared;
        let Order::Strict(strict) = &mut s.order else {
            // Only a strict server streams; its sessions are all strict.
            pieces.drain();
            return Some(Reply::error(
                500,
                "internal",
                "a streamed chunk reached an offset-mode session".to_owned(),
            ));
        };
        let received = strict.received;
        let mut plan = if offset == received {
            Plan::Append(Box::new(strict.hasher.clone()))
        } else if offset < received && self.identical_retry_ok {
            Plan::Compare(match &s.file {
                Some(_) => Retry::Stored(true),
                None => strict.retry_of_last(offset).map_or(Retry::Not, Retry::Last),
            })
        } else {
            Plan::Refuse
        };
        // Bytes of the chunk so far; whether they went past the declared size;
        // a failed write. Past either, the rest is only counted.
        let mut len = 0u64;
        // (An empty chunk past the end is past it too.)
        let mut past_end = offset > declared;
        let mut write_error = None;
        // Room taken on the disk model for this chunk: given back if it is not
        // kept after all.
        let mut room = 0u64;
        // Store mode, for comparing a retry: reused for every piece.
        let mut stored = Vec::new();
        while let Some(piece) = pieces.next_piece() {
            let at = offset + len;
            len += piece.len() as u64;
            past_end |= offset.saturating_add(len) > declared;
            if past_end || write_error.is_some() {
                continue;
            }
            match &mut plan {
                Plan::Append(_) => {
                    // In the room of the disk (sink mode too: see
                    // `disk_full_after`).
                    let written = self.disk.take(piece.len() as u64).and_then(|()| {
                        room += piece.len() as u64;
                        match &s.file {
                            Some(file) => file.write_all_at(&piece, at),
                            None => Ok(()),
                        }
                    });
                    if let Err(e) = written {
                        write_error = Some(e);
                        continue;
                    }
                    strict.hasher.update(&piece);
                }
                Plan::Compare(Retry::Stored(same)) => {
                    *same = *same
                        && offset + len <= received
                        && s.file.as_ref().is_some_and(|file| {
                            stored.resize(piece.len(), 0);
                            file.read_exact_at(&mut stored, at).is_ok() && stored == piece[..]
                        });
                }
                Plan::Compare(Retry::Last(hasher)) => {
                    hasher.update(&piece);
                }
                Plan::Compare(Retry::Not) | Plan::Refuse => {}
            }
        }
        let end = offset.saturating_add(len);
        let taken = pieces.complete() && !past_end && write_error.is_none();
        if let Plan::Append(before) = &plan
            && !taken
        {
            undo(strict, before, s.file.as_ref());
            self.disk.give_back(room);
        }
        if !pieces.complete() {
            return None;
        }
        if past_end {
            return Some(Reply::error(
                400,
                "past_end",
                format!("chunk ends at byte {end}, past the declared size {declared}"),
            ));
        }
        if let Some(e) = write_error {
            return Some(self.write_failed(&e));
        }
        let retried = match &plan {
            Plan::Append(before) => {
                strict.received = end;
                if s.file.is_none() {
                    strict.last = Some((offset, before.clone()));
                }
                s.log.push((offset, len));
                self.counters.accepted(len);
                // Saved before it is answered. If the save fails the bytes stay
                // accepted in memory, so the client's retry is an identical one
                // (200) and a later save catches up.
                let id = s.id;
                if let Err(e) = self.save(|m| m.advance(key, id, end, (offset, len))) {
                    return Some(not_saved(&e));
                }
                return Some(Reply::ok(json!({ "received": end })));
            }
            Plan::Compare(Retry::Stored(same)) => *same,
            Plan::Compare(Retry::Last(hashed)) => strict.is_last(end, hashed),
            Plan::Compare(Retry::Not) | Plan::Refuse => false,
        };
        Some(if retried {
            Reply::ok(json!({ "received": received }))
        } else {
            Reply {
                status: 409,
                body: json!({ "expected_offset": received }),
            }
        })
    }
}

/// Puts a strict session back as it was before a chunk it did not take: the
/// hash state, and the staged file cut back to what was received (a failure to
/// cut leaves bytes past it, which the next chunk overwrites and nothing reads).
fn undo(strict: &mut Strict, before: &blake3::Hasher, file: Option<&std::fs::File>) {
    strict.hasher = before.clone();
    if let Some(file) = file {
        let _ = file.set_len(strict.received);
    }
}
