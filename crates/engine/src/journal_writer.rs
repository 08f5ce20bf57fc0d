//! The run's journal writer: one thread that writes the newest entry of each
//! upload now and then, so acknowledgements never wait for a disk (an fsync costs
//! milliseconds on a local disk and tens of them on NFS).
//!
//! Who waits for whom: an acknowledgement puts the upload's newest entry in a
//! shared map (a mutex held for an insert) and goes on; it never wakes the writer
//! unless the bytes acknowledged since the last write reach
//! [`UploadConfig::journal_bytes`] (or the interval is zero). The writer wakes by
//! itself every [`UploadConfig::journal_interval`] and writes what changed. An
//! upload that ends verified before its entry was written never touches the disk
//! and never wakes the writer; one that ends unverified (as every upload in
//! progress does when the run stops, on an error or a signal), or whose journal
//! is on disk, hands the writer its end, and its name's lock, so the journal is
//! written or removed before the name is let go. Entries only ever say what the
//! server acknowledged, so the journal may lag the server, never lead it.
//!
//! The writer also appends the receipts of verified uploads ([`crate::receipts`])
//! in the same wake-ups: a verified upload puts its receipt in the shared list (no
//! message, no wait) unless its journal is on disk; then its end message makes
//! the writer append every pending receipt (one write and one `fdatasync` per
//! receipts file) before it removes the journal, so a crash between the two
//! leaves the journal, never neither.
//!
//! [`UploadConfig::journal_interval`]: crate::UploadConfig::journal_interval
//! [`UploadConfig::journal_bytes`]: crate::UploadConfig::journal_bytes

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::journal::{Entry, Journal, Key};
use crate::name_lock::NameLock;
use crate::receipts::{ReceiptRecord, Receipts};

/// What the uploads and the writer share.
#[derive(Default)]
struct Shared {
    /// Entries not written yet, newest per upload.
    dirty: HashMap<Key, Entry>,
    /// The acknowledged offset last heard of, per running upload.
    acked: HashMap<Key, u64>,
    /// Bytes acknowledged since the last write.
    bytes: u64,
    /// Uploads whose journal file may be on disk (found at the start, or taken
    /// by the writer to be written): their end goes through the writer.
    on_disk: HashSet<Key>,
    /// Receipts of verified uploads not appended yet, oldest first.
    receipts: Vec<ReceiptRecord>,
    /// Failures, reported by the run as events for the files concerned.
    failures: Vec<WriteFailure>,
    /// Uploads whose latest journal write failed: the journal on disk, if
    /// any, is not their latest, and a later run may not resume them.
    unsaved: HashSet<Key>,
}

/// What wakes the writer.
enum Message {
    /// Write what changed now (bytes threshold reached, or no interval).
    Write,
    /// An upload whose journal is, or may be, on disk ended: `keep` is its last
    /// entry if it is unfinished (written at once), `None` if it was verified (the
    /// pending receipts, its own among them, are appended, then its journal is
    /// removed). Its lock is let go once that is done, so the next uploader of the
    /// name finds the journal as it should be.
    End {
        key: Key,
        keep: Option<Box<Entry>>,
        lock: Option<NameLock>,
    },
    /// Write this entry now (with the other pending ones) and answer once it
    /// is on disk: a state that must be durable before the next call.
    Now {
        entry: Box<Entry>,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Answer once every earlier message is handled (tests: a sync point).
    #[cfg(test)]
    Ping(oneshot::Sender<()>),
}

/// A write that failed: which local file, what was not saved, and why.
#[derive(Debug)]
pub(crate) struct WriteFailure {
    pub(crate) path: PathBuf,
    pub(crate) what: Unsaved,
    pub(crate) reason: String,
}

/// What a failed write did not save.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unsaved {
    /// The upload's journal entry (a resume starts earlier, or over).
    Journal,
    /// The receipt of a verified upload (a re-run does not skip the file).
    Receipt,
}

