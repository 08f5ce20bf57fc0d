//! The state directory, from outside a run: what is unfinished, what was
//! verified, and removing journals that can no longer help.
//!
//! Layout (`UploadConfig::state_dir`): `journal/` holds one journal per
//! unfinished upload and `uploads.lock` (the name locks); `receipts/` one file of
//! receipts per (server, dataset). Runs write them; [`StateDir`] reads them for
//! `idb status` and removes stale journals for `idb clean`, under the same name
//! lock a run holds, so it never removes the journal of an upload in progress.
//! It never prints: it returns what it found and did.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use idb_read::Identity;
use idb_wire::DatasetKey;
use url::Url;

use crate::Error;
use crate::journal::{Entry, Journal, Key, Listed, Loaded, Unreadable, Unusable};
use crate::name_lock::{Holder, LockError, NameLocks};
use crate::receipts::{DamagedReceipts, ReceiptRecord, Receipts};

/// A journal untouched this long is stale: a token lives 3 days, so the upload
/// it describes was made with a token that has expired since.
pub const STALE_AFTER: Duration = Duration::from_secs(3 * 24 * 60 * 60);

/// A state directory (the CLI's `--state-dir`).
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// Which uploads a question is about: any server or dataset when `None`.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Only uploads to this server.
    pub server: Option<Url>,
    /// Only uploads into this dataset.
    pub dataset: Option<DatasetKey>,
}

impl Scope {
    fn covers(&self, server: &str, dataset: &str) -> bool {
        self.server.as_ref().is_none_or(|s| s.as_str() == server)
            && self.dataset.as_ref().is_none_or(|d| d.as_str() == dataset)
    }
}

/// One unfinished upload, from its journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalSummary {
    /// The journal file.
    pub journal: PathBuf,
    /// The server (a normalized URL).
    pub server: String,
    /// The dataset key.
    pub dataset: String,
    /// The file's name in the dataset.
    pub filename: String,
    /// The local file (absolute).
    pub path: PathBuf,
    /// Its size in bytes when the upload began.
    pub size: u64,
    /// Bytes the server had acknowledged when the journal was last written.
    pub acked: u64,
    /// When the journal was last written.
    pub saved_at: SystemTime,
    /// The local file now, compared with what the journal describes.
    pub local: LocalFile,
}

/// The local file of an unfinished upload, now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalFile {
    /// Still the file the journal describes: the same command resumes it.
    Unchanged,
    /// Changed or replaced since (its size, times, or inode differ): a re-run
    /// starts it over.
    Changed,
    /// Only its status changed since (its change time: a `chmod`, a `chown`,
    /// a new link, or a write whose modification time was put back): a re-run
    /// reads again the bytes the server holds, and resumes if they are the
    /// same (else starts over). Not a reason to remove the journal.
    StatusChanged,
    /// Gone.
    Vanished,
    /// Its metadata could not be read, and why.
    Unknown(String),
}

/// The receipts of one dataset on one server ([`StateDir::read_receipts`]).
#[derive(Debug, Clone)]
pub struct ReadReceipts {
    /// The newest receipt per file name, by name.
    pub receipts: Vec<ReceiptRecord>,
    /// The file's lines that could not be read, if any.
    pub damaged: Option<DamagedReceipts>,
}

/// Why a journal is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// The local file is gone.
    FileVanished,
    /// The local file changed since: a re-run starts it over anyway.
    FileChanged,
    /// Not written for longer than the threshold (see [`STALE_AFTER`]).
    Old {
        /// Time since it was last written.
        age: Duration,
    },
}

/// What cleaning did with one stale journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanOutcome {
    /// Removed.
    Removed,
    /// Would be removed (a dry run).
    WouldRemove,
    /// Kept: an idb is uploading that name now (it holds the name's lock).
    InUse {
        /// The process, if known.
        pid: Option<u32>,
    },
    /// Kept: removing it (or locking its name) failed, and why.
    Failed(String),
}

/// A journal file that cannot be used ([`StateDir::unusable_journals`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnusableJournal {
    /// The journal file.
    pub journal: PathBuf,
    /// Why, for people, naming the file (as a run says it).
    pub reason: String,
    /// Damaged (not JSON, cut short, fields missing, or saying what cannot
    /// be): it can never help a resume, and [`StateDir::clean_damaged`]
    /// removes it. Otherwise (another version, too large for this idb, or
    /// unreadable now) it is kept.
    pub damaged: bool,
}

/// One damaged journal and what cleaning did with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanedDamaged {
    /// The journal.
    pub journal: UnusableJournal,
    /// What was done.
    pub outcome: CleanOutcome,
}

/// One stale journal and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleaned {
    /// The journal.
    pub journal: JournalSummary,
    /// Why it is stale.
    pub why: Stale,
    /// What was done.
    pub outcome: CleanOutcome,
}

