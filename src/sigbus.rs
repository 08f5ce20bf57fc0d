//! A clear last word when a memory-mapped file is truncated under us.
//!
//! Files are read through a memory map. If another process truncates a file while
//! it is read, touching a page past the new end raises SIGBUS, which would kill the
//! process with no explanation. The reader checks each file before every chunk, so
//! this needs a truncation in the microseconds between that check and the read;
//! when it happens, this handler says what it was and exits with code 1. Uploads
//! that were verified stay verified; nothing half-sent is ever verified.

/// What the handler writes to stderr (async-signal-safe: one `write`, then `_exit`).
const MESSAGE: &[u8] = b"\nerror: a file was truncated while idb was reading it (SIGBUS); \
nothing of it was verified. Run the command again once the file is complete, or use --no-mmap \
for files that other programs may shorten.\n";

extern "C" fn on_sigbus(_: libc::c_int) {
    // SAFETY: write(2) and _exit(2) are async-signal-safe; MESSAGE is static.
    unsafe {
        libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
        libc::_exit(1);
    }
}

/// Installs the handler for the whole process.
pub fn install() {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the
    // handler is an `extern "C" fn(c_int)` as SA_SIGINFO is not set.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
    }
}
