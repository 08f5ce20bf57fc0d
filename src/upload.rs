//! `idb upload`: validated arguments in, a report and an exit code out.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use idb_engine::{
    Cancel, Error, FileOutcome, FileReport, ReadMode, Report, UploadConfig, Uploader,
};
use serde_json::json;
use url::Url;

use crate::cli::{TransferArgs, UploadArgs};
use crate::console::{Console, Verbosity};
use crate::exit::Exit;
use crate::progress::{JSON_SCHEMA, Progress, Tally, file_json};
use crate::signals::{Signals, Stop};
use crate::size::human;
use crate::text::{escape, escaped, escaped_message};
use crate::token::{self, TokenSource};

/// `open_files`: the process's open-file limit (`None`: none known).
/// `token_wait_given`: `--token-wait` was on the command line (it does
/// nothing without `--token-file`, which is said).
pub async fn run(
    args: UploadArgs,
    open_files: Option<u64>,
    token_wait_given: bool,
) -> anyhow::Result<Exit> {
    let cancel = Cancel::new();
    let verbosity = match (args.output.quiet, args.output.verbose) {
        (true, _) => Verbosity::Quiet,
        (false, 0) => Verbosity::Normal,
        (false, _) => Verbosity::Verbose,
    };
    let console = Arc::new(Console::new(verbosity, args.output.json, cancel.clone()));
    crate::logging::init(args.output.verbose, Arc::clone(&console));
    // Whether the server accepted a token in this run: only then is a refusal
    // an expiry worth waiting out (a wrong token fails at once).
    let token_worked = Arc::new(AtomicBool::new(false));
    if token_wait_given && args.token_file.is_none() {
        console.error(
            "note: --token-wait has no effect without --token-file: a token from the \
             environment cannot be replaced while the run goes on",
        );
    }
    let (uploader, source) = match configure(&args, &console, &token_worked, open_files) {
        Ok(configured) => configured,
        Err(error) => {
            let shown = escape(&format!("{error:#}")).into_owned();
            console.error(&format!("error: {shown}"));
            console.refused(&[shown]);
            return Ok(Exit::BadInput);
        }
    };
    let paths = match crate::select::files_to_upload(&args.files, &args.select, &uploader, &console)
    {
        Ok(paths) => paths,
        // An empty shard: nothing to do, said as a dry run or a run of no files.
        Err(Exit::Success) if args.dry_run => {
            crate::dry_run::nothing(&console);
            return Ok(Exit::Success);
        }
        Err(Exit::Success) => {
            let nothing = Report {
                files: Vec::new(),
                peak_chunk_bytes: 0,
                bytes_read: 0,
                final_chunk_size: 0,
            };
            let tally = Tally {
                sent: 0,
                retries: 0,
                elapsed: Duration::ZERO,
            };
            return Ok(summarize(&nothing, &tally, &source, &console));
        }
        Err(exit) => return Ok(exit),
    };
    let files = match uploader.check(&paths) {
        Ok(files) => files,
        Err(problems) => {
            let shown: Vec<String> = problems
                .iter()
                .map(|problem| {
                    escaped_message(&problem.to_string(), paths.iter().map(|p| p.as_path()))
                })
                .collect();
            for line in &shown {
                console.error(&format!("error: {line}"));
            }
            console.error("nothing was uploaded; fix the files above and run the command again");
            console.refused(&shown);
            return Ok(Exit::BadInput);
        }
    };
    if args.dry_run {
        return Ok(crate::dry_run::run(&uploader, &files, &args, &console).await);
    }
    let progress = Arc::new(
        Progress::new(Arc::clone(&console), files.len(), files.total_bytes())
            .noting_accepted_token(token_worked),
    );
    // Which signal stopped the run, if one did (it sets the exit code).
    let stopped_by = Arc::new(OnceLock::new());
    let signals = tokio::spawn(stop_on_signals(
        Signals::install(),
        cancel.clone(),
        Arc::clone(&console),
        Arc::clone(&stopped_by),
    ));
    // Bars redraw themselves; a log gets a line now and then.
    let ticker = (console.bars().is_none() && verbosity > Verbosity::Quiet).then(|| {
        tokio::spawn(plain_progress(
            Arc::clone(&progress),
            args.output.progress_interval,
        ))
    });
    // A reader of stdout that went away is seen within a quarter second, not
    // only at the next result line (which may be a whole file away).
    let watcher = {
        let console = Arc::clone(&console);
        tokio::spawn(async move {
            crate::console::stdout_gone().await;
            console.stdout_lost();
        })
    };
    let report = uploader.upload_until(files, &*progress, &cancel).await;
    watcher.abort();
    signals.abort();
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    progress.finish();
    let exit = summarize(&report, &progress.tally(), &source, &console);
    Ok(if let Some(stop) = stopped_by.get() {
        Exit::Signal(*stop)
    } else if console.stdout_closed() {
        Exit::OutputClosed
    } else {
        exit
    })
}

