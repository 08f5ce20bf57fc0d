//! Upload sessions: the protocol's state machine and storage.
//!
//! Everything here is synchronous; the server calls [`Sessions::apply`] on a
//! blocking thread because storage writes are plain file I/O. In a store
//! directory every change is saved (`persist.rs`) before it is answered, and
//! [`Sessions::new`] resumes what the directory's saved state says
//! (`restore.rs`).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use idb_wire::{PhaseRequest, VerifyReceipt, WriteMode};
use serde_json::json;

use crate::assembly::{Assembly, Conflict};
use crate::counters::Counters;
use crate::disk_space::{DiskSpace, is_full, write_failed};
use crate::faults::FaultKind;
use crate::layout::{dataset_dir, incoming_path};
use crate::lock::lock;
use crate::persist::{Key, Mirror, Persist, ReceiptRecord, capped_log};
use crate::reply::Reply;
use crate::restore::restore;

mod register;
mod streaming;

/// One open upload: what was declared and what arrived.
struct Session {
    /// Tells this session from a later one of the same name (see
    /// [`crate::persist::SessionRecord::id`]).
    id: u64,
    declared: u64,
    /// `None` in sink mode.
    file: Option<File>,
    /// `(offset, len)` of every transfer that stored new bytes, in the order
    /// accepted (identical retries are not logged).
    log: Vec<(u64, u64)>,
    order: Order,
}

/// How a session takes its chunks.
enum Order {
    Strict(Strict),
    Offset(Assembly),
}

/// Strict mode: bytes arrive in order.
struct Strict {
    received: u64,
    hasher: blake3::Hasher,
    /// Sink mode only: where the last accepted chunk starts and the hash state
    /// before it, to recognise an identical retry of it (a client whose 200
    /// was lost sends it again): the retry, hashed onto that state, must give
    /// the hash of everything received. It costs a copy of the hash state per
    /// chunk (about 2 KiB) and hashing only when a retry comes, and holds none
    /// of the chunk. In store mode a retry is compared with the stored bytes
    /// instead, at any earlier offset.
    last: Option<(u64, Box<blake3::Hasher>)>,
}

impl Strict {
    /// Whether `chunk` at `offset` is exactly what this session already holds there
    /// (an idempotent retry).
    fn holds(&self, file: Option<&File>, offset: u64, chunk: &Bytes) -> bool {
        let end = offset + chunk.len() as u64;
        if end > self.received {
            return false;
        }
        match file {
            Some(file) => {
                let mut stored = vec![0; chunk.len()];
                file.read_exact_at(&mut stored, offset).is_ok() && stored == chunk[..]
            }
            None => self.retry_of_last(offset).is_some_and(|mut before| {
                before.update(chunk);
                self.is_last(offset + chunk.len() as u64, &before)
            }),
        }
    }

    /// Sink mode: the hash state before the last chunk, if it starts at
    /// `offset`: a retry of it is hashed onto this, then checked with
    /// [`Strict::is_last`].
    fn retry_of_last(&self, offset: u64) -> Option<Box<blake3::Hasher>> {
        self.last
            .as_ref()
            .filter(|(at, _)| *at == offset)
            .map(|(_, before)| before.clone())
    }

    /// Sink mode: whether a retry ending at `end`, hashed onto the state
    /// [`Strict::retry_of_last`] gave, repeats the last chunk.
    fn is_last(&self, end: u64, hashed: &blake3::Hasher) -> bool {
        end == self.received && hashed.finalize() == self.hasher.finalize()
    }
}

impl Session {
    /// Bytes in the contiguous prefix from 0 (all bytes received, in strict mode).
    fn received(&self) -> u64 {
        match &self.order {
            Order::Strict(s) => s.received,
            Order::Offset(a) => a.prefix(),
        }
    }

    fn hash(&self) -> blake3::Hash {
        match &self.order {
            Order::Strict(s) => s.hasher.finalize(),
            Order::Offset(a) => a.hash(),
        }
    }
}

/// A verified file: its receipt and the log of its transfers.
struct Done {
    receipt: VerifyReceipt,
    log: Vec<(u64, u64)>,
}

