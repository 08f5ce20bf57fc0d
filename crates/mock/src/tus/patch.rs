//! A PATCH body applied to its upload as it streams in: each piece written at
//! its offset and hashed, the whole committed or undone at the end.
//!
//! Nothing is applied unless the body came whole, stayed within the length,
//! and matched its `Upload-Checksum`; the staged file is then cut back to the
//! upload's offset. With [`TusProfile::S3`] only whole parts of the body are
//! committed (all of it when it ends the file): the hash state at the last
//! part boundary is kept as the body streams, so the dropped tail costs no
//! second pass.

use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;

use super::answer::TusAnswer;
use super::checksum::Checksum;
use super::headers::{UPLOAD_EXPIRES, UPLOAD_OFFSET};
use super::http_date::http_date;
use super::part_size::s3_part_size;
use super::uploads::{Concat, Uploads};
use super::{TUS_MAX_SIZE, TusProfile};
use crate::counters::Counters;
use crate::faults::FaultKind;
use crate::payload_feed::PayloadPieces;

/// A PATCH as its headers make it.
pub(crate) struct Patch {
    pub(crate) id: String,
    /// `Upload-Offset`.
    pub(crate) offset: u64,
    /// `Upload-Length`, which a PATCH may send to end a deferred length.
    pub(crate) length: Option<u64>,
    pub(crate) checksum: Option<Checksum>,
    /// A `truncate` fault: keep only this many bytes of the body, then fail.
    pub(crate) keep: Option<u64>,
}

/// The hashing of the bytes taken, with the state at the last part boundary.
struct Taken {
    /// Bytes of the body taken so far.
    len: u64,
    hasher: blake3::Hasher,
    /// S3 profile: the part size, and the bytes and hash state at the last
    /// whole part.
    part: Option<u64>,
    boundary: (u64, blake3::Hasher),
}

impl Taken {
    fn feed(&mut self, mut bytes: &[u8]) {
        let Some(part) = self.part else {
            self.hasher.update(bytes);
            self.len += bytes.len() as u64;
            return;
        };
        while !bytes.is_empty() {
            let room = part - self.len % part;
            let take = room.min(bytes.len() as u64) as usize;
            self.hasher.update(&bytes[..take]);
            self.len += take as u64;
            bytes = &bytes[take..];
            if self.len.is_multiple_of(part) {
                self.boundary = (self.len, self.hasher.clone());
            }
        }
    }
}