impl StateDir {
    /// The state directory at `root` (nothing is created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the journals and the name lock file are.
    pub fn journal_dir(&self) -> PathBuf {
        self.root.join("journal")
    }

    /// Where the receipts are.
    pub fn receipts_dir(&self) -> PathBuf {
        self.root.join("receipts")
    }

    pub(crate) fn journal(&self) -> Journal {
        Journal::new(self.journal_dir())
    }

    pub(crate) fn receipt_store(&self) -> Receipts {
        Receipts::new(self.receipts_dir())
    }

    fn unreadable(&self, dir: PathBuf) -> impl FnOnce(std::io::Error) -> Error {
        move |reason| Error::StateDir { dir, reason }
    }

    /// Every journal file, and what reading it found (`Err`: why it cannot be used).
    fn listed_journals(&self) -> Result<Listed, Error> {
        self.journal()
            .list()
            .map_err(self.unreadable(self.journal_dir()))
    }

    /// The name locks a run holds, taken before a journal is removed.
    fn name_locks(&self) -> Result<NameLocks, Error> {
        NameLocks::open(&self.journal_dir()).map_err(self.unreadable(self.journal_dir()))
    }

    /// The unfinished uploads in `scope`, by journal file. Journals that cannot
    /// be read are left out (a run reports and replaces them).
    pub fn unfinished(&self, scope: &Scope) -> Result<Vec<JournalSummary>, Error> {
        Ok(self
            .listed_journals()?
            .into_iter()
            .filter_map(|(file, read)| read.ok().map(|entry| (file, entry)))
            .filter(|(_, entry)| scope.covers(&entry.server, &entry.dataset))
            .map(|(file, entry)| summarize(file, &entry))
            .collect())
    }

    /// The journal files that cannot be used, of every server and dataset (a
    /// damaged journal cannot say whose it was). A run that meets one reports
    /// it and replaces it.
    pub fn unusable_journals(&self) -> Result<Vec<UnusableJournal>, Error> {
        Ok(self
            .listed_journals()?
            .into_iter()
            .filter_map(|(file, read)| {
                let Unusable { reason, damaged } = read.err()?;
                Some(UnusableJournal {
                    journal: file,
                    reason,
                    damaged,
                })
            })
            .collect())
    }

    /// Removes the damaged journals (`dry_run`: only says which), of every
    /// server and dataset: they can never help a resume, and cannot say whose
    /// they were. Each is read again and removed under its name's lock, so one
    /// that a run is replacing now is kept ([`CleanOutcome::InUse`]).
    pub fn clean_damaged(&self, dry_run: bool) -> Result<Vec<CleanedDamaged>, Error> {
        let candidates: Vec<UnusableJournal> = self
            .unusable_journals()?
            .into_iter()
            .filter(|u| u.damaged)
            .collect();
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let locks = self.name_locks()?;
        let mut cleaned = Vec::new();
        for listed in candidates {
            // A file not named as a journal is no upload's: no lock to take.
            let key = listed.journal.file_name().and_then(Key::from_file_name);
            let held = match key.map(|key| locks.lock(key)).transpose() {
                Ok(held) => held,
                Err(refused) => {
                    cleaned.push(CleanedDamaged {
                        journal: listed,
                        outcome: refused_outcome(refused),
                    });
                    continue;
                }
            };
            // Under the lock, as it is now: a run may have replaced it since.
            let Err(Unreadable::Bad(Unusable {
                reason,
                damaged: true,
            })) = crate::journal::read(&listed.journal)
            else {
                continue;
            };
            let outcome = removal(dry_run, || match std::fs::remove_file(&listed.journal) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                done => done,
            });
            drop(held);
            cleaned.push(CleanedDamaged {
                journal: UnusableJournal { reason, ..listed },
                outcome,
            });
        }
        Ok(cleaned)
    }

    /// The file holding the receipts of `dataset` on `server` (one JSON line per
    /// verified upload, appended).
    pub fn receipts_file(&self, server: &Url, dataset: &DatasetKey) -> PathBuf {
        self.receipt_store().file(server.as_str(), dataset.as_str())
    }

    /// The receipts of `dataset` on `server`: the newest per file name, by name.
    pub fn receipts(
        &self,
        server: &Url,
        dataset: &DatasetKey,
    ) -> Result<Vec<ReceiptRecord>, Error> {
        Ok(self.read_receipts(server, dataset)?.receipts)
    }

    /// [`StateDir::receipts`], and the damaged lines of their file, which the
    /// caller should warn of (their receipts are unknown).
    pub fn read_receipts(&self, server: &Url, dataset: &DatasetKey) -> Result<ReadReceipts, Error> {
        let store = self.receipt_store();
        let loaded = store
            .load(server.as_str(), dataset.as_str())
            .map_err(self.unreadable(store.file(server.as_str(), dataset.as_str())))?;
        let mut receipts: Vec<ReceiptRecord> = loaded.newest.into_values().collect();
        receipts.sort_by(|a, b| a.filename.cmp(&b.filename));
        Ok(ReadReceipts {
            receipts,
            damaged: loaded.damaged,
        })
    }

    /// Removes the stale journals in `scope` (`dry_run`: only says which): those
    /// whose local file vanished or changed, and those not written for longer
    /// than `older_than` (normally [`STALE_AFTER`]). Each is looked at again and
    /// removed under its name's lock, so the journal of an upload in progress is
    /// kept ([`CleanOutcome::InUse`]). Receipts are never removed.
    pub fn clean(
        &self,
        scope: &Scope,
        older_than: Duration,
        dry_run: bool,
    ) -> Result<Vec<Cleaned>, Error> {
        let journal = self.journal();
        let candidates: Vec<(Entry, JournalSummary, Stale)> = self
            .listed_journals()?
            .into_iter()
            .filter_map(|(file, read)| read.ok().map(|entry| (file, entry)))
            .filter(|(_, entry)| scope.covers(&entry.server, &entry.dataset))
            .filter_map(|(file, entry)| {
                let summary = summarize(file, &entry);
                let why = stale(&summary, older_than)?;
                Some((entry, summary, why))
            })
            .collect();
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let locks = self.name_locks()?;
        let mut cleaned = Vec::new();
        for (listed, listed_summary, listed_why) in candidates {
            let key = listed.key();
            let held = match locks.lock(key) {
                Ok(lock) => lock,
                Err(refused) => {
                    cleaned.push(Cleaned {
                        journal: listed_summary,
                        why: listed_why,
                        outcome: refused_outcome(refused),
                    });
                    continue;
                }
            };
            // Under the lock, as it is now: a run may have rewritten or removed
            // it since it was listed.
            let Loaded::Found(entry) =
                journal.load(&listed.server, &listed.dataset, &listed.filename)
            else {
                continue;
            };
            let summary = summarize(listed_summary.journal, &entry);
            let Some(why) = stale(&summary, older_than) else {
                continue;
            };
            let outcome = removal(dry_run, || journal.remove(key));
            drop(held);
            cleaned.push(Cleaned {
                journal: summary,
                why,
                outcome,
            });
        }
        Ok(cleaned)
    }
}