/// All sessions of all datasets, and where their bytes go.
pub(crate) struct Sessions {
    /// `None`: sink mode.
    root: Option<PathBuf>,
    mode: WriteMode,
    /// Open uploads. The map lock is held only to find or replace a session; the
    /// session's own lock is held while its chunk is checked, written and hashed,
    /// so different files proceed in parallel and one file's chunks are applied
    /// one at a time (in offset mode too: their bodies still arrive concurrently).
    open: Mutex<HashMap<Key, Arc<Mutex<Session>>>>,
    /// Verified files, so a second setup of the name is refused, a repeated
    /// verify gets the same receipt, and the transfer log outlives the session.
    done: Mutex<HashMap<Key, Done>>,
    /// One lock per name ever called, held by [`Sessions::apply`] for the whole
    /// of a call: the calls on one (dataset, file name) are applied one at a
    /// time, in any mix of phases, while different names go on in parallel.
    /// Without it two verifies of one upload both moved its staged file (the
    /// second answered 500), and a setup could truncate the staged bytes of a
    /// verify in progress. Bounds nothing but that; an entry lives as long as
    /// the server (as `done` does), a few dozen bytes a name.
    names: Mutex<HashMap<Key, Arc<Mutex<()>>>>,
    pub(crate) counters: Counters,
    /// Saves the state of a store directory; `None` for a sink or a temporary
    /// store (nothing to resume from).
    persist: Option<Persist>,
    /// The id of the next session.
    next_id: AtomicU64,
    /// Whether a strict transfer identical to bytes already stored is answered
    /// 200 (the mock contract's idempotent retry). `false` with
    /// [`crate::MockConfig::plain_errors`]: such a chunk gets the 409 of any
    /// other offset mismatch, as a server that knows only its offset would.
    identical_retry_ok: bool,
    /// Room for payload bytes (unlimited unless
    /// [`crate::MockConfig::disk_full_after`] is set).
    disk: Arc<DiskSpace>,
    /// How many datafiles each name registered more than once by protocol 2
    /// has (`sessions/register.rs`); an entry per such name, for the
    /// server's life.
    extra_datafiles: Mutex<HashMap<Key, u64>>,
}

/// The 500 of a change that could not be saved.
fn not_saved(e: &io::Error) -> Reply {
    Reply::error(500, "storage", format!("cannot save the server state: {e}"))
}

impl Sessions {
    /// Sessions storing into `root` (`None`: a sink). With `persist`, the state of
    /// `root` is loaded (strict sessions resume, receipts are kept) and every
    /// change is saved; returns what could not be loaded, for people.
    pub(crate) fn new(
        root: Option<PathBuf>,
        mode: WriteMode,
        persist: bool,
    ) -> (Self, Vec<String>) {
        let next_id = AtomicU64::new(1);
        let mut open = HashMap::new();
        let mut done = HashMap::new();
        let mut saver = None;
        let mut warnings = Vec::new();
        if let (true, Some(root)) = (persist, &root) {
            let restored = restore(root, mode, &next_id);
            for verified in restored.verified {
                let (receipt, log) = (verified.receipt, verified.log);
                done.insert(verified.key, Done { receipt, log });
            }
            for upload in restored.resumed {
                let session = Session {
                    id: upload.id,
                    declared: upload.declared,
                    file: Some(upload.file),
                    log: upload.log,
                    order: Order::Strict(Strict {
                        received: upload.received,
                        hasher: upload.hasher,
                        last: None,
                    }),
                };
                open.insert(upload.key, Arc::new(Mutex::new(session)));
            }
            warnings = restored.warnings;
            saver = Some(Persist::new(root.clone(), restored.mirror));
        }
        let sessions = Self {
            root,
            mode,
            open: Mutex::new(open),
            done: Mutex::new(done),
            names: Mutex::default(),
            counters: Counters::default(),
            persist: saver,
            next_id,
            identical_retry_ok: true,
            disk: Arc::default(),
            extra_datafiles: Mutex::default(),
        };
        (sessions, warnings)
    }

    /// Answers an identical retried chunk with the 409 of any offset mismatch
    /// instead of 200 (see `identical_retry_ok`).
    pub(crate) fn refuse_identical_retries(mut self) -> Self {
        self.identical_retry_ok = false;
        self
    }

    /// Fills the disk after `bytes` payload bytes (see `disk_space.rs`).
    pub(crate) fn disk_full_after(mut self, bytes: u64) -> Self {
        self.disk = Arc::new(DiskSpace::with_capacity(bytes));
        self
    }

