//! Renders engine events as they happen: progress bars on a terminal (one line
//! per active file and a total), plain lines in a log, JSON lines with
//! `--json`; and counts what the summary needs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use idb_engine::{Event, EventSink, RestartReason};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::console::Console;
use crate::size::human;
use crate::text::escaped;

/// The version of the `--json` lines' format (README, "JSON output").
pub const JSON_SCHEMA: u32 = 1;

/// `--json` progress lines per file: at most one per this long.
const JSON_PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// A byte-counting renderer fed by engine events.
pub struct Progress {
    console: Arc<Console>,
    started: Instant,
    total: Option<ProgressBar>,
    state: Mutex<State>,
    /// Set once the server accepts a call (a chunk or a verify): the token works.
    token_worked: Arc<AtomicBool>,
    /// Whether the run speaks tus, whose start of a file may ask nothing that
    /// needs the token (an OPTIONS for partials).
    tus: AtomicBool,
}

/// What the renderer knows of the run so far.
#[derive(Default)]
struct State {
    files: usize,
    total_bytes: u64,
    /// Files that reached their end (verified, skipped, failed), and their bytes.
    ended: usize,
    ended_bytes: u64,
    /// Bytes acknowledged in this run (not those a resume found on the server).
    sent: u64,
    retries: u64,
    /// Error lines shown (one that stops the run, such as a refused token,
    /// comes for every file in progress: it is shown once).
    errors_shown: std::collections::HashSet<String>,
    /// Files in progress.
    active: HashMap<PathBuf, Active>,
    /// What the last plain progress line said (for its rate).
    last_line: Option<(Instant, u64)>,
}

/// One file in progress.
struct Active {
    size: u64,
    /// Bytes from the start the server holds.
    acked: u64,
    bar: Option<ProgressBar>,
    last_json: Option<Instant>,
}

/// Totals for the summary.
pub struct Tally {
    pub sent: u64,
    pub retries: u64,
    pub elapsed: Duration,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The name a bar shows: the base name (the name in the dataset), escaped.
fn short_name(path: &Path) -> String {
    path.file_name()
        .map(|n| escaped(Path::new(n)))
        .unwrap_or_else(|| escaped(path))
}

impl Progress {
    pub fn new(console: Arc<Console>, files: usize, total_bytes: u64) -> Self {
        let total = console.bars().map(|bars| {
            let bar = bars.add(ProgressBar::new(total_bytes));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>14} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("0/{files} files"));
            bar.enable_steady_tick(Duration::from_millis(500));
            bar
        });
        Self {
            console,
            started: Instant::now(),
            total,
            state: Mutex::new(State {
                files,
                total_bytes,
                ..State::default()
            }),
            token_worked: Arc::default(),
            tus: AtomicBool::new(false),
        }
    }

    /// Sets `flag` once the server accepts the token.
    pub fn noting_accepted_token(mut self, flag: Arc<AtomicBool>) -> Self {
        self.token_worked = flag;
        self
    }

    /// The totals so far, for the summary.
    pub fn tally(&self) -> Tally {
        let state = lock(&self.state);
        Tally {
            sent: state.sent,
            retries: state.retries,
            elapsed: self.started.elapsed(),
        }
    }

    /// Removes the bars.
    pub fn finish(&self) {
        let mut state = lock(&self.state);
        for (_, file) in state.active.drain() {
            if let Some(bar) = file.bar {
                bar.finish_and_clear();
            }
        }
        if let Some(total) = &self.total {
            total.finish_and_clear();
        }
        self.console.clear();
    }

    /// A plain progress line (for a log, where bars are not drawn).
    pub fn plain_line(&self) {
        let now = Instant::now();
        let mut state = lock(&self.state);
        let (since, sent_then) = state.last_line.unwrap_or((self.started, 0));
        let rate = rate(state.sent - sent_then, now - since);
        state.last_line = Some((now, state.sent));
        let in_progress: u64 = state.active.values().map(|f| f.acked).sum();
        let left = state
            .total_bytes
            .saturating_sub(state.ended_bytes + in_progress);
        let eta = match left.div_ceil(rate.max(1)) {
            secs if rate > 0 && left > 0 => format!(
                ", about {} left",
                crate::dates::age(Duration::from_secs(secs))
            ),
            _ => String::new(),
        };
        let line = format!(
            "progress: {} of {} files done, {} active, {} sent, {}/s{eta}",
            state.ended,
            state.files,
            state.active.len(),
            human(state.sent),
            human(rate),
        );
        drop(state);
        self.console.note(&line);
    }

    fn set_total_prefix(&self, state: &State) {
        if let Some(total) = &self.total {
            total.set_prefix(format!("{}/{} files", state.ended, state.files));
        }
    }

    fn file_bar(&self, name: &str, size: u64, at: u64) -> Option<ProgressBar> {
        let bars = self.console.bars()?;
        let bar = ProgressBar::new(size);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>30!} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} {msg}",
            )
            .expect("the template is valid"),
        );
        bar.set_prefix(name.to_owned());
        bar.set_position(at);
        Some(match &self.total {
            Some(total) => bars.insert_before(total, bar),
            None => bars.add(bar),
        })
    }

    /// The file ended: its bar goes, the total counts it.
    fn ended(&self, path: &Path, size: u64) {
        let mut state = lock(&self.state);
        state.ended_bytes += size;
        if let Some(file) = state.active.remove(path)
            && let Some(bar) = file.bar
        {
            bar.finish_and_clear();
        }
        state.ended += 1;
        self.set_total_prefix(&state);
    }

    fn json(&self, event: &str, path: &Path, fields: serde_json::Value) {
        if self.console.json() {
            self.console.json_line(&file_json(event, path, fields));
        }
    }

    /// Bytes the server already held when the run began are not work of this
    /// run: the total bar leaves them out so its rate and ETA stay true.
    fn not_this_run(&self, bytes: u64) {
        if let Some(total) = &self.total {
            total.set_length(total.length().unwrap_or(0).saturating_sub(bytes));
        }
    }
}

