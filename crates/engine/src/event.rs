use std::path::PathBuf;
use std::time::Duration;

use idb_wire::Phase;

/// Something that happened during a run, for a UI to show. The engine never
/// prints; it hands these to an [`EventSink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The run speaks this protocol, and why (sent once, before any file).
    ProtocolChosen {
        /// `chunked` (protocol 1) or `tus` (protocol 2).
        protocol: crate::Protocol,
        /// Why, and what the server serves, for people.
        reason: String,
    },
    /// A file's upload begins (after `setup` succeeded).
    FileStarted {
        /// The local file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// The server acknowledged a chunk: bytes `offset..offset + len` are stored.
    ChunkAcked {
        /// The local file.
        path: PathBuf,
        /// The chunk's offset (`previous_size`).
        offset: u64,
        /// The chunk's length.
        len: u64,
    },
    /// A call failed in a way that may pass; it is sent again after `delay`.
    Retry {
        /// The local file.
        path: PathBuf,
        /// The call.
        phase: Phase,
        /// The chunk's offset (the file size for verify, 0 for setup).
        offset: u64,
        /// The attempt that failed (1 for the first).
        attempt: u32,
        /// What went wrong, for people.
        reason: String,
        /// The wait before the next attempt.
        delay: Duration,
    },
    /// The server holds a different number of bytes than acknowledged so far;
    /// sending goes on from what it holds.
    Realigned {
        /// The local file.
        path: PathBuf,
        /// The offset the engine had reached.
        from: u64,
        /// The offset the server holds.
        to: u64,
    },
    /// A chunk's answer was lost and the server refused it when sent again,
    /// without saying where it is (no offset): it most likely holds the chunk
    /// already. The upload goes on from the chunk's end, and the next chunk's
    /// answer settles it (refused too: the upload starts over).
    AnswerLost {
        /// The local file.
        path: PathBuf,
        /// Where the chunk starts.
        offset: u64,
        /// Where it ends: the upload goes on from here.
        to: u64,
        /// The refusal's HTTP status.
        status: u16,
    },
    /// A journal says the server holds the first `offset` bytes of this very file:
    /// the upload goes on from there, without a new setup.
    Resumed {
        /// The local file.
        path: PathBuf,
        /// Where it goes on.
        offset: u64,
    },
    /// The upload starts over from byte 0, and why.
    Restarted {
        /// The local file.
        path: PathBuf,
        /// Why.
        reason: RestartReason,
    },
    /// A journal file could not be used (damaged, another version, changed);
    /// it is not trusted, and the upload does not depend on it.
    JournalIgnored {
        /// The local file.
        path: PathBuf,
        /// What was wrong, for people.
        reason: String,
    },
    /// The upload's journal could not be written (the state directory's disk
    /// is full, or it was removed): the upload goes on, but if the run stops
    /// before a later write goes through, the next run cannot resume it.
    JournalUnsaved {
        /// The local file.
        path: PathBuf,
        /// What was wrong, for people.
        reason: String,
    },
    /// The state directory (or its lock file) cannot be used: nothing is recorded
    /// for resuming, or nothing keeps another process from uploading the same
    /// names meanwhile.
    StateDirUnusable {
        /// The directory.
        dir: PathBuf,
        /// Why, for people.
        reason: String,
    },
    /// The server refused the token and a new one (from the configured refresh,
    /// such as a token file) is now in use.
    TokenRefreshed,
    /// `verify` succeeded: the file belongs to the dataset.
    FileVerified {
        /// The local file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// blake3 of the bytes sent, as hex (the server's receipt agreed, when
        /// it sent one).
        blake3: String,
        /// Whether the server reported the size and blake3 it holds (and they
        /// agreed). `false`: it answered 200 with no blake3 (at most a size,
        /// which agreed), as the documented API promises no more, so only its
        /// word says the bytes arrived whole.
        server_checked: bool,
    },
    /// The file was not uploaded: a receipt in the state directory says this very
    /// file (same metadata, or same size and blake3) was verified earlier.
    FileSkipped {
        /// The local file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// When it was verified, in seconds since the epoch (UTC).
        verified_at: u64,
    },
    /// A receipt of a verified upload could not be saved (`path` is the local
    /// file), or the receipts could not be read (`path` is the receipts file):
    /// a re-run does not skip what it does not know of.
    ReceiptProblem {
        /// The local file, or the receipts file.
        path: PathBuf,
        /// What went wrong, for people.
        reason: String,
    },
    /// The file was not uploaded; the [`crate::Report`] has the error itself.
    FileFailed {
        /// The local file.
        path: PathBuf,
        /// What went wrong, for people (the error's message).
        error: String,
        /// Bytes from the start the server confirmed holding in this run (a
        /// resumed upload's journal offset counts once the server accepted a
        /// chunk at it).
        acked: u64,
        /// Whether its journal is kept: the same command resumes it.
        resumable: bool,
    },
}