    /// The disk payload is written to, shared with the tus uploads.
    pub(crate) fn disk(&self) -> Arc<DiskSpace> {
        Arc::clone(&self.disk)
    }

    /// Writes payload `bytes` at `offset` of `file` (none in sink mode), in
    /// the room of the disk; the answer to a failed write.
    fn write_payload(&self, file: Option<&File>, bytes: &[u8], offset: u64) -> Result<(), Reply> {
        let written = self
            .disk
            .take(bytes.len() as u64)
            .and_then(|()| match file {
                Some(file) => file.write_all_at(bytes, offset),
                None => Ok(()),
            });
        written.map_err(|e| self.write_failed(&e))
    }

    /// The answer to a failed write of payload, counted if the disk is full.
    fn write_failed(&self, e: &io::Error) -> Reply {
        if is_full(e) {
            self.counters.disk_full();
        }
        write_failed(e)
    }

    /// Records `change` and saves it (nothing without persistence).
    fn save<R>(&self, change: impl FnOnce(&mut Mirror) -> R) -> io::Result<Option<R>> {
        let Some(persist) = &self.persist else {
            return Ok(None);
        };
        let (generation, result) = persist.record(change);
        persist.flush(generation)?;
        Ok(Some(result))
    }

    /// Where a verified file lives (store mode only).
    pub(crate) fn final_path(&self, dataset: &str, filename: &str) -> Option<PathBuf> {
        Some(dataset_dir(self.root.as_ref()?, dataset).join(filename))
    }

    pub(crate) fn receipt(&self, dataset: &str, filename: &str) -> Option<VerifyReceipt> {
        lock(&self.done)
            .get(&(dataset.to_owned(), filename.to_owned()))
            .map(|done| done.receipt.clone())
    }

    /// `(offset, len)` of the transfers of a file that stored new bytes, in order:
    /// of the open session, else of the verified file, else none.
    pub(crate) fn accepted(&self, dataset: &str, filename: &str) -> Vec<(u64, u64)> {
        let key = (dataset.to_owned(), filename.to_owned());
        // A verified name never gets a new session, so `done` wins.
        if let Some(done) = lock(&self.done).get(&key) {
            return done.log.clone();
        }
        match self.session(&key) {
            Some(session) => lock(&session).log.clone(),
            None => Vec::new(),
        }
    }

    /// Applies one validated call for `dataset`. With `truncate`, a transfer that
    /// would succeed stores only the first half of its chunk and is answered 500
    /// (the injected fault, counted here).
    pub(crate) fn apply(&self, dataset: &str, request: PhaseRequest, truncate: bool) -> Reply {
        let key = (dataset.to_owned(), request.filename().to_owned());
        let name = self.name(&key);
        // Held to the end of the call (see `names`).
        let _one_call_at_a_time = lock(&name);
        match request {
            PhaseRequest::Setup { filesize, .. } => self.setup(key, filesize),
            PhaseRequest::Transfer {
                previous_size,
                chunk,
                ..
            } => self.transfer(&key, previous_size, chunk, truncate),
            PhaseRequest::Verify { .. } => self.verify(key),
        }
    }

    /// The lock of one name (see `names`).
    fn name(&self, key: &Key) -> Arc<Mutex<()>> {
        Arc::clone(lock(&self.names).entry(key.clone()).or_default())
    }

