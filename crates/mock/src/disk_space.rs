//! The disk-full knob ([`crate::MockConfig::disk_full_after`]): a store with room
//! for so many payload bytes, after which every write of payload fails as the
//! OS's `ENOSPC` would, and how a failed write is answered (507 for a full disk,
//! as a real server would say it, 500 for anything else).
//!
//! The room is counted over the server's life (from its start, not what a store
//! directory held before), across files, in sink mode too (nothing is written
//! there, but the bytes are counted as if they were). A write that does not fit
//! is refused whole (the call is not applied) and the disk is full from then on:
//! a smaller write after it fails too.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::reply::Reply;

/// Room for payload bytes: unlimited, or a capacity.
#[derive(Debug, Default)]
pub(crate) struct DiskSpace {
    /// `None`: the disk never fills.
    capacity: Option<u64>,
    /// Payload bytes written so far (less what was given back).
    used: AtomicU64,
    /// A write was refused: the disk is full for good.
    full: AtomicBool,
}

impl DiskSpace {
    /// A disk that fills after `capacity` payload bytes.
    pub(crate) fn with_capacity(capacity: u64) -> Self {
        Self {
            capacity: Some(capacity),
            used: AtomicU64::new(0),
            full: AtomicBool::new(false),
        }
    }

    /// Takes room for `len` payload bytes about to be written. `Err` (the OS's
    /// `ENOSPC`) if they do not fit: nothing is taken, and the disk is full
    /// from now on. Writing nothing always succeeds.
    pub(crate) fn take(&self, len: u64) -> io::Result<()> {
        let Some(capacity) = self.capacity else {
            return Ok(());
        };
        if len == 0 {
            return Ok(());
        }
        if self.full.load(Ordering::Acquire) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let fits = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(len).filter(|&after| after <= capacity)
            });
        match fits {
            Ok(_) => Ok(()),
            Err(_) => {
                self.full.store(true, Ordering::Release);
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            }
        }
    }

    /// Gives back room taken for bytes that were not kept after all (a streamed
    /// chunk refused or cut off after some of it was written). A full disk
    /// stays full.
    pub(crate) fn give_back(&self, len: u64) {
        if self.capacity.is_some() {
            let _ = self
                .used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    Some(used.saturating_sub(len))
                });
        }
    }
}

/// Whether a failed write failed for lack of room (`ENOSPC`, or `EDQUOT`: over
/// a quota).
pub(crate) fn is_full(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// The answer to a write of payload that failed: 507 Insufficient Storage
/// (`{"error": "insufficient_storage"}`) for a full disk, 500 (`"storage"`)
/// for any other failure; either way the call was not applied.
pub(crate) fn write_failed(error: &io::Error) -> Reply {
    if is_full(error) {
        Reply::error(
            507,
            "insufficient_storage",
            format!("cannot store: {error}; nothing of this call was applied"),
        )
    } else {
        Reply::error(500, "storage", format!("cannot store: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_fills_at_its_capacity_and_stays_full() {
        let disk = DiskSpace::with_capacity(10);
        disk.take(4).unwrap();
        disk.take(6).unwrap();
        disk.take(0).unwrap();
        let full = disk.take(1).unwrap_err();
        assert!(is_full(&full), "{full}");

        let disk = DiskSpace::with_capacity(10);
        disk.take(8).unwrap();
        // Does not fit: refused whole, and nothing fits after it.
        assert!(disk.take(3).is_err());
        assert!(disk.take(1).is_err());
        assert!(disk.take(0).is_ok());
    }

    #[test]
    fn an_unlimited_disk_never_fills() {
        let disk = DiskSpace::default();
        for _ in 0..4 {
            disk.take(u64::MAX).unwrap();
        }
    }

    #[test]
    fn a_full_disk_is_answered_507_and_other_failures_500() {
        let full = write_failed(&io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(full.status, 507);
        assert_eq!(full.body["error"], "insufficient_storage");
        let other = write_failed(&io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(other.status, 500);
        assert_eq!(other.body["error"], "storage");
    }
}
