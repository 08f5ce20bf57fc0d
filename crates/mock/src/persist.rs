//! The state of a store directory, saved in `<store>/+state.json` so a mock that
//! stops (shut down, killed) and starts again on the same store resumes its
//! uploads.
//!
//! What is saved: every open strict-mode session (dataset, file name, declared
//! size, bytes received, the last [`MAX_PERSISTED_LOG`] entries of its accepted
//! log) and every verify receipt (dataset, file name, size, blake3, the last
//! [`MAX_PERSISTED_LOG`] entries of its log). The bytes themselves are not: they
//! are already in the staged file `<store>/+incoming/<dataset>/<name>`, and a
//! restart rebuilds a session's hash from them. Offset-mode sessions are not
//! saved (their held-ahead chunks live in memory only): after a restart their
//! client gets `no_session` and starts that file over.
//!
//! The file is small (bounded per file by the log cap) and rewritten whole on
//! every change, atomically and durably with `atomic-write-file`: a temporary file
//! in the same directory, fsync, rename over, fsync the directory. Nothing
//! proportional to the data is ever rewritten.
//!
//! Changes are first recorded in an in-memory mirror ([`Persist::record`], under
//! the caller's own session lock, so the mirror sees one file's changes in their
//! order), then written ([`Persist::flush`]): a writer that finds a newer state
//! already on disk skips its write, so concurrent files share fsyncs.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use atomic_write_file::AtomicWriteFile;
use serde::{Deserialize, Serialize};

use crate::lock::lock;

/// The state file's name inside the store. `+` cannot occur in a dataset key, so
/// it never collides with a dataset's directory.
pub const STATE_FILE: &str = "+state.json";

/// Where a state file that cannot be used (corrupt, unknown version) is moved, so
/// the next write does not destroy it.
pub(crate) const STATE_SET_ASIDE: &str = "+state.json.bad";

/// The version of the state file this mock writes and reads.
pub const STATE_VERSION: u64 = 1;

/// The most accepted-log entries saved per file (the newest ones): 10000 entries
/// are about 200 KB of JSON, so the state file stays small however many chunks a
/// file had. The in-memory log of a running server is not capped; after a restart
/// [`crate::MockServer::accepted`] shows at most these.
pub const MAX_PERSISTED_LOG: usize = 10_000;

/// `(dataset, filename)`.
pub(crate) type Key = (String, String);

/// One open strict-mode session, as saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    pub(crate) dataset: String,
    pub(crate) filename: String,
    /// The size declared on setup.
    pub(crate) declared: u64,
    /// Bytes received (and acknowledged) so far.
    pub(crate) received: u64,
    /// `(offset, len)` of the newest accepted transfers, oldest first.
    #[serde(default)]
    pub(crate) accepted: VecDeque<(u64, u64)>,
    /// Which in-memory session this record follows: a setup that replaces a
    /// session gets a new id, so a late change of the old one is ignored.
    #[serde(skip)]
    pub(crate) id: u64,
}

/// One verified file, as saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReceiptRecord {
    pub(crate) dataset: String,
    pub(crate) filename: String,
    pub(crate) size: u64,
    /// 64 lowercase hex digits.
    pub(crate) blake3: String,
    /// `(offset, len)` of the newest accepted transfers, oldest first.
    #[serde(default)]
    pub(crate) accepted: Vec<(u64, u64)>,
}

/// The whole file.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u64,
    #[serde(default)]
    sessions: Vec<SessionRecord>,
    #[serde(default)]
    verified: Vec<ReceiptRecord>,
}

/// The last [`MAX_PERSISTED_LOG`] entries of a log.
pub(crate) fn capped_log(log: &[(u64, u64)]) -> VecDeque<(u64, u64)> {
    log[log.len().saturating_sub(MAX_PERSISTED_LOG)..]
        .iter()
        .copied()
        .collect()
}

/// What the state file should say, kept in memory and written whole.
#[derive(Debug, Default)]
pub(crate) struct Mirror {
    /// Bumped by every change.
    generation: u64,
    sessions: BTreeMap<Key, SessionRecord>,
    verified: BTreeMap<Key, ReceiptRecord>,
}

impl Mirror {
    /// A mirror of restored sessions and receipts.
    pub(crate) fn new(sessions: Vec<SessionRecord>, verified: Vec<ReceiptRecord>) -> Self {
        Self {
            generation: 0,
            sessions: sessions
                .into_iter()
                .map(|r| ((r.dataset.clone(), r.filename.clone()), r))
                .collect(),
            verified: verified
                .into_iter()
                .map(|r| ((r.dataset.clone(), r.filename.clone()), r))
                .collect(),
        }
    }

