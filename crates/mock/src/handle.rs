//! [`MockServer`]: a mock running in this process, and what a test can see and
//! do through it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use idb_wire::{VerifyReceipt, WriteMode};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::accept::serve_app;
use crate::app::App;
use crate::config::MockConfig;
use crate::counters::Stats;
use crate::error::MockError;

/// A running mock server (in this process), with ways to look inside it.
///
/// Dropping it stops the server without waiting; [`MockServer::shutdown`] waits.
///
/// With [`crate::Storage::Dir`] the server saves its state in `<dir>/+state.json` after
/// every setup, accepted transfer and verify, and a server started again on the
/// same directory resumes it: open strict-mode uploads continue at the offset
/// they had reached, and verified names stay verified (409 on a new setup).
/// Offset-mode uploads are not saved: after a restart their client gets
/// `{"error": "no_session"}` and starts that file over. At most the newest
/// 10000 entries of each file's [`MockServer::accepted`] log are saved.
pub struct MockServer {
    addr: SocketAddr,
    app: Arc<App>,
    /// Resolving (or dropping) it starts a graceful shutdown.
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), MockError>>>,
}

impl MockServer {
    /// Binds `config.listen` and starts serving on the current tokio runtime.
    pub async fn start(config: MockConfig) -> Result<Self, MockError> {
        let listen = config.listen;
        let app = App::start(config).await?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| MockError::Bind {
                addr: listen,
                source,
            })?;
        Self::spawn(listener, app)
    }

    /// Starts serving on a listener the caller bound (`config.listen` is not
    /// used), on the current tokio runtime.
    pub async fn start_on(listener: TcpListener, config: MockConfig) -> Result<Self, MockError> {
        let app = App::start(config).await?;
        Self::spawn(listener, app)
    }

    fn spawn(listener: TcpListener, app: Arc<App>) -> Result<Self, MockError> {
        let addr = listener.local_addr().map_err(MockError::Serve)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_app(listener, Arc::clone(&app), async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            app,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, `http://127.0.0.1:PORT`, or `https://` when it serves TLS
    /// (give it to the client as the server).
    pub fn url(&self) -> String {
        let scheme = if self.app.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Where the server stores files (`None` in sink mode).
    pub fn store_dir(&self) -> Option<&std::path::Path> {
        self.app.store.as_deref()
    }

    /// The stored copy of a verified file (`None` in sink mode or if not verified).
    pub fn stored_file(&self, dataset: &str, filename: &str) -> Option<PathBuf> {
        self.app.sessions.receipt(dataset, filename)?;
        self.app.sessions.final_path(dataset, filename)
    }

    /// The verify receipt of a file, if it was verified.
    pub fn receipt(&self, dataset: &str, filename: &str) -> Option<VerifyReceipt> {
        self.app.sessions.receipt(dataset, filename)
    }

    /// Makes every token known so far expire now: later calls with them get 401
    /// (a token that runs out mid-upload, at a moment a test chooses). Tokens
    /// added afterwards with [`MockServer::add_token`] work.
    pub fn expire_tokens(&self) {
        self.app.datasets.expire(|_| true);
    }

    /// Makes `token` expire now, for the dataset that has it; the other tokens
    /// keep their expiry (a depositor's old token running out after a new one
    /// was issued). Returns whether any dataset had it.
    pub fn expire_token(&self, token: &str) -> bool {
        self.app.datasets.expire(|t| t.expose() == token.trim())
    }

    /// Lets `token` upload into `dataset` from now on, for `ttl` (`None`: for
    /// ever), as a depositor asking the Data Bank for a new token would. Giving
    /// a token the dataset has already restarts its life from now. The standalone
    /// server offers the same through `POST /admin/tokens` (loopback only).
    ///
    /// Errors: [`MockError::UnknownDataset`] for a key the server was not started
    /// with, [`MockError::BadToken`] for a token that is not valid,
    /// [`MockError::SharedToken`] for a token another dataset has.
    pub fn add_token(
        &self,
        dataset: &str,
        token: &str,
        ttl: Option<Duration>,
    ) -> Result<(), MockError> {
        self.app.datasets.add_token(dataset, token, ttl)
    }

    /// What could not be loaded from the store's saved state at start (a corrupt
    /// or unknown-version `+state.json`, an upload that could not be resumed), one
    /// line each, for people. Empty when everything loaded or nothing was saved.
    pub fn warnings(&self) -> Vec<String> {
        self.app.warnings.clone()
    }

    /// Resolves once at least `n` chunks were accepted ([`Stats::chunks_accepted`]
    /// `>= n`) since start: a test can stop a client after a known number of
    /// acknowledged chunks. It does not poll: it wakes when a chunk is accepted.
    pub async fn wait_for_chunks(&self, n: u64) {
        self.app.sessions.counters.wait_for_chunks(n).await;
    }

    /// Resolves once at least `n` datafile requests (`/api/dataset/{key}/datafile`,
    /// and tus requests under `/files/`)
    /// have arrived since start. A request counts when it arrives, before
    /// anything else happens to it, so one held by [`MockServer::pause`] counts
    /// (unlike [`Stats::requests`], which counts answered ones). A test can thus
    /// act once a client's call is known to be at the server. It does not poll:
    /// it wakes when a request arrives.
    pub async fn wait_for_requests(&self, n: u64) {
        self.app.sessions.counters.wait_for_arrivals(n).await;
    }

    /// Holds every datafile (and tus) request that arrives from now on, until
    /// [`MockServer::resume`]: each is counted on arrival (see
    /// [`MockServer::wait_for_requests`]), then waits before anything else
    /// happens to it: its body is not read, no fault is drawn, no latency runs,
    /// no session changes. Requests that arrived before the pause go on. The
    /// admin route is never held. Shutdown lets held requests go (they are then
    /// answered as usual), so it never waits for a resume.
    ///
    /// With [`MockServer::wait_for_requests`], a test acts at a known moment
    /// without sleeping: pause, start a client, wait for its request, act
    /// (expire a token, change the fault rate, stop the client), resume.
    pub fn pause(&self) {
        self.app.pause.pause();
    }

    /// Lets the datafile requests held by [`MockServer::pause`] go on, and new
    /// ones through. Resuming a server that is not paused does nothing.
    pub fn resume(&self) {
        self.app.pause.resume();
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        self.app.sessions.counters.snapshot()
    }

    /// `(offset, len)` of every transfer of `filename` in `dataset` that stored new
    /// bytes, in the order accepted (identical retries are not logged; a truncated
    /// transfer is logged with the length it stored). Kept after verify for the
    /// server's life; a setup that resets the session starts a new log.
    pub fn accepted(&self, dataset: &str, filename: &str) -> Vec<(u64, u64)> {
        self.app.sessions.accepted(dataset, filename)
    }

    /// Changes the fault rate from the next request on (the kinds, seed and
    /// attempt counters stay): a test can let setup through, then break the
    /// transfers.
    pub fn set_fault_rate(&self, rate: f64) -> Result<(), MockError> {
        self.app.faults.set_rate(rate)
    }

    /// How many fault attempt counters the server keeps now (at most
    /// [`crate::MAX_COUNTED_CALLS`]; 0 while the fault rate is 0): a test can
    /// see that finished work leaves none behind.
    pub fn fault_attempt_counters(&self) -> usize {
        self.app.faults.counted()
    }

    // --- Protocol 2, tus (`tus/`) ---

    /// The tus endpoint, `<url>/files/` (what a tus client is given).
    pub fn tus_url(&self) -> String {
        format!("{}{}", self.url(), crate::TUS_PATH)
    }

    /// The tus side's counters since start: uploads, PATCHes, bytes the S3
    /// profile dropped, checksum mismatches, and registrations (incomplete
    /// and repeated ones counted apart).
    pub fn tus_stats(&self) -> crate::TusStats {
        self.app.tus.stats()
    }

    /// Every registration answered 200, in order.
    pub fn tus_registrations(&self) -> Vec<crate::TusRegistration> {
        crate::lock::lock(&self.app.tus.registrations).clone()
    }

    /// Makes every unfinished tus upload expire now: later requests for them
    /// get 410 (an upload left for longer than [`MockConfig::tus_expiry`],
    /// at a moment a test chooses).
    pub fn expire_tus_uploads(&self) {
        self.app.tus.expire_all();
    }

    /// When the tus upload at `url` (its `Location`, or just its id) goes
    /// if still unfinished then: its creation or its last PATCH, plus
    /// [`MockConfig::tus_expiry`]. In the s3 profile a PATCH that stored
    /// nothing does not move it, though its answer's `Upload-Expires` moves
    /// on. `None` when there is no such upload. Waits for a request in
    /// flight on the upload.
    pub fn tus_upload_expiry(&self, url: &str) -> Option<std::time::SystemTime> {
        let id = crate::tus::upload_id(url).unwrap_or(url);
        self.app.tus.expiry_of(id)
    }

    /// The write mode it serves.
    pub fn mode(&self) -> WriteMode {
        self.app.mode
    }

    /// A handle that ends the server at once, its connections dropped (the
    /// requests in flight cut, unanswered): for a [`MockServer::shutdown`]
    /// that must not wait any longer. `None` once shut down.
    pub fn abort_handle(&self) -> Option<tokio::task::AbortHandle> {
        self.task.as_ref().map(|task| task.abort_handle())
    }

    /// Stops accepting, lets requests in flight finish, and waits for the end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
