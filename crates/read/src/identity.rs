use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

use crate::Change;

/// What must stay the same while a file is uploaded: size, modification and
/// change times (to the nanosecond), device and inode.
///
/// The change time cannot be set back by tools that restore the modification time
/// after writing, so a rewrite in place is caught even then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, (seconds, nanoseconds) since the epoch.
    pub modified: (i64, i64),
    /// Status change time, (seconds, nanoseconds) since the epoch.
    pub changed: (i64, i64),
    /// Device number.
    pub device: u64,
    /// Inode number.
    pub inode: u64,
}

impl Identity {
    /// The identity described by `meta`.
    pub fn of(meta: &Metadata) -> Self {
        Self {
            size: meta.len(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
            device: meta.dev(),
            inode: meta.ino(),
        }
    }

    /// Whether `now` differs from `self` in its change time alone: a `chmod`,
    /// a `chown`, a new or removed link, or a write whose modification time
    /// was put back. Which, only its bytes can tell.
    pub fn only_status_changed(&self, now: &Identity) -> bool {
        now.changed != self.changed
            && *now
                == Identity {
                    changed: now.changed,
                    ..*self
                }
    }

    /// How `now` differs from `self`; `None` if it does not.
    pub fn change_to(&self, now: &Identity) -> Option<Change> {
        if (now.device, now.inode) != (self.device, self.inode) {
            Some(Change::Replaced)
        } else if now.size > self.size {
            Some(Change::Grew {
                from: self.size,
                to: now.size,
            })
        } else if now.size < self.size {
            Some(Change::Shrank {
                from: self.size,
                to: now.size,
            })
        } else if (now.modified, now.changed) != (self.modified, self.changed) {
            Some(Change::Modified)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(size: u64, modified: i64, inode: u64) -> Identity {
        Identity {
            size,
            modified: (modified, 0),
            changed: (modified, 0),
            device: 1,
            inode,
        }
    }

    #[test]
    fn changes() {
        let base = id(10, 5, 1);
        assert_eq!(base.change_to(&base), None);
        assert_eq!(
            base.change_to(&id(11, 5, 1)),
            Some(Change::Grew { from: 10, to: 11 })
        );
        assert_eq!(
            base.change_to(&id(9, 5, 1)),
            Some(Change::Shrank { from: 10, to: 9 })
        );
        assert_eq!(base.change_to(&id(10, 6, 1)), Some(Change::Modified));
        assert_eq!(base.change_to(&id(10, 5, 2)), Some(Change::Replaced));
        let mut touched = base;
        touched.changed.1 = 1;
        assert_eq!(base.change_to(&touched), Some(Change::Modified));
    }

    #[test]
    fn a_status_change_alone_is_told_from_other_changes() {
        let base = id(10, 5, 1);
        let mut chmod = base;
        chmod.changed.1 = 1;
        assert!(base.only_status_changed(&chmod));
        assert!(!base.only_status_changed(&base));
        // A write that moved the modification time (and so the change time).
        let written = id(10, 6, 1);
        assert!(!base.only_status_changed(&written));
        let mut grown = chmod;
        grown.size = 11;
        assert!(!base.only_status_changed(&grown));
        let mut other = chmod;
        other.inode = 2;
        assert!(!base.only_status_changed(&other));
    }
}
