//! Telling a file on a network file system from a local one, so that
//! [`crate::ReadMode::Auto`] reads it with positional reads rather than a map.
//!
//! On a network file system another host can truncate a file under this one's
//! map without any local lock seeing it, and a mapped page past the new end
//! raises SIGBUS, which ends the whole process (every file of the run), not
//! one file. A positional read past the end just comes back short, and the
//! file alone fails. With hashing on (the engine always hashes), the two ways of
//! reading run at the same speed on the development machine (the README's
//! reader table: 4.25 GiB/s mapped, 4.37 GiB/s positional, both above any
//! network file system's throughput), so the safer one costs nothing there.

use std::fs::File;
use std::os::fd::AsRawFd;

/// A network file system, by the `f_type` magic number `fstatfs` reports (from
/// Linux's `magic.h` and the file systems' own sources).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkFs {
    /// NFS (any version).
    Nfs,
    /// SMB / CIFS (the `cifs` and `smb3` clients, and the old `smbfs`).
    Smb,
    /// Lustre.
    Lustre,
    /// IBM Storage Scale (GPFS).
    Gpfs,
    /// CephFS.
    Ceph,
    /// BeeGFS.
    BeeGfs,
    /// AFS (kAFS or OpenAFS).
    Afs,
    /// 9P (v9fs: virtual machines' shared folders, WSL).
    NineP,
    /// A cluster file system on shared disks (GFS2, OCFS2): another host
    /// writes the same blocks.
    Cluster,
    /// FUSE: sshfs, s3fs, gcsfuse, rclone, GlusterFS, ceph-fuse and the like,
    /// mostly remote (a local one loses nothing by being read positionally).
    Fuse,
}

impl NetworkFs {
    /// The network file system with this `f_type`, if it is one.
    pub fn from_magic(magic: u64) -> Option<Self> {
        Some(match magic {
            0x6969 => NetworkFs::Nfs,
            0xFF53_4D42 | 0xFE53_4D42 | 0x517B => NetworkFs::Smb,
            0x0BD0_0BD0 => NetworkFs::Lustre,
            0x4750_4653 => NetworkFs::Gpfs,
            0x00C3_6400 => NetworkFs::Ceph,
            0x1983_0326 => NetworkFs::BeeGfs,
            0x6B41_4653 | 0x5346_414F => NetworkFs::Afs,
            0x0102_1997 => NetworkFs::NineP,
            0x0116_1970 | 0x7461_636F => NetworkFs::Cluster,
            0x6573_5546 => NetworkFs::Fuse,
            _ => return None,
        })
    }

    /// Its usual name, for people.
    pub fn name(self) -> &'static str {
        match self {
            NetworkFs::Nfs => "NFS",
            NetworkFs::Smb => "SMB/CIFS",
            NetworkFs::Lustre => "Lustre",
            NetworkFs::Gpfs => "GPFS",
            NetworkFs::Ceph => "CephFS",
            NetworkFs::BeeGfs => "BeeGFS",
            NetworkFs::Afs => "AFS",
            NetworkFs::NineP => "9P",
            NetworkFs::Cluster => "a cluster file system",
            NetworkFs::Fuse => "FUSE",
        }
    }

    /// The network file system `file` is on; `None` if it is local, or if the
    /// kernel will not say (then it is treated as local, as before this check).
    pub fn of(file: &File) -> Option<Self> {
        let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
        // SAFETY: `stat` is a properly sized out-parameter for `fstatfs`, and
        // the descriptor is open for as long as `file` lives.
        let status = unsafe { libc::fstatfs(file.as_raw_fd(), stat.as_mut_ptr()) };
        if status != 0 {
            return None;
        }
        // SAFETY: `fstatfs` returned 0, so it filled `stat` in.
        let stat = unsafe { stat.assume_init() };
        // `f_type`'s width and sign differ between targets; the magic numbers
        // are 32-bit values.
        #[allow(clippy::unnecessary_cast)]
        Self::from_magic(stat.f_type as u64 & 0xFFFF_FFFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_file_systems_are_known_by_their_magic() {
        for (magic, fs) in [
            (0x6969, NetworkFs::Nfs),
            (0xFF53_4D42, NetworkFs::Smb),
            (0xFE53_4D42, NetworkFs::Smb),
            (0x0BD0_0BD0, NetworkFs::Lustre),
            (0x4750_4653, NetworkFs::Gpfs),
            (0x00C3_6400, NetworkFs::Ceph),
            (0x6573_5546, NetworkFs::Fuse),
            (0x0116_1970, NetworkFs::Cluster),
        ] {
            assert_eq!(NetworkFs::from_magic(magic), Some(fs));
        }
        // ext4, xfs, btrfs, tmpfs, overlayfs: local.
        for magic in [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994, 0x794C_7630] {
            assert_eq!(NetworkFs::from_magic(magic), None, "{magic:#x}");
        }
    }
}