    fn setup(&self, key: Key, declared: u64) -> Reply {
        if lock(&self.done).contains_key(&key) {
            return Reply::error(
                409,
                "already_exists",
                format!(
                    "{} is already in dataset {}; delete it there first",
                    key.1, key.0
                ),
            );
        }
        let file = match &self.root {
            None => None,
            Some(root) => {
                let path = incoming_path(root, &key.0, &key.1);
                let created = path
                    .parent()
                    .map_or(Ok(()), fs::create_dir_all)
                    .and_then(|()| {
                        File::options()
                            .create(true)
                            .write(true)
                            .read(true)
                            .truncate(true)
                            .open(&path)
                    });
                match created {
                    Ok(file) => Some(file),
                    Err(e) => return Reply::error(500, "storage", format!("cannot store: {e}")),
                }
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let order = match self.mode {
            WriteMode::Strict => Order::Strict(Strict {
                received: 0,
                hasher: blake3::Hasher::new(),
                last: None,
            }),
            WriteMode::Offset => Order::Offset(Assembly::new(file.is_none())),
        };
        let session = Session {
            id,
            declared,
            file,
            log: Vec::new(),
            order,
        };
        // A setup for a name whose session is still open resets it. The saved
        // state follows the map in the same order (both under the map's lock);
        // offset sessions are not saved.
        let generation = {
            let mut open = lock(&self.open);
            open.insert(key.clone(), Arc::new(Mutex::new(session)));
            match (&self.persist, self.mode) {
                (Some(persist), WriteMode::Strict) => {
                    Some(persist.record(|m| m.open(&key, id, declared)).0)
                }
                _ => None,
            }
        };
        if let (Some(persist), Some(generation)) = (&self.persist, generation)
            && let Err(e) = persist.flush(generation)
        {
            return not_saved(&e);
        }
        Reply::ok(json!({ "filename": key.1, "filesize": declared }))
    }

    fn session(&self, key: &Key) -> Option<Arc<Mutex<Session>>> {
        lock(&self.open).get(key).cloned()
    }

    fn no_session(key: &Key) -> Reply {
        Reply::error(
            409,
            "no_session",
            format!(
                "no upload of {} is open in dataset {}; send phase=setup first",
                key.1, key.0
            ),
        )
    }

    fn transfer(&self, key: &Key, offset: u64, chunk: Bytes, truncate: bool) -> Reply {
        let Some(session) = self.session(key) else {
            return Self::no_session(key);
        };
        let mut guard = lock(&session);
        let s = &mut *guard;
        let len = chunk.len() as u64;
        let end = offset.saturating_add(len);
        if end > s.declared {
            return Reply::error(
                400,
                "past_end",
                format!(
                    "chunk ends at byte {end}, past the declared size {}",
                    s.declared
                ),
            );
        }
        // A truncated transfer keeps the first half of its chunk (at least one
        // byte of a chunk of two or more), as if that were the whole chunk.
        let cut = |chunk: &Bytes| chunk.slice(..chunk.len() / 2);
        match &mut s.order {
            Order::Strict(strict) => {
                if offset != strict.received {
                    if self.identical_retry_ok && strict.holds(s.file.as_ref(), offset, &chunk) {
                        if truncate {
                            // Its first half is there already: nothing new to keep.
                            return self.truncated(len / 2, len);
                        }
                        return Reply::ok(json!({ "received": strict.received }));
                    }
                    return Reply {
                        status: 409,
                        body: json!({ "expected_offset": strict.received }),
                    };
                }
                let chunk = if truncate { cut(&chunk) } else { chunk };
                let stored = chunk.len() as u64;
                let end = offset + stored;
                // A truncated zero-length piece stores nothing at all.
                if !(truncate && stored == 0) {
                    if let Err(refused) = self.write_payload(s.file.as_ref(), &chunk, offset) {
                        return refused;
                    }
                    let before = s.file.is_none().then(|| Box::new(strict.hasher.clone()));
                    strict.hasher.update(&chunk);
                    strict.received = end;
                    s.log.push((offset, stored));
                    self.counters.accepted(stored);
                    strict.last = before.map(|before| (offset, before));
                    // Saved before it is answered. If the save fails the bytes
                    // stay accepted in memory, so the client's retry is an
                    // identical one (200) and a later save catches up.
                    let id = s.id;
                    if let Err(e) = self.save(|m| m.advance(key, id, end, (offset, stored))) {
                        return not_saved(&e);
                    }
                }
                if truncate {
                    return self.truncated(stored, len);
                }
                Reply::ok(json!({ "received": end }))
            }
            Order::Offset(assembly) => {
                let file = s.file.as_ref();
                let gaps = match assembly.check(offset, &chunk, file) {
                    Ok(gaps) => gaps,
                    Err(conflict) => return Self::conflict(key, offset, end, conflict),
                };
                let (chunk, gaps) = if truncate {
                    let part = cut(&chunk);
                    // A subset of a chunk that matched matches too.
                    match assembly.check(offset, &part, file) {
                        Ok(gaps) => (part, gaps),
                        Err(conflict) => return Self::conflict(key, offset, end, conflict),
                    }
                } else {
                    (chunk, gaps)
                };
                let stored = chunk.len() as u64;
                if !gaps.is_empty() {
                    let room = gaps.iter().map(|gap| gap.end - gap.start).sum();
                    let written = self
                        .disk
                        .take(room)
                        .and_then(|()| assembly.accept(offset, &chunk, &gaps, file));
                    let new = match written {
                        Ok(new) => new,
                        Err(e) => return self.write_failed(&e),
                    };
                    s.log.push((offset, stored));
                    self.counters.accepted(new);
                }
                if truncate {
                    return self.truncated(stored, len);
                }
                Reply::ok(json!({ "received": assembly.prefix() }))
            }
        }
    }

    /// The answer of a truncated transfer: `stored` of `len` bytes were kept.
    fn truncated(&self, stored: u64, len: u64) -> Reply {
        self.counters.fault(FaultKind::Truncate);
        Reply::injected(
            FaultKind::Truncate,
            format!("injected fault: stored the first {stored} of {len} bytes, then failed"),
        )
    }

    /// The 409 of an offset-mode chunk that disagrees with accepted bytes.
    fn conflict(key: &Key, offset: u64, end: u64, conflict: Conflict) -> Reply {
        let message = match conflict {
            Conflict::Differs { at } => format!(
                "bytes {offset}..{end} of {} overlap accepted bytes (from {at}) that differ",
                key.1
            ),
            Conflict::Unverifiable { at } => format!(
                "bytes {offset}..{end} of {} cover part of the accepted piece at {at}, which \
                 this sink no longer holds to compare; resend that piece whole",
                key.1
            ),
            Conflict::Io(e) => {
                return Reply::error(500, "storage", format!("cannot read back: {e}"));
            }
        };
        Reply::error(409, "overlap", message)
    }

    fn verify(&self, key: Key) -> Reply {
        let Some(session) = self.session(&key) else {
            return match self.receipt(&key.0, &key.1) {
                Some(receipt) => Reply::ok(json!(receipt)),
                None => Self::no_session(&key),
            };
        };
        // The name went into the dataset meanwhile (a tus registration): never
        // replaced by this upload's bytes.
        if lock(&self.done).contains_key(&key) {
            return Reply::error(
                409,
                "already_exists",
                format!(
                    "{} is already in dataset {} (registered while this upload was open); \
                     delete it there first",
                    key.1, key.0
                ),
            );
        }
        let s = lock(&session);
        let received = s.received();
        if received != s.declared {
            return Reply {
                status: 409,
                body: json!({ "received": received, "expected": s.declared }),
            };
        }
        let receipt = VerifyReceipt {
            filename: key.1.clone(),
            size: received,
            blake3: s.hash().to_hex().to_string(),
        };
        // The receipt is saved before the file moves: a server stopped between
        // the two finishes the move when it starts again (`restore.rs`).
        let record = ReceiptRecord {
            dataset: key.0.clone(),
            filename: key.1.clone(),
            size: receipt.size,
            blake3: receipt.blake3.clone(),
            accepted: capped_log(&s.log).into(),
        };
        let replaced = match self.save(|m| m.verify(&key, s.id, record)) {
            Ok(replaced) => replaced,
            Err(e) => return not_saved(&e),
        };
        if let Some(root) = &self.root {
            let from = incoming_path(root, &key.0, &key.1);
            let dir = dataset_dir(root, &key.0);
            if let Err(e) =
                fs::create_dir_all(&dir).and_then(|()| fs::rename(&from, dir.join(&key.1)))
            {
                if let Some(replaced) = replaced {
                    // Not verified after all: the session stays open.
                    let _ = self.save(|m| m.unverify(&key, replaced));
                }
                return Reply::error(500, "storage", format!("cannot store: {e}"));
            }
        }
        // A copy, so `accepted` finds the whole log in one place or the other at
        // every moment (the session is dropped just below).
        let log = s.log.clone();
        lock(&self.done).insert(
            key.clone(),
            Done {
                receipt: receipt.clone(),
                log,
            },
        );
        drop(s);
        // Remove this session only: a setup may have replaced it meanwhile.
        let mut open = lock(&self.open);
        if open
            .get(&key)
            .is_some_and(|current| Arc::ptr_eq(current, &session))
        {
            open.remove(&key);
        }
        drop(open);
        self.counters.verified();
        Reply::ok(json!(receipt))
    }
}