    /// A setup opened (or reset) session `id`.
    pub(crate) fn open(&mut self, key: &Key, id: u64, declared: u64) {
        self.sessions.insert(
            key.clone(),
            SessionRecord {
                dataset: key.0.clone(),
                filename: key.1.clone(),
                declared,
                received: 0,
                accepted: VecDeque::new(),
                id,
            },
        );
    }

    /// Session `id` accepted `(offset, len)` and now holds `received` bytes.
    pub(crate) fn advance(&mut self, key: &Key, id: u64, received: u64, entry: (u64, u64)) {
        if let Some(record) = self.sessions.get_mut(key).filter(|r| r.id == id) {
            record.received = received;
            record.accepted.push_back(entry);
            if record.accepted.len() > MAX_PERSISTED_LOG {
                record.accepted.pop_front();
            }
        }
    }

    /// Session `id` (if it is the saved one) became the verified `receipt`.
    /// Returns the session record it replaced, for [`Mirror::unverify`].
    pub(crate) fn verify(
        &mut self,
        key: &Key,
        id: u64,
        receipt: ReceiptRecord,
    ) -> Option<SessionRecord> {
        let replaced = match self.sessions.get(key) {
            Some(record) if record.id == id => self.sessions.remove(key),
            _ => None,
        };
        self.verified.insert(key.clone(), receipt);
        replaced
    }

    /// Undoes [`Mirror::verify`] (the verify could not complete).
    pub(crate) fn unverify(&mut self, key: &Key, replaced: Option<SessionRecord>) {
        self.verified.remove(key);
        if let Some(record) = replaced {
            self.sessions.insert(key.clone(), record);
        }
    }

    fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct View<'a> {
            version: u64,
            sessions: Vec<&'a SessionRecord>,
            verified: Vec<&'a ReceiptRecord>,
        }
        let view = View {
            version: STATE_VERSION,
            sessions: self.sessions.values().collect(),
            verified: self.verified.values().collect(),
        };
        // Plain strings and integers: serialising cannot fail.
        serde_json::to_vec(&view).unwrap_or_default()
    }
}

/// Saves the state of one store directory.
pub(crate) struct Persist {
    dir: PathBuf,
    /// The state to save. Locked briefly, innermost of all the mock's locks.
    mirror: Mutex<Mirror>,
    /// The generation on disk. Held for the whole write, so writes never
    /// interleave and a writer can tell that a newer state than its own change
    /// is already on disk (then it skips its write).
    written: Mutex<u64>,
}

impl Persist {
    pub(crate) fn new(dir: PathBuf, mirror: Mirror) -> Self {
        let generation = mirror.generation;
        Self {
            dir,
            mirror: Mutex::new(mirror),
            written: Mutex::new(generation),
        }
    }

    /// Applies `change` to the mirror; returns the generation to [`Persist::flush`]
    /// and what `change` returned.
    pub(crate) fn record<R>(&self, change: impl FnOnce(&mut Mirror) -> R) -> (u64, R) {
        let mut mirror = lock(&self.mirror);
        let result = change(&mut mirror);
        mirror.generation += 1;
        (mirror.generation, result)
    }

    /// Makes sure the state of `generation` (or a newer one) is on disk.
    pub(crate) fn flush(&self, generation: u64) -> io::Result<()> {
        let mut written = lock(&self.written);
        if *written >= generation {
            return Ok(());
        }
        let (json, newest) = {
            let mirror = lock(&self.mirror);
            (mirror.to_json(), mirror.generation)
        };
        // Replaced atomically: a reader (or a restart after a crash) sees the
        // old file or the new one, never a mix, and once `commit` returns the new
        // one survives a crash. On Unix `commit` fsyncs the temporary file
        // (`.+state.json.XXXXXX`, same directory), renames it over the state
        // file and fsyncs the directory, so the rename is durable too
        // (atomic-write-file 0.3, `imp/unix`; the mock is Unix-only). A write
        // that fails before `commit` keeps the old file and removes the
        // temporary one.
        let mut file = AtomicWriteFile::open(self.dir.join(STATE_FILE))?;
        file.write_all(&json)?;
        file.commit()?;
        *written = newest;
        Ok(())
    }
}

/// What a store's state file held.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub(crate) sessions: Vec<SessionRecord>,
    pub(crate) verified: Vec<ReceiptRecord>,
    /// Why something was not loaded, for people.
    pub(crate) warnings: Vec<String>,
}