/// The handle uploads talk to; dropping it (or [`JournalWriter::close`]) writes
/// what is pending and ends the thread.
pub(crate) struct JournalWriter {
    /// Held only to insert, remove or take entries, never across a write.
    shared: Arc<Mutex<Shared>>,
    /// Wakes the writer. Unbounded: a send never waits. Few messages go through
    /// it: one per write the bytes threshold asks for, one per upload that ends
    /// with its journal on disk (and, without an interval, one per update and
    /// receipt).
    tx: Option<mpsc::Sender<Message>>,
    interval: Duration,
    bytes: u64,
    /// Set once the run is being stopped from outside: every receipt is then
    /// written at once, since the process may be ended without waiting for the
    /// next interval (a second Ctrl-C).
    hurry: AtomicBool,
    thread: Option<JoinHandle<()>>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl JournalWriter {
    /// Starts the writer thread for `journal` and `receipts`.
    pub(crate) fn start(
        journal: Journal,
        receipts: Receipts,
        interval: Duration,
        bytes: u64,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut writer = Writer {
            journal,
            receipts,
            interval,
            shared: Arc::clone(&shared),
            dir_ready: false,
        };
        let thread = std::thread::Builder::new()
            .name("idb-journal".into())
            .spawn(move || writer.run(&rx))
            .ok();
        Self {
            shared,
            tx: thread.is_some().then_some(tx),
            interval,
            bytes,
            hurry: AtomicBool::new(false),
            thread,
        }
    }

    /// From now on writes every receipt at once, and writes what is pending now.
    pub(crate) fn hurry(&self) {
        self.hurry.store(true, Ordering::Relaxed);
        self.send(Message::Write);
    }

    /// Whether a receipt should be written without waiting for the interval.
    fn receipts_now(&self) -> bool {
        self.interval.is_zero() || self.hurry.load(Ordering::Relaxed)
    }

    fn send(&self, message: Message) {
        if let Some(tx) = &self.tx {
            // Fails only if the thread is gone; resuming then starts earlier.
            let _ = tx.send(message);
        }
    }

    /// Records an upload's newest state (written later).
    pub(crate) fn update(&self, entry: Entry) {
        let key = entry.key();
        let mut shared = lock(&self.shared);
        let before = shared.acked.insert(key, entry.acked).unwrap_or(0);
        let was = shared.bytes;
        shared.bytes += entry.acked.saturating_sub(before);
        shared.dirty.insert(key, entry);
        // Wake the writer once when the threshold is crossed, or always without
        // an interval to wait for.
        let wake = self.interval.is_zero() || (was < self.bytes && shared.bytes >= self.bytes);
        drop(shared);
        if wake {
            self.send(Message::Write);
        }
    }

    /// Records an upload's newest state and waits until it is on disk. A write
    /// that failed (also reported as usual) is an `Err` saying why: the caller
    /// must not go on as if it were durable.
    pub(crate) async fn save_now(&self, entry: Entry) -> Result<(), String> {
        let (done, written) = oneshot::channel();
        self.send(Message::Now {
            entry: Box::new(entry),
            done,
        });
        written
            .await
            // The writer's thread ends only when the run drops the writer, so
            // this is a panic in it: say so rather than blame the directory.
            .unwrap_or_else(|_| {
                Err(
                    "the journal's writer thread ended unexpectedly (a bug in idb: \
                     please report it)"
                        .to_owned(),
                )
            })
    }

    /// An upload ended, unfinished (`keep`: its last entry, written at once) or
    /// verified (`None`: its journal, if any, is removed, after its `receipt` is
    /// appended). `on_disk`: a journal of it was found at the start. The name's
    /// `lock` goes once that is done.
    pub(crate) fn end(
        &self,
        key: Key,
        keep: Option<Entry>,
        receipt: Option<ReceiptRecord>,
        on_disk: bool,
        lock_held: Option<NameLock>,
    ) {
        let mut shared = lock(&self.shared);
        shared.dirty.remove(&key);
        shared.acked.remove(&key);
        let on_disk = shared.on_disk.remove(&key) || on_disk;
        let has_receipt = receipt.is_some();
        shared.receipts.extend(receipt);
        drop(shared);
        if keep.is_none() && !on_disk {
            // Nothing of it on disk and nothing to write: the lock goes now, and
            // the receipt waits for the next write.
            if has_receipt && self.receipts_now() {
                self.send(Message::Write);
            }
            return;
        }
        self.send(Message::End {
            key,
            keep: keep.map(Box::new),
            lock: lock_held,
        });
    }

    /// Records a receipt (appended with the next write): a skipped file found
    /// under another identity, so the next run knows it without reading it.
    pub(crate) fn record(&self, receipt: ReceiptRecord) {
        lock(&self.shared).receipts.push(receipt);
        if self.receipts_now() {
            self.send(Message::Write);
        }
    }

    #[cfg(test)]
    async fn ping(&self) {
        let (done, handled) = oneshot::channel();
        self.send(Message::Ping(done));
        let _ = handled.await;
    }

    /// Failures since the last call.
    pub(crate) fn failures(&self) -> Vec<WriteFailure> {
        std::mem::take(&mut lock(&self.shared).failures)
    }

    /// Writes what is pending and waits for the thread to end: the failures
    /// not reported yet, and the uploads whose latest journal write failed.
    pub(crate) async fn close(mut self) -> (Vec<WriteFailure>, HashSet<Key>) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        let unsaved = std::mem::take(&mut lock(&self.shared).unsaved);
        (self.failures(), unsaved)
    }
}

