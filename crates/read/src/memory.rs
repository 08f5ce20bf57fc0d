//! Memory for chunk bytes: a byte budget that readers lease from before they read,
//! and counters of what is really alive, kept apart from the budget so that a path
//! that forgot the budget would still show in the counts.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// A budget of bytes shared by threads: [`MemoryBudget::acquire`] blocks until
/// the bytes are free, first come first served, and the [`Lease`] gives them back
/// when dropped (from any thread).
///
/// Waiting is structural backpressure: a reader that would outrun the network
/// or the memory limit simply waits here.
#[derive(Clone)]
pub struct MemoryBudget(Arc<Budget>);

struct Budget {
    limit: u64,
    state: Mutex<BudgetState>,
    /// Signalled when bytes come back, a waiter leaves the queue, or a waiter's
    /// stop flag is set ([`MemoryBudget::wake`]): every waiter then re-checks.
    changed: Condvar,
}

struct BudgetState {
    free: u64,
    /// Waiters in arrival order: only the first may take bytes, so a large
    /// request is never starved by a stream of small ones.
    queue: VecDeque<u64>,
    next_ticket: u64,
}

/// Bytes taken from a [`MemoryBudget`]; dropping it returns them.
pub struct Lease {
    budget: Arc<Budget>,
    bytes: u64,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease({} bytes)", self.bytes)
    }
}

impl MemoryBudget {
    /// A budget of `limit` bytes (at least 1).
    pub fn new(limit: u64) -> Self {
        let limit = limit.max(1);
        Self(Arc::new(Budget {
            limit,
            state: Mutex::new(BudgetState {
                free: limit,
                queue: VecDeque::new(),
                next_ticket: 0,
            }),
            changed: Condvar::new(),
        }))
    }

    /// The budget's size.
    pub fn limit(&self) -> u64 {
        self.0.limit
    }

    fn lock(&self) -> MutexGuard<'_, BudgetState> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `bytes` are free (a request over the limit takes the whole
    /// budget) and takes them; `None` if `stop` is set meanwhile (call
    /// [`MemoryBudget::wake`] after setting it). Blocking: never call it on an
    /// async runtime's thread.
    pub fn acquire(&self, bytes: u64, stop: &AtomicBool) -> Option<Lease> {
        let bytes = bytes.min(self.0.limit);
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push_back(ticket);
        loop {
            if stop.load(Ordering::Acquire) {
                state.queue.retain(|&t| t != ticket);
                drop(state);
                self.0.changed.notify_all();
                return None;
            }
            if state.queue.front() == Some(&ticket) && state.free >= bytes {
                state.free -= bytes;
                state.queue.pop_front();
                drop(state);
                // The next in line may fit too.
                self.0.changed.notify_all();
                return Some(Lease {
                    budget: Arc::clone(&self.0),
                    bytes,
                });
            }
            state = self
                .0
                .changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Wakes every waiter so that one whose stop flag is set gives up.
    pub fn wake(&self) {
        let _state = self.lock();
        self.0.changed.notify_all();
    }

    /// Bytes leased now.
    pub fn in_use(&self) -> u64 {
        self.0.limit - self.lock().free
    }
}

impl Lease {
    /// The bytes it holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut state = self.budget.state.lock().unwrap_or_else(|e| e.into_inner());
        state.free += self.bytes;
        drop(state);
        self.budget.changed.notify_all();
    }
}

/// The chunk memory of a run, shared by all its readers: the budget every chunk
/// is leased from before it is read (its bytes return when the chunk's last view
/// is dropped), and counters of chunk bytes alive (with their peak) and of bytes
/// read from files.
///
/// The counters are kept by the chunks themselves, independently of the budget:
/// they measure what is held, not what was granted.
#[derive(Clone)]
pub struct ChunkMemory {
    budget: MemoryBudget,
    counters: Arc<Counters>,
}

#[derive(Default)]
pub(crate) struct Counters {
    live: AtomicU64,
    peak: AtomicU64,
    read: AtomicU64,
}

impl ChunkMemory {
    /// Chunk bytes limited to `limit` at once.
    pub fn new(limit: u64) -> Self {
        Self {
            budget: MemoryBudget::new(limit),
            counters: Arc::default(),
        }
    }

    /// The budget chunks are leased from.
    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// Chunk bytes alive now (read and not yet dropped).
    pub fn live_bytes(&self) -> u64 {
        self.counters.live.load(Ordering::Relaxed)
    }

    /// The most chunk bytes alive at once.
    pub fn peak_bytes(&self) -> u64 {
        self.counters.peak.load(Ordering::Relaxed)
    }

    /// Bytes read from files (chunks, and stretches read only to hash them).
    pub fn bytes_read(&self) -> u64 {
        self.counters.read.load(Ordering::Relaxed)
    }

    pub(crate) fn counted_read(&self, bytes: u64) -> Live {
        self.counters.read.fetch_add(bytes, Ordering::Relaxed);
        Live::new(&self.counters, bytes)
    }
}

impl std::fmt::Debug for ChunkMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkMemory")
            .field("limit", &self.budget.limit())
            .field("live", &self.live_bytes())
            .field("peak", &self.peak_bytes())
            .finish()
    }
}

/// Counts `bytes` as alive until dropped.
pub(crate) struct Live {
    counters: Arc<Counters>,
    bytes: u64,
}

impl Live {
    fn new(counters: &Arc<Counters>, bytes: u64) -> Self {
        let now = counters.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        counters.peak.fetch_max(now, Ordering::Relaxed);
        Self {
            counters: Arc::clone(counters),
            bytes,
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.counters.live.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn leases_wait_for_room_and_return_on_drop() {
        let budget = MemoryBudget::new(100);
        let stop = AtomicBool::new(false);
        let a = budget.acquire(60, &stop).unwrap();
        assert_eq!(budget.in_use(), 60);
        // Set just before the 60 bytes return: a waiter granted earlier would see
        // it unset.
        let returned = AtomicBool::new(false);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let lease = budget.acquire(50, &stop).unwrap();
                assert!(
                    returned.load(Ordering::SeqCst),
                    "granted before room was made"
                );
                lease.bytes()
            });
            returned.store(true, Ordering::SeqCst);
            drop(a);
            assert_eq!(waiter.join().unwrap(), 50);
        });
        assert_eq!(budget.in_use(), 0);
        // Over the limit takes the whole budget.
        assert_eq!(budget.acquire(500, &stop).unwrap().bytes(), 100);
    }

    #[test]
    fn a_stopped_waiter_gives_up_and_frees_its_place() {
        let budget = MemoryBudget::new(10);
        let stop = AtomicBool::new(false);
        let held = budget.acquire(10, &stop).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            let (budget, stop) = (&budget, &stop);
            s.spawn(move || tx.send(budget.acquire(5, stop).is_none()).unwrap());
            stop.store(true, Ordering::Release);
            budget.wake();
            assert!(rx.recv().unwrap(), "the waiter gave up");
        });
        drop(held);
        // Its place in the queue is gone: a new request is served at once.
        assert!(budget.acquire(10, &AtomicBool::new(false)).is_some());
    }

    #[test]
    fn live_bytes_and_their_peak_follow_the_chunks() {
        let memory = ChunkMemory::new(100);
        let a = memory.counted_read(30);
        let b = memory.counted_read(50);
        assert_eq!((memory.live_bytes(), memory.peak_bytes()), (80, 80));
        drop(a);
        let _c = memory.counted_read(10);
        assert_eq!((memory.live_bytes(), memory.peak_bytes()), (60, 80));
        drop(b);
        assert_eq!(memory.bytes_read(), 90);
    }
}
