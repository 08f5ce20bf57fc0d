//! The in-process mock's own tokio runtime, whose threads keep count of the CPU
//! time they use, so the client's CPU time is the process's less the mock's.
//!
//! Every thread of this runtime (its workers and its blocking pool, where the
//! mock hashes and applies calls) registers itself when it starts and, when it
//! stops, adds its CPU time to a total of the threads that are gone. The mock's
//! CPU time at any moment is that total plus the CPU clocks of the threads alive.
//! A thread the mock started on its own, outside its runtime, would not be
//! counted (the mock starts none).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use anyhow::Context;
use tokio::runtime::{Handle, Runtime};

use crate::measure::{own_cpu, timespec};

/// The name of the mock runtime's threads (seen in `top -H`).
const THREAD_NAME: &str = "idb-harness-mock";

/// The CPU clocks of the mock runtime's threads.
#[derive(Default)]
struct ThreadClocks {
    /// Threads alive: their pthread handles, valid while they are in the map
    /// (a thread removes itself, under this lock, before it exits).
    alive: HashMap<ThreadId, libc::pthread_t>,
    /// CPU time of the threads that stopped.
    exited: Duration,
}

/// A tokio runtime for the mock, on threads of its own.
pub(crate) struct MockRuntime {
    /// `None` once shut down (see the `Drop`: dropping a runtime inside async
    /// code panics, so it is shut down from a blocking section, or in the
    /// background where there is none).
    runtime: Option<Runtime>,
    /// One lock over the live threads and the total of the stopped ones:
    /// held briefly by a starting or stopping thread, and by a reading.
    clocks: Arc<Mutex<ThreadClocks>>,
}

/// The CPU time of another thread of this process, alive.
fn thread_cpu(thread: libc::pthread_t) -> Duration {
    let mut clock: libc::clockid_t = 0;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `thread` is a live thread of this process (the caller holds the
    // lock its thread takes to leave the map before it exits), and both calls
    // write only into the values we pass.
    unsafe {
        if libc::pthread_getcpuclockid(thread, &mut clock) != 0
            || libc::clock_gettime(clock, &mut ts) != 0
        {
            return Duration::ZERO;
        }
    }
    timespec(ts)
}

impl MockRuntime {
    /// A multi-threaded runtime with as many workers as there are CPUs.
    pub(crate) fn start() -> anyhow::Result<Self> {
        let clocks = Arc::new(Mutex::new(ThreadClocks::default()));
        let (starting, stopping) = (Arc::clone(&clocks), Arc::clone(&clocks));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name(THREAD_NAME)
            .enable_all()
            .on_thread_start(move || {
                // SAFETY: `pthread_self` has no preconditions.
                let me = unsafe { libc::pthread_self() };
                let mut clocks = starting.lock().unwrap_or_else(|e| e.into_inner());
                clocks.alive.insert(std::thread::current().id(), me);
            })
            .on_thread_stop(move || {
                let spent = own_cpu();
                let mut clocks = stopping.lock().unwrap_or_else(|e| e.into_inner());
                clocks.alive.remove(&std::thread::current().id());
                clocks.exited += spent;
            })
            .build()
            .context("cannot start the mock's runtime")?;
        Ok(Self {
            runtime: Some(runtime),
            clocks,
        })
    }

    /// Where the mock's tasks are spawned.
    pub(crate) fn handle(&self) -> Handle {
        self.runtime
            .as_ref()
            .expect("the mock runtime runs until dropped")
            .handle()
            .clone()
    }

    /// The CPU time the runtime's threads used so far, user and system.
    pub(crate) fn cpu(&self) -> Duration {
        let clocks = self.clocks.lock().unwrap_or_else(|e| e.into_inner());
        clocks.exited
            + clocks
                .alive
                .values()
                .map(|&t| thread_cpu(t))
                .sum::<Duration>()
    }
}

/// How long dropping the mock's runtime waits for its tasks to end.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

impl Drop for MockRuntime {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        // On a worker of a multi-threaded runtime (the CLI's), wait for the
        // mock's tasks to be dropped, so a mock whose store is a temporary
        // directory has removed it when this returns, even when a run is
        // abandoned mid-call (Ctrl-C). Elsewhere (a test's runtime, where
        // waiting is not allowed) it goes in the background.
        let on_multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if on_multi_thread {
            tokio::task::block_in_place(|| runtime.shutdown_timeout(SHUTDOWN_WAIT));
        } else if tokio::runtime::Handle::try_current().is_err() {
            runtime.shutdown_timeout(SHUTDOWN_WAIT);
        } else {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_on_the_mock_runtime_is_counted_there() {
        let mock = MockRuntime::start().unwrap();
        let before = mock.cpu();
        let spin = mock.handle().spawn_blocking(|| {
            let mut x = 0u64;
            for i in 0..50_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x)
        });
        mock.handle().block_on(spin).unwrap();
        assert!(mock.cpu() > before, "{:?} -> {:?}", before, mock.cpu());
    }
}
