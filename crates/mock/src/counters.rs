//! Counters over the server's life: what tests and the harness read
//! ([`Stats`]), and what a test can wait for without polling.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::faults::{FaultKind, FaultStats, counter_index};

/// Counters over the server's life, for tests and the harness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests answered on the datafile endpoint and the tus endpoint (any status).
    pub requests: u64,
    /// Requests that arrived on the datafile or tus endpoint, answered or not (one held
    /// by [`crate::MockServer::pause`] is counted here, not in `requests`).
    pub requests_arrived: u64,
    /// Transfer calls that stored new bytes.
    pub chunks_accepted: u64,
    /// New bytes stored (retried identical chunks not counted again).
    pub bytes_accepted: u64,
    /// Transfer payload bytes (the `bytechunk` field) received in request bodies,
    /// whatever became of them: accepted, retried, refused (409, 413, 401, 404) or
    /// answered by an injected 500 or 429. Not counted: the part of a body a
    /// `reset` fault reads before it drops the connection, and an urlencoded body
    /// over the size limit (never decoded). `bytes_received - bytes_accepted`
    /// bounds what clients sent in vain, such as a resumed client's re-sends.
    pub bytes_received: u64,
    /// When the first of the [`Stats::bytes_received`] arrived, as time since the
    /// server started (`None`: none yet). With [`Stats::last_payload_at`] it gives
    /// the mean rate at which transfer bytes came in, on the server's clock.
    pub first_payload_at: Option<Duration>,
    /// When the newest of the [`Stats::bytes_received`] arrived, as time since the
    /// server started (`None`: none yet).
    pub last_payload_at: Option<Duration>,
    /// Files verified.
    pub files_verified: u64,
    /// Injected faults, per kind.
    pub faults: FaultStats,
    /// Connections open now (accepted and not yet closed), any route.
    pub connections_open: u64,
    /// The most requests on the datafile and tus endpoints at once, each from
    /// its arrival to its answer (the latency included): how many calls a
    /// client kept in flight.
    pub requests_in_flight_peak: u64,
    /// The requests on those endpoints in flight now, counted the same way.
    pub requests_in_flight: u64,
}

/// The live counters of a running server.
#[derive(Default)]
pub(crate) struct Counters {
    /// See [`Stats::requests`]: counted when the answer is ready.
    pub(crate) requests: AtomicU64,
    /// Datafile requests that arrived, counted before anything else happens to
    /// them (before a pause holds them), for waiters
    /// ([`crate::MockServer::wait_for_requests`]). Never decreasing; receivers
    /// only read it; the sender lives as long as the server.
    arrived: watch::Sender<u64>,
    chunks_accepted: AtomicU64,
    /// `chunks_accepted` for waiters ([`crate::MockServer::wait_for_chunks`]):
    /// updated after each accepted chunk, never decreasing. Receivers only read
    /// it; the sender lives as long as the server.
    chunks: watch::Sender<u64>,
    bytes_accepted: AtomicU64,
    /// See [`Stats::bytes_received`]; `body.rs` counts as the payload arrives.
    pub(crate) bytes_received: Received,
    files_verified: AtomicU64,
    /// Injected faults, indexed by [`counter_index`].
    faults: [AtomicU64; 5],
    /// Transfers refused for a full disk ([`FaultStats::disk_full`]).
    disk_full: AtomicU64,
    /// See [`Stats::connections_open`]; kept by [`OpenConnection`].
    connections_open: AtomicU64,
    /// Requests between arrival and answer now; kept by [`InFlight`].
    in_flight: AtomicU64,
    /// See [`Stats::requests_in_flight_peak`].
    in_flight_peak: AtomicU64,
}

/// One request between its arrival and its answer, counted from its making
/// to its drop (see [`Stats::requests_in_flight_peak`]).
pub(crate) struct InFlight<'a>(&'a Counters);