/// Why an upload starts over from byte 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartReason {
    /// The file is not the one the journal describes (changed since).
    FileChanged,
    /// The journal's upload of this name was of a file at another path (the
    /// file moved, or another file of the same name).
    OtherPath,
    /// The server has no open upload of it any more.
    ServerForgot,
    /// The server holds fewer bytes than it acknowledged: what it kept cannot be
    /// told apart from bytes someone else sent, so all of it is sent again.
    ServerLostBytes,
    /// A resumed upload's first call was refused without the server saying
    /// where it is (an error with no offset, as a server whose errors are web
    /// pages gives): it has no usable upload of the file. Happens at most once
    /// per file and run (a new setup is not a resume).
    ResumeRefused {
        /// The refusal's HTTP status.
        status: u16,
    },
    /// A chunk whose answer was lost was taken as received ([`Event::AnswerLost`]),
    /// and the server refused the next call too, without saying where it is.
    AnswerLostUnconfirmed {
        /// The refusal's HTTP status.
        status: u16,
    },
    /// The journal's upload was made with the other protocol than the one
    /// this run speaks (`--protocol` changed, or the server's answer to the
    /// probe did): an upload of one cannot go on by the other.
    ProtocolChanged {
        /// The protocol of the journal's upload.
        journal: crate::Protocol,
        /// The protocol of this run.
        run: crate::Protocol,
    },
}

impl Event {
    /// An [`Event::Retry`] for people, naming the file as `shown` (the caller
    /// chooses how: escaped path, file name): "retrying setup of NAME at byte 0
    /// in 1.0s (attempt 1 failed: REASON)", the reason's control characters
    /// escaped. `None` for any other event.
    pub fn retry_note(&self, shown: &str) -> Option<String> {
        let Event::Retry {
            phase,
            offset,
            attempt,
            reason,
            delay,
            ..
        } = self
        else {
            return None;
        };
        Some(format!(
            "retrying {phase} of {shown} at byte {offset} in {} (attempt {attempt} failed: {})",
            wait_text(*delay),
            crate::escape_controls(reason)
        ))
    }
}

/// A number of bytes as people read it: "1 byte", "0 bytes", "2 bytes".
pub fn bytes_text(n: u64) -> String {
    if n == 1 {
        "1 byte".to_owned()
    } else {
        format!("{n} bytes")
    }
}

/// A wait as people read it: tenths of a second under a minute ("1.2s"),
/// else whole seconds in units ("1m 30s", "1h").
pub(crate) fn wait_text(wait: Duration) -> String {
    if wait < Duration::from_secs(60) {
        format!("{:.1}s", wait.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(wait.as_secs())).to_string()
    }
}

/// Receives [`Event`]s. Called from the engine's tasks: keep it quick.
pub trait EventSink: Send + Sync {
    /// Handles one event.
    fn emit(&self, event: Event);
}

impl<F: Fn(Event) + Send + Sync> EventSink for F {
    fn emit(&self, event: Event) {
        self(event)
    }
}

/// An [`EventSink`] that drops everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl EventSink for NoEvents {
    fn emit(&self, _: Event) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_reads_as_words_with_its_reason_escaped() {
        let retry = Event::Retry {
            path: PathBuf::from("/data/a.bin"),
            phase: Phase::Transfer,
            offset: 8 << 20,
            attempt: 2,
            reason: "HTTP 503\nsecond line".into(),
            delay: Duration::from_millis(1250),
        };
        assert_eq!(
            retry.retry_note("a.bin").unwrap(),
            "retrying transfer of a.bin at byte 8388608 in 1.2s (attempt 2 failed: HTTP 503\\nsecond \
             line)"
        );
        assert_eq!(Event::TokenRefreshed.retry_note("a.bin"), None);
    }

    #[test]
    fn one_byte_is_singular() {
        assert_eq!(bytes_text(0), "0 bytes");
        assert_eq!(bytes_text(1), "1 byte");
        assert_eq!(bytes_text(2), "2 bytes");
    }

    #[test]
    fn a_long_wait_is_said_in_units() {
        let said = |ms| wait_text(Duration::from_millis(ms));
        assert_eq!(said(0), "0.0s");
        assert_eq!(said(59_940), "59.9s");
        assert_eq!(said(60_000), "1m");
        assert_eq!(said(90_500), "1m 30s");
        assert_eq!(said(3_600_000), "1h");
    }
}
