//! Ctrl-C, SIGTERM and SIGHUP, for the commands that stop cleanly on them.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Which signal came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (`kill`, a batch system ending a job).
    Terminate,
    /// SIGHUP (the terminal or the ssh session closed).
    Hangup,
}

impl Stop {
    /// The exit code a shell expects after this signal: 128 + its number.
    pub fn exit_code(self) -> u8 {
        128 + match self {
            Stop::Interrupt => libc::SIGINT,
            Stop::Terminate => libc::SIGTERM,
            Stop::Hangup => libc::SIGHUP,
        } as u8
    }
}

/// Handlers for the three signals, installed when this is made (so a signal
/// that comes before the first wait is not lost, nor does it kill the
/// process). SIGHUP is left alone when it is ignored already (`nohup`), so
/// that the run still outlives its terminal.
pub struct Signals {
    interrupt: Option<Signal>,
    term: Option<Signal>,
    hangup: Option<Signal>,
}

impl Signals {
    pub fn install() -> Self {
        Self {
            interrupt: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
            hangup: (!ignored(libc::SIGHUP))
                .then(|| signal(SignalKind::hangup()).ok())
                .flatten(),
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
            () = recv(&mut self.hangup) => Stop::Hangup,
        }
    }
}

impl Signals {
    /// The next signal after the first, which quits at once: Ctrl-C or
    /// SIGTERM. SIGHUP never does: a closing terminal often sends it twice
    /// (the shell forwards it to its jobs, and the kernel sends it to the
    /// foreground group), and the second must not cut the clean stop short.
    pub async fn second(&mut self) -> Stop {
        loop {
            match self.next().await {
                Stop::Hangup => continue,
                stop => return stop,
            }
        }
    }
}

/// Whether `signum` is ignored (`SIG_IGN`, as `nohup` leaves SIGHUP).
fn ignored(signum: libc::c_int) -> bool {
    // SAFETY: a null new action only reads the current one into `old`, a
    // plain C struct for which all-zero bytes are valid.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signum, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}