impl<'a> InFlight<'a> {
    pub(crate) fn new(counters: &'a Counters) -> Self {
        let now = counters.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        counters.in_flight_peak.fetch_max(now, Ordering::Relaxed);
        Self(counters)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One open connection, counted in [`Stats::connections_open`] from its
/// making to its drop.
pub(crate) struct OpenConnection<'a>(&'a Counters);

impl<'a> OpenConnection<'a> {
    pub(crate) fn new(counters: &'a Counters) -> Self {
        counters.connections_open.fetch_add(1, Ordering::Relaxed);
        Self(counters)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Transfer payload bytes received, and when the first and the newest came.
/// Updated for every piece of a body as it arrives, so it costs one clock read
/// and a few relaxed atomic operations a piece, never a lock.
pub(crate) struct Received {
    bytes: AtomicU64,
    /// What `first` and `last` count from: the server's start.
    started: Instant,
    first: Stamp,
    last: Stamp,
}

/// An instant after [`Received::started`], as nanoseconds plus one (0: none).
#[derive(Default)]
struct Stamp(AtomicU64);

impl Stamp {
    fn at(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n - 1)),
        }
    }
}

impl Default for Received {
    fn default() -> Self {
        Self {
            bytes: AtomicU64::new(0),
            started: Instant::now(),
            first: Stamp::default(),
            last: Stamp::default(),
        }
    }
}

impl Received {
    /// Counts `n` payload bytes that arrived just now.
    pub(crate) fn add(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.bytes.fetch_add(n, Ordering::Relaxed);
        let nanos = self.started.elapsed().as_nanos();
        let stamp = u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1;
        if self.first.0.load(Ordering::Relaxed) == 0 {
            // Two first pieces at once: the earlier stamp stays.
            let _ = self
                .first
                .0
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                    (old == 0 || stamp < old).then_some(stamp)
                });
        }
        self.last.0.fetch_max(stamp, Ordering::Relaxed);
    }
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            requests: self.requests.load(Ordering::Relaxed),
            requests_arrived: *self.arrived.borrow(),
            chunks_accepted: self.chunks_accepted.load(Ordering::Relaxed),
            bytes_accepted: self.bytes_accepted.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.bytes.load(Ordering::Relaxed),
            first_payload_at: self.bytes_received.first.at(),
            last_payload_at: self.bytes_received.last.at(),
            files_verified: self.files_verified.load(Ordering::Relaxed),
            faults: FaultStats::from_counts(
                self.faults.each_ref().map(|c| c.load(Ordering::Relaxed)),
                self.disk_full.load(Ordering::Relaxed),
            ),
            connections_open: self.connections_open.load(Ordering::Relaxed),
            requests_in_flight_peak: self.in_flight_peak.load(Ordering::Relaxed),
            requests_in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }

    /// Counts one injected fault.
    pub(crate) fn fault(&self, kind: FaultKind) {
        self.faults[counter_index(kind)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one transfer refused for a full disk.
    pub(crate) fn disk_full(&self) {
        self.disk_full.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one datafile request on its arrival, waking its waiters.
    pub(crate) fn arrived(&self) {
        // The increment happens under the channel's lock: no arrival is lost
        // when two come at once.
        self.arrived.send_modify(|arrived| *arrived += 1);
    }

    /// Resolves once at least `n` datafile requests have arrived.
    pub(crate) async fn wait_for_arrivals(&self, n: u64) {
        let mut arrived = self.arrived.subscribe();
        // The sender lives in `self`, so it outlives this borrow: no error.
        let _ = arrived.wait_for(|&arrived| arrived >= n).await;
    }

    /// Counts one transfer that stored `new_bytes` new bytes, waking the waiters
    /// of its chunk count.
    pub(crate) fn accepted(&self, new_bytes: u64) {
        self.bytes_accepted.fetch_add(new_bytes, Ordering::Relaxed);
        let chunks = self.chunks_accepted.fetch_add(1, Ordering::Relaxed) + 1;
        // Two chunks accepted at once may get here in either order: keep the larger.
        self.chunks.send_if_modified(|seen| {
            let newer = chunks > *seen;
            if newer {
                *seen = chunks;
            }
            newer
        });
    }

    /// Resolves once at least `n` chunks have been accepted.
    pub(crate) async fn wait_for_chunks(&self, n: u64) {
        let mut chunks = self.chunks.subscribe();
        // The sender lives in `self`, so it outlives this borrow: no error.
        let _ = chunks.wait_for(|&accepted| accepted >= n).await;
    }

    /// Counts one verified file.
    pub(crate) fn verified(&self) {
        self.files_verified.fetch_add(1, Ordering::Relaxed);
    }
}