/// A progress line every `every` (for a log, where bars are not drawn).
async fn plain_progress(progress: Arc<Progress>, every: Duration) {
    if every.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        progress.plain_line();
    }
}

/// On the first Ctrl-C, SIGTERM or SIGHUP, stops the run (no new chunks; calls in
/// flight get a few seconds; the journal is written); on a second Ctrl-C or
/// SIGTERM, exits at once.
async fn stop_on_signals(
    mut signals: Signals,
    cancel: Cancel,
    console: Arc<Console>,
    stopped_by: Arc<OnceLock<Stop>>,
) {
    let first = signals.next().await;
    let _ = stopped_by.set(first);
    console.error(
        "stopping: letting the calls in flight finish (a verify under way is waited for: it \
         decides whether the file is in the dataset) and saving how far each file got (press \
         Ctrl-C again to quit at once)",
    );
    cancel.cancel();
    let second = signals.second().await;
    // Not a word more can be said in order: leave a clean screen and go.
    console.clear();
    std::process::exit(second.exit_code().into());
}

fn configure(
    args: &UploadArgs,
    console: &Arc<Console>,
    token_worked: &Arc<AtomicBool>,
    open_files: Option<u64>,
) -> anyhow::Result<(Uploader, TokenSource)> {
    args.transfer.check()?;
    for note in args.transfer.unused() {
        console.error(&note);
    }
    let dataset = args.target.dataset_key()?;
    let server: Url = args.target.server.clone();
    let (token, source, read) = token::load(args.token_file.as_deref())?;
    if server.scheme() == "http" && !is_loopback(&server) {
        console.error(&format!(
            "warning: {server} is plain http: the token will cross the network unencrypted; \
             use https:// unless this is a test server"
        ));
    }
    let mut config = args
        .transfer
        .apply(UploadConfig::new(server, dataset, token));
    if let Some(limit) = open_files {
        let fit = crate::open_files::fit(config.parallel, config.window, limit);
        for note in &fit.notes {
            console.error(note);
        }
        (config.parallel, config.window) = (fit.parallel, fit.window);
    }
    config.journal_interval = args.journal_interval;
    config.force = args.force;
    config.state_dir = match state_dir(args.target.state_dir.as_deref()) {
        Some(dir) => Some(dir),
        None => {
            console.error(
                "warning: no state directory (set HOME, XDG_STATE_HOME or --state-dir): \
                 an interrupted upload will start over",
            );
            None
        }
    };
    if let (TokenSource::File(path), Some(read)) = (&source, read) {
        config.token_refresh = Some(token::refresh_from_file(
            path.clone(),
            read,
            args.token_wait,
            Arc::clone(console),
            Arc::clone(token_worked),
        ));
    }
    Ok((Uploader::new(config)?, source))
}

impl TransferArgs {
    /// The ceiling of the adaptive chunk size: `--max-chunk-size`, or by
    /// default 64 MiB, or `--chunk-size` when that is larger.
    pub fn max_chunk(&self) -> u64 {
        self.max_chunk_size
            .unwrap_or(idb_engine::DEFAULT_MAX_CHUNK_SIZE)
            .max(self.chunk_size)
    }

