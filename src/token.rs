//! Where the token comes from: the IDB_TOKEN environment variable or a file.
//! Never from a command-line value, which other users can see in `ps`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use idb_engine::{Token, TokenRefresh};
use tokio::time::Instant;

use crate::console::Console;
use crate::text::escaped;

/// The environment variable that holds the token.
pub const TOKEN_ENV: &str = "IDB_TOKEN";

/// While waiting for a new token, how often the token file is read again.
const TOKEN_FILE_POLL: Duration = Duration::from_secs(1);

/// Where a token was read from, for messages (never the token itself).
#[derive(Debug, Clone)]
pub enum TokenSource {
    Env,
    File(PathBuf),
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Env => write!(f, "the {TOKEN_ENV} environment variable"),
            TokenSource::File(path) => write!(f, "the file {}", escaped(path)),
        }
    }
}

/// The most bytes of a token file read. A token is at most 4096 bytes; a file
/// much longer is not a token file, and read whole (`/dev/zero`, a data file
/// given by mistake) it would fill the memory.
const TOKEN_FILE_MAX: u64 = 16 * 1024;

/// A token read from a file, and a digest of the file's text (to notice a new
/// one without keeping another copy of the secret).
pub struct FileToken {
    pub token: Token,
    pub digest: blake3::Hash,
}

/// Reads the token from `--token-file` if given, else from `IDB_TOKEN`; the
/// file's digest too (the file is read once: a FIFO serves its token once).
pub fn load(
    token_file: Option<&Path>,
) -> anyhow::Result<(Token, TokenSource, Option<blake3::Hash>)> {
    match token_file {
        Some(path) => {
            let FileToken { token, digest } = read_file(path)?;
            Ok((token, TokenSource::File(path.to_owned()), Some(digest)))
        }
        None => match std::env::var(TOKEN_ENV) {
            Ok(text) => {
                let token = Token::new(&text)
                    .with_context(|| format!("the token in {} is not usable", TokenSource::Env))?;
                Ok((token, TokenSource::Env, None))
            }
            Err(std::env::VarError::NotPresent) => bail!(
                "no token: set {TOKEN_ENV} or pass --token-file PATH (the dataset's edit page \
                 on the Data Bank issues tokens)"
            ),
            Err(std::env::VarError::NotUnicode(_)) => bail!("{TOKEN_ENV} is not valid text"),
        },
    }
}

/// The token in the file at `path` (a FIFO or process substitution too: it
/// is opened once, and waited for as `cat` would).
fn read_file(path: &Path) -> anyhow::Result<FileToken> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read the token file {}", escaped(path)))?;
    read_token(file, path)
}

/// The token in `file` (opened from `path`): at most [`TOKEN_FILE_MAX`] bytes
/// are read, and a file of two lines or with a byte-order mark is named as
/// such (the token check would only say it holds spaces or other characters).
fn read_token(file: std::fs::File, path: &Path) -> anyhow::Result<FileToken> {
    use std::io::Read;
    let cannot = || format!("cannot read the token file {}", escaped(path));
    let mut bytes = Vec::new();
    file.take(TOKEN_FILE_MAX + 1)
        .read_to_end(&mut bytes)
        .with_context(cannot)?;
    if bytes.len() as u64 > TOKEN_FILE_MAX {
        bail!(
            "{}: it holds more than 16 KiB, and a token is at most 4096 bytes",
            cannot()
        );
    }
    let unusable = || format!("the token in the file {} is not usable", escaped(path));
    let text =
        String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{}: it is not text", unusable()))?;
    if text.starts_with('\u{feff}') {
        bail!(
            "{}: it starts with a byte-order mark (save it as plain ASCII text)",
            unusable()
        );
    }
    if text.trim().lines().count() > 1 {
        bail!(
            "{}: it holds more than one line (the token alone)",
            unusable()
        );
    }
    let token = Token::new(&text).with_context(unusable)?;
    Ok(FileToken {
        token,
        digest: blake3::hash(text.as_bytes()),
    })
}

