//! A run-wide "stop taking new work" flag.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set once, read everywhere; files check it before taking another chunk.
#[derive(Debug, Default)]
pub(crate) struct Stop(AtomicBool);

impl Stop {
    pub(crate) fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