/// What removing a journal (`remove`, not called when `dry_run`) came to.
fn removal(dry_run: bool, remove: impl FnOnce() -> std::io::Result<()>) -> CleanOutcome {
    if dry_run {
        return CleanOutcome::WouldRemove;
    }
    match remove() {
        Ok(()) => CleanOutcome::Removed,
        Err(e) => CleanOutcome::Failed(e.to_string()),
    }
}

/// What cleaning does with a journal whose name's lock was refused.
fn refused_outcome(refused: LockError) -> CleanOutcome {
    match refused {
        LockError::Held(Holder::Process(pid)) => CleanOutcome::InUse { pid },
        LockError::Held(Holder::ThisProcess) => CleanOutcome::InUse {
            pid: Some(std::process::id()),
        },
        LockError::Io(e) => CleanOutcome::Failed(format!("cannot lock its name: {e}")),
    }
}

/// Creates `dir` (and its parents) if needed, readable by the user only.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if !dir.is_dir() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    }
    Ok(())
}

/// What `entry` (stored in `file`) says, and how its local file is now.
fn summarize(file: PathBuf, entry: &Entry) -> JournalSummary {
    let saved_at = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| SystemTime::now());
    let local = match std::fs::metadata(&entry.path) {
        Ok(meta) if entry.describes(&entry.path, &Identity::of(&meta)) => LocalFile::Unchanged,
        Ok(meta)
            if entry.describes_but_its_change_time(&entry.path, &Identity::of(&meta))
                && crate::resume::prefix_comparable(entry) =>
        {
            LocalFile::StatusChanged
        }
        Ok(_) => LocalFile::Changed,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => LocalFile::Vanished,
        Err(e) => LocalFile::Unknown(e.to_string()),
    };
    JournalSummary {
        journal: file,
        server: entry.server.clone(),
        dataset: entry.dataset.clone(),
        filename: entry.filename.clone(),
        path: entry.path.clone(),
        size: entry.size,
        acked: entry.acked,
        saved_at,
        local,
    }
}

/// Why `journal` is stale, if it is.
fn stale(journal: &JournalSummary, older_than: Duration) -> Option<Stale> {
    match journal.local {
        LocalFile::Vanished => return Some(Stale::FileVanished),
        LocalFile::Changed => return Some(Stale::FileChanged),
        LocalFile::Unchanged | LocalFile::StatusChanged | LocalFile::Unknown(_) => {}
    }
    let age = SystemTime::now()
        .duration_since(journal.saved_at)
        .unwrap_or_default();
    (age > older_than).then_some(Stale::Old { age })
}
