//! What the files of one run share.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use idb_read::ChunkMemory;

use crate::chunking::ChunkSizer;
use crate::congestion::Congestion;
use crate::journal::Journal;
use crate::journal_writer::JournalWriter;
use crate::name_lock::NameLocks;
use crate::receipts::ReceiptRecord;
use crate::retry::Backoff;
use crate::stop::Stop;
use crate::{Event, EventSink, UploadConfig};

/// Everything the files of one run share.
pub(crate) struct Run<'a, P> {
    pub(crate) protocol: &'a P,
    pub(crate) config: &'a UploadConfig,
    pub(crate) events: &'a dyn EventSink,
    /// Shared with the blocking step that opens each file.
    pub(crate) sizer: Arc<ChunkSizer>,
    /// The chunk bytes the run holds (read ahead and in flight), bounded by
    /// `config.memory`: readers lease from it before reading.
    pub(crate) memory: ChunkMemory,
    pub(crate) congestion: Congestion,
    pub(crate) backoff: Backoff,
    /// Set when the run must stop: files take no new chunks (see
    /// [`crate::stop::StopKind`]) and report what the server acknowledged.
    pub(crate) stop: Stop,
    /// Where uploads record how far the server got (`None`: not recorded), and
    /// the thread that writes it.
    pub(crate) journal: Option<(Journal, JournalWriter)>,
    /// The newest receipt of each file name verified earlier in this dataset,
    /// loaded once at the start (empty without a state directory).
    pub(crate) receipts: HashMap<String, ReceiptRecord>,
    /// One uploader per name on this machine (with the journal only).
    pub(crate) locks: Option<NameLocks>,
    /// Whether locking failed and uploads go on unlocked (said once).
    pub(crate) unlocked: AtomicBool,
    /// Set once the window was lowered for tus partials (see
    /// [`Run::partials_begin`]).
    pub(crate) partials_started: AtomicBool,
    /// Lets one call at a time fetch a new token after a 401.
    pub(crate) token_lock: tokio::sync::Mutex<()>,
}

impl<P> Run<'_, P> {
    pub(crate) fn emit(&self, event: Event) {
        self.events.emit(event);
    }
}

/// Partial uploads in flight at the start of a tus run by concatenation: the
/// service answers on a handful of request threads, so the window starts low
/// and grows while answers stay fast (see `congestion.rs`).
const PARTIALS_START: usize = 2;

impl<P: crate::protocol::Protocol> Run<'_, P> {
    /// Once the protocol is known: a run of tus partials starts its window at
    /// [`PARTIALS_START`] (once for the run).
    pub(crate) fn partials_begin(&self) {
        if self.protocol.partials()
            && !self
                .partials_started
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            self.congestion.start_at(PARTIALS_START);
        }
    }
}
