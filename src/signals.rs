//! Ctrl-C and SIGTERM, for the commands that stop cleanly on them.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Which signal came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (`kill`, a batch system ending a job).
    Terminate,
}

impl Stop {
    /// The exit code a shell expects after this signal: 128 + its number.
    pub fn exit_code(self) -> u8 {
        128 + match self {
            Stop::Interrupt => libc::SIGINT,
            Stop::Terminate => libc::SIGTERM,
        } as u8
    }
}

/// Handlers for both signals, installed when this is made (so a signal that
/// comes before the first wait is not lost, nor does it kill the process).
pub struct Signals {
    interrupt: Option<Signal>,
    term: Option<Signal>,
}

impl Signals {
    pub fn install() -> Self {
        Self {
            interrupt: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    /// The next signal. Without any handler (none could be installed), never:
    /// the default action then ends the process, and the journal, written every
    /// --journal-interval, still lets the same command resume.
    pub async fn next(&mut self) -> Stop {
        async fn recv(signal: &mut Option<Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = recv(&mut self.interrupt) => Stop::Interrupt,
            () = recv(&mut self.term) => Stop::Terminate,
        }
    }
}
