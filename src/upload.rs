//! `idb upload`: validated arguments in, a report and an exit code out.

use anyhow::Context;
use idb_engine::{
    Cancel, DatasetKey, Error, FileOutcome, ReadMode, Report, TokenRefresh, UploadConfig, Uploader,
};
use url::Url;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::{TransferArgs, UploadArgs};
use crate::exit::Exit;
use crate::progress::Progress;
use crate::size::human;
use crate::token::{self, TokenSource};

pub async fn run(args: UploadArgs) -> anyhow::Result<Exit> {
    let (uploader, source) = match configure(&args) {
        Ok(configured) => configured,
        Err(error) => {
            eprintln!("error: {error:#}");
            return Ok(Exit::BadInput);
        }
    };
    let files = match uploader.check(&args.files) {
        Ok(files) => files,
        Err(problems) => {
            for problem in &problems {
                eprintln!("error: {problem}");
            }
            eprintln!("nothing was uploaded; fix the files above and run the command again");
            return Ok(Exit::BadInput);
        }
    };
    let progress = Progress::new(files.total_bytes());
    let cancel = Cancel::new();
    let signals = tokio::spawn(stop_on_signals(cancel.clone()));
    let report = uploader.upload_until(files, &progress, &cancel).await;
    signals.abort();
    progress.finish();
    let exit = render(&report, &source);
    Ok(if cancel.is_cancelled() {
        Exit::Interrupted
    } else {
        exit
    })
}

/// On the first Ctrl-C or SIGTERM, stops the run (the files in progress stop at
/// once and their journals are written); on a second one, exits at once.
async fn stop_on_signals(cancel: Cancel) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without handlers the default applies: the process ends at once, and
        // the journal (written every --journal-interval) still allows a resume.
        return;
    };
    for signals in 0.. {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
        if signals > 0 {
            std::process::exit(130);
        }
        eprintln!("stopping: saving how far each file got (press Ctrl-C again to quit at once)");
        cancel.cancel();
    }
}

fn configure(args: &UploadArgs) -> anyhow::Result<(Uploader, TokenSource)> {
    let dataset = DatasetKey::new(&args.dataset)?;
    let server: Url = args.server.parse().with_context(|| {
        format!(
            "--server {:?} is not a URL like https://databank.illinois.edu",
            args.server
        )
    })?;
    let (token, source) = token::load(args.token_file.as_deref())?;
    if server.scheme() == "http" && !is_loopback(&server) {
        eprintln!(
            "warning: {server} is plain http: the token will cross the network unencrypted; \
             use https:// unless this is a test server"
        );
    }
    let mut config = args
        .transfer
        .apply(UploadConfig::new(server, dataset, token));
    config.journal_interval = args.journal_interval;
    config.force = args.force;
    config.state_dir = match state_dir(args.state_dir.as_deref()) {
        Some(dir) => Some(dir),
        None => {
            eprintln!(
                "warning: no state directory (set HOME, XDG_STATE_HOME or --state-dir): \
                 an interrupted upload will start over"
            );
            None
        }
    };
    if let TokenSource::File(path) = &source {
        // After a 401 the file is read again: a new token put there continues the run.
        let path = path.clone();
        config.token_refresh = Some(TokenRefresh::new(move || {
            token::load(Some(&path)).ok().map(|(t, _)| t)
        }));
    }
    Ok((Uploader::new(config)?, source))
}

impl TransferArgs {
    /// Puts these options into an engine configuration.
    pub fn apply(&self, mut config: UploadConfig) -> UploadConfig {
        config.chunk_size = self.chunk_size;
        config.max_chunk_size = self.max_chunk_size.max(self.chunk_size);
        config.parallel = self.parallel;
        config.window = self.window;
        config.memory = self.memory;
        config.idle_timeout = Duration::from_secs(self.idle_timeout);
        config.retry.max_attempts = self.attempts.max(1);
        config.read_mode = if self.no_mmap {
            ReadMode::Positional
        } else {
            ReadMode::Auto
        };
        config
    }
}

/// `--state-dir`, else `$XDG_STATE_HOME/idb`, else `~/.local/state/idb`.
pub fn state_dir(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(dir) = given {
        return Some(dir.to_path_buf());
    }
    let from_env = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    from_env("XDG_STATE_HOME")
        .filter(|p| p.is_absolute())
        .map(|p| p.join("idb"))
        .or_else(|| from_env("HOME").map(|home| home.join(".local/state/idb")))
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(host)) => host == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Prints one line per file (verified ones on stdout, problems on stderr) and a
/// summary, and picks the exit code.
pub fn render(report: &Report, source: &TokenSource) -> Exit {
    let mut verified = 0;
    let mut skipped = 0;
    let mut bytes = 0;
    for file in &report.files {
        let path = file.path.display();
        // Bytes the server holds of an unfinished file: what a rerun will not resend.
        let held = if file.acked > 0 {
            format!(
                " ({} of {} bytes are safely on the server)",
                file.acked, file.size
            )
        } else {
            String::new()
        };
        match &file.outcome {
            FileOutcome::Verified { blake3, .. } => {
                verified += 1;
                bytes += file.size;
                println!("verified {path} ({} bytes, blake3 {blake3})", file.size);
            }
            FileOutcome::Skipped { receipt, .. } => {
                skipped += 1;
                eprintln!(
                    "skipped {path}: already uploaded on {} (receipt in the state directory)",
                    crate::dates::utc_minute(receipt.verified_at)
                );
            }
            FileOutcome::Failed(error) if error.is_fatal_for_run() => {
                eprintln!("not uploaded: {path}{held}")
            }
            FileOutcome::Failed(error) => eprintln!("error: {error}{held}"),
            FileOutcome::Interrupted => eprintln!("interrupted: {path}{held}"),
            FileOutcome::NotStarted => eprintln!("not started: {path}"),
        }
    }
    let fatal = report.fatal_error();
    if let Some(error) = fatal {
        eprintln!("error: {error}");
        if matches!(error, Error::Unauthorized { .. }) {
            let fix = match source {
                TokenSource::Env => format!("set {} to a new token", token::TOKEN_ENV),
                TokenSource::File(path) => format!("put a new token in {}", path.display()),
            };
            eprintln!(
                "{fix} and run the same command again: it resumes where the server is, \
                 without sending again what is already there"
            );
        }
    }
    let unfinished = report.files.iter().any(|f| {
        f.acked > 0
            && !matches!(
                f.outcome,
                FileOutcome::Verified { .. } | FileOutcome::Skipped { .. }
            )
    });
    if unfinished && fatal.is_none() {
        eprintln!("run the same command again to resume the unfinished files");
    }
    eprintln!(
        "{verified} of {} files verified, {skipped} skipped ({})",
        report.files.len(),
        human(bytes)
    );
    match fatal {
        Some(Error::Unauthorized { .. }) => Exit::TokenRefused,
        _ if report.all_done() => Exit::Success,
        _ => Exit::Failure,
    }
}
