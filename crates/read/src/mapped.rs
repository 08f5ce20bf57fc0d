//! Which file a mapped address belongs to, readable from a signal handler.
//!
//! A file truncated by another process while it is mapped raises SIGBUS at the
//! first touch of a page past its new end, in whatever thread touched it (a
//! reader thread hashing, or an HTTP thread sending). The handler gets the
//! faulting address; [`mapped_path_at`] turns it into the file's path using
//! only atomic loads, so the handler can name the file. Every map registers its
//! address range and path here while it lives.

use std::cell::UnsafeCell;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Maps named at once; more are read as usual, but a SIGBUS in one of them
/// cannot name its file. Files mapped at once are those being uploaded, a few.
const SLOTS: usize = 256;

/// Bytes of a path kept (longer ones are cut, the end kept: the file name).
const PATH_BYTES: usize = 1024;

/// One map: its range, and its path, written before the range is published.
struct Slot {
    /// Claimed by one map at a time.
    taken: AtomicBool,
    /// The range `start..end` (0 while not published).
    start: AtomicUsize,
    end: AtomicUsize,
    path_len: AtomicUsize,
    /// Written only by the slot's owner, before `start` is stored (Release), and
    /// read only after `start` is loaded (Acquire) and seen to cover an address.
    path: UnsafeCell<[u8; PATH_BYTES]>,
}

// SAFETY: `path` is written only while the slot is claimed (`taken`) and before
// its range is published with Release; readers read it only after an Acquire
// load of a published range, and the owner does not write it again until it
// has unpublished the range and let the slot go.
unsafe impl Sync for Slot {}

impl Slot {
    const fn new() -> Self {
        Self {
            taken: AtomicBool::new(false),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            path_len: AtomicUsize::new(0),
            path: UnsafeCell::new([0; PATH_BYTES]),
        }
    }
}

static REGISTRY: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];

/// A map's place in the registry; dropping it removes the map.
#[derive(Debug)]
pub(crate) struct Registration(usize);

/// Registers the map of `len` bytes at `start` as `path`'s (`None` when every
/// slot is taken: the map works the same, unnamed).
pub(crate) fn register(start: *const u8, len: usize, path: &Path) -> Option<Registration> {
    let index = REGISTRY.iter().position(|slot| {
        slot.taken
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    })?;
    let slot = &REGISTRY[index];
    let bytes = path.as_os_str().as_bytes();
    let kept = &bytes[bytes.len().saturating_sub(PATH_BYTES)..];
    // SAFETY: the slot is ours (claimed above) and unpublished: no reader looks
    // at its path until `start` is stored below.
    unsafe { (&mut *slot.path.get())[..kept.len()].copy_from_slice(kept) };
    slot.path_len.store(kept.len(), Ordering::Relaxed);
    slot.end.store(start as usize + len, Ordering::Relaxed);
    slot.start.store(start as usize, Ordering::Release);
    Some(Registration(index))
}

impl Drop for Registration {
    fn drop(&mut self) {
        let slot = &REGISTRY[self.0];
        slot.start.store(0, Ordering::Release);
        slot.end.store(0, Ordering::Relaxed);
        slot.taken.store(false, Ordering::Release);
    }
}

/// The path of the mapped file that `address` falls in, if a live map holds it.
/// Async-signal-safe: atomic loads and a slice of static memory only.
///
/// # Safety
///
/// The bytes returned belong to the map's registry slot: the caller must be
/// done with them before that map is dropped (its slot may then be reused and
/// written). A SIGBUS handler that reads them and ends the process, while the
/// faulting map is still alive, meets this.
pub unsafe fn mapped_path_at(address: usize) -> Option<&'static [u8]> {
    REGISTRY.iter().find_map(|slot| {
        let start = slot.start.load(Ordering::Acquire);
        let end = slot.end.load(Ordering::Relaxed);
        if start == 0 || !(start..end).contains(&address) {
            return None;
        }
        let len = slot.path_len.load(Ordering::Relaxed).min(PATH_BYTES);
        // SAFETY: the range is published (Acquire above), so the path was
        // written before it and is not written again while the map lives; a
        // fault at this address means the map is alive.
        Some(unsafe { &(&*slot.path.get())[..len] })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_names_the_map_it_falls_in_while_the_map_lives() {
        let (one, two) = ([0u8; 64], [0u8; 32]);
        let first = register(one.as_ptr(), one.len(), Path::new("/data/one.h5")).unwrap();
        let second = register(two.as_ptr(), two.len(), Path::new("/data/two.h5")).unwrap();
        let at = |buffer: &[u8], offset: usize| buffer.as_ptr() as usize + offset;
        // SAFETY (every call below): the maps asked about outlive the answers.
        let mapped_path_at = |address| unsafe { mapped_path_at(address) };
        assert_eq!(mapped_path_at(at(&one, 0)), Some(&b"/data/one.h5"[..]));
        assert_eq!(mapped_path_at(at(&one, 63)), Some(&b"/data/one.h5"[..]));
        assert_eq!(mapped_path_at(at(&two, 31)), Some(&b"/data/two.h5"[..]));
        drop(first);
        assert_eq!(mapped_path_at(at(&one, 10)), None);
        assert_eq!(mapped_path_at(at(&two, 0)), Some(&b"/data/two.h5"[..]));
        drop(second);
        assert_eq!(mapped_path_at(at(&two, 0)), None);
    }

    #[test]
    fn a_long_path_keeps_its_end() {
        let buffer = [0u8; 8];
        let long = format!("/{}/tail.bin", "d".repeat(2000));
        let registration = register(buffer.as_ptr(), buffer.len(), Path::new(&long)).unwrap();
        // SAFETY: the registration outlives the bytes' use.
        let named = unsafe { mapped_path_at(buffer.as_ptr() as usize) }.unwrap();
        assert_eq!(named.len(), PATH_BYTES);
        assert!(named.ends_with(b"/tail.bin"));
        drop(registration);
    }
}
