//! Exit codes: part of the interface for scripts (documented in the README).

use std::process::ExitCode;

use crate::signals::Stop;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every file verified (or the command did its job).
    Success,
    /// At least one file failed, or the command could not do its job.
    Failure,
    /// Bad arguments or input files; nothing was sent. (clap uses 2 for usage too.)
    BadInput,
    /// The server refused the token: get a new one and run the same command again.
    TokenRefused,
    /// Stopped by a signal with the journal written: run the same command again
    /// to resume. 128 + the signal, as shells report it: 130 for Ctrl-C
    /// (SIGINT), 143 for SIGTERM.
    Signal(Stop),
    /// Standard output was closed (`| head`, a full disk): the run stopped as
    /// for a signal, with the journal written. 141, as for SIGPIPE.
    OutputClosed,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(match exit {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::BadInput => 2,
            Exit::TokenRefused => 3,
            Exit::Signal(stop) => stop.exit_code(),
            Exit::OutputClosed => 128 + libc::SIGPIPE as u8,
        })
    }
}