/// The token file now, while a run waits: a new token (`Ok(Some)`), the one
/// in use (`Ok(None)`), or why it holds none the wait can use (`Err`). Only
/// a regular file is read, opened without blocking: a FIFO or a device read
/// then could hold the run past its wait and past a Ctrl-C.
fn look_again(path: &Path, in_use: Option<blake3::Hash>) -> Result<Option<FileToken>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let not_regular = || "it is not a regular file, which a wait does not read".to_owned();
    // Looked at before it is opened: opening a FIFO, even without blocking,
    // would cut off a writer waiting to give its token; opening a device may
    // do anything. Looked at again once open, in case it was swapped meanwhile.
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => return Err(not_regular()),
        Ok(_) => {}
        Err(e) => return Err(format!("cannot look at it: {e}")),
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot open it: {e}"))?;
    match file.metadata() {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(not_regular()),
        Err(e) => return Err(format!("cannot look at it: {e}")),
    }
    match read_token(file, path) {
        Ok(found) if Some(found.digest) == in_use => Ok(None),
        Ok(found) => Ok(Some(found)),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// After a 401: the token file's new token if it changed since the token in use
/// was read from it (each new text is tried once); otherwise, if a token of
/// this file was accepted in this run (`token_worked`: it expired, rather than
/// being wrong from the start), wait up to `wait` for a person to put a new one
/// there, reading it every second.
pub fn refresh_from_file(
    path: PathBuf,
    read: blake3::Hash,
    wait: Duration,
    console: Arc<Console>,
    token_worked: Arc<AtomicBool>,
) -> TokenRefresh {
    // The digest of the text the token in use came from (`read` at start).
    let in_use = Arc::new(Mutex::new(Some(read)));
    // The last problem said about the file, so a file left as it is is not
    // said again every second.
    let said = Arc::new(Mutex::new(None::<String>));
    // Set when a wait ended without a new token: the run is stopping, and the
    // calls that met the same 401 meanwhile do not wait all over again.
    let gave_up = Arc::new(AtomicBool::new(false));
    TokenRefresh::waiting(move || {
        let (path, console, in_use) = (path.clone(), Arc::clone(&console), Arc::clone(&in_use));
        let (token_worked, gave_up) = (Arc::clone(&token_worked), Arc::clone(&gave_up));
        let said = Arc::clone(&said);
        async move {
            let fresh = || {
                let mut in_use = in_use.lock().unwrap_or_else(|e| e.into_inner());
                match look_again(&path, *in_use) {
                    Ok(found) => {
                        let FileToken { token, digest } = found?;
                        *in_use = Some(digest);
                        // A later wait says its problems afresh.
                        *said.lock().unwrap_or_else(|e| e.into_inner()) = None;
                        Some(token)
                    }
                    Err(problem) => {
                        let mut said = said.lock().unwrap_or_else(|e| e.into_inner());
                        if said.as_deref() != Some(problem.as_str()) {
                            console.error(&format!(
                                "note: no new token in {} yet: {}",
                                escaped(&path),
                                crate::text::escape(&problem)
                            ));
                            *said = Some(problem);
                        }
                        None
                    }
                }
            };
            if let Some(token) = fresh() {
                return Some(token);
            }
            if wait.is_zero()
                || !token_worked.load(Ordering::Relaxed)
                || gave_up.load(Ordering::Relaxed)
            {
                return None;
            }
            console.error(&format!(
                "the server refused the token; waiting up to {} for a new token in {} \
                 (Ctrl-C to stop; the uploads go on where they are once it is there)",
                crate::dates::age(wait),
                escaped(&path)
            ));
            // A script can tell a paused run from a stuck one.
            let json = |event: &str| {
                console.json_line(&serde_json::json!({
                    "schema": crate::progress::JSON_SCHEMA,
                    "event": event,
                    "token_file": escaped(&path),
                    "wait_seconds": wait.as_secs(),
                }));
            };
            json("token_wait");
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline {
                // Polling a file a person edits: behaviour, not a wait in a test.
                tokio::time::sleep(TOKEN_FILE_POLL.min(deadline - Instant::now())).await;
                if let Some(token) = fresh() {
                    console.note(&format!("found a new token in {}", escaped(&path)));
                    json("token_found");
                    return Some(token);
                }
            }
            gave_up.store(true, Ordering::Relaxed);
            console.error(&format!(
                "no new token appeared in {} within {}",
                escaped(&path),
                crate::dates::age(wait)
            ));
            json("token_wait_over");
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    const WAIT: Duration = Duration::from_secs(60);

    fn refresh(path: &Path, worked: bool) -> TokenRefresh {
        let console = Arc::new(Console::new(
            crate::console::Verbosity::Quiet,
            false,
            idb_engine::Cancel::new(),
        ));
        let read = read_file(path).unwrap().digest;
        refresh_from_file(
            path.to_owned(),
            read,
            WAIT,
            console,
            Arc::new(AtomicBool::new(worked)),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_token_in_the_file_ends_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "old-token\n").unwrap();
        let refresh = refresh(&path, true);
        let mut waiting = Box::pin(refresh.fetch());
        assert!(
            waiting.as_mut().now_or_never().is_none(),
            "the same token: wait"
        );
        tokio::time::advance(WAIT / 2).await;
        std::fs::write(&path, "new-token\n").unwrap();
        // The next read of the file finds it.
        assert!(waiting.await.is_some());
        // Tried once: the same text again is not new.
        assert!(refresh.fetch().now_or_never().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_that_ends_without_a_token_is_not_started_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "old-token\n").unwrap();
        let refresh = refresh(&path, true);
        // Paused time runs ahead when every task waits: the whole wait passes.
        assert!(refresh.fetch().await.is_none());
        // Other calls that met the same 401 give up at once.
        assert!(matches!(refresh.fetch().now_or_never(), Some(None)));
        // A new token still counts.
        std::fs::write(&path, "new-token\n").unwrap();
        assert!(matches!(refresh.fetch().now_or_never(), Some(Some(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_that_never_worked_is_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "wrong-token\n").unwrap();
        assert!(matches!(
            refresh(&path, false).fetch().now_or_never(),
            Some(None)
        ));
    }

    /// Regression (an adversarial pass): a token file was read whole, so
    /// `/dev/zero` (or a data file given by mistake) filled the memory.
    #[test]
    fn a_token_file_is_read_only_as_far_as_a_token_can_go() {
        let error = read_file(Path::new("/dev/zero")).err().unwrap();
        assert!(
            format!("{error:#}").contains("it holds more than 16 KiB"),
            "{error:#}"
        );
    }

    #[test]
    fn two_lines_and_a_byte_order_mark_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        for (text, said) in [
            ("tok-one\ntok-two\n", "it holds more than one line"),
            ("\u{feff}tok-one\n", "it starts with a byte-order mark"),
        ] {
            std::fs::write(&path, text).unwrap();
            let error = format!("{:#}", read_file(&path).err().unwrap());
            assert!(error.contains(said), "{error}");
            assert!(!error.contains("tok-one"), "the token never shows: {error}");
        }
    }

    /// Regression (an adversarial pass): a token file replaced by a FIFO
    /// while the run waited blocked the run past its wait and past Ctrl-C, and
    /// garbage in it was ignored without a word. Neither is read as a token;
    /// the wait ends on time, and a good token after garbage still counts.
    #[test]
    fn a_wait_reads_no_fifo_and_takes_no_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "old-token\n").unwrap();
        let read = read_file(&path).unwrap().digest;
        let refresh = |wait| {
            let console = Arc::new(Console::new(
                crate::console::Verbosity::Quiet,
                false,
                idb_engine::Cancel::new(),
            ));
            refresh_from_file(
                path.clone(),
                read,
                wait,
                console,
                Arc::new(AtomicBool::new(true)),
            )
        };

        std::fs::write(&path, "garbage with spaces\n").unwrap();
        let garbage = refresh(Duration::ZERO);
        assert!(garbage.fetch().now_or_never().unwrap().is_none());
        std::fs::write(&path, "new-token\n").unwrap();
        assert!(garbage.fetch().now_or_never().unwrap().is_some());

        std::fs::remove_file(&path).unwrap();
        let fifo = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates the node.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let (done, ended) = std::sync::mpsc::channel();
        let waiting = refresh(Duration::from_millis(1200));
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            let _ = done.send(runtime.block_on(waiting.fetch()).is_some());
        });
        let got = ended
            .recv_timeout(Duration::from_secs(60))
            .expect("the wait ended on time, with no writer at the FIFO");
        assert!(!got, "a FIFO gives no token to a wait");
    }
}
