//! A PATCH body applied to its upload as it streams in: each piece written at
//! its offset and hashed, the whole committed or undone at the end.
//!
//! Nothing is applied unless the body came whole, stayed within the length,
//! and matched its `Upload-Checksum`; the file (opened for this request only)
//! is then cut back to the upload's offset.
//!
//! With [`TusProfile::S3`] the body is then kept or dropped whole, as the
//! service's server (tus-ruby-server's S3 storage) does: it reads the body in
//! parts of the part size, merges a short last piece into the part before it,
//! and uploads each as an S3 part, except that a body shorter than one part
//! that does not end the file (its length known) is not uploaded at all; the
//! answer then counts none of it. S3's own limits follow: at most
//! [`S3_MAX_PARTS`] parts, and completing the object fails (500, for good:
//! every later try fails the same way) when a part before the last is under
//! [`S3_MIN_PART`], which only a body stored while the length was deferred
//! can make.

use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;

use super::answer::TusAnswer;
use super::checksum::Checksum;
use super::headers::{UPLOAD_EXPIRES, UPLOAD_OFFSET};
use super::http_date::http_date;
use super::part_size::{S3_MAX_PARTS, S3_MIN_PART, s3_part_size};
use super::uploads::{Concat, S3Parts, Uploads};
use super::{TUS_MAX_SIZE, TusProfile};
use crate::counters::Counters;
use crate::disk_space::is_full;
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

/// What the s3 profile makes of `stored` bytes taken at the end of `before`,
/// in parts of `part` bytes: the parts after, or why S3 refuses them.
fn s3_parts(before: S3Parts, stored: u64, part: u64, completes: bool) -> Result<S3Parts, String> {
    let mut after = before;
    if stored > 0 {
        // A body of at least one part is cut into whole parts, its short last
        // piece merged into the part before; a shorter one is one part.
        let new = (stored / part).max(1);
        after.count += new;
        if after.count > S3_MAX_PARTS {
            return Err(format!(
                "S3 refused part {}: an object has at most {S3_MAX_PARTS} parts; \
                 nothing of this PATCH was stored",
                S3_MAX_PARTS + 1
            ));
        }
        after.inner_small |= before.last_small;
        after.last_small = stored < S3_MIN_PART;
    }
    if completes && after.inner_small {
        return Err(format!(
            "S3 refused to complete the object: a part before the last is smaller than \
             {S3_MIN_PART} bytes (sent while the length was deferred); this upload can \
             never complete, create a new one"
        ));
    }
    Ok(after)
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
        let keep = patch.keep.unwrap_or(u64::MAX);
        let mut checksum = patch.checksum;
        let checksummed = checksum.is_some();
        let mut hasher = u.hasher.clone();
        // Opened for this PATCH only; an error to open is answered like one
        // to write, after the body.
        let (file, mut write_error) = match u.open_to_write() {
            Ok(file) => (file, None),
            Err(e) => (None, Some(e)),
        };
        let mut taken = 0u64;
        let mut total = 0u64;
        // Room taken on the disk model: given back if the PATCH is undone.
        let mut room = 0u64;
        while let Some(piece) = pieces.next_piece() {
            if let Some(checksum) = checksum.as_mut() {
                checksum.update(&piece);
            }
            total += piece.len() as u64;
            if start.saturating_add(total) > limit || write_error.is_some() {
                continue;
            }
            let take = (keep.saturating_sub(taken)).min(piece.len() as u64) as usize;
            if take == 0 {
                continue;
            }
            let bytes = &piece[..take];
            // In the room of the disk (a sink's too: see `disk_full_after`).
            let written = self.disk.take(take as u64).and_then(|()| {
                room += take as u64;
                match &file {
                    Some(file) => file.write_all_at(bytes, start + taken),
                    None => Ok(()),
                }
            });
            if let Err(e) = written {
                write_error = Some(e);
                continue;
            }
            hasher.update(bytes);
            taken += take as u64;
        }
        let undo = || {
            if let Some(file) = &file {
                let _ = file.set_len(start);
            }
            self.disk.give_back(room);
        };
        if !pieces.complete() {
            undo();
            return None;
        }
        if start.saturating_add(total) > limit {
            undo();
            return Some(TusAnswer::error(
                413,
                format!(
                    "the body ends at byte {}, past the upload's length {limit}",
                    start + total
                ),
            ));
        }
        if let Some(e) = write_error {
            undo();
            if is_full(&e) {
                counters.disk_full();
                return Some(TusAnswer::error(
                    507,
                    format!("cannot store the upload: {e}; nothing of this PATCH was applied"),
                ));
            }
            return Some(TusAnswer::error(
                500,
                format!("cannot store the upload: {e}"),
            ));
        }
        if let Some(checksum) = checksum
            && !checksum.matches()
        {
            undo();
            self.counters
                .checksum_mismatches
                .fetch_add(1, Ordering::Relaxed);
            return Some(TusAnswer::error(
                460,
                "the body does not match its Upload-Checksum; nothing was stored, send it again"
                    .to_owned(),
            ));
        }
        let ends_file = length == Some(start + taken);
        let mut stored = taken;
        let mut parts = u.parts;
        if self.profile == TusProfile::S3 {
            let part = s3_part_size(length);
            // The service's S3 storage uploads no part of a body shorter than
            // a part that does not end the file, and says nothing of it.
            if length.is_some() && taken < part && !ends_file {
                stored = 0;
            }
            parts = match s3_parts(u.parts, stored, part, ends_file) {
                Ok(parts) => parts,
                Err(message) => {
                    undo();
                    return Some(TusAnswer::error(500, message));
                }
            };
        }
        if stored < taken {
            undo();
            self.counters
                .bytes_dropped
                .fetch_add(taken - stored, Ordering::Relaxed);
        }
        u.length = length;
        u.offset = start + stored;
        u.parts = parts;
        // The answer's Upload-Expires moves on for every PATCH (as the
        // service's server says); the upload's life only for stored bytes in
        // the s3 profile (its storage expires by the last part stored).
        u.expires_said = self.expiry_from_now();
        if stored > 0 || self.profile == TusProfile::Plain {
            u.expires = u.expires_said;
        }
        if stored > 0 {
            u.hasher = hasher;
            u.log.push((start, stored));
            counters.accepted(stored);
            self.counters
                .patches_applied
                .fetch_add(1, Ordering::Relaxed);
        }
        // Saved before it is answered. If it cannot be, the upload goes on
        // here as applied, and a server started again on the store cuts it
        // back to the offset last saved: a client told of the failure HEADs
        // the upload and finds one or the other.
        if let Err(e) = self.save(u) {
            return Some(TusAnswer::error(
                500,
                format!("cannot save the upload's state: {e}; HEAD the upload for its offset"),
            ));
        }
        if taken < total && patch.keep.is_some() {
            counters.fault(FaultKind::Truncate);
            return Some(TusAnswer::error(
                500,
                format!(
                    "injected fault: stored the first {stored} of {total} bytes, then failed; \
                     HEAD the upload for its offset"
                ),
            ));
        }
        if checksummed {
            self.counters
                .checksums_matched
                .fetch_add(1, Ordering::Relaxed);
        }
        let mut answer = TusAnswer::new(204).header(UPLOAD_OFFSET, u.offset);
        if !u.complete() {
            answer = answer.header(UPLOAD_EXPIRES, http_date(u.expires_said));
        }
        Some(answer)
    }
}
