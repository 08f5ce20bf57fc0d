//! Opening a file for upload: checks, identity, and the memory map.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use memmap2::{Advice, Mmap, UncheckedAdvice};

use crate::memory::{Lease, Live};
use crate::network_fs::NetworkFs;
use crate::{Change, ChunkMemory, FileKind, HashState, Identity, ReadError, Span};

/// The largest file the Data Bank accepts: 2 TiB. Checked at open, before anything
/// is read or sent.
pub const MAX_FILE_SIZE: u64 = 2 * 1024 * 1024 * 1024 * 1024;

/// How chunk bytes are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReadMode {
    /// Memory-map when possible, positional reads otherwise, and always on a
    /// network file system ([`crate::NetworkFs`]), where another host may
    /// truncate the file under the map.
    #[default]
    Auto,
    /// Memory-map, or fail with [`ReadError::Map`].
    Mmap,
    /// Positional reads (`pread`) into owned buffers, never a map.
    Positional,
}

/// What [`SourceFile::look`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// The file is as it is taken to be.
    Same,
    /// Only its status changed (to this one): what was read before must be
    /// hashed again ([`SourceFile::settle`]) before it is taken.
    StatusChanged(Status),
}

/// The change time a file is taken to have, and how far the settle that took
/// it hashed (0: its time at open, when nothing was read before).
#[derive(Debug, Clone, Copy)]
struct Taken {
    changed: (i64, i64),
    upto: u64,
}

/// Slack past a change time's tick: the kernel stamps times from a clock that
/// may lag the one read here by a scheduler tick (10 ms at 100 Hz).
const TICK_SLACK: std::time::Duration = std::time::Duration::from_millis(20);

/// Waits until the clock has left the tick of `changed` (a whole second when
/// its nanoseconds are 0, as on file systems that keep whole seconds), so that
/// any later write moves the change time; `false` if `stopped` said so first.
fn wait_past_tick(changed: (i64, i64), stopped: &dyn Fn() -> bool) -> bool {
    use std::time::{Duration, UNIX_EPOCH};
    let (secs, nanos) = changed;
    let Ok(secs) = u64::try_from(secs) else {
        return true;
    };
    let tick_end = if nanos == 0 {
        UNIX_EPOCH + Duration::from_secs(secs + 1)
    } else {
        UNIX_EPOCH + Duration::new(secs, nanos.clamp(0, 999_999_999) as u32)
    } + TICK_SLACK;
    loop {
        if stopped() {
            return false;
        }
        match tick_end.duration_since(std::time::SystemTime::now()) {
            // A change time far ahead of this clock (another host's, on a
            // network file system): no tick of this clock will pass it soon.
            Ok(left) if left > Duration::from_secs(2) => return true,
            // Waiting for the clock to pass a tick: behaviour, not a wait for
            // something to happen.
            Ok(left) => std::thread::sleep(left.min(Duration::from_millis(50))),
            Err(_) => return true,
        }
    }
}

/// A change time a [`SourceFile::look`] saw, for [`SourceFile::settle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status((i64, i64));

/// How many changes of its status alone a file may go through while it is
/// uploaded, each settled by reading again what was read: past them it fails,
/// rather than be read again and again (a tool changing its ACLs in a loop).
pub const MAX_SETTLES: u32 = 8;

/// A file opened for upload: checked, with its identity at open, mapped when the
/// mode allows. Cheap to clone (shared).
#[derive(Clone)]
pub struct SourceFile(Arc<Inner>);

struct Inner {
    path: PathBuf,
    file: File,
    identity: Identity,
    /// The change time the file is taken to have: its identity's at open, moved
    /// on by [`SourceFile::settle`] once the bytes read before a change of the
    /// file's status alone hash the same.
    changed: Mutex<Taken>,
    /// Settles that hashed to the end ([`MAX_SETTLES`] at most).
    settles: AtomicU32,
    /// The network file system it is on, if it is.
    network: Option<NetworkFs>,
    /// The map's entry in the registry a SIGBUS handler reads to name the file.
    /// Before `map`: fields drop in order, so the entry goes before the map is
    /// unmapped, never naming a range another map may take next.
    _named: Option<crate::mapped::Registration>,
    map: Option<Mmap>,
    /// Positional reads only: buffers of dropped chunks, reused so that each read
    /// neither allocates nor zeroes (a fresh 8 MiB `calloc` costs more than the read).
    /// The lock is held only to push or pop one buffer.
    spare: Mutex<Vec<Vec<u8>>>,
}

