//! One uploader per (server, dataset, file name) on a machine.
//!
//! Two processes sending the same name into one dataset would interleave their
//! chunks on the server. Each upload therefore holds an advisory write lock on one
//! byte of a lock file in the state directory, at an offset standing for its
//! [`Key`], for as long as it runs; a second process asking for the same byte is
//! refused at once, and told the holder's pid.
//!
//! Why byte-range (`fcntl`) locks on one file rather than a lock file per upload:
//! creating and removing a file per upload costs more than the upload of a small
//! file on some disks (measured here: about 130 us a file on the local disk,
//! against 4 us for a byte-range lock), and `fcntl` names the holder's pid.
//! Their catches, handled here: they belong to the process (so uploads within one
//! process are kept apart by a set of held keys), and closing any descriptor of
//! the file drops all of the process's locks on it (so each lock file is opened
//! once per process and never closed).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::journal::Key;

/// The lock file's name in the journal directory.
pub(crate) const LOCK_FILE: &str = "uploads.lock";

/// Lock files this process opened, by path: kept open for the life of the
/// process, since closing one would drop every lock the process holds on it.
fn open_files() -> MutexGuard<'static, HashMap<PathBuf, Arc<File>>> {
    static FILES: OnceLock<Mutex<HashMap<PathBuf, Arc<File>>>> = OnceLock::new();
    FILES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// (lock file, offset) pairs locked by this process: `fcntl` never refuses a
/// process its own lock, so a second upload of a name within one process is
/// refused here.
fn held() -> MutexGuard<'static, HashSet<(PathBuf, u64)>> {
    static HELD: OnceLock<Mutex<HashSet<(PathBuf, u64)>>> = OnceLock::new();
    HELD.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The lock file of one state directory.
#[derive(Clone)]
pub(crate) struct NameLocks {
    path: PathBuf,
    file: Arc<File>,
}

/// Who holds a lock that was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    /// Another process, with this pid (`None` if it let go just as we asked).
    Process(Option<u32>),
    /// Another upload in this very process.
    ThisProcess,
}

/// A held lock; dropping it lets the name go.
pub(crate) struct NameLock {
    path: PathBuf,
    file: Arc<File>,
    offset: u64,
}

impl std::fmt::Debug for NameLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NameLock({} @ {})", self.path.display(), self.offset)
    }
}

impl NameLocks {
    /// The lock file in `dir` (created with the directory if needed).
    pub(crate) fn open(dir: &Path) -> io::Result<Self> {
        let path = dir.join(LOCK_FILE);
        let mut files = open_files();
        if let Some(file) = files.get(&path) {
            return Ok(Self {
                path,
                file: Arc::clone(file),
            });
        }
        let file = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)?,
        );
        files.insert(path.clone(), Arc::clone(&file));
        Ok(Self { path, file })
    }

    /// The lock file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the lock of `key` at once, or says who has it.
    pub(crate) fn lock(&self, key: Key) -> Result<NameLock, LockError> {
        let offset = key.lock_offset();
        let mut held = held();
        if held.contains(&(self.path.clone(), offset)) {
            return Err(LockError::Held(Holder::ThisProcess));
        }
        match fcntl_lock(&self.file, libc::F_WRLCK, offset) {
            Ok(()) => {
                held.insert((self.path.clone(), offset));
                Ok(NameLock {
                    path: self.path.clone(),
                    file: Arc::clone(&self.file),
                    offset,
                })
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Err(
                LockError::Held(Holder::Process(holder_pid(&self.file, offset))),
            ),
            Err(e) => Err(LockError::Io(e)),
        }
    }
}

/// Why a lock was not taken.
#[derive(Debug)]
pub(crate) enum LockError {
    Held(Holder),
    Io(io::Error),
}

impl Drop for NameLock {
    fn drop(&mut self) {
        let mut held = held();
        // Unlocking cannot fail on a valid descriptor; if it did, the lock goes
        // with the process anyway.
        let _ = fcntl_lock(&self.file, libc::F_UNLCK, self.offset);
        held.remove(&(self.path.clone(), self.offset));
    }
}

fn range(kind: libc::c_int, offset: u64) -> libc::flock {
    // SAFETY: `flock` is a plain C struct for which all-zero bytes are valid.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = offset as libc::off_t;
    lock.l_len = 1;
    lock
}

/// Sets (or clears) a lock on one byte without waiting.
fn fcntl_lock(file: &File, kind: libc::c_int, offset: u64) -> io::Result<()> {
    let lock = range(kind, offset);
    // SAFETY: the descriptor is open for the life of `file`; F_SETLK reads the
    // `flock` struct, which outlives the call.
    let result = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &lock) };
    if result == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The pid of the process holding the byte at `offset`, if any still does.
fn holder_pid(file: &File, offset: u64) -> Option<u32> {
    let mut lock = range(libc::F_WRLCK, offset);
    // SAFETY: as in `fcntl_lock`; F_GETLK writes into `lock`, which we own.
    let result = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut lock) };
    (result == 0 && lock.l_type != libc::F_UNLCK as libc::c_short && lock.l_pid > 0)
        .then_some(lock.l_pid as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_held_once_per_process_and_let_go_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let locks = NameLocks::open(dir.path()).unwrap();
        let key = Key::of("s", "d", "a.bin");
        let held = locks.lock(key).unwrap();
        // Another handle on the same file (as a second uploader in this process
        // would open): refused, and the first lock survives it.
        let again = NameLocks::open(dir.path()).unwrap();
        assert!(matches!(
            again.lock(key),
            Err(LockError::Held(Holder::ThisProcess))
        ));
        // Another name is free.
        let other = again.lock(Key::of("s", "d", "b.bin")).unwrap();
        drop(held);
        let _back = again.lock(key).unwrap();
        drop(other);
    }
}
