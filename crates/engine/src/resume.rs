//! Where an upload starts: opening the file at its turn, reading its journal,
//! deciding between resuming and `setup`, and keeping the journal entry up to
//! date as the server acknowledges.

use std::path::PathBuf;
use std::sync::Arc;

use idb_read::{ChunkMemory, ChunkPlan, HashState, ReadMode, Reader, ReaderConfig, SourceFile};
use idb_wire::WriteMode;

use crate::acked::Acked;
use crate::chunking::ChunkSizer;
use crate::journal::{Entry, JOURNAL_VERSION, Journal, Loaded};
use crate::open_file::{Deadline, FileState, OpenFile};
use crate::preflight::CheckedFile;
use crate::protocol::Protocol;
use crate::run::Run;
use crate::{Error, Event, RestartReason};

/// Where an upload starts.
pub(crate) enum Start {
    Fresh,
    Resume { offset: u64, mode: WriteMode },
}

/// What the blocking part of a file's start found.
pub(crate) struct Opened {
    pub(crate) file: OpenFile,
    pub(crate) start: Start,
    pub(crate) state: FileState,
    pub(crate) reader: Reader,
    /// The chunk size the reader started with.
    pub(crate) planned_chunk: u64,
    /// Something to tell about the journal.
    pub(crate) note: Option<Event>,
    /// What the journal kept of the upload on the server (tus), to hand back
    /// to the protocol.
    pub(crate) saved: Option<crate::tus::TusRecord>,
}

/// What the blocking part of a file's start needs (owned: it runs on another
/// thread).
pub(crate) struct Opening {
    pub(crate) checked: CheckedFile,
    pub(crate) mode: ReadMode,
    pub(crate) reader: ReaderConfig,
    pub(crate) memory: ChunkMemory,
    pub(crate) sizer: Arc<ChunkSizer>,
    pub(crate) journal: Option<Journal>,
    pub(crate) template: Option<Entry>,
    /// When the file's upload gives up, if it has a deadline.
    pub(crate) deadline: Option<Deadline>,
    /// Chunks (but the last) are whole multiples of this ([`Protocol::granule`]).
    pub(crate) granule: u64,
}

impl Opening {
    /// Opens the file, reads its journal, decides where to start, and starts the
    /// reader there (a small file is read in place now). Blocking.
    pub(crate) fn run(self) -> Result<Opened, Error> {
        let c = &self.checked;
        // Files too small for a map are read in place with one positional read.
        let mode = match self.mode {
            ReadMode::Auto if c.size() <= self.reader.in_place_max => ReadMode::Positional,
            mode => mode,
        };
        let source = SourceFile::open_expecting(&c.path, mode, &c.identity)?;
        // The file as opened: its status may have changed since the check (a
        // chmod, or a write whose time was put back), and the journal must be
        // matched with what is read from now on, so that such a change makes
        // the held bytes be hashed again.
        let identity = source.identity();
        let template = self.template.map(|template| Entry {
            changed: Some(identity.changed),
            ..template
        });
        if let Some(fs) = source.network_fs().filter(|_| mode == ReadMode::Auto) {
            tracing::info!(
                path = %c.path.display(),
                file_system = fs.name(),
                "read with positional reads: on a network file system another host may \
                 truncate a mapped file"
            );
        }
        let mut note = None;
        let mut on_disk = false;
        let mut start = Start::Fresh;
        let mut hash = HashState::new(c.size());
        let mut acked = Acked::default();
        let mut resumed = None;
        let mut saved = None;
        if let (Some(journal), Some(template)) = (&self.journal, &template) {
            match journal.load(&template.server, &template.dataset, &template.filename) {
                Loaded::Nothing => {}
                Loaded::Found(found)
                    if found.describes(&template.path, &identity)
                        // Its status changed (a chmod), or it moved: the
                        // bytes the server holds are read again and compared.
                        || (found.same_inode(&identity)
                            && prefix_unchanged(&c.path, &found)) =>
                {
                    on_disk = true;
                    // The size the last run had adapted to (a resume has no setup
                    // to measure the round trip with).
                    self.sizer.at_least(found.chunk_size);
                    if let Some(saved) = found.hash.filter(|h| h.size() == c.size()) {
                        hash = saved;
                    }
                    // Partials that ended out of order are on the server too.
                    let beyond = found
                        .tus
                        .iter()
                        .flat_map(|tus| tus.partials.iter().map(|p| (p.offset, p.offset + p.len)));
                    acked = Acked::from_journal(found.acked).with_beyond(beyond);
                    saved = found.tus.clone().map(|record| *record);
                    start = Start::Resume {
                        offset: found.acked,
                        mode: if found.offset_mode {
                            WriteMode::Offset
                        } else {
                            WriteMode::Strict
                        },
                    };
                    // Kept up to date from what the journal says (not from a blank
                    // entry): an upload that ends before its first acknowledgement
                    // saves the journal as it found it.
                    resumed = Some(Entry {
                        // Where it is now, if it moved.
                        path: template.path.clone(),
                        hash: Some(hash.clone()),
                        chunk_size: self.sizer.current(),
                        // A journal of an earlier idb had none.
                        changed: Some(identity.changed),
                        ..*found
                    });
                }
                Loaded::Found(found) => {
                    on_disk = true;
                    note = Some(Event::Restarted {
                        path: c.path.clone(),
                        reason: if found.path == template.path {
                            RestartReason::FileChanged
                        } else {
                            RestartReason::OtherPath
                        },
                    });
                }
                Loaded::Unusable(reason) => {
                    on_disk = true;
                    note = Some(Event::JournalIgnored {
                        path: c.path.clone(),
                        reason,
                    });
                }
            }
        }
        let session = matches!(start, Start::Resume { .. });
        // Fresh: until the setup says otherwise.
        let write_mode = match start {
            Start::Resume { mode, .. } => mode,
            Start::Fresh => WriteMode::Strict,
        };
        let record = resumed.or(template);
        let planned_chunk = self.sizer.current();
        let plan = ChunkPlan::starting_at(acked.prefix, c.size(), self.sizer.policy(self.granule));
        let reader = Reader::start(&source, plan, hash.clone(), &self.reader, &self.memory);
        Ok(Opened {
            file: OpenFile {
                path: c.path.clone(),
                filename: c.filename.clone(),
                size: c.size(),
                source,
                deadline: self.deadline,
            },
            start,
            state: FileState {
                acked,
                hash,
                record,
                session,
                on_disk,
                mode: write_mode,
            },
            reader,
            planned_chunk,
            note,
            saved,
        })
    }
}

