//! Upload sessions: the protocol's state machine, storage, and counters.
//!
//! Everything here is synchronous; the server calls [`Sessions::apply`] on a
//! blocking thread because storage writes are plain file I/O. In a store
//! directory every change is saved (`persist.rs`) before it is answered, and
//! [`Sessions::new`] resumes what the directory's saved state says.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use idb_wire::{DatasetKey, PhaseRequest, VerifyReceipt, validate_filename};
use serde_json::json;
use tokio::sync::watch;

use crate::WriteMode;
use crate::assembly::{Assembly, Conflict};
use crate::faults::{FaultKind, FaultStats, counter_index};
use crate::persist::{self, Key, Mirror, Persist, ReceiptRecord, SessionRecord, capped_log};

/// A reply before it becomes HTTP: a status and a JSON body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: serde_json::Value,
}

impl Reply {
    fn ok(body: serde_json::Value) -> Self {
        Self { status: 200, body }
    }

    pub(crate) fn error(status: u16, error: &str, message: String) -> Self {
        Self {
            status,
            body: json!({ "error": error, "message": message }),
        }
    }

    /// The 500 of an injected fault.
    pub(crate) fn injected(kind: FaultKind, message: String) -> Self {
        Self {
            status: 500,
            body: json!({ "error": "injected_fault", "fault": kind.as_str(), "message": message }),
        }
    }
}

/// Counters over the server's life, for tests and the harness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests answered on the datafile endpoint (any status).
    pub requests: u64,
    /// Transfer calls that stored new bytes.
    pub chunks_accepted: u64,
    /// New bytes stored (retried identical chunks not counted again).
    pub bytes_accepted: u64,
    /// Transfer payload bytes (the `bytechunk` field) received in request bodies,
    /// whatever became of them: accepted, retried, refused (409, 413, 401, 404) or
    /// answered by an injected 500 or 429. Not counted: the part of a body a
    /// `reset` fault reads before it drops the connection, and an urlencoded body
    /// over the size limit (never decoded). `bytes_received - bytes_accepted`
    /// bounds what clients sent in vain, such as a resumed client's re-sends.
    pub bytes_received: u64,
    /// Files verified.
    pub files_verified: u64,
    /// Injected faults, per kind.
    pub faults: FaultStats,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    chunks_accepted: AtomicU64,
    /// `chunks_accepted` for waiters ([`crate::MockServer::wait_for_chunks`]):
    /// updated after each accepted chunk, never decreasing. Receivers only read
    /// it; the sender lives as long as the server.
    pub(crate) chunks: watch::Sender<u64>,
    bytes_accepted: AtomicU64,
    /// See [`Stats::bytes_received`]; `body.rs` counts as the payload arrives.
    pub(crate) bytes_received: AtomicU64,
    files_verified: AtomicU64,
    /// Injected faults, indexed by [`counter_index`].
    faults: [AtomicU64; 5],
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            requests: self.requests.load(Ordering::Relaxed),
            chunks_accepted: self.chunks_accepted.load(Ordering::Relaxed),
            bytes_accepted: self.bytes_accepted.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            files_verified: self.files_verified.load(Ordering::Relaxed),
            faults: FaultStats::from_counts(
                self.faults.each_ref().map(|c| c.load(Ordering::Relaxed)),
            ),
        }
    }

    /// Counts one injected fault.
    pub(crate) fn fault(&self, kind: FaultKind) {
        self.faults[counter_index(kind)].fetch_add(1, Ordering::Relaxed);
    }

    fn accepted(&self, new_bytes: u64) {
        self.bytes_accepted.fetch_add(new_bytes, Ordering::Relaxed);
        let chunks = self.chunks_accepted.fetch_add(1, Ordering::Relaxed) + 1;
        // Two chunks accepted at once may get here in either order: keep the larger.
        self.chunks.send_if_modified(|seen| {
            let newer = chunks > *seen;
            if newer {
                *seen = chunks;
            }
            newer
        });
    }
}

/// The staging directory under the store root.
const INCOMING_DIR: &str = "+incoming";

/// How many bytes of a staged file are read at a time to rebuild its hash.
const RESTORE_BUFFER: usize = 1024 * 1024;