/// Bytes of buffers kept for reuse per file: two 8 MiB chunks, enough for the
/// reader's steady state (a chunk returns as the next is read). Spare buffers are
/// outside the memory budget, so larger chunks are not kept: each is allocated
/// afresh rather than let idle buffers grow the process.
const SPARE_BYTES: usize = 16 * 1024 * 1024;

impl std::fmt::Debug for SourceFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceFile")
            .field("path", &self.0.path)
            .field("size", &self.0.identity.size)
            .field("mapped", &self.0.map.is_some())
            .finish()
    }
}

/// Whether a file whose size says 0 gives a byte when read (as `/proc` and
/// `/sys` files do). An empty file never fails to read, so a failure is an
/// error too: a plan of 0 bytes reads nothing that would report it.
fn has_bytes(file: &File) -> io::Result<bool> {
    let mut byte = [0u8; 1];
    Ok(file.read_at(&mut byte, 0)? > 0)
}

fn kind_of(file_type: std::fs::FileType) -> Option<FileKind> {
    if file_type.is_file() {
        None
    } else if file_type.is_dir() {
        Some(FileKind::Directory)
    } else if file_type.is_fifo() {
        Some(FileKind::Fifo)
    } else if file_type.is_socket() {
        Some(FileKind::Socket)
    } else if file_type.is_block_device() || file_type.is_char_device() {
        Some(FileKind::Device)
    } else {
        Some(FileKind::Other)
    }
}

/// What the metadata of a path says about uploading it: its identity if it is a
/// regular file (symbolic links followed) of at most [`MAX_FILE_SIZE`] bytes.
fn examine(path: &Path) -> Result<std::fs::Metadata, ReadError> {
    let meta = std::fs::metadata(path).map_err(|source| match source.kind() {
        // The path may be there, as a link to nothing: say which.
        io::ErrorKind::NotFound => match std::fs::read_link(path) {
            Ok(target) => ReadError::BrokenLink {
                path: path.to_path_buf(),
                target,
            },
            Err(_) => ReadError::NotFound {
                path: path.to_path_buf(),
            },
        },
        _ => ReadError::Unreadable {
            path: path.to_path_buf(),
            source,
        },
    })?;
    if let Some(kind) = kind_of(meta.file_type()) {
        return Err(ReadError::NotAFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    if meta.len() > MAX_FILE_SIZE {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
        });
    }
    Ok(meta)
}

