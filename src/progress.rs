//! Progress on stderr while files upload (drawn only when stderr is a terminal).

use idb_engine::{Event, EventSink};
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
                self.bar.println(format!(
                    "retrying {phase} of {} at byte {offset} in {:.1}s (attempt {attempt} failed: {reason})",
                    path.display(),
                    delay.as_secs_f64()
                ));
            }
            Event::Realigned { path, from, to } => {
                self.bar.println(format!(
                    "{}: the server holds {to} bytes (we had {from} acknowledged); going on from there",
                    path.display()
                ));
                // The bar counts acknowledged bytes; follow the server.
                self.bar
                    .set_position((self.bar.position() + to).saturating_sub(from));
            }
            Event::FileVerified { .. } | Event::FileFailed { .. } => {}
        }
    }
}