/// One open upload: what was declared and what arrived.
struct Session {
    /// Tells this session from a later one of the same name (see
    /// [`SessionRecord::id`]).
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
    /// Sink mode only: the last accepted chunk, to recognise an identical retry of
    /// it (a client whose 200 was lost sends it again). Holding the `Bytes` costs
    /// one chunk of memory per open session and no extra hashing. In store mode a
    /// retry is compared with the stored bytes instead, at any earlier offset.
    last: Option<(u64, Bytes)>,
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
            None => self
                .last
                .as_ref()
                .is_some_and(|(at, bytes)| *at == offset && bytes == chunk),
        }
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
    pub(crate) counters: Counters,
    /// Saves the state of a store directory; `None` for a sink or a temporary
    /// store (nothing to resume from).
    persist: Option<Persist>,
    /// The id of the next session.
    next_id: AtomicU64,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
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
        let mut sessions = Self {
            root,
            mode,
            open: Mutex::default(),
            done: Mutex::default(),
            counters: Counters::default(),
            persist: None,
            next_id: AtomicU64::new(1),
        };
        let mut warnings = Vec::new();
        if let (true, Some(root)) = (persist, sessions.root.clone()) {
            let mirror = sessions.restore(&root, &mut warnings);
            sessions.persist = Some(Persist::new(root, mirror));
        }
        (sessions, warnings)
    }

    /// Loads the saved state of `root` into these (empty) sessions; returns the
    /// mirror of what was restored.
    fn restore(&mut self, root: &Path, warnings: &mut Vec<String>) -> Mirror {
        let loaded = persist::load(root);
        warnings.extend(loaded.warnings);
        let mut receipts = Vec::new();
        let done = self.done.get_mut().unwrap_or_else(|e| e.into_inner());
        for record in loaded.verified {
            let name = format!("{}/{}", record.dataset, record.filename);
            let valid = valid_names(&record.dataset, &record.filename).and_then(|()| {
                let hex = record.blake3.len() == 64
                    && record
                        .blake3
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                if hex {
                    Ok(())
                } else {
                    Err("its blake3 is not 64 lowercase hex digits".to_owned())
                }
            });
            if let Err(why) = valid {
                warnings.push(format!("ignoring the saved receipt of {name}: {why}"));
                continue;
            }
            if let Some(why) = Self::finish_rename(root, &record.dataset, &record.filename) {
                warnings.push(format!("{name} was verified, but {why}"));
            }
            let key = (record.dataset.clone(), record.filename.clone());
            done.insert(
                key,
                Done {
                    receipt: VerifyReceipt {
                        filename: record.filename.clone(),
                        size: record.size,
                        blake3: record.blake3.clone(),
                    },
                    log: record.accepted.clone(),
                },
            );
            receipts.push(record);
        }
        let mut records = Vec::new();
        if !loaded.sessions.is_empty() && self.mode == WriteMode::Offset {
            warnings.push(format!(
                "{} saved strict-mode upload(s) are not resumed in offset mode; their \
                 clients start over",
                loaded.sessions.len()
            ));
        } else {
            let open = self.open.get_mut().unwrap_or_else(|e| e.into_inner());
            for record in loaded.sessions {
                let key = (record.dataset.clone(), record.filename.clone());
                let name = format!("{}/{}", record.dataset, record.filename);
                if done.contains_key(&key) {
                    warnings.push(format!(
                        "ignoring the saved upload of {name}: it is verified already"
                    ));
                    continue;
                }
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                match Self::resume(root, record, id) {
                    Ok((session, record, note)) => {
                        warnings.extend(note);
                        open.insert(key, Arc::new(Mutex::new(session)));
                        records.push(record);
                    }
                    Err(why) => warnings.push(format!("cannot resume the upload of {name}: {why}")),
                }
            }
        }
        Mirror::new(records, receipts)
    }

    /// A verified file whose receipt was saved but whose move out of the staging
    /// directory did not happen (the server stopped between the two): moves it
    /// now. Returns why the file is not in place, if it is not.
    fn finish_rename(root: &Path, dataset: &str, filename: &str) -> Option<String> {
        let dir = root.join(dataset);
        let stored = dir.join(filename);
        if stored.exists() {
            return None;
        }
        let staged = Self::incoming_path(root, dataset, filename);
        if !staged.exists() {
            return Some(format!("{} is missing", stored.display()));
        }
        match fs::create_dir_all(&dir).and_then(|()| fs::rename(&staged, &stored)) {
            Ok(()) => None,
            Err(e) => Some(format!(
                "it cannot be moved from {} to {}: {e}",
                staged.display(),
                stored.display()
            )),
        }
    }

    /// Rebuilds a strict session from its record and its staged file: the staged
    /// file is trusted over the record when it is shorter (its last bytes never
    /// reached the disk), and cut to the received length when longer (bytes of a
    /// transfer that was never acknowledged). Returns the session, the record as
    /// resumed, and a note when the received length changed.
    fn resume(
        root: &Path,
        mut record: SessionRecord,
        id: u64,
    ) -> Result<(Session, SessionRecord, Option<String>), String> {
        valid_names(&record.dataset, &record.filename)?;
        if record.received > record.declared {
            return Err(format!(
                "it says {} bytes were received of {} declared",
                record.received, record.declared
            ));
        }
        let path = Self::incoming_path(root, &record.dataset, &record.filename);
        let file = path
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| {
                File::options()
                    .create(true)
                    .truncate(false)
                    .read(true)
                    .write(true)
                    .open(&path)
            })
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let on_disk = file
            .metadata()
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .len();
        let mut note = None;
        if on_disk < record.received {
            note = Some(format!(
                "{}/{}: the saved state says {} bytes were received, the staged file holds \
                 {on_disk}; resuming at {on_disk}",
                record.dataset, record.filename, record.received
            ));
            record.received = on_disk;
        } else if on_disk > record.received {
            file.set_len(record.received)
                .map_err(|e| format!("cannot cut {}: {e}", path.display()))?;
        }
        let mut hasher = blake3::Hasher::new();
        let mut buffer = vec![0; RESTORE_BUFFER];
        let mut at = 0;
        while at < record.received {
            let n = (record.received - at).min(RESTORE_BUFFER as u64) as usize;
            file.read_exact_at(&mut buffer[..n], at)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            hasher.update(&buffer[..n]);
            at += n as u64;
        }
        let received = record.received;
        record
            .accepted
            .retain(|&(offset, len)| offset + len <= received);
        record.id = id;
        let session = Session {
            id,
            declared: record.declared,
            file: Some(file),
            log: record.accepted.iter().copied().collect(),
            order: Order::Strict(Strict {
                received,
                hasher,
                last: None,
            }),
        };
        Ok((session, record, note))
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
        Some(self.root.as_ref()?.join(dataset).join(filename))
    }

    /// Where an open upload's bytes are staged until verify. `+` cannot occur in a
    /// dataset key, so this directory never collides with a dataset's files.
    fn incoming_path(root: &Path, dataset: &str, filename: &str) -> PathBuf {
        root.join(INCOMING_DIR).join(dataset).join(filename)
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
                let path = Self::incoming_path(root, &key.0, &key.1);
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
                    if strict.holds(s.file.as_ref(), offset, &chunk) {
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
                    if let Some(file) = &s.file
                        && let Err(e) = file.write_all_at(&chunk, offset)
                    {
                        return Reply::error(500, "storage", format!("cannot store: {e}"));
                    }
                    strict.hasher.update(&chunk);
                    strict.received = end;
                    s.log.push((offset, stored));
                    self.counters.accepted(stored);
                    if s.file.is_none() {
                        strict.last = Some((offset, chunk));
                    }
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
                    let new = match assembly.accept(offset, &chunk, &gaps, file) {
                        Ok(new) => new,
                        Err(e) => {
                            return Reply::error(500, "storage", format!("cannot store: {e}"));
                        }
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
        // the two finishes the move when it starts again (`finish_rename`).
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
            let from = Self::incoming_path(root, &key.0, &key.1);
            let dir = root.join(&key.0);
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
        self.counters.files_verified.fetch_add(1, Ordering::Relaxed);
        Reply::ok(json!(receipt))
    }
}

/// Checks a saved dataset key and file name as a request's would be (the state
/// file is input too: a name must not walk out of the store).
fn valid_names(dataset: &str, filename: &str) -> Result<(), String> {
    DatasetKey::new(dataset).map_err(|e| e.to_string())?;
    validate_filename(filename).map_err(|e| e.to_string())
}