/// Reads `<dir>/+state.json`. No file: nothing, no warning. A file that cannot be
/// used (unreadable, not JSON of the expected shape, another version): nothing,
/// one warning, and the file is moved to `+state.json.bad` so the next write
/// keeps it for inspection. Never panics.
pub(crate) fn load(dir: &Path) -> Loaded {
    let path = dir.join(STATE_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Loaded::default(),
        Err(e) => {
            return Loaded {
                warnings: vec![format!(
                    "cannot read the saved state {}: {e}; starting with no open uploads or \
                     receipts (the file will be replaced on the next change)",
                    path.display()
                )],
                ..Loaded::default()
            };
        }
    };
    let problem = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Err(e) => format!("it is not valid JSON ({e})"),
        Ok(value) => match value.get("version").and_then(serde_json::Value::as_u64) {
            None => "it has no version number".to_owned(),
            Some(STATE_VERSION) => match serde_json::from_value::<StateFile>(value) {
                Ok(state) => {
                    return Loaded {
                        sessions: state.sessions,
                        verified: state.verified,
                        warnings: Vec::new(),
                    };
                }
                Err(e) => format!("it is not a version {STATE_VERSION} state ({e})"),
            },
            Some(other) => {
                format!("it is version {other}, and this mock reads only version {STATE_VERSION}")
            }
        },
    };
    let aside = dir.join(STATE_SET_ASIDE);
    let kept = match fs::rename(&path, &aside) {
        Ok(()) => format!("it was moved to {}", aside.display()),
        Err(e) => format!("it could not be moved aside ({e}) and will be replaced"),
    };
    Loaded {
        warnings: vec![format!(
            "ignoring the saved state {}: {problem}; starting with no open uploads or \
             receipts ({kept})",
            path.display()
        )],
        ..Loaded::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        ("IDB-1".to_owned(), name.to_owned())
    }

    #[test]
    fn the_persisted_log_is_capped_to_the_newest_entries() {
        let mut mirror = Mirror::default();
        mirror.open(&key("a"), 1, u64::MAX);
        for i in 0..(MAX_PERSISTED_LOG as u64 + 5) {
            mirror.advance(&key("a"), 1, i + 1, (i, 1));
        }
        let record = &mirror.sessions[&key("a")];
        assert_eq!(record.accepted.len(), MAX_PERSISTED_LOG);
        assert_eq!(record.accepted.front(), Some(&(5, 1)));
        let log: Vec<_> = (0..20_000).map(|i| (i, 1)).collect();
        assert_eq!(capped_log(&log).len(), MAX_PERSISTED_LOG);
        assert_eq!(capped_log(&log[..3]).len(), 3);
    }

    #[test]
    fn a_replaced_session_cannot_change_the_record() {
        let mut mirror = Mirror::default();
        mirror.open(&key("a"), 1, 100);
        mirror.open(&key("a"), 2, 50);
        mirror.advance(&key("a"), 1, 10, (0, 10));
        assert_eq!(mirror.sessions[&key("a")].received, 0);
        mirror.advance(&key("a"), 2, 10, (0, 10));
        assert_eq!(mirror.sessions[&key("a")].received, 10);
    }

    #[test]
    fn flush_writes_the_newest_state_and_load_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let persist = Persist::new(dir.path().to_owned(), Mirror::default());
        let (first, ()) = persist.record(|m| m.open(&key("a"), 1, 10));
        let (second, ()) = persist.record(|m| m.advance(&key("a"), 1, 4, (0, 4)));
        persist.flush(second).unwrap();
        // The older generation is already covered: no write, no error.
        persist.flush(first).unwrap();
        let loaded = load(dir.path());
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(loaded.sessions.len(), 1);
        assert_eq!(loaded.sessions[0].received, 4);
        assert_eq!(loaded.sessions[0].accepted, [(0, 4)]);
        // No temporary file is left behind: the state file is all there is.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, [STATE_FILE]);
    }

    #[test]
    fn a_corrupt_file_is_set_aside_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(STATE_FILE), b"{\"version\": 1, \"sess").unwrap();
        let loaded = load(dir.path());
        assert!(loaded.sessions.is_empty() && loaded.verified.is_empty());
        assert_eq!(loaded.warnings.len(), 1);
        assert!(dir.path().join(STATE_SET_ASIDE).is_file());
        assert!(!dir.path().join(STATE_FILE).exists());
    }
}