impl<P: Protocol> Run<'_, P> {
    /// Hands the journal writer the upload's newest state (it writes it later).
    pub(crate) fn record_progress(&self, state: &mut FileState) {
        let Some((_, writer)) = &self.journal else {
            return;
        };
        if let Some(entry) = self.fill(state) {
            writer.update(entry);
        }
    }

    /// [`Run::record_progress`], then waits until the journal is on disk: a
    /// state the next call must not go out without (a tus registration). An
    /// `Err` says why it is not on disk. (No journal: nothing to wait for.)
    pub(crate) async fn record_now(&self, state: &mut FileState) -> Result<(), String> {
        let Some((_, writer)) = &self.journal else {
            return Ok(());
        };
        match self.fill(state) {
            Some(entry) => writer.save_now(entry).await,
            None => Ok(()),
        }
    }

    /// The journal entry brought up to date with `state` and the protocol's
    /// record (a copy to write).
    fn fill(&self, state: &mut FileState) -> Option<Entry> {
        let (acked, hash) = (state.acked.prefix, state.hash.clone());
        let entry = state.record.as_mut()?;
        entry.acked = acked;
        entry.chunk_size = self.sizer.current();
        entry.hash = Some(hash);
        entry.tus = self
            .protocol
            .saved(crate::protocol::FileRef {
                filename: &entry.filename,
                size: entry.size,
            })
            .map(Box::new);
        Some(entry.clone())
    }

    /// The journal entry this upload keeps up to date.
    pub(crate) fn journal_entry(&self, c: &CheckedFile) -> Entry {
        let identity = c.identity;
        Entry {
            version: JOURNAL_VERSION,
            server: self.config.server.to_string(),
            dataset: self.config.dataset.to_string(),
            filename: c.filename.clone(),
            path: absolute(&c.path),
            size: identity.size,
            modified: identity.modified,
            changed: Some(identity.changed),
            device: identity.device,
            inode: identity.inode,
            acked: 0,
            chunk_size: self.sizer.current(),
            offset_mode: false,
            hash: None,
            tus: None,
        }
    }
}

/// `path` made absolute (against the current directory), so a journal written
/// from one directory is found from another.
pub(crate) fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Whether [`prefix_unchanged`] can tell for `found`: its hash state covers
/// what the server holds, and the upload is not by concatenation.
pub(crate) fn prefix_comparable(found: &Entry) -> bool {
    found
        .hash
        .as_ref()
        .is_some_and(|saved| saved.size() == found.size && saved.upto() >= found.acked)
        && !found.tus.as_ref().is_some_and(|t| t.concat)
}

/// For a journal that describes the file at `path` but for its change time
/// (a `chmod`, a `chown`, a new link, a move, or a write with its modification
/// time put back) or its path (moved): whether the bytes the server holds are still the file's. The
/// journal's hash state covers them; the file's prefix is hashed again and
/// compared (a read of what the server already has, far cheaper than sending
/// it again). Uploads by concatenation are not compared: their partials past
/// the prefix are not covered, so they start over. Blocking.
fn prefix_unchanged(path: &std::path::Path, found: &Entry) -> bool {
    let Some(saved) = found.hash.as_ref().filter(|_| prefix_comparable(found)) else {
        return false;
    };
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    HashState::read_again(&file, found.size, saved.upto(), &|| false)
        .is_ok_and(|again| again.as_ref() == Some(saved))
}