    /// Refuses options that contradict each other.
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(max) = self.max_chunk_size
            && max < self.chunk_size
        {
            anyhow::bail!(
                "--max-chunk-size ({}) is below --chunk-size ({}): the adaptive \
                 size starts at --chunk-size and grows up to --max-chunk-size; give both the \
                 same value for fixed chunks",
                idb_engine::bytes_text(max),
                idb_engine::bytes_text(self.chunk_size)
            );
        }
        let largest = self.max_chunk();
        if self.memory < largest {
            // The option that set the largest chunk, and what to lower.
            let (source, lower) = match self.max_chunk_size {
                None if self.chunk_size > idb_engine::DEFAULT_MAX_CHUNK_SIZE => {
                    ("--chunk-size", "--chunk-size")
                }
                None => ("--max-chunk-size's default", "--max-chunk-size"),
                Some(max) if max == self.chunk_size => {
                    ("--chunk-size and --max-chunk-size", "both")
                }
                Some(_) => ("--max-chunk-size", "--max-chunk-size"),
            };
            anyhow::bail!(
                "--memory ({}) must hold at least one chunk of the largest size, {} \
                 ({source}); raise --memory or lower {lower}",
                idb_engine::bytes_text(self.memory),
                idb_engine::bytes_text(largest)
            );
        }
        Ok(())
    }

    /// Whether any option of tus alone was given.
    pub fn tus_given(&self) -> bool {
        self.tus_part_size.is_some() || self.no_concat || self.no_tus_checksum
    }

    /// Notes for options that do nothing with the others given: tus options
    /// with `--protocol chunked` (kept by a script that switches protocol, so
    /// said, not refused).
    pub fn unused(&self) -> Vec<String> {
        if self.protocol != idb_engine::Protocol::Chunked {
            return Vec::new();
        }
        [
            ("--tus-part-size", self.tus_part_size.is_some()),
            ("--no-concat", self.no_concat),
            ("--no-tus-checksum", self.no_tus_checksum),
        ]
        .into_iter()
        .filter(|(_, given)| *given)
        .map(|(option, _)| {
            format!("note: {option} is an option of tus; it does nothing with --protocol chunked")
        })
        .collect()
    }

    /// Puts these options into an engine configuration.
    pub fn apply(&self, mut config: UploadConfig) -> UploadConfig {
        config.chunk_size = self.chunk_size;
        config.max_chunk_size = self.max_chunk();
        config.parallel = self.parallel;
        config.window = self.window;
        config.memory = self.memory;
        config.idle_timeout = self.idle_timeout;
        config.retry.max_attempts = self.attempts;
        config.read_mode = if self.no_mmap {
            ReadMode::Positional
        } else {
            ReadMode::Auto
        };
        // The protocol (`--protocol`, `--tus-part-size`, `--no-concat`).
        config.protocol = self.protocol;
        config.tus_part_size = self.tus_part_size;
        config.tus_concat = !self.no_concat;
        config.tus_checksum = !self.no_tus_checksum;
        // The run's bandwidth cap (`--bwlimit`).
        config.bandwidth = self.bwlimit;
        // Private certificate authorities (`--ca-cert`).
        config.ca_certs = self.ca_certs.clone();
        // When to give up (`--call-deadline`, `--file-deadline`).
        config.retry.deadline = self.call_deadline;
        config.file_deadline = self.file_deadline;
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

/// Counts of a run's files by how they ended.
#[derive(Debug, Default)]
struct Counts {
    verified: usize,
    /// Verified with no blake3 from the server to compare (at most a size).
    unchecked: usize,
    skipped: usize,
    failed: usize,
    interrupted: usize,
    not_started: usize,
    /// Bytes of the files verified in this run.
    bytes: u64,
}

/// What is said of a file the run stopped before it ended.
fn interrupted_note(file: &FileReport) -> String {
    let held = if file.acked == 0 && file.resumable {
        "the next run resumes it where the last run left it".to_owned()
    } else if file.acked == file.size && file.size > 0 && file.resumable {
        // Stopped between its last bytes and its verify.
        format!(
            "all {} bytes are on the server; the next run verifies it",
            file.size
        )
    } else if file.resumable {
        format!("{} of {} bytes are on the server", file.acked, file.size)
    } else if file.acked == 0 {
        "nothing of it is on the server yet".to_owned()
    } else {
        // No journal of it is kept (none could be saved, or there is no
        // state directory): a promise to resume would be false.
        format!(
            "{} of {} bytes are on the server, but no journal of it is kept: the next run \
             starts it over",
            file.acked, file.size
        )
    };
    format!("interrupted: {} ({held})", escaped(&file.path))
}

/// The end of a run: what is left to do, the summary (the files themselves
/// were reported as they ended), and the exit code.
pub fn summarize(report: &Report, tally: &Tally, source: &TokenSource, console: &Console) -> Exit {
    let mut counts = Counts::default();
    for file in &report.files {
        match &file.outcome {
            FileOutcome::Verified { receipt, .. } => {
                counts.verified += 1;
                counts.unchecked += usize::from(receipt.is_none());
                counts.bytes += file.size;
            }
            FileOutcome::Skipped { .. } => counts.skipped += 1,
            FileOutcome::Failed(_) => counts.failed += 1,
            FileOutcome::Interrupted => {
                counts.interrupted += 1;
                console.note(&interrupted_note(file));
                json_file(
                    console,
                    "interrupted",
                    &file.path,
                    json!({ "acked": file.acked, "size": file.size }),
                );
            }
            FileOutcome::NotStarted => {
                counts.not_started += 1;
                json_file(
                    console,
                    "interrupted",
                    &file.path,
                    json!({ "acked": 0, "size": file.size }),
                );
            }
        }
    }
    let fatal = report.fatal_error();
    if let Some(Error::Unauthorized { .. }) = fatal {
        let fix = match source {
            TokenSource::Env => format!("set {} to a new token", token::TOKEN_ENV),
            TokenSource::File(path) => format!("put a new token in {}", escaped(path)),
        };
        console.error(&format!(
            "{fix} and run the same command again: it resumes where the server is, \
             without sending again what is already there"
        ));
    }
    let unfinished = counts.interrupted + counts.not_started;
    // Failed files whose journal is kept: does the same command, as it is,
    // take any of them further, or do their errors ask for a change first?
    let (mut resumable, mut as_it_is) = (false, false);
    for file in report.files.iter().filter(|f| f.resumable) {
        if let FileOutcome::Failed(error) = &file.outcome {
            resumable = true;
            as_it_is |= error.same_command_helps();
        }
    }
    if unfinished > 0 {
        // A run stopped by an answer that a re-run would get again (no Data
        // Bank there, no TLS) is not worth resuming as it is.
        // Files stopped with bytes on the server and no journal saved start
        // over: if every unfinished file is one, nothing resumes.
        let none_resume = report.files.iter().all(|f| match f.outcome {
            FileOutcome::Interrupted => f.acked > 0 && !f.resumable,
            FileOutcome::NotStarted => false,
            _ => true,
        });
        let next = match fatal {
            Some(error) if !error.worth_resuming() => {
                "fix the error above, then run the same command"
            }
            _ if none_resume => "run the same command to send it all again",
            _ => "run the same command to resume",
        };
        console.error(&format!(
            "interrupted: {unfinished} file{} unfinished; {next}",
            plural(unfinished)
        ));
    } else if as_it_is && fatal.is_none() {
        console.error("run the same command again to resume the unfinished files");
    } else if resumable && fatal.is_none() {
        console.error(
            "the unfinished files resume where they stopped when the command runs again, \
             changed as the errors above say",
        );
    }
    let secs = tally.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        (tally.sent as f64 / secs) as u64
    } else {
        0
    };
    let retries = match tally.retries {
        0 => String::new(),
        n => format!("; {n} retr{}", if n == 1 { "y" } else { "ies" }),
    };
    let mut others = String::new();
    for (n, what) in [
        (counts.skipped, "skipped"),
        (counts.failed, "failed"),
        (unfinished, "unfinished"),
    ] {
        if n > 0 {
            others.push_str(&format!(", {n} {what}"));
        }
    }
    console.error(&format!(
        "{} of {} files verified ({}){others}; {} sent in {secs:.1} s ({}/s){retries}",
        counts.verified,
        report.files.len(),
        human(counts.bytes),
        human(tally.sent),
        human(rate),
    ));
    // Part of the summary: shown with -q too.
    if counts.unchecked > 0 {
        console.error(&format!(
            "for {} of the files verified the server reported no blake3 (the documented \
             API promises only a 200), so their bytes could not be compared end to end: \
             only the server's answer (and the size it gave, if any) says they arrived whole",
            if counts.unchecked == counts.verified {
                "all".to_owned()
            } else {
                counts.unchecked.to_string()
            }
        ));
    }
    let exit = match fatal {
        Some(Error::Unauthorized { .. }) => Exit::TokenRefused,
        _ if report.all_done() => Exit::Success,
        _ => Exit::Failure,
    };
    console.json_line(&json!({
        "schema": JSON_SCHEMA,
        "event": "summary",
        "files": report.files.len(),
        "verified": counts.verified,
        "unchecked": counts.unchecked,
        "skipped": counts.skipped,
        "failed": counts.failed,
        "unfinished": unfinished,
        "bytes": counts.bytes,
        "sent": tally.sent,
        "seconds": crate::progress::json_seconds(secs),
        "rate": rate,
        "retries": tally.retries,
    }));
    exit
}

