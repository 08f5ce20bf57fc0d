use std::path::PathBuf;
use std::time::Duration;

use idb_read::ReadError;
use idb_wire::{DatasetKey, Phase, WireError};
use thiserror::Error;
use url::Url;

use crate::tls::{CaCertProblem, CertificateProblem};

/// Why a file's name cannot be used (found before anything is sent).
#[derive(Debug, Error)]
pub enum NameProblem {
    /// Its name cannot be a Data Bank file name.
    #[error("{0}; rename the file")]
    Invalid(#[source] WireError),
    /// Its name is not valid UTF-8.
    #[error("its name is not valid UTF-8; rename the file")]
    NotUtf8,
    /// Another file of the same run has the same base name.
    #[error(
        "another file in this upload, {other}, has the same name; a dataset holds one file per name"
    )]
    Duplicate {
        /// The other file.
        other: PathBuf,
    },
}

/// Everything that can go wrong in an upload.
///
/// Each variant carries the facts (file, phase, offset, status) and its message says
/// what to do next. None of them carries the token.
#[derive(Debug, Error)]
pub enum Error {
    /// A file cannot be opened, read, or changed while it was read (from
    /// `idb-read`: not found, not a regular file, over 2 TiB, changed, I/O).
    #[error(transparent)]
    File(#[from] ReadError),
    /// A file's name cannot be used; found before anything was sent.
    #[error("{path}: {problem}")]
    BadName {
        /// The file.
        path: PathBuf,
        /// What is wrong with its name.
        problem: NameProblem,
    },
    /// The server refused the token (401). Fatal for the run.
    #[error(
        "the server refused the token for dataset {dataset} (HTTP 401): it is missing, wrong, \
         expired, or belongs to another dataset; get a new token from the dataset's edit page"
    )]
    Unauthorized {
        /// The dataset.
        dataset: DatasetKey,
    },
    /// The dataset is unknown or not a draft (404). Fatal for the run.
    #[error(
        "dataset {dataset} was not found on {server}, or it is no longer a draft (HTTP 404); \
         check the dataset key and the server"
    )]
    DatasetNotFound {
        /// The dataset.
        dataset: DatasetKey,
        /// The server asked.
        server: Url,
    },
    /// A file of that name is already in the dataset: the server refused setup
    /// with 409 saying so (it never overwrites a verified file).
    #[error(
        "{path}: {filename:?} is already in dataset {dataset} (verified earlier, {}); nothing \
         of this file was sent: remove it on the dataset's page, or rename the local file \
         (--force does not overwrite)",
        if *recorded {
            "by a run recorded in the state directory: see `idb status`"
        } else {
            "not by a run recorded in the state directory, though a run killed or unable to \
             save its receipts may have verified this very file"
        }
    )]
    AlreadyExists {
        /// The local file.
        path: PathBuf,
        /// The name in the dataset.
        filename: String,
        /// The dataset.
        dataset: DatasetKey,
        /// Whether the state directory has a receipt of a verified upload of
        /// that name (this file since changed, or `force` ignored the receipt).
        recorded: bool,
    },
    /// The server refused setup with 409 (Conflict) without saying the name is
    /// taken: in this protocol a conflict on setup is about the name.
    #[error(
        "{path}: the server refused to set up {filename:?} in dataset {dataset} with HTTP 409 \
         (a conflict over the name: it may be in the dataset already), saying: {}; \
         look at the dataset's page, and remove the file there or rename the local file",
        if message.is_empty() { "nothing" } else { message.as_str() }
    )]
    SetupConflict {
        /// The local file.
        path: PathBuf,
        /// The name in the dataset.
        filename: String,
        /// The dataset.
        dataset: DatasetKey,
        /// What the server said, cleaned (no token, no control characters,
        /// cut; empty if nothing).
        message: String,
    },
    /// A chunk was over the server's request limit (413).
    #[error(
        "{path}: the server refused a {len}-byte chunk as too large (HTTP 413); \
         try again with a smaller --chunk-size"
    )]
    ChunkTooLarge {
        /// The local file.
        path: PathBuf,
        /// The chunk's length.
        len: u64,
    },
    /// The server holds a different number of bytes than this upload sent (409).
    #[error(
        "{path}: the server expected the chunk at byte {expected}, but this upload was at byte \
         {sent}; another upload of the same file may be running"
    )]
    OffsetConflict {
        /// The local file.
        path: PathBuf,
        /// The offset sent.
        sent: u64,
        /// The offset the server wanted.
        expected: u64,
    },
    /// The server has no open upload for this file any more.
    #[error(
        "{path}: the server has no open upload for this file any more (it may have restarted); run the upload again"
    )]
    SessionLost {
        /// The local file.
        path: PathBuf,
    },
    /// The server refused verify: not all bytes arrived.
    #[error(
        "{path}: the server refused verify: it holds {received} of {expected} bytes; run the upload again"
    )]
    Incomplete {
        /// The local file.
        path: PathBuf,
        /// Bytes the server holds.
        received: u64,
        /// Bytes it expected.
        expected: u64,
    },
    /// Another upload of the same name into the same dataset is running on this
    /// machine (it holds the name's lock); nothing was sent.
    #[error(
        "{path}: another idb ({}) is uploading {filename:?} into {dataset}; nothing of this file \
         was sent: wait for it to finish, or rename the local file",
        match pid { Some(pid) => format!("pid {pid}"), None => "process".to_owned() }
    )]
    Busy {
        /// The local file.
        path: PathBuf,
        /// The name in the dataset.
        filename: String,
        /// The dataset.
        dataset: DatasetKey,
        /// The process holding the name, if known.
        pid: Option<u32>,
    },
    /// The server verified the file under another name than it was sent as
    /// (a server that trims or changes names).
    #[error(
        "{path}: the server verified it as {verified:?}, not as {sent:?}, the name it was sent \
         as: its bytes may have replaced a file of that name in the dataset; check the \
         dataset's page"
    )]
    NameMismatch {
        /// The local file.
        path: PathBuf,
        /// The name it was sent as.
        sent: String,
        /// The name the server's receipt gives.
        verified: String,
    },
    /// The server's copy is not what was sent.
    #[error(
        "{path}: the server's copy differs from what was sent ({what}); the file is in the \
         dataset but corrupt: delete it there and upload again"
    )]
    IntegrityMismatch {
        /// The local file.
        path: PathBuf,
        /// Which property differs, with both values.
        what: String,
    },
    /// A call kept failing in ways that may pass (connection errors, timeouts,
    /// 5xx, 429) until the retry policy gave up: its attempts were used, or the
    /// next one would have come after its deadline.
    #[error(
        "{path}: gave up on {phase} at byte {offset} after {attempts} attempt{} in {} (last: \
         {last}); the server or the network may be down: run the same command again later \
         (--attempts and --call-deadline say how long a call is tried)",
        if *attempts == 1 { "" } else { "s" },
        seconds(*elapsed)
    )]
    GaveUp {
        /// The local file.
        path: PathBuf,
        /// The call.
        phase: Phase,
        /// The offset.
        offset: u64,
        /// Attempts made.
        attempts: u32,
        /// From the first attempt to giving up (waits for a new token not counted).
        elapsed: Duration,
        /// The last reason, for people (what the server said is cleaned: no
        /// token, no control characters, cut).
        last: String,
    },
    /// Every attempt of a call went unanswered (connections refused or broken,
    /// nothing moving for the idle timeout), and no other call of the run got an
    /// answer meanwhile: the server stopped answering. Fatal for the run, since
    /// every other file would wait as long; what was acknowledged is kept.
    #[error("{server} stopped answering (no call got an answer meanwhile): {gave_up}")]
    ServerStopped {
        /// The server.
        server: Url,
        /// The call that gave up ([`Error::GaveUp`]).
        gave_up: Box<Error>,
    },
    /// A verify was refused without a reason after an earlier verify of the
    /// file may have gone through (its answer was lost, or the last run may
    /// have been stopped during it): the file may be in the dataset already.
    /// It is not started over (that could add it twice); its journal is
    /// dropped, so the next run's setup finds out (a name already in the
    /// dataset is refused).
    #[error(
        "{path}: the server refused its verify (HTTP {status}) without saying why, after {}: \
         it may be in the dataset already. Check the dataset's page, or run the same command \
         again: a name already in the dataset is then reported as such",
        if *resumed {
            "the last run may have been stopped during its verify"
        } else {
            "the answer to an earlier verify of it was lost"
        }
    )]
    VerifyUnsettled {
        /// The local file.
        path: PathBuf,
        /// The refusal's HTTP status.
        status: u16,
        /// The doubt comes from the last run (a resumed upload), not this one.
        resumed: bool,
    },
    /// `--protocol tus` and the server has no tus 1.0.0 endpoint. Fatal for the run.
    #[error(
        "no tus server at {endpoint} (it answered OPTIONS with {answered}); check the server \
         address, or use --protocol auto to fall back to the chunked API"
    )]
    NoTus {
        /// The tus endpoint asked.
        endpoint: Url,
        /// What it answered, cleaned.
        answered: String,
    },
    /// Protocol 2: the registration of the finished tus upload was sent and its
    /// answer lost (in this run, or the last run was stopped while it was
    /// out), and the server cannot say whether it went through. It is not sent
    /// again: a second registration adds the file twice. Its journal is kept.
    #[error(
        "{path}: its upload is on the server whole, and its registration as {filename} was \
         sent but not answered; the server cannot say whether it went through (its lookup \
         answered HTTP {status}). It is not sent again, since that would add the file twice: \
         check the dataset's page; if {filename} is missing, upload it again with --force"
    )]
    RegistrationUnsettled {
        /// The local file.
        path: PathBuf,
        /// Its name in the dataset.
        filename: String,
        /// The lookup's HTTP status.
        status: u16,
    },
    /// Protocol 2: the upload is on the server whole, but the journal could
    /// not record that its registration was about to go out, so it was not
    /// sent: after a crash, the next run could not know to ask first, and
    /// might register the file twice.
    #[error(
        "{path}: its upload is on the server whole, but its registration as {filename} was \
         not sent, because the journal could not record it first ({reason}); otherwise a \
         crash could lead to registering it twice. Make the state directory writable again \
         (free space, permissions) or choose another with --state-dir, and run the same \
         command again"
    )]
    RegistrationNotRecorded {
        /// The local file.
        path: PathBuf,
        /// Its name in the dataset.
        filename: String,
        /// Why the journal could not be written.
        reason: String,
    },
    /// The file was not verified within its deadline
    /// ([`crate::UploadConfig::file_deadline`]); what the server acknowledged
    /// is kept for the next run.
    #[error(
        "{path}: not uploaded within its deadline of {} (--file-deadline); what the server \
         acknowledged is kept: run the same command again to go on from there",
        seconds(*deadline)
    )]
    FileDeadline {
        /// The local file.
        path: PathBuf,
        /// The deadline, from the file's turn.
        deadline: Duration,
    },
    /// The server kept moving the offset (realign, 413, incomplete verify).
    #[error(
        "{path}: the upload restarted {restarts} times without finishing; the server may be misbehaving"
    )]
    TooManyRestarts {
        /// The local file.
        path: PathBuf,
        /// Restarts made.
        restarts: u32,
    },
    /// The server held fewer bytes than it had acknowledged, a second time in
    /// one run: another upload of the same name is most likely running.
    #[error(
        "{path}: the server held fewer bytes than it had acknowledged, for the second time \
         in this run: another upload of the same name (from another machine, or with \
         another state directory) is most likely running, and each start over undoes the \
         other's; let only one run, then run the same command again"
    )]
    ServerWentBack {
        /// The local file.
        path: PathBuf,
    },
    /// Any other refusal (400 and the like).
    #[error(
        "{path}: the server {} {phase} at byte {offset} (HTTP {status}){}{}",
        refused(*status),
        said(message),
        advice(*status)
    )]
    Rejected {
        /// The local file.
        path: PathBuf,
        /// The call.
        phase: Phase,
        /// The offset reached.
        offset: u64,
        /// The status.
        status: u16,
        /// The server's explanation, cleaned (no token, no control characters,
        /// cut), possibly empty.
        message: String,
    },
    /// The server never answered in this run: wrong address, or no network.
    #[error("could not reach {server} ({last}); check the server address and the network")]
    Unreachable {
        /// The server.
        server: Url,
        /// The last failure, for people.
        last: String,
    },
    /// The server took connections but never answered a call in this run: not
    /// a byte of an answer in any attempt. Fatal for the run.
    #[error(
        "{server} accepted the connection but never answered ({attempts} attempt{}, idle timeout \
         {} each); check that it is the Data Bank's address, or try again later",
        if *attempts == 1 { "" } else { "s" },
        seconds(*waited)
    )]
    NoAnswer {
        /// The server.
        server: Url,
        /// Attempts made.
        attempts: u32,
        /// How long each attempt waited with nothing moving.
        waited: Duration,
    },
    /// The server answered setup as no Data Bank does: 501 or 405 to the
    /// upload API's POST, or a web page (HTML) as the success answer.
    /// Not retried; fatal for the run.
    #[error(
        "this does not look like a Data Bank API at {server}: it answered {phase} with {}{}; \
         check the server address (--server), which is the Data Bank's own, like \
         https://databank.illinois.edu",
        if (200..300).contains(status) {
            format!("a web page (HTTP {status})")
        } else {
            format!("HTTP {status}")
        },
        said(received)
    )]
    NotDataBank {
        /// The server.
        server: Url,
        /// The call answered.
        phase: Phase,
        /// The status.
        status: u16,
        /// What it sent, cleaned (no token, no control characters, cut),
        /// possibly empty.
        received: String,
    },
    /// An `https://` address whose server answered in plain HTTP: TLS cannot
    /// work there. Fatal for the run.
    #[error(
        "{server} does not speak TLS (it answered the TLS handshake in plain HTTP); \
         try {plain} if this is a test server, or check the address"
    )]
    NotTls {
        /// The server as given.
        server: Url,
        /// The same address with `http://`.
        plain: String,
    },
    /// An `http://` address whose server did not answer in HTTP (most likely
    /// an HTTPS server, whose TLS alert is no HTTP status line). Fatal for the
    /// run.
    #[error(
        "{server} did not answer in HTTP (as an HTTPS server answers a plain request); \
         if it serves HTTPS, try {https}; else check the address"
    )]
    NotHttp {
        /// The server as given.
        server: Url,
        /// The same address with `https://`.
        https: String,
    },
    /// The server's TLS certificate was refused (an unknown issuer, another
    /// host's name, expired): every call would meet it. Fatal for the run.
    #[error("the server's certificate is not trusted ({server}): {problem}")]
    UntrustedCertificate {
        /// The server as given.
        server: Url,
        /// Why it was refused, and what to do.
        problem: CertificateProblem,
    },
    /// A `--ca-cert` file (a private certificate authority) cannot be used;
    /// found before anything is sent.
    #[error("cannot use {} as a certificate authority (--ca-cert): {problem}", path.display())]
    CaCert {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: CaCertProblem,
    },
    /// The platform has no certificate authorities to verify servers with, and
    /// none were given (`--ca-cert`): nothing can be sent.
    #[error(
        "this system has no trusted certificate authorities (no CA bundle where SSL_CERT_FILE, \
         SSL_CERT_DIR or the system's default point); install the ca-certificates package, \
         set SSL_CERT_FILE to a CA bundle, or pass --ca-cert with the server's CA"
    )]
    NoSystemRoots,
    /// The state directory (or a file in it) cannot be read.
    #[error(
        "cannot read the state directory at {dir}: {reason}; check --state-dir (or IDB_STATE_DIR)"
    )]
    StateDir {
        /// The directory or file.
        dir: PathBuf,
        /// Why (in the message, not a source: shown once in an error chain).
        reason: std::io::Error,
    },
    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The HTTP client could not be built.
    #[error("cannot set up HTTP: {0}")]
    Client(#[source] reqwest::Error),
}

