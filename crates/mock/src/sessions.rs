//! Upload sessions: the protocol's state machine, storage, and counters.
//!
//! Everything here is synchronous; the server calls [`Sessions::apply`] on a
//! blocking thread because storage writes are plain file I/O.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use idb_wire::{PhaseRequest, VerifyReceipt};
use serde_json::json;

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

    fn error(status: u16, error: &str, message: String) -> Self {
        Self {
            status,
            body: json!({ "error": error, "message": message }),
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
    /// Files verified.
    pub files_verified: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    chunks_accepted: AtomicU64,
    bytes_accepted: AtomicU64,
    files_verified: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            requests: self.requests.load(Ordering::Relaxed),
            chunks_accepted: self.chunks_accepted.load(Ordering::Relaxed),
            bytes_accepted: self.bytes_accepted.load(Ordering::Relaxed),
            files_verified: self.files_verified.load(Ordering::Relaxed),
        }
    }
}

type Key = (String, String);

/// The staging directory under the store root.
const INCOMING_DIR: &str = "+incoming";

/// One open upload: what was declared and what arrived, in order.
struct Session {
    declared: u64,
    received: u64,
    hasher: blake3::Hasher,
    /// Sink mode only: the last accepted chunk, to recognise an identical retry of
    /// it (a client whose 200 was lost sends it again). Holding the `Bytes` costs
    /// one chunk of memory per open session and no extra hashing. In store mode a
    /// retry is compared with the stored bytes instead, at any earlier offset.
    last: Option<(u64, Bytes)>,
    /// `None` in sink mode.
    file: Option<File>,
}

impl Session {
    /// Whether `chunk` at `offset` is exactly what this session already holds there
    /// (an idempotent retry).
    fn holds(&self, offset: u64, chunk: &Bytes) -> bool {
        let end = offset + chunk.len() as u64;
        if end > self.received {
            return false;
        }
        match &self.file {
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

/// All sessions of all datasets, and where their bytes go.
pub(crate) struct Sessions {
    /// `None`: sink mode.
    root: Option<PathBuf>,
    /// Open uploads. The map lock is held only to find or replace a session; the
    /// session's own lock is held while its chunk is written, so different files
    /// proceed in parallel and one file's chunks are applied one at a time.
    open: Mutex<HashMap<Key, Arc<Mutex<Session>>>>,
    /// Verified files, so a second setup of the name is refused and a repeated
    /// verify gets the same receipt.
    done: Mutex<HashMap<Key, VerifyReceipt>>,
    pub(crate) counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sessions {
    pub(crate) fn new(root: Option<PathBuf>) -> Self {
        Self {
            root,
            open: Mutex::default(),
            done: Mutex::default(),
            counters: Counters::default(),
        }
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
            .cloned()
    }

    /// Applies one validated call for `dataset`.
    pub(crate) fn apply(&self, dataset: &str, request: PhaseRequest) -> Reply {
        let key = (dataset.to_owned(), request.filename().to_owned());
        match request {
            PhaseRequest::Setup { filesize, .. } => self.setup(key, filesize),
            PhaseRequest::Transfer {
                previous_size,
                chunk,
                ..
            } => self.transfer(&key, previous_size, chunk),
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
        let session = Session {
            declared,
            received: 0,
            hasher: blake3::Hasher::new(),
            last: None,
            file,
        };
        // A setup for a name whose session is still open resets it.
        lock(&self.open).insert(key.clone(), Arc::new(Mutex::new(session)));
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

    fn transfer(&self, key: &Key, offset: u64, chunk: Bytes) -> Reply {
        let Some(session) = self.session(key) else {
            return Self::no_session(key);
        };
        let mut s = lock(&session);
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
        if offset != s.received {
            if s.holds(offset, &chunk) {
                return Reply::ok(json!({ "received": s.received }));
            }
            return Reply {
                status: 409,
                body: json!({ "expected_offset": s.received }),
            };
        }
        if let Some(file) = &s.file
            && let Err(e) = file.write_all_at(&chunk, offset)
        {
            return Reply::error(500, "storage", format!("cannot store: {e}"));
        }
        s.hasher.update(&chunk);
        s.received = end;
        if s.file.is_none() {
            s.last = Some((offset, chunk));
        }
        self.counters
            .chunks_accepted
            .fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_accepted
            .fetch_add(len, Ordering::Relaxed);
        Reply::ok(json!({ "received": end }))
    }

    fn verify(&self, key: Key) -> Reply {
        let Some(session) = self.session(&key) else {
            return match self.receipt(&key.0, &key.1) {
                Some(receipt) => Reply::ok(json!(receipt)),
                None => Self::no_session(&key),
            };
        };
        let s = lock(&session);
        if s.received != s.declared {
            return Reply {
                status: 409,
                body: json!({ "received": s.received, "expected": s.declared }),
            };
        }
        if let Some(root) = &self.root {
            let from = Self::incoming_path(root, &key.0, &key.1);
            let dir = root.join(&key.0);
            if let Err(e) =
                fs::create_dir_all(&dir).and_then(|()| fs::rename(&from, dir.join(&key.1)))
            {
                return Reply::error(500, "storage", format!("cannot store: {e}"));
            }
        }
        let receipt = VerifyReceipt {
            filename: key.1.clone(),
            size: s.received,
            blake3: s.hasher.finalize().to_hex().to_string(),
        };
        drop(s);
        lock(&self.done).insert(key.clone(), receipt.clone());
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
