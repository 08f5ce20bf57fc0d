//! Holding datafile requests while a test has paused the server
//! ([`crate::MockServer::pause`]).

use tokio::sync::watch;

/// The pause switch of a running server.
pub(crate) struct Pause {
    /// `true` while paused: each datafile request that arrives then waits for it
    /// to turn `false` (or for shutdown) before anything else happens to it.
    /// Held requests only read it; the sender lives as long as the server.
    paused: watch::Sender<bool>,
}

impl Pause {
    /// A switch that lets everything through.
    pub(crate) fn new() -> Self {
        Self {
            paused: watch::Sender::new(false),
        }
    }

    /// Holds the requests that arrive from now on.
    pub(crate) fn pause(&self) {
        self.paused.send_replace(true);
    }

    /// Lets the held requests go on, and new ones through.
    pub(crate) fn resume(&self) {
        self.paused.send_replace(false);
    }

    /// Returns at once unless paused; then waits until resumed or until
    /// `closing` turns `true` (shutdown must never wait for a resume).
    pub(crate) async fn hold(&self, closing: &watch::Sender<bool>) {
        if !*self.paused.borrow() {
            return;
        }
        // A resume between the check above and these subscriptions is not
        // missed: `wait_for` looks at the current value first.
        let mut paused = self.paused.subscribe();
        let mut closing = closing.subscribe();
        tokio::select! {
            _ = paused.wait_for(|paused| !*paused) => {}
            _ = closing.wait_for(|closing| *closing) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[test]
    fn hold_waits_while_paused_until_resume_or_closing() {
        let pause = Pause::new();
        let closing = watch::Sender::new(false);
        assert!(pause.hold(&closing).now_or_never().is_some());

        pause.pause();
        let mut held = Box::pin(pause.hold(&closing));
        assert!(held.as_mut().now_or_never().is_none());
        pause.resume();
        assert!(held.now_or_never().is_some());

        pause.pause();
        let mut held = Box::pin(pause.hold(&closing));
        assert!(held.as_mut().now_or_never().is_none());
        closing.send_replace(true);
        assert!(held.now_or_never().is_some());
        // Once closing, nothing is held any more.
        assert!(pause.hold(&closing).now_or_never().is_some());
    }
}