impl Error {
    /// Whether an upload that ended with this error is worth resuming later from
    /// its journal (the server keeps what it acknowledged, and nothing about the
    /// file or the exchange is wrong).
    pub fn worth_resuming(&self) -> bool {
        matches!(
            self,
            Error::File(
                ReadError::Io { .. }
                    | ReadError::Unreadable { .. }
                    | ReadError::ReaderFailed { .. }
            ) | Error::Unauthorized { .. }
                | Error::DatasetNotFound { .. }
                | Error::Unreachable { .. }
                | Error::NoAnswer { .. }
                | Error::GaveUp { .. }
                | Error::ServerStopped { .. }
                | Error::FileDeadline { .. }
                | Error::Incomplete { .. }
                | Error::ChunkTooLarge { .. }
                | Error::Rejected { .. }
                | Error::RegistrationUnsettled { .. }
                | Error::RegistrationNotRecorded { .. }
        )
    }

    /// Whether the same command, run again as it is, can take a file that
    /// ended with this error further (once the server, the network or the
    /// token is better): [`Error::worth_resuming`], but not an error that asks
    /// for a change first (a smaller `--chunk-size`, another part size, a
    /// state directory that takes writes) or a refusal the server would give
    /// again (a full disk aside).
    pub fn same_command_helps(&self) -> bool {
        self.worth_resuming()
            && !matches!(
                self,
                Error::ChunkTooLarge { .. } | Error::RegistrationNotRecorded { .. }
            )
            && !matches!(self, Error::Rejected { status, .. } if *status != 507)
    }