/// A `--json` line about one file: `fields` with the schema, the event, the
/// path and the name in the dataset (both escaped).
pub fn file_json(event: &str, path: &Path, mut fields: serde_json::Value) -> serde_json::Value {
    let object = fields.as_object_mut().expect("an object");
    object.insert("schema".into(), JSON_SCHEMA.into());
    object.insert("event".into(), event.into());
    object.insert("path".into(), escaped(path).into());
    object.insert("name".into(), short_name(path).into());
    fields
}

/// A time for `--json`, to the microsecond: `6.612440`, not the float noise
/// of `6.6124402589999995`.
pub fn json_seconds(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}

/// Bytes per second.
fn rate(bytes: u64, over: Duration) -> u64 {
    let secs = over.as_secs_f64();
    if secs > 0.0 {
        (bytes as f64 / secs) as u64
    } else {
        0
    }
}

impl EventSink for Progress {
    fn emit(&self, event: Event) {
        match event {
            Event::ProtocolChosen { protocol, reason } => {
                self.tus
                    .store(protocol == idb_engine::Protocol::Tus, Ordering::Relaxed);
                self.console.note(&format!(
                    "protocol: {} ({})",
                    protocol.as_str(),
                    crate::text::escape(&reason)
                ));
                if self.console.json() {
                    self.console.json_line(&json!({
                        "schema": JSON_SCHEMA,
                        "event": "protocol",
                        "protocol": protocol.as_str(),
                        "reason": reason,
                    }));
                }
            }
            Event::FileStarted { path, size } => {
                let mut state = lock(&self.state);
                // Not resumed (a resume may have asked the server nothing)
                // and protocol 1: its setup went through, so the token was
                // accepted.
                if !state.active.contains_key(&path) && !self.tus.load(Ordering::Relaxed) {
                    self.token_worked.store(true, Ordering::Relaxed);
                }
                let at = state.active.get(&path).map_or(0, |f| f.acked);
                let bar = self.file_bar(&short_name(&path), size, at);
                if bar.is_none() {
                    let from = if at > 0 {
                        format!(" from byte {at}")
                    } else {
                        String::new()
                    };
                    self.console.note(&format!(
                        "started {} ({}){from}",
                        escaped(&path),
                        human(size)
                    ));
                }
                state.active.insert(
                    path.clone(),
                    Active {
                        size,
                        acked: at,
                        bar,
                        last_json: None,
                    },
                );
                drop(state);
                self.json("started", &path, json!({ "size": size, "offset": at }));
            }
            Event::Resumed { path, offset } => {
                self.console.note(&format!(
                    "resuming {} at byte {offset}, where the last run left it",
                    escaped(&path)
                ));
                self.not_this_run(offset);
                // FileStarted comes next and starts its line from here.
                lock(&self.state).active.insert(
                    path,
                    Active {
                        size: 0,
                        acked: offset,
                        bar: None,
                        last_json: None,
                    },
                );
            }
            Event::ChunkAcked { path, offset, len } => {
                self.token_worked.store(true, Ordering::Relaxed);
                let mut state = lock(&self.state);
                state.sent += len;
                let now = Instant::now();
                let mut progress = None;
                if let Some(file) = state.active.get_mut(&path) {
                    file.acked = file.acked.max(offset + len);
                    if let Some(bar) = &file.bar {
                        bar.set_position(file.acked);
                        bar.set_message("");
                    }
                    if file
                        .last_json
                        .is_none_or(|then| now - then >= JSON_PROGRESS_EVERY)
                    {
                        file.last_json = Some(now);
                        progress = Some((file.acked, file.size));
                    }
                }
                drop(state);
                if let Some(total) = &self.total {
                    total.inc(len);
                }
                if let Some((acked, size)) = progress {
                    self.json("progress", &path, json!({ "acked": acked, "size": size }));
                }
            }
            Event::Retry {
                ref path,
                phase,
                offset,
                attempt,
                ref reason,
                delay,
            } => {
                let reason = crate::text::escape(reason).into_owned();
                let mut state = lock(&self.state);
                state.retries += 1;
                let bar = state.active.get(path).and_then(|f| f.bar.clone());
                drop(state);
                match bar {
                    // Shown on the file's line until its next acknowledgement.
                    Some(bar) => bar.set_message(format!("retry {attempt}: {reason}")),
                    None => {
                        if let Some(note) = event.retry_note(&escaped(path)) {
                            self.console.note(&note);
                        }
                    }
                }
                self.json(
                    "retry",
                    path,
                    json!({
                        "phase": phase.to_string(),
                        "offset": offset,
                        "attempt": attempt,
                        "reason": reason,
                        "delay_ms": delay.as_millis() as u64,
                    }),
                );
            }
            Event::Realigned { path, from, to } => {
                self.console.note(&format!(
                    "{}: the server holds {to} bytes (we had {from} acknowledged); going on from there",
                    escaped(&path)
                ));
                self.moved(&path, to);
            }
            Event::AnswerLost {
                path,
                offset,
                to,
                status,
            } => {
                self.console.note(&format!(
                    "{}: the answer to the chunk at byte {offset} was lost, and the server refused it \
                     when sent again (HTTP {status}) without saying what it holds; taking it as \
                     received and going on from byte {to} (the next answer settles it)",
                    escaped(&path)
                ));
                // Sent, and most likely stored: counted as an acknowledged chunk.
                lock(&self.state).sent += to - offset;
                if let Some(total) = &self.total {
                    total.inc(to - offset);
                }
                self.moved(&path, to);
            }
            Event::Restarted { path, reason } => {
                let why = match reason {
                    RestartReason::FileChanged => "the file changed since the last run".to_owned(),
                    RestartReason::OtherPath => "the last run's upload of this name was of a \
                                                 file at another path (moved, or another file \
                                                 of the same name)"
                        .to_owned(),
                    RestartReason::ServerForgot => {
                        "the server has no open upload of it any more".to_owned()
                    }
                    RestartReason::ServerLostBytes => {
                        "the server holds fewer bytes than it had acknowledged (it lost them, or \
                         another upload of the same name started it over)"
                            .to_owned()
                    }
                    RestartReason::ResumeRefused { status } => format!(
                        "the server refused to resume it (HTTP {status}) without saying what it holds"
                    ),
                    RestartReason::AnswerLostUnconfirmed { status } => format!(
                        "the server refused the next call too (HTTP {status}), so what it holds is not known"
                    ),
                    RestartReason::ProtocolChanged { journal, run } => format!(
                        "its unfinished upload went by {}, and this run speaks {} (--protocol)",
                        journal.as_str(),
                        run.as_str()
                    ),
                };
                self.console.note(&format!(
                    "starting {} over from byte 0: {why}",
                    escaped(&path)
                ));
                self.moved(&path, 0);
            }
            Event::JournalUnsaved { path, reason } => {
                self.console.error(&format!(
                    "warning: {}: cannot save its progress: {}; the upload goes on, but if \
                     the run stops before a save goes through, the next run resumes it from \
                     an older save, or starts it over",
                    escaped(&path),
                    crate::text::escape(&reason)
                ));
            }
            Event::JournalIgnored { path, reason } => {
                self.console.note(&format!(
                    "note: {}: not resuming from its journal: {}",
                    escaped(&path),
                    crate::text::escape(&reason)
                ));
            }
            Event::StateDirUnusable { dir, reason } => {
                self.console.error(&format!(
                    "warning: {} cannot be used ({}); the uploads go on, but an \
                     interrupted one may start over, no receipt is kept (a re-run meets the \
                     verified names in the dataset), and nothing stops another idb from \
                     uploading the same names meanwhile; set --state-dir to a writable local \
                     directory",
                    escaped(&dir),
                    crate::text::escape(&reason)
                ));
            }
            Event::TokenRefreshed => {
                self.console
                    .note("going on with the new token from the token file");
            }
            Event::FileVerified {
                path,
                size,
                blake3,
                server_checked,
            } => {
                self.token_worked.store(true, Ordering::Relaxed);
                self.ended(&path, size);
                self.console.data(&format!(
                    "verified {} ({size} bytes, blake3 {blake3})",
                    escaped(&path)
                ));
                self.json(
                    "verified",
                    &path,
                    json!({ "size": size, "blake3": blake3, "server_checked": server_checked }),
                );
            }
            Event::FileFailed {
                path,
                error,
                acked,
                resumable,
            } => {
                let size = lock(&self.state).active.get(&path).map(|f| f.size);
                self.ended(&path, size.unwrap_or(0));
                let held = match size {
                    Some(size) if resumable && acked > 0 => {
                        format!(" ({acked} of {size} bytes are safely on the server)")
                    }
                    Some(_) if resumable => " (its journal is kept to resume it)".to_owned(),
                    _ => String::new(),
                };
                // An error that stops the run (a refused token, a server
                // gone) is the same for every file it met: name the file.
                let shown = if error.starts_with(&format!("{}:", path.display())) {
                    crate::text::escaped_message(&error, [path.as_path()])
                } else {
                    format!("{}: {}", escaped(&path), crate::text::escape(&error))
                };
                let line = format!("error: {shown}{held}");
                if lock(&self.state).errors_shown.insert(line.clone()) {
                    self.console.error(&line);
                }
                self.json(
                    "failed",
                    &path,
                    json!({ "error": error, "acked": acked, "resumable": resumable }),
                );
            }
            Event::FileSkipped {
                path,
                size,
                verified_at,
            } => {
                // Not work of this run: out of the total bar's bytes.
                self.not_this_run(size);
                self.ended(&path, size);
                self.console.note(&format!(
                    "skipped {}: already uploaded on {} (receipt in the state directory)",
                    escaped(&path),
                    crate::dates::utc_minute(verified_at)
                ));
                self.json(
                    "skipped",
                    &path,
                    json!({ "size": size, "verified_at": verified_at }),
                );
            }
            Event::ReceiptProblem { path, reason } => {
                self.console.error(&format!(
                    "warning: {}: {}",
                    escaped(&path),
                    crate::text::escape(&reason)
                ));
            }
        }
    }
}

impl Progress {
    /// The server holds `to` bytes of `path`'s file, whatever was counted before.
    fn moved(&self, path: &Path, to: u64) {
        let mut state = lock(&self.state);
        if let Some(file) = state.active.get_mut(path) {
            file.acked = to;
            if let Some(bar) = &file.bar {
                bar.set_position(to);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_times_carry_no_float_noise() {
        let shown = |v: f64| serde_json::to_string(&json_seconds(v)).unwrap();
        assert_eq!(shown(6.6124402589999995), "6.61244");
        assert_eq!(shown(0.15948700000000002), "0.159487");
        assert_eq!(shown(2.0), "2.0");
    }
}