impl SourceFile {
    /// Checks `path` without opening it (no file descriptor is used): a regular
    /// file (symbolic links followed) of at most [`MAX_FILE_SIZE`] bytes that this
    /// process may read. Returns its identity, to compare with when it is opened
    /// ([`SourceFile::open_expecting`]).
    pub fn inspect(path: &Path) -> Result<Identity, ReadError> {
        let meta = examine(path)?;
        let c_path =
            std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
                .map_err(|_| ReadError::NotFound {
                    path: path.to_path_buf(),
                })?;
        // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call;
        // faccessat only reads it.
        let readable = unsafe {
            libc::faccessat(
                libc::AT_FDCWD,
                c_path.as_ptr(),
                libc::R_OK,
                libc::AT_EACCESS,
            )
        } == 0;
        if !readable {
            return Err(ReadError::Unreadable {
                path: path.to_path_buf(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(Identity::of(&meta))
    }

    /// Opens `path` as [`SourceFile::open`] does, and checks that it is still the
    /// file `expected` describes (from [`SourceFile::inspect`]): a file deleted
    /// meanwhile is [`ReadError::Vanished`], one changed or replaced is
    /// [`ReadError::ChangedSinceCheck`]. A change of its status alone (a
    /// `chmod`, say) is no change here: nothing of it was read yet.
    pub fn open_expecting(
        path: &Path,
        mode: ReadMode,
        expected: &Identity,
    ) -> Result<Self, ReadError> {
        let source = Self::open(path, mode).map_err(|e| match e {
            ReadError::NotFound { path } | ReadError::BrokenLink { path, .. } => {
                ReadError::Vanished { path }
            }
            other => other,
        })?;
        match expected.change_to(&source.identity()) {
            None => Ok(source),
            // Nothing was read before: what is read now is the file as it is.
            Some(_) if expected.only_status_changed(&source.identity()) => Ok(source),
            Some(change) => Err(ReadError::ChangedSinceCheck {
                path: path.to_path_buf(),
                change,
            }),
        }
    }

    /// Opens `path`: a readable regular file (symbolic links followed) of at most
    /// [`MAX_FILE_SIZE`] bytes. Its identity is taken from the open handle.
    pub fn open(path: &Path, mode: ReadMode) -> Result<Self, ReadError> {
        let path_buf = || path.to_path_buf();
        let unreadable = |source| ReadError::Unreadable {
            path: path_buf(),
            source,
        };
        // Look before opening: opening a FIFO for reading would block until a
        // writer came. O_NONBLOCK below guards the race where it appears between.
        examine(path)?;
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(unreadable)?;
        let meta = file.metadata().map_err(unreadable)?;
        if let Some(kind) = kind_of(meta.file_type()) {
            return Err(ReadError::NotAFile {
                path: path_buf(),
                kind,
            });
        }
        let identity = Identity::of(&meta);
        if identity.size > MAX_FILE_SIZE {
            return Err(ReadError::TooLarge {
                path: path_buf(),
                size: identity.size,
            });
        }
        if identity.size == 0 && has_bytes(&file).map_err(unreadable)? {
            return Err(ReadError::SizeUnknown { path: path_buf() });
        }
        let network = NetworkFs::of(&file);
        let map = match mode {
            ReadMode::Positional => None,
            ReadMode::Auto if network.is_some() => None,
            // An empty file cannot be mapped, and needs no reading.
            _ if identity.size == 0 => None,
            ReadMode::Auto | ReadMode::Mmap => {
                // SAFETY: the map is read-only and private to this process. Another
                // process may still change the file: changed bytes are caught by
                // the identity checks before each chunk and before verify; a
                // truncation can raise SIGBUS on access, which the CLI reports
                // as such (see the README). Nothing here writes through the map.
                match unsafe { Mmap::map(&file) } {
                    Ok(map) => {
                        // Advice is a hint; a kernel that ignores it is fine.
                        let _ = map.advise(Advice::Sequential);
                        Some(map)
                    }
                    Err(source) if mode == ReadMode::Mmap => {
                        return Err(ReadError::Map {
                            path: path_buf(),
                            source,
                        });
                    }
                    Err(_) => None,
                }
            }
        };
        let named = map
            .as_ref()
            .and_then(|map| crate::mapped::register(map.as_ptr(), map.len(), path));
        Ok(Self(Arc::new(Inner {
            spare: Mutex::new(Vec::new()),
            path: path_buf(),
            file,
            changed: Mutex::new(Taken {
                changed: identity.changed,
                upto: 0,
            }),
            settles: AtomicU32::new(0),
            identity,
            network,
            map,
            _named: named,
        })))
    }

    /// The path it was opened as.
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// Its size at open.
    pub fn size(&self) -> u64 {
        self.0.identity.size
    }

    /// Its identity at open.
    pub fn identity(&self) -> Identity {
        self.0.identity
    }

    /// Whether chunks are views of a memory map (else positional reads).
    pub fn is_mapped(&self) -> bool {
        self.0.map.is_some()
    }

    /// The network file system it is on, if it is one (then [`ReadMode::Auto`]
    /// reads it with positional reads).
    pub fn network_fs(&self) -> Option<NetworkFs> {
        self.0.network
    }

    /// The file's identity now, read from the open handle; a path that now
    /// names another file, or nothing, fails with [`ReadError::Changed`].
    fn now(&self) -> Result<Identity, ReadError> {
        let meta = self
            .0
            .file
            .metadata()
            .map_err(|source| ReadError::Unreadable {
                path: self.0.path.clone(),
                source,
            })?;
        // The open handle cannot notice a rename over the path: look at the path
        // first, since the replaced file's own status changes as it is unlinked.
        let at_open = &self.0.identity;
        match std::fs::metadata(&self.0.path) {
            Ok(m) if (m.dev(), m.ino()) != (at_open.device, at_open.inode) => {
                Err(self.changed(Change::Replaced))
            }
            Ok(_) => Ok(Identity::of(&meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(self.changed(Change::Removed)),
            Err(_) => Err(self.changed(Change::Replaced)),
        }
    }

    /// The identity the file is taken to have now.
    fn taken(&self) -> Identity {
        Identity {
            changed: self
                .0
                .changed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .changed,
            ..self.0.identity
        }
    }

    fn changed(&self, change: Change) -> ReadError {
        ReadError::Changed {
            path: self.0.path.clone(),
            change,
        }
    }

    /// Fails with [`ReadError::Changed`] if the file is not what it was at open;
    /// a change of its status alone passes (see [`SourceFile::look`]) and is
    /// left for `look` to take. For telling why a read or a send failed.
    pub fn check_identity(&self) -> Result<(), ReadError> {
        let now = self.now()?;
        let taken = self.taken();
        match taken.change_to(&now) {
            None => Ok(()),
            Some(_) if taken.only_status_changed(&now) => Ok(()),
            Some(change) => Err(self.changed(change)),
        }
    }

    /// [`SourceFile::check_identity`], but a change of the file's status alone
    /// (its change time: a `chmod`, a `chown`, a new link, or a write whose
    /// modification time was put back) is answered [`Look::StatusChanged`]:
    /// only the bytes can tell a `chmod` from such a write, so the caller
    /// hashes again what it read before ([`SourceFile::settle`]) or fails.
    /// Nothing is taken here: until a settle takes the new change time, every
    /// look says so again (a reader dropped between the two loses nothing).
    /// A file whose status changes more than [`MAX_SETTLES`] times fails
    /// ([`Change::StatusKeptChanging`]): each settle reads the file again.
    pub fn look(&self) -> Result<Look, ReadError> {
        let now = self.now()?;
        let taken = self.taken();
        match taken.change_to(&now) {
            None => Ok(Look::Same),
            Some(_) if taken.only_status_changed(&now) => {
                if self.0.settles.load(Ordering::Relaxed) >= MAX_SETTLES {
                    return Err(self.changed(Change::StatusKeptChanging { times: MAX_SETTLES }));
                }
                Ok(Look::StatusChanged(Status(now.changed)))
            }
            Some(change) => Err(self.changed(change)),
        }
    }

    /// After [`Look::StatusChanged`]`(status)`: hashes the file's first
    /// `hashed.upto()` bytes again; the same as `hashed`, `status` is taken as
    /// the file's (`Ok(true)`); not, it fails with [`ReadError::Changed`]
    /// (written to). `Ok(false)`: `stopped` said to stop first, and nothing was
    /// taken. A status taken already by a settle that hashed at least as far
    /// is not hashed again.
    ///
    /// The hashing starts only once the clock has left the change time's tick
    /// (at most a second on a file system that keeps whole seconds, a few
    /// milliseconds otherwise): a write in that same tick, after the hashing
    /// read its bytes, would leave the change time as it is and go unseen.
    /// A read of what was read already, far cheaper than sending the file
    /// again, but of the whole prefix: blocking, and long for a large file.
    pub fn settle(
        &self,
        hashed: &HashState,
        status: Status,
        stopped: &dyn Fn() -> bool,
    ) -> Result<bool, ReadError> {
        {
            let taken = self.0.changed.lock().unwrap_or_else(|e| e.into_inner());
            if taken.changed == status.0 && taken.upto >= hashed.upto() {
                return Ok(true);
            }
        }
        if !wait_past_tick(status.0, stopped) {
            return Ok(false);
        }
        let again = HashState::read_again(&self.0.file, hashed.size(), hashed.upto(), stopped);
        if !matches!(again, Ok(None)) {
            self.0.settles.fetch_add(1, Ordering::Relaxed);
        }
        match again {
            Ok(None) => Ok(false),
            Ok(Some(_)) if stopped() => Ok(false),
            Ok(Some(again)) if again == *hashed => {
                *self.0.changed.lock().unwrap_or_else(|e| e.into_inner()) = Taken {
                    changed: status.0,
                    upto: hashed.upto(),
                };
                Ok(true)
            }
            Ok(Some(_)) => Err(self.changed(Change::Modified)),
            // Shorter now than what was read: it shrank.
            Err((_, e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.check_identity()?;
                Err(self.changed(Change::Modified))
            }
            Err((offset, source)) => Err(ReadError::Io {
                path: self.0.path.clone(),
                offset,
                source,
            }),
        }
    }

    /// The identity the file is taken to have now: at open, with the change
    /// time of the last status change settled (for a receipt).
    pub fn settled(&self) -> Identity {
        self.taken()
    }

    /// The bytes of `span`: a view of the map, or a positional read. They hold
    /// `lease` (bytes of the run's budget) and count as alive in `memory` until
    /// the last view is dropped.
    pub(crate) fn read(
        &self,
        span: Span,
        release_pages: bool,
        lease: Option<Lease>,
        memory: &ChunkMemory,
    ) -> Result<Bytes, ReadError> {
        let held = Held {
            _live: memory.counted_read(span.len),
            _lease: lease,
        };
        if self.0.map.is_some() {
            return Ok(Bytes::from_owner(MappedRange {
                source: Arc::clone(&self.0),
                start: span.offset as usize,
                len: span.len as usize,
                release_pages,
                _held: held,
            }));
        }
        let mut buf = self
            .0
            .spare
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        // Only bytes beyond the buffer's old length are zeroed; the read fills all.
        buf.resize(span.len as usize, 0);
        match self.0.file.read_exact_at(&mut buf, span.offset) {
            Ok(()) => Ok(Bytes::from_owner(PooledBuffer {
                buf,
                source: Arc::clone(&self.0),
                _held: held,
            })),
            // A short read means the file shrank: say so rather than "EOF".
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.check_identity()?;
                Err(ReadError::Io {
                    path: self.0.path.clone(),
                    offset: span.offset,
                    source: e,
                })
            }
            Err(source) => Err(ReadError::Io {
                path: self.0.path.clone(),
                offset: span.offset,
                source,
            }),
        }
    }

    /// Maps the pages of `len` bytes at `offset` of a mapped file into this
    /// process in one call (`MADV_POPULATE_READ`, reading them in as needed),
    /// so that the threads hashing and sending them take no page faults.
    /// False when that could not be done (not mapped, a kernel before 5.14,
    /// or the file shrank): the caller touches the pages instead, which
    /// faults them in one by one, or raises the SIGBUS that names a shrunk file.
    pub(crate) fn populate(&self, offset: u64, len: usize) -> bool {
        match &self.0.map {
            Some(map) if len > 0 => map
                .advise_range(Advice::PopulateRead, offset as usize, len)
                .is_ok(),
            _ => false,
        }
    }

    /// Asks the kernel to start reading `len` bytes at `offset` into memory.
    pub(crate) fn prefetch(&self, offset: u64, len: u64) {
        let size = self.size();
        if offset >= size || len == 0 {
            return;
        }
        let len = len.min(size - offset) as usize;
        match &self.0.map {
            Some(map) => {
                let _ = map.advise_range(Advice::WillNeed, offset as usize, len);
            }
            None => {
                use std::os::fd::AsRawFd;
                // SAFETY: posix_fadvise only reads its arguments; the fd is open.
                unsafe {
                    libc::posix_fadvise(
                        self.0.file.as_raw_fd(),
                        offset as libc::off_t,
                        len as libc::off_t,
                        libc::POSIX_FADV_WILLNEED,
                    );
                }
            }
        }
    }
}

/// What a chunk's bytes hold while alive: their place in the live-bytes count,
/// and their lease of the run's budget. Fields drop in order: the count goes
/// down before the lease lets another chunk in, so the count never shows more
/// than the budget allows.
struct Held {
    _live: Live,
    _lease: Option<Lease>,
}

/// A positional read's buffer owned by a `Bytes`; on drop it goes back to the
/// file's spare buffers.
struct PooledBuffer {
    buf: Vec<u8>,
    source: Arc<Inner>,
    _held: Held,
}

impl AsRef<[u8]> for PooledBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let mut spare = self.source.spare.lock().unwrap_or_else(|e| e.into_inner());
        let kept: usize = spare.iter().map(Vec::capacity).sum();
        if kept + self.buf.capacity() <= SPARE_BYTES {
            spare.push(std::mem::take(&mut self.buf));
        }
    }
}

/// A range of the map owned by a `Bytes`: keeps the map alive, and on drop tells
/// the kernel this process no longer needs those pages, so resident memory does
/// not grow with the file.
struct MappedRange {
    source: Arc<Inner>,
    start: usize,
    len: usize,
    release_pages: bool,
    _held: Held,
}

impl AsRef<[u8]> for MappedRange {
    fn as_ref(&self) -> &[u8] {
        let map = self.source.map.as_ref().expect("a mapped range has a map");
        &map[self.start..self.start + self.len]
    }
}

impl Drop for MappedRange {
    fn drop(&mut self) {
        if !self.release_pages || self.len == 0 {
            return;
        }
        if let Some(map) = &self.source.map {
            // SAFETY: MADV_DONTNEED on a read-only shared file mapping only drops
            // this process's page table entries; the next access to those pages
            // (say, by another range sharing a boundary page) faults them back in
            // from the page cache with the same contents. No reference into the
            // map is invalidated.
            unsafe {
                let _ = map.unchecked_advise_range(UncheckedAdvice::DontNeed, self.start, self.len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::*;

    fn as_changed(at: SystemTime) -> (i64, i64) {
        let since = at.duration_since(UNIX_EPOCH).unwrap();
        (since.as_secs() as i64, i64::from(since.subsec_nanos()))
    }

    /// Whether this kernel has `MADV_POPULATE_READ` (Linux 5.14).
    fn kernel_populates() -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut numbers = release.split(|c: char| !c.is_ascii_digit());
        let major: u32 = numbers.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let minor: u32 = numbers.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        (major, minor) >= (5, 14)
    }

    #[test]
    fn populating_maps_a_whole_range_and_refuses_one_past_a_shrunk_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::write(&path, vec![7u8; 64 * 1024]).unwrap();
        let positional = SourceFile::open(&path, ReadMode::Positional).unwrap();
        assert!(
            !positional.populate(0, 4096),
            "nothing to populate without a map"
        );
        let mapped = SourceFile::open(&path, ReadMode::Mmap).unwrap();
        assert!(!mapped.populate(0, 0));
        if kernel_populates() {
            assert!(mapped.populate(0, 64 * 1024));
            assert!(mapped.populate(8192, 100));
        } else {
            eprintln!("skipped: this kernel is older than 5.14 (no MADV_POPULATE_READ)");
        }
        // Shrunk under the map: the pages past the new end cannot be read in,
        // and the caller falls back to touching them (SIGBUS names the file).
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(8192)
            .unwrap();
        assert!(!mapped.populate(0, 64 * 1024));
    }

    #[test]
    fn a_settle_waits_until_the_clock_has_left_the_change_times_tick() {
        let now = SystemTime::now();
        assert!(wait_past_tick(as_changed(now), &|| false));
        assert!(SystemTime::now() > now + TICK_SLACK);
        // Whole seconds: the tick is the whole second.
        let (secs, _) = as_changed(now);
        assert!(wait_past_tick((secs, 0), &|| false));
        assert!(SystemTime::now() >= UNIX_EPOCH + Duration::from_secs(secs as u64 + 1));
        // Told to stop: at once, and says so.
        assert!(!wait_past_tick(as_changed(SystemTime::now()), &|| true));
        // Far ahead of this clock (another host's): not waited for.
        let ahead = SystemTime::now() + Duration::from_secs(3600);
        assert!(wait_past_tick(as_changed(ahead), &|| false));
    }
}
