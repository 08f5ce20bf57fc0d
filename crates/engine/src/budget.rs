//! The byte budget: how many chunk bytes the whole run may hold in flight.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

/// A semaphore of bytes shared by every file of a run: a chunk is sent only once
/// its bytes are granted, and they return when it is acknowledged or abandoned.
/// Memory for chunks in flight is therefore bounded by the budget, whatever the
/// number and size of files.
pub(crate) struct ByteBudget {
    /// One permit per byte. Closing is never needed: the run owns it.
    bytes: Semaphore,
    in_flight: AtomicU64,
    peak: AtomicU64,
}

/// Bytes granted to one chunk; dropping it gives them back.
pub(crate) struct Grant<'a> {
    budget: &'a ByteBudget,
    _permit: SemaphorePermit<'a>,
    bytes: u64,
}

impl ByteBudget {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            bytes: Semaphore::new(limit.min(Semaphore::MAX_PERMITS as u64) as usize),
            in_flight: AtomicU64::new(0),
            peak: AtomicU64::new(0),
        }
    }

    /// Waits until `bytes` are free and takes them. `bytes` must not exceed the
    /// budget (the configuration guarantees chunks never do).
    pub(crate) async fn acquire(&self, bytes: u64) -> Grant<'_> {
        let permit = self
            .bytes
            .acquire_many(u32::try_from(bytes).expect("chunks are at most 1 GiB"))
            .await
            .expect("the budget's semaphore is never closed");
        let now = self.in_flight.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
        Grant {
            budget: self,
            _permit: permit,
            bytes,
        }
    }

    /// The most bytes ever granted at once.
    pub(crate) fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for Grant<'_> {
    fn drop(&mut self) {
        self.budget
            .in_flight
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn grants_wait_for_room_and_peak_is_recorded() {
        let budget = ByteBudget::new(100);
        let a = budget.acquire(60).await;
        // No room for 50 more: the acquisition does not complete.
        assert!(budget.acquire(50).now_or_never().is_none());
        let b = budget.acquire(40).await;
        assert_eq!(budget.peak(), 100);
        drop(a);
        let c = budget.acquire(50).now_or_never().expect("room again");
        drop((b, c));
        assert_eq!(budget.peak(), 100);
    }
}
