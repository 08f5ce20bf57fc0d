//! A clear last word when a memory-mapped file is truncated under us.
//!
//! Files are read through a memory map. If another process truncates a file while
//! it is read, touching a page past the new end raises SIGBUS, which would kill the
//! process with no explanation. The reader checks each file before every chunk, so
//! this needs a truncation in the microseconds between that check and the read;
//! when it happens, this handler names the file (from the faulting address, see
//! `idb_engine::mapped_path_at`), says what happened and exits with code 1. Uploads
//! that were verified stay verified; nothing half-sent is ever verified.

/// What the handler writes to stderr around the file's name (async-signal-safe:
/// `write`s of static bytes and a stack buffer, then `_exit`).
const BEFORE: &[u8] = b"\nerror: ";
const UNKNOWN: &[u8] = b"a file";
const AFTER: &[u8] = b" was truncated while idb was reading it (SIGBUS); nothing of it was \
verified. Run the command again once the file is complete, or use --no-mmap for files that \
other programs may shorten while they upload.\n";

/// Bytes of the name written (the registry keeps at most this many).
const NAME_BYTES: usize = 1024;

extern "C" fn on_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers; si_addr
    // is the faulting address for SIGBUS. `mapped_path_at` only loads atomics
    // and returns static memory, the slot of the map that faulted, which is
    // alive while this handler runs and is never dropped: the process ends
    // here. write(2) and _exit(2) are async-signal-safe.
    unsafe {
        // Only a fault raised by the kernel has an address (not one sent by kill).
        let raised = (*info).si_code > 0;
        let address = if raised {
            (*info).si_addr() as usize
        } else {
            0
        };
        let mut name = [0u8; NAME_BYTES];
        let named = match idb_engine::mapped_path_at(address).filter(|_| raised) {
            Some(path) => {
                // Shown, never obeyed: control characters (C0, DEL, and C1 as
                // UTF-8, 0xC2 0x80..0x9F) become '?'.
                for (i, (out, &b)) in name.iter_mut().zip(path).enumerate() {
                    let c1_lead =
                        b == 0xc2 && path.get(i + 1).is_some_and(|n| (0x80..0xa0).contains(n));
                    let c1_tail = (0x80..0xa0).contains(&b) && i > 0 && path[i - 1] == 0xc2;
                    *out = if b < 0x20 || b == 0x7f || c1_lead || c1_tail {
                        b'?'
                    } else {
                        b
                    };
                }
                &name[..path.len().min(NAME_BYTES)]
            }
            None => UNKNOWN,
        };
        for part in [BEFORE, named, AFTER] {
            libc::write(2, part.as_ptr().cast(), part.len());
        }
        libc::_exit(1);
    }
}

/// Installs the handler for the whole process.
pub fn install() {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; with
    // SA_SIGINFO the handler has the three-argument signature given.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
    }
}
