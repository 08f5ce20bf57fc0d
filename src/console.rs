//! Where `idb upload`'s text goes, and what happens when it cannot go there.
//!
//! Stdout is for data: one `verified` line per file, or JSON lines with
//! `--json` (human text then goes to stderr only). Stderr is for people:
//! progress, notes, errors, the summary. A stdout that closes (`| head`, a full
//! disk) stops the run as a Ctrl-C would, never a panic; a stderr that cannot be
//! written is ignored (there is nowhere left to say so).

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use idb_engine::Cancel;
use indicatif::{MultiProgress, ProgressDrawTarget};

/// How much human text to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// `-q`: errors and the summary only.
    Quiet,
    /// The default: progress, notes, errors, the summary.
    Normal,
    /// `-v` and more: the above plus the engine's log.
    Verbose,
}

/// The run's outputs, shared by the event renderer, the signal handler and the
/// token wait.
pub struct Console {
    verbosity: Verbosity,
    json: bool,
    /// Progress bars on stderr: only when stderr is a terminal and not quiet.
    bars: Option<MultiProgress>,
    /// Fired when stdout closes, to stop the run (`None`: nothing to stop).
    cancel: Option<Cancel>,
    stdout_closed: AtomicBool,
    /// Said when stdout closes and the run stops.
    stop_line: &'static str,
}

const STOP_TO_RESUME: &str =
    "stopping: standard output was closed (run the same command to resume)";

impl Console {
    pub fn new(verbosity: Verbosity, json: bool, cancel: Cancel) -> Self {
        let bars = (verbosity > Verbosity::Quiet && io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self {
            verbosity,
            json,
            bars,
            cancel: Some(cancel),
            stdout_closed: AtomicBool::new(false),
            stop_line: STOP_TO_RESUME,
        }
    }

    /// For a run that starts over rather than resumes (the demo): a closed
    /// stdout stops it without the hint to run it again.
    pub fn starting_over(mut self) -> Self {
        self.stop_line = "stopping: standard output was closed";
        self
    }

    /// Text on stdout and stderr, no bars, no JSON: for commands that print a
    /// report and end (a closed stdout only ends their output).
    pub fn plain() -> Self {
        Self {
            verbosity: Verbosity::Normal,
            json: false,
            bars: None,
            cancel: None,
            stdout_closed: AtomicBool::new(false),
            stop_line: STOP_TO_RESUME,
        }
    }

    pub fn json(&self) -> bool {
        self.json
    }

    /// The bars, when they are drawn.
    pub fn bars(&self) -> Option<&MultiProgress> {
        self.bars.as_ref()
    }

    /// A data line on stdout (a `verified` line), even with `-q`, which quiets
    /// only what is for people; with `--json` a person's line on stderr
    /// instead, since stdout then carries only JSON.
    pub fn data(&self, line: &str) {
        if self.json {
            self.note(line);
        } else {
            self.stdout(line);
        }
    }

    /// One JSON line on stdout (only with `--json`).
    pub fn json_line(&self, value: &serde_json::Value) {
        if self.json {
            self.stdout(&value.to_string());
        }
    }

    /// The end of a run refused before anything was sent (exit 2): the
    /// problems, each already shown on stderr as `error: ...`, and with
    /// `--json` as the run's one line, `refused`.
    pub fn refused(&self, errors: &[String]) {
        self.json_line(&serde_json::json!({
            "schema": crate::progress::JSON_SCHEMA,
            "event": "refused",
            "errors": errors,
        }));
    }

    /// A line for people (not shown with `-q`).
    pub fn note(&self, line: &str) {
        if self.verbosity > Verbosity::Quiet {
            self.stderr(line);
        }
    }

    /// An error or the summary: always shown.
    pub fn error(&self, line: &str) {
        self.stderr(line);
    }

    /// Whether stdout closed during the run.
    pub fn stdout_closed(&self) -> bool {
        self.stdout_closed.load(Ordering::Relaxed)
    }

    /// Writes text the way [`Console::error`] does, for the log (`-v`).
    pub fn log(&self, text: &[u8]) {
        let write = || {
            let _ = io::stderr().lock().write_all(text);
        };
        match &self.bars {
            Some(bars) => bars.suspend(write),
            None => write(),
        }
    }

    /// Removes the bars before the final lines.
    pub fn clear(&self) {
        if let Some(bars) = &self.bars {
            let _ = bars.clear();
        }
    }

    fn stdout(&self, line: &str) {
        if self.stdout_closed() {
            return;
        }
        let mut out = io::stdout().lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            // A reader that went away (`| head`) or a full disk: what is printed
            // is the record of what was done, so stop doing more, as Ctrl-C would.
            self.stdout_lost();
        }
    }

    /// Standard output can no longer be written: says so once and stops the
    /// run (with the cancel it was given).
    pub fn stdout_lost(&self) {
        if !self.stdout_closed.swap(true, Ordering::Relaxed)
            && let Some(cancel) = &self.cancel
        {
            self.stderr(self.stop_line);
            cancel.cancel();
        }
    }

    fn stderr(&self, line: &str) {
        match &self.bars {
            // Above the bars, which are drawn again below it.
            Some(bars) => {
                if bars.println(line).is_err() {
                    let _ = writeln!(io::stderr(), "{line}");
                }
            }
            None => {
                let _ = writeln!(io::stderr(), "{line}");
            }
        }
    }
}

/// Resolves when standard output is a pipe or socket whose reader went away
/// (`| head -1` once it has its line, `| true`, a reader that died), found by
/// looking every quarter second: a run that writes its results only as files
/// end stops then, not at its next result. A terminal or a file never
/// resolves it.
pub async fn stdout_gone() {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        tick.tick().await;
        let mut out = libc::pollfd {
            fd: libc::STDOUT_FILENO,
            events: 0,
            revents: 0,
        };
        // SAFETY: `out` is one valid pollfd, and a zero timeout only looks.
        let ready = unsafe { libc::poll(&mut out, 1, 0) };
        if ready > 0 && out.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
            return;
        }
    }
}