impl Drop for JournalWriter {
    fn drop(&mut self) {
        // Closing the channel makes the thread write what is pending and end;
        // it is not waited for here (`close` does).
        self.tx = None;
    }
}

/// The thread's state.
struct Writer {
    journal: Journal,
    receipts: Receipts,
    interval: Duration,
    shared: Arc<Mutex<Shared>>,
    dir_ready: bool,
}

impl Writer {
    fn run(&mut self, rx: &mpsc::Receiver<Message>) {
        // Without an interval, every update sends `Write`: no need to tick.
        let tick = if self.interval.is_zero() {
            Duration::MAX
        } else {
            self.interval
        };
        loop {
            match rx.recv_timeout(tick) {
                Ok(Message::Write) | Err(RecvTimeoutError::Timeout) => self.write_dirty(),
                Ok(Message::End { key, keep, lock }) => {
                    match keep {
                        // A failure is kept for the run's report.
                        Some(entry) => {
                            let _ = self.write(&entry);
                        }
                        None => {
                            // The receipt first: a crash between the two leaves
                            // the journal (resumed, then refused as verified),
                            // never neither.
                            self.append_receipts();
                            // A journal that cannot be removed costs only a
                            // useless resume attempt on a later run, which the
                            // server's answer corrects.
                            let _ = self.journal.remove(key);
                        }
                    }
                    drop(lock);
                }
                Ok(Message::Now { entry, done }) => {
                    {
                        let mut shared = lock(&self.shared);
                        // Newer than anything pending for it; marked as in
                        // `write_dirty`, before the write.
                        shared.dirty.remove(&entry.key());
                        shared.on_disk.insert(entry.key());
                    }
                    let written = self.write(&entry);
                    self.write_dirty();
                    let _ = done.send(written);
                }
                #[cfg(test)]
                Ok(Message::Ping(done)) => {
                    let _ = done.send(());
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.write_dirty();
                    return;
                }
            }
        }
    }

    /// Appends the pending receipts (one write and one fsync per receipts file).
    fn append_receipts(&mut self) {
        let pending = std::mem::take(&mut lock(&self.shared).receipts);
        if pending.is_empty() {
            return;
        }
        let failed = self.receipts.append(&pending);
        if failed.is_empty() {
            return;
        }
        let dir = self.receipts.dir().display().to_string();
        let mut shared = lock(&self.shared);
        for (e, records) in failed {
            for record in records {
                shared.failures.push(WriteFailure {
                    path: record.path.clone(),
                    what: Unsaved::Receipt,
                    reason: format!(
                        "cannot record its receipt in {dir}: {e}; it is verified, but a re-run \
                         will not know it and meets its name in the dataset"
                    ),
                });
            }
        }
    }

    /// Writes every entry that changed since the last write, then the pending
    /// receipts.
    fn write_dirty(&mut self) {
        let dirty = {
            let mut shared = lock(&self.shared);
            shared.bytes = 0;
            let dirty = std::mem::take(&mut shared.dirty);
            // Marked before the write: an upload ending meanwhile sends its end
            // here, after this write, rather than leave a journal behind.
            shared.on_disk.extend(dirty.keys().copied());
            dirty
        };
        for entry in dirty.values() {
            // A failure is kept for the run's report.
            let _ = self.write(entry);
        }
        self.append_receipts();
    }

