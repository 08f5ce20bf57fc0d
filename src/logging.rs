//! `-v` and `-vv`: the engine's log on stderr, through the console so it does
//! not tear the progress bars. The engine logs file names, phases, offsets,
//! statuses and timings; never headers, so never the token.

use std::io;
use std::sync::Arc;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

use crate::console::Console;

/// Our crates only: the HTTP stack's own logs say nothing a user can act on.
const CRATES: [&str; 3] = ["idb", "idb_engine", "idb_read"];

/// Installs the log for `verbose` (0: none, 1: info, 2 or more: debug).
pub fn init(verbose: u8, console: Arc<Console>) {
    let level = match verbose {
        0 => return,
        1 => LevelFilter::INFO,
        _ => LevelFilter::DEBUG,
    };
    let targets = CRATES
        .iter()
        .fold(Targets::new(), |t, name| t.with_target(*name, level));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(ConsoleWriter(console))
        .with_ansi(false)
        .with_target(false);
    // A second init (tests) keeps the first.
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(targets))
        .try_init();
}

#[derive(Clone)]
struct ConsoleWriter(Arc<Console>);

impl<'a> MakeWriter<'a> for ConsoleWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> Self::Writer {
        LogLine {
            console: Arc::clone(&self.0),
            buffer: Vec::new(),
        }
    }
}

/// One log record, written whole when dropped.
struct LogLine {
    console: Arc<Console>,
    buffer: Vec<u8>,
}

impl io::Write for LogLine {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        self.console.log(&self.buffer);
    }
}