fn json_file(console: &Console, event: &str, path: &Path, fields: serde_json::Value) {
    console.json_line(&file_json(event, path, fields));
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interrupted(acked: u64, size: u64, resumable: bool) -> String {
        interrupted_note(&FileReport {
            path: "d/a.bin".into(),
            size,
            acked,
            resumable,
            outcome: FileOutcome::Interrupted,
        })
    }

    #[test]
    fn an_interrupted_file_says_what_the_next_run_does_with_it() {
        assert_eq!(
            interrupted(0, 10, true),
            "interrupted: d/a.bin (the next run resumes it where the last run left it)"
        );
        assert_eq!(
            interrupted(4, 10, true),
            "interrupted: d/a.bin (4 of 10 bytes are on the server)"
        );
        assert_eq!(
            interrupted(10, 10, true),
            "interrupted: d/a.bin (all 10 bytes are on the server; the next run verifies it)"
        );
        // No journal to go on from (none saved: a full disk, the state
        // directory gone): nothing is promised.
        assert_eq!(
            interrupted(10, 10, false),
            "interrupted: d/a.bin (10 of 10 bytes are on the server, but no journal of it is \
             kept: the next run starts it over)"
        );
        // Stopped before its setup: nothing to keep.
        assert_eq!(
            interrupted(0, 10, false),
            "interrupted: d/a.bin (nothing of it is on the server yet)"
        );
    }
}