impl Uploads {
    /// Applies `patch` with the body `pieces` brings. `None` when the body did
    /// not come whole: nothing was changed (no one will read an answer).
    pub(crate) fn patch(
        &self,
        patch: Patch,
        mut pieces: PayloadPieces,
        counters: &Counters,
    ) -> Option<TusAnswer> {
        let id = patch.id.as_str();
        let refuse =
            |pieces: &mut PayloadPieces, answer: TusAnswer| pieces.drain().then_some(answer);
        let upload = match self.get(id) {
            Ok(upload) => upload,
            Err(missing) => return refuse(&mut pieces, missing.answer(id)),
        };
        let mut guard = match self.live(id, &upload) {
            Ok(guard) => guard,
            Err(missing) => return refuse(&mut pieces, missing.answer(id)),
        };
        let u = &mut *guard;
        if let Concat::Final(_) = u.concat {
            let answer = TusAnswer::error(
                403,
                format!("upload {id} is the final upload of a concatenation; it takes no PATCH"),
            );
            // Refused under the lock, drained outside it: a long body
            // being thrown away holds up no other call on the upload.
            drop(guard);
            return refuse(&mut pieces, answer);
        }
        // A deferred length given now: set when the PATCH is applied.
        let length = match (patch.length, u.length) {
            (Some(length), None) if length >= u.offset && length <= TUS_MAX_SIZE => Some(length),
            (Some(length), known) if known != Some(length) => {
                let answer = TusAnswer::error(
                    400,
                    format!(
                        "Upload-Length {length} cannot be set on upload {id} (it is {known:?})"
                    ),
                );
                drop(guard);
                return refuse(&mut pieces, answer);
            }
            (_, known) => known,
        };
        let start = u.offset;
        if patch.offset != start {
            let answer = TusAnswer::error(
                409,
                format!(
                    "Upload-Offset {} is not the upload's offset {start}; HEAD it and go on from there",
                    patch.offset
                ),
            )
            .header(UPLOAD_OFFSET, start);
            drop(guard);
            return refuse(&mut pieces, answer);
        }
        let limit = length.unwrap_or(TUS_MAX_SIZE);
        let part = (self.profile == TusProfile::S3).then(|| s3_part_size(length));
        let mut taken = Taken {
            len: 0,
            hasher: u.hasher.clone(),
            part,
            boundary: (0, u.hasher.clone()),
        };
        let keep = patch.keep.unwrap_or(u64::MAX);
        let mut checksum = patch.checksum;
        let mut total = 0u64;
        let mut write_error = None;
        while let Some(piece) = pieces.next_piece() {
            if let Some(checksum) = checksum.as_mut() {
                checksum.update(&piece);
            }
            total += piece.len() as u64;
            if start.saturating_add(total) > limit || write_error.is_some() {
                continue;
            }
            let take = (keep.saturating_sub(taken.len)).min(piece.len() as u64) as usize;
            if take == 0 {
                continue;
            }
            let bytes = &piece[..take];
            if let Some(file) = &u.file
                && let Err(e) = file.write_all_at(bytes, start + taken.len)
            {
                write_error = Some(e);
                continue;
            }
            taken.feed(bytes);
        }
        let undo = |u: &super::uploads::Upload| {
            if let Some(file) = &u.file {
                let _ = file.set_len(start);
            }
        };
        if !pieces.complete() {
            undo(u);
            return None;
        }
        if start.saturating_add(total) > limit {
            undo(u);
            return Some(TusAnswer::error(
                413,
                format!(
                    "the body ends at byte {}, past the upload's length {limit}",
                    start + total
                ),
            ));
        }
        if let Some(e) = write_error {
            undo(u);
            return Some(TusAnswer::error(
                500,
                format!("cannot store the upload: {e}"),
            ));
        }
        if let Some(checksum) = checksum
            && !checksum.matches()
        {
            undo(u);
            self.counters
                .checksum_mismatches
                .fetch_add(1, Ordering::Relaxed);
            return Some(TusAnswer::error(
                460,
                "the body does not match its Upload-Checksum; nothing was stored, send it again"
                    .to_owned(),
            ));
        }
        let ends_file = length == Some(start + taken.len);
        let (stored, hasher) = match part {
            Some(_) if !ends_file => taken.boundary,
            _ => (taken.len, taken.hasher),
        };
        if stored < taken.len {
            // The service's S3 storage drops a short tail without a word.
            if let Some(file) = &u.file {
                let _ = file.set_len(start + stored);
            }
            self.counters
                .bytes_dropped
                .fetch_add(taken.len - stored, Ordering::Relaxed);
        }
        u.length = length;
        u.offset = start + stored;
        u.hasher = hasher;
        u.expires = self.expiry_from_now();
        if stored > 0 {
            u.log.push((start, stored));
            counters.accepted(stored);
            self.counters
                .patches_applied
                .fetch_add(1, Ordering::Relaxed);
        }
        if taken.len < total && patch.keep.is_some() {
            counters.fault(FaultKind::Truncate);
            return Some(TusAnswer::error(
                500,
                format!(
                    "injected fault: stored the first {stored} of {total} bytes, then failed; \
                     HEAD the upload for its offset"
                ),
            ));
        }
        let mut answer = TusAnswer::new(204).header(UPLOAD_OFFSET, u.offset);
        if !u.complete() {
            answer = answer.header(UPLOAD_EXPIRES, http_date(u.expires));
        }
        Some(answer)
    }
}
