//! Progress on stderr while files upload (drawn only when stderr is a terminal).

use idb_engine::{Event, EventSink, RestartReason};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte-counting progress bar fed by engine events.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(total_bytes: u64) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:24!} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        Self { bar }
    }

    /// A line for people above the bar; straight to stderr when no bar is drawn
    /// (stderr is not a terminal: a log file must still get it).
    fn say(&self, line: impl AsRef<str>) {
        if self.bar.is_hidden() {
            eprintln!("{}", line.as_ref());
        } else {
            self.bar.println(line);
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl EventSink for Progress {
    fn emit(&self, event: Event) {
        match event {
            Event::FileStarted { path, .. } => {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                self.bar.set_message(name.unwrap_or_default());
            }
            Event::ChunkAcked { len, .. } => self.bar.inc(len),
            Event::Retry {
                path,
                phase,
                offset,
                attempt,
                reason,
                delay,
            } => {
                self.say(format!(
                    "retrying {phase} of {} at byte {offset} in {:.1}s (attempt {attempt} failed: {reason})",
                    path.display(),
                    delay.as_secs_f64()
                ));
            }
            Event::Realigned { path, from, to } => {
                self.say(format!(
                    "{}: the server holds {to} bytes (we had {from} acknowledged); going on from there",
                    path.display()
                ));
                // The bar counts acknowledged bytes; follow the server.
                self.bar
                    .set_position((self.bar.position() + to).saturating_sub(from));
            }
            Event::Resumed { path, offset } => {
                self.say(format!(
                    "resuming {} at byte {offset}: the server holds the bytes before it",
                    path.display()
                ));
                self.bar.inc(offset);
            }
            Event::Restarted { path, reason } => {
                let why = match reason {
                    RestartReason::FileChanged => "the file changed since the last run",
                    RestartReason::ServerForgot => "the server has no open upload of it any more",
                    RestartReason::ServerLostBytes => {
                        "the server holds fewer bytes than it had acknowledged"
                    }
                };
                self.say(format!(
                    "starting {} over from byte 0: {why}",
                    path.display()
                ));
            }
            Event::JournalIgnored { path, reason } => {
                self.say(format!(
                    "note: {}: not resuming from its journal: {reason}",
                    path.display()
                ));
            }
            Event::StateDirUnusable { dir, reason } => {
                self.say(format!(
                    "warning: {} cannot be used ({reason}); the uploads go on, but an \
                     interrupted one may start over, and nothing stops another idb from \
                     uploading the same names meanwhile; set --state-dir to a writable local \
                     directory",
                    dir.display()
                ));
            }
            Event::TokenRefreshed => {
                self.say(
                    "the server refused the token; going on with the new one from the token file",
                );
            }
            // Skipped files count as done; render() says which and when.
            Event::FileSkipped { size, .. } => self.bar.inc(size),
            Event::ReceiptProblem { path, reason } => {
                self.say(format!("warning: {}: {reason}", path.display()));
            }
            Event::FileVerified { .. } | Event::FileFailed { .. } => {}
        }
    }
}
