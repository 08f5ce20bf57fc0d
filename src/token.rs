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

/// Reads the token from `--token-file` if given, else from `IDB_TOKEN`.
pub fn load(token_file: Option<&Path>) -> anyhow::Result<(Token, TokenSource)> {
    match token_file {
        Some(path) => {
            let (token, _) = read_file(path)?;
            Ok((token, TokenSource::File(path.to_owned())))
        }
        None => match std::env::var(TOKEN_ENV) {
            Ok(text) => {
                let token = Token::new(&text)
                    .with_context(|| format!("the token in {} is not usable", TokenSource::Env))?;
                Ok((token, TokenSource::Env))
            }
            Err(std::env::VarError::NotPresent) => bail!(
                "no token: set {TOKEN_ENV} or pass --token-file PATH (the dataset's edit page \
                 on the Data Bank issues tokens)"
            ),
            Err(std::env::VarError::NotUnicode(_)) => bail!("{TOKEN_ENV} is not valid text"),
        },
    }
}

/// The token in a file, and a digest of the file's text (to notice a new one
/// without keeping another copy of the secret).
fn read_file(path: &Path) -> anyhow::Result<(Token, blake3::Hash)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", escaped(path)))?;
    let token = Token::new(&text)
        .with_context(|| format!("the token in the file {} is not usable", escaped(path)))?;
    Ok((token, blake3::hash(text.as_bytes())))
}

/// After a 401: the token file's new token if it changed since the token in use
/// was read from it (each new text is tried once); otherwise, if a token of
/// this file was accepted in this run (`token_worked`: it expired, rather than
/// being wrong from the start), wait up to `wait` for a person to put a new one
/// there, reading it every second.
pub fn refresh_from_file(
    path: PathBuf,
    wait: Duration,
    console: Arc<Console>,
    token_worked: Arc<AtomicBool>,
) -> TokenRefresh {
    // The digest of the text the token in use came from.
    let in_use = Arc::new(Mutex::new(read_file(&path).ok().map(|(_, digest)| digest)));
    // Set when a wait ended without a new token: the run is stopping, and the
    // calls that met the same 401 meanwhile do not wait all over again.
    let gave_up = Arc::new(AtomicBool::new(false));
    TokenRefresh::waiting(move || {
        let (path, console, in_use) = (path.clone(), Arc::clone(&console), Arc::clone(&in_use));
        let (token_worked, gave_up) = (Arc::clone(&token_worked), Arc::clone(&gave_up));
        async move {
            let fresh = || {
                let (token, digest) = read_file(&path).ok()?;
                let mut in_use = in_use.lock().unwrap_or_else(|e| e.into_inner());
                (*in_use != Some(digest)).then(|| {
                    *in_use = Some(digest);
                    token
                })
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
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline {
                // Polling a file a person edits: behaviour, not a wait in a test.
                tokio::time::sleep(TOKEN_FILE_POLL.min(deadline - Instant::now())).await;
                if let Some(token) = fresh() {
                    console.note(&format!("found a new token in {}", escaped(&path)));
                    return Some(token);
                }
            }
            gave_up.store(true, Ordering::Relaxed);
            console.error(&format!(
                "no new token appeared in {} within {}",
                escaped(&path),
                crate::dates::age(wait)
            ));
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
        refresh_from_file(
            path.to_owned(),
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
}