    /// Whether this error stops the whole run (no other file can succeed either).
    pub fn is_fatal_for_run(&self) -> bool {
        matches!(
            self,
            Error::Unauthorized { .. }
                | Error::DatasetNotFound { .. }
                | Error::Unreachable { .. }
                | Error::NoAnswer { .. }
                | Error::ServerStopped { .. }
                // The server's disk is full: no other file fits either.
                | Error::Rejected { status: 507, .. }
                | Error::NotDataBank { .. }
                | Error::NoTus { .. }
                | Error::NotTls { .. }
                | Error::NotHttp { .. }
                | Error::UntrustedCertificate { .. }
                // The state directory takes no writes: the other files'
                // registrations would meet the same.
                | Error::RegistrationNotRecorded { .. }
        )
    }
}

/// What to do about a refusal of this status, when there is more to say than
/// the server's words.
fn advice(status: u16) -> &'static str {
    match status {
        507 => {
            "; the server's disk is full, so no other file fits either: run the same command \
             once it has room again"
        }
        _ => "",
    }
}

/// What the server did with a call it did not take: a success status that
/// did not do what the call asked (a tus PATCH whose bytes were all dropped)
/// is no refusal.
fn refused(status: u16) -> &'static str {
    if (200..300).contains(&status) {
        "did not take"
    } else {
        "refused"
    }
}

/// `": what"`, or nothing when the server said nothing.
fn said(what: &str) -> String {
    if what.is_empty() {
        String::new()
    } else {
        format!(": {what}")
    }
}

/// A duration for a message: `30 s`, `1.5 s`, `0.25 s`.
fn seconds(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs >= 10.0 || duration.subsec_millis() == 0 {
        format!("{} s", secs.round())
    } else {
        format!("{} s", (secs * 1000.0).round() / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_attempt_is_said_in_the_singular() {
        let gave_up = |attempts| {
            Error::GaveUp {
                path: PathBuf::from("f.bin"),
                phase: Phase::Transfer,
                offset: 0,
                attempts,
                elapsed: Duration::from_secs(2),
                last: "HTTP 503".into(),
            }
            .to_string()
        };
        assert!(gave_up(1).contains("after 1 attempt in"), "{}", gave_up(1));
        assert!(gave_up(3).contains("after 3 attempts in"), "{}", gave_up(3));
    }
}
