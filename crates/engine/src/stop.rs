//! Stopping a run: set once, seen by every file at its next step, awaitable.

use tokio::sync::watch;

/// How a run stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopKind {
    /// An error makes the other files pointless (401, 404), or a cancel came:
    /// start no setup, take no new chunks, let the calls in flight finish, so
    /// what the server holds is known.
    Drain,
    /// Asked from outside ([`crate::Cancel`], a signal) and its grace is over:
    /// abandon the calls in flight at once; the journal keeps what was
    /// acknowledged.
    Now,
}

/// The run-wide stop flag. `Now` wins over `Drain`.
#[derive(Debug)]
pub(crate) struct Stop(
    /// `None` while running. A watch channel so a pump can `select!` on it.
    watch::Sender<Option<StopKind>>,
);

impl Default for Stop {
    fn default() -> Self {
        Self(watch::Sender::new(None))
    }
}

impl Stop {
    pub(crate) fn set(&self, kind: StopKind) {
        self.0.send_if_modified(|now| {
            let stronger = match *now {
                None => true,
                Some(StopKind::Drain) => kind == StopKind::Now,
                Some(StopKind::Now) => false,
            };
            if stronger {
                *now = Some(kind);
            }
            stronger
        });
    }

    pub(crate) fn is_set(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// Whether the run must stop at once (a cancel whose grace is over).
    pub(crate) fn is_now(&self) -> bool {
        *self.0.borrow() == Some(StopKind::Now)
    }

    /// A receiver for [`Stop::changed`].
    pub(crate) fn watch(&self) -> watch::Receiver<Option<StopKind>> {
        self.0.subscribe()
    }
}

/// Resolves with the stop kind once it is set, or changes (cancel-safe).
pub(crate) async fn changed(
    watch: &mut watch::Receiver<Option<StopKind>>,
    seen: Option<StopKind>,
) -> StopKind {
    loop {
        if let Some(kind) = *watch.borrow_and_update()
            && Some(kind) != seen
        {
            return kind;
        }
        if watch.changed().await.is_err() {
            // The run (which owns the sender) is gone: nothing will change.
            std::future::pending::<()>().await;
        }
    }
}

/// Stops a run from outside (a signal handler, a UI): no file starts and no
/// chunk is taken any more, the calls in flight get a short grace
/// ([`crate::UploadConfig::cancel_grace`]) to be answered, the journal records
/// what the server acknowledged, and [`crate::Uploader::upload_until`] returns with those files
/// [`crate::FileOutcome::Interrupted`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Cancel(watch::Sender<bool>);

impl Default for Cancel {
    fn default() -> Self {
        Self::new()
    }
}

impl Cancel {
    /// A handle that has not fired.
    pub fn new() -> Self {
        Self(watch::Sender::new(false))
    }

    /// Stops the run (idempotent).
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }

    /// Whether it fired.
    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once it fires.
    pub async fn fired(&self) {
        let mut watch = self.0.subscribe();
        let _ = watch.wait_for(|fired| *fired).await;
    }
}
