//! Locking a mutex that a panicking thread may have poisoned.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking over the data even if a thread panicked while holding it:
/// every mutex of the mock guards plain data that stays consistent between
/// statements, so a panic in one request must not stop the server from serving
/// the next.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