    /// Writes `entry`; a failure is also kept for the run's report.
    fn write(&mut self, entry: &Entry) -> Result<(), String> {
        let result = if self.dir_ready {
            Ok(())
        } else {
            self.journal.create_dir()
        }
        .and_then(|()| {
            self.dir_ready = true;
            self.journal.save(entry)
        });
        if result.is_ok() {
            lock(&self.shared).unsaved.remove(&entry.key());
        }
        result.map_err(|e| {
            let reason = format!(
                "cannot write the journal in {}: {e}",
                self.journal.dir().display()
            );
            let mut shared = lock(&self.shared);
            // Told once until a write of it goes through again (a full disk
            // would otherwise be told every second).
            if shared.unsaved.insert(entry.key()) {
                shared.failures.push(WriteFailure {
                    path: entry.path.clone(),
                    what: Unsaved::Journal,
                    reason: reason.clone(),
                });
            }
            reason
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::tests::entry;
    use crate::journal::{Entry, Journal, Loaded};
    use crate::receipts::tests::record;

    fn load(journal: &Journal) -> Loaded {
        journal.load("https://h/", "IDB-1", "a.bin")
    }

    /// A writer of `journal`, with the receipts next to it.
    fn start(journal: &Journal, interval: Duration, bytes: u64) -> JournalWriter {
        JournalWriter::start(journal.clone(), receipts(journal), interval, bytes)
    }

    fn receipts(journal: &Journal) -> Receipts {
        Receipts::new(journal.dir().with_file_name("receipts"))
    }

    #[tokio::test]
    async fn updates_wait_for_the_interval_and_the_end_of_the_run_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().join("journal"));
        // An interval no test run reaches.
        let writer = start(&journal, Duration::from_secs(3600), u64::MAX);
        writer.update(entry());
        let mut newer = entry();
        newer.acked = 60;
        writer.update(newer.clone());
        writer.ping().await;
        assert!(matches!(load(&journal), Loaded::Nothing), "not yet");
        assert!(writer.close().await.0.is_empty());
        match load(&journal) {
            Loaded::Found(found) => assert_eq!(*found, newer, "the newest entry is written"),
            other => panic!("{other:?}"),
        }
        // A verified upload's journal found on disk is removed.
        let writer = start(&journal, Duration::from_secs(3600), u64::MAX);
        writer.end(newer.key(), None, None, true, None);
        writer.ping().await;
        assert!(matches!(load(&journal), Loaded::Nothing));
        writer.close().await;
    }

    #[tokio::test]
    async fn a_zero_interval_writes_every_update() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().join("journal"));
        let writer = start(&journal, Duration::ZERO, u64::MAX);
        writer.update(entry());
        writer.ping().await;
        assert!(matches!(load(&journal), Loaded::Found(_)));
        writer.close().await;
    }

    #[tokio::test]
    async fn an_upload_verified_before_the_next_write_never_touches_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().join("journal"));
        let writer = start(&journal, Duration::from_secs(3600), u64::MAX);
        writer.update(entry());
        writer.end(entry().key(), None, None, false, None);
        writer.close().await;
        assert!(!journal.dir().exists(), "nothing was written");
    }

    #[tokio::test]
    async fn enough_bytes_write_without_waiting_for_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().join("journal"));
        let writer = start(&journal, Duration::from_secs(3600), 30);
        let at = |acked| Entry { acked, ..entry() };
        writer.update(at(10));
        writer.ping().await;
        assert!(
            matches!(load(&journal), Loaded::Nothing),
            "10 bytes: not yet"
        );
        writer.update(at(45));
        writer.ping().await;
        match load(&journal) {
            Loaded::Found(found) => assert_eq!(found.acked, 45, "35 bytes since: written"),
            other => panic!("{other:?}"),
        }
        // An unfinished upload's end is written at once.
        writer.end(entry().key(), Some(at(90)), None, true, None);
        writer.ping().await;
        match load(&journal) {
            Loaded::Found(found) => assert_eq!(found.acked, 90),
            other => panic!("{other:?}"),
        }
        writer.close().await;
    }

    #[tokio::test]
    async fn saving_now_says_whether_the_entry_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().join("journal"));
        let writer = start(&journal, Duration::from_secs(3600), u64::MAX);
        assert_eq!(writer.save_now(entry()).await, Ok(()));
        assert!(
            matches!(load(&journal), Loaded::Found(_)),
            "on disk before the answer"
        );
        writer.close().await;

        let blocker = dir.path().join("blocked");
        std::fs::write(&blocker, b"").unwrap();
        let writer = start(&Journal::new(blocker), Duration::from_secs(3600), u64::MAX);
        let refused = writer.save_now(entry()).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("cannot write the journal")),
            "{refused:?}"
        );
        assert_eq!(writer.close().await.0.len(), 1, "and reported as usual");
    }

    #[tokio::test]
    async fn a_journal_that_cannot_be_written_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where the directory should be.
        let blocker = dir.path().join("journal");
        std::fs::write(&blocker, b"").unwrap();
        let writer = start(&Journal::new(blocker), Duration::ZERO, 0);
        writer.update(entry());
        let (failures, unsaved) = writer.close().await;
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert_eq!(failures[0].path, entry().path);
        assert_eq!(unsaved, HashSet::from([entry().key()]));
    }

    /// An upload whose journal write failed counts as unsaved until a later
    /// write of it goes through (the directory became writable again).
    #[tokio::test]
    async fn a_journal_written_after_a_failure_is_saved_again() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("journal");
        std::fs::write(&blocker, b"").unwrap();
        let writer = start(&Journal::new(blocker.clone()), Duration::ZERO, 0);
        assert!(writer.save_now(entry()).await.is_err());
        std::fs::remove_file(&blocker).unwrap();
        assert!(writer.save_now(entry()).await.is_ok());
        let (failures, unsaved) = writer.close().await;
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(unsaved.is_empty(), "{unsaved:?}");
    }

    #[tokio::test]
    async fn verified_uploads_are_appended_as_one_receipts_file_in_one_batch() {
        const N: usize = 50;
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().join("journal"));
        let receipts = receipts(&journal);
        let writer = start(&journal, Duration::from_secs(3600), u64::MAX);
        for i in 0..N {
            let receipt = record(&format!("f{i}.bin"));
            let key = Key::of(&receipt.server, &receipt.dataset, &receipt.filename);
            writer.end(key, None, Some(receipt), false, None);
        }
        writer.ping().await;
        assert!(!receipts.dir().exists(), "not before the next write");
        assert!(writer.close().await.0.is_empty());
        let files: Vec<_> = std::fs::read_dir(receipts.dir()).unwrap().collect();
        assert_eq!(files.len(), 1, "one file per dataset");
        let file = receipts.file("https://h/", "IDB-1");
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.lines().count(), N);
        assert_eq!(
            receipts.load("https://h/", "IDB-1").unwrap().newest.len(),
            N
        );
        // A crash in the middle of the next batch tears its last line.
        let torn = serde_json::to_string(&record("torn.bin")).unwrap();
        let mut appended = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        std::io::Write::write_all(&mut appended, &torn.as_bytes()[..torn.len() - 9]).unwrap();
        let loaded = receipts.load("https://h/", "IDB-1").unwrap();
        assert_eq!(loaded.newest.len(), N, "the torn line is passed over");
        assert!(!loaded.newest.contains_key("torn.bin"));
        assert_eq!(loaded.damaged.map(|d| d.damaged), Some(1), "and counted");
    }

    #[tokio::test]
    async fn a_verified_upload_with_a_journal_on_disk_leaves_its_receipt_and_no_journal() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().join("journal"));
        let receipts = receipts(&journal);
        let writer = start(&journal, Duration::from_secs(3600), u64::MAX);
        writer.end(entry().key(), Some(entry()), None, true, None);
        writer.ping().await;
        assert!(matches!(load(&journal), Loaded::Found(_)));
        writer.end(entry().key(), None, Some(record("a.bin")), true, None);
        writer.ping().await;
        // Handled at once (not at the next write): the receipt is there and the
        // journal gone.
        assert!(matches!(load(&journal), Loaded::Nothing));
        let loaded = receipts.load("https://h/", "IDB-1").unwrap();
        assert_eq!(loaded.newest["a.bin"], record("a.bin"));
        writer.close().await;
    }

    #[tokio::test]
    async fn a_receipt_that_cannot_be_saved_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().join("journal"));
        // A regular file where the receipts directory should be.
        std::fs::write(receipts(&journal).dir(), b"").unwrap();
        let writer = start(&journal, Duration::ZERO, 0);
        writer.end(entry().key(), None, Some(record("a.bin")), false, None);
        let (failures, _) = writer.close().await;
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert_eq!(failures[0].what, Unsaved::Receipt);
        assert_eq!(failures[0].path, record("a.bin").path);
    }
}
