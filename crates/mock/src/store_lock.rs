//! One server per store directory: an exclusive lock on `<store>/+lock`, held
//! for the server's life, with the holder's pid written in the file.
//!
//! Two servers on one store would overwrite each other's staged bytes, state
//! file and verified files (a verified file was silently replaced). Why
//! `flock` rather than `fcntl` locks: an `fcntl` lock belongs to the process, so
//! a second server in the same process (as tests start them) would be granted
//! it, and closing any descriptor of the file would drop it; a `flock` lock
//! belongs to the open file, so every server's own open conflicts with every
//! other's, in this process or another. The kernel drops it when the process
//! ends, even by SIGKILL, so a killed server never leaves its store locked. (On
//! NFS, Linux maps `flock` onto `fcntl` locks: servers on two hosts still
//! exclude each other, two in one process there do not.)

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::MockError;
use crate::layout::lock_path;

/// The lock on a store directory; dropping it (with the server's state) lets
/// the store go.
pub(crate) struct StoreLock {
    /// Its open file description holds the `flock`; closed on drop.
    _file: File,
}

impl StoreLock {
    /// Locks `store` for this server, or says who holds it
    /// ([`MockError::StoreInUse`]).
    pub(crate) fn acquire(store: &Path) -> Result<Self, MockError> {
        let path = lock_path(store);
        let failed = |source| MockError::Store {
            path: store.to_path_buf(),
            source,
        };
        // std opens with O_CLOEXEC: a child process never inherits the lock.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(failed)?;
        // SAFETY: `flock` takes a descriptor that `file` owns and keeps open for
        // the call; it touches no memory of ours.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(MockError::StoreInUse {
                    path: store.to_path_buf(),
                    pid: holder_pid(&mut file),
                });
            }
            return Err(failed(error));
        }
        // Only now ours to write: the pid, for the next server's message.
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.write_all_at(pid.as_bytes(), 0))
            .map_err(failed)?;
        Ok(Self { _file: file })
    }
}

/// The pid the holder wrote in the lock file (`None` if it has not yet).
fn holder_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}
