//! The HTTP side: connections, routing, authentication, faults, latency, start and
//! shutdown.
//!
//! Connections are served here rather than by `axum::serve`, for two reasons: a
//! `reset` fault must drop a connection without writing any answer (a handler can
//! only ever produce a response), and the bandwidth cap wraps each socket.

use std::collections::HashMap;
use std::future::{Future, pending};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use idb_wire::{
    DatasetKey, Phase, PhaseRequest, Token, VerifyReceipt, WRITE_MODE_HEADER, WRITE_MODE_OFFSET,
    WWW_AUTHENTICATE, parse_authorization,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tower_service::Service;

use crate::body::{BodyError, drain, read_fields, read_some};
use crate::faults::{FaultKind, Faults};
use crate::sessions::{Reply, Sessions};
use crate::throttle::Throttled;
use crate::{MockConfig, MockError, Stats, Storage, WriteMode};

/// How long the accept loop pauses after an accept error that is not about one
/// connection (such as running out of file descriptors), as hyper and axum do.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// What the server knows about one dataset.
struct Dataset {
    published: bool,
    tokens: Vec<Token>,
}

/// Shared state of a running mock.
struct App {
    datasets: HashMap<String, Dataset>,
    latency: Duration,
    max_chunk: u64,
    /// Tokens stop working at this instant (`None`: never).
    tokens_expire: std::sync::Mutex<Option<Instant>>,
    sessions: Sessions,
    mode: WriteMode,
    faults: Faults,
    /// Bytes per second each connection may receive; `None`: no cap.
    bandwidth: Option<u64>,
    /// Becomes `true` when shutdown begins: every connection then finishes its
    /// request in flight and closes, and stalled answers are let go at once.
    closing: watch::Sender<bool>,
    /// Keeps a default temporary store alive as long as the server.
    _temp: Option<tempfile::TempDir>,
    store: Option<PathBuf>,
}

impl App {
    fn new(config: &MockConfig) -> Result<Self, MockError> {
        let mut datasets: HashMap<String, Dataset> = HashMap::new();
        for d in &config.datasets {
            DatasetKey::new(&d.key)?;
            let token = Token::new(&d.token)?;
            let entry = datasets.entry(d.key.clone()).or_insert(Dataset {
                published: false,
                tokens: Vec::new(),
            });
            entry.published |= d.published;
            entry.tokens.push(token);
        }
        let faults = Faults::new(&config.faults)?;
        if config.bandwidth == Some(0) {
            return Err(MockError::ZeroBandwidth);
        }
        let (temp, store) = match &config.storage {
            Storage::Sink => (None, None),
            Storage::Dir(path) => {
                std::fs::create_dir_all(path).map_err(|source| MockError::Store {
                    path: path.clone(),
                    source,
                })?;
                (None, Some(path.clone()))
            }
            Storage::TempDir => {
                let temp = tempfile::Builder::new()
                    .prefix("idb-mock-")
                    .tempdir()
                    .map_err(|source| MockError::Store {
                        path: std::env::temp_dir(),
                        source,
                    })?;
                let path = temp.path().to_path_buf();
                (Some(temp), Some(path))
            }
        };
        Ok(Self {
            datasets,
            latency: config.latency,
            max_chunk: config.max_chunk,
            tokens_expire: std::sync::Mutex::new(config.token_ttl.map(|ttl| Instant::now() + ttl)),
            sessions: Sessions::new(store.clone(), config.mode),
            mode: config.mode,
            faults,
            bandwidth: config.bandwidth,
            closing: watch::Sender::new(false),
            _temp: temp,
            store,
        })
    }

    fn authorized(&self, dataset: &Dataset, headers: &HeaderMap) -> bool {
        let expire = *self.tokens_expire.lock().unwrap_or_else(|e| e.into_inner());
        if expire.is_some_and(|at| Instant::now() >= at) {
            return false;
        }
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_authorization)
        else {
            return false;
        };
        dataset.tokens.iter().any(|t| t.expose() == given)
    }
}

fn text(status: StatusCode, message: &'static str) -> Response {
    (status, message).into_response()
}

fn unauthorized() -> Response {
    let mut response = text(StatusCode::UNAUTHORIZED, "Bad credentials");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(WWW_AUTHENTICATE),
    );
    response
}

fn json_reply(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(&reply.body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn bad_request(message: String) -> Response {
    json_reply(Reply {
        status: 400,
        body: serde_json::json!({ "error": "bad_request", "message": message }),
    })
}

/// What a handler may do to the connection its request came on.
#[derive(Clone)]
struct ConnectionControl {
    /// Notified by a `reset` fault: the connection's task then drops the
    /// connection, closing the socket without writing any answer. `notify_one`
    /// keeps the permit if the task is not waiting yet, so no notice is lost.
    reset: Arc<Notify>,
}

async fn datafile(
    State(app): State<Arc<App>>,
    Extension(connection): Extension<ConnectionControl>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let fault = app.faults.draw();
    match fault {
        Some(FaultKind::ServerError) => {
            // Read the body first, so the client sees the 500, not a reset.
            drain(body).await;
            app.sessions.counters.fault(FaultKind::ServerError);
            return json_reply(Reply::injected(
                FaultKind::ServerError,
                "injected fault: internal server error; nothing was applied".to_owned(),
            ));
        }
        Some(FaultKind::TooManyRequests) => {
            drain(body).await;
            app.sessions.counters.fault(FaultKind::TooManyRequests);
            let secs = app.faults.retry_after_secs();
            let mut response = json_reply(Reply {
                status: 429,
                body: serde_json::json!({
                    "error": "too_many_requests",
                    "fault": FaultKind::TooManyRequests.as_str(),
                    "message": format!("injected fault: slow down, retry after {secs} s; nothing was applied"),
                }),
            });
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return response;
        }
        Some(FaultKind::Reset) => {
            // Reading the body of a request that asked `Expect: 100-continue`
            // would first send `100 Continue`, a status line: cut it off before.
            let expects_continue = headers
                .get(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            if !expects_continue {
                let length = content_length(&headers).unwrap_or(0);
                read_some(body, (length / 2).max(1)).await;
            }
            app.sessions.counters.fault(FaultKind::Reset);
            connection.reset.notify_one();
            // Never answer: the connection's task drops this future with the
            // connection, so no status line is ever written.
            return pending().await;
        }
        Some(FaultKind::Stall | FaultKind::Truncate) | None => {}
    }
    let truncate = fault == Some(FaultKind::Truncate);
    let response = answer(&app, key, &headers, body, truncate).await;
    if fault == Some(FaultKind::Stall) {
        app.sessions.counters.fault(FaultKind::Stall);
        let mut closing = app.closing.subscribe();
        tokio::select! {
            // This sleep is the behaviour under test (a lost or slow ack), not a wait.
            () = tokio::time::sleep(app.faults.stall) => {}
            _ = closing.wait_for(|closing| *closing) => {}
        }
    }
    response
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The normal answer to a datafile call (with `truncate`, a transfer that would
/// succeed keeps only half its chunk and gets 500).
async fn answer(
    app: &Arc<App>,
    key: String,
    headers: &HeaderMap,
    body: Body,
    truncate: bool,
) -> Response {
    // Dataset first, then token, as the service does: an unknown or published
    // dataset is 404 whatever the token.
    let Some(dataset) = app.datasets.get(&key).filter(|d| !d.published) else {
        drain(body).await;
        return text(StatusCode::NOT_FOUND, "Dataset Not Found");
    };
    if !app.authorized(dataset, headers) {
        drain(body).await;
        return unauthorized();
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let fields = match read_fields(content_type, content_length(headers), body, app.max_chunk).await
    {
        Ok(fields) => fields,
        Err(BodyError::TooLarge) => {
            return json_reply(Reply {
                status: 413,
                body: serde_json::json!({ "error": "too_large", "max_chunk": app.max_chunk }),
            });
        }
        Err(BodyError::Malformed(e)) => return bad_request(e.to_string()),
        Err(BodyError::UnsupportedType) => {
            return text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send multipart/form-data or application/x-www-form-urlencoded",
            );
        }
        Err(BodyError::Io) => return text(StatusCode::BAD_REQUEST, "the request body broke off"),
    };
    let request = match PhaseRequest::from_fields(&fields) {
        Ok(request) => request,
        Err(e) => return bad_request(e.to_string()),
    };
    drop(fields);
    let phase = request.phase();
    if truncate && phase != Phase::Transfer {
        // No payload to cut: a setup or verify gets a plain 500 fault instead.
        app.sessions.counters.fault(FaultKind::ServerError);
        return json_reply(Reply::injected(
            FaultKind::ServerError,
            format!("injected fault: internal server error; the {phase} was not applied"),
        ));
    }
    let worker = Arc::clone(app);
    // Storage is plain file I/O: keep it off the async worker threads.
    let mut response =
        match tokio::task::spawn_blocking(move || worker.sessions.apply(&key, request, truncate))
            .await
        {
            Ok(reply) => json_reply(reply),
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        };
    if phase == Phase::Setup && app.mode == WriteMode::Offset {
        response.headers_mut().insert(
            WRITE_MODE_HEADER,
            HeaderValue::from_static(WRITE_MODE_OFFSET),
        );
    }
    response
}

/// Counts every request and holds every response back by the configured latency.
async fn count_and_delay(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    app.sessions
        .counters
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if !app.latency.is_zero() {
        // This sleep is the behaviour under test (a slow server), not a wait.
        tokio::time::sleep(app.latency).await;
    }
    response
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/api/dataset/{key}/datafile", post(datafile))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            count_and_delay,
        ))
        // Bodies are streamed and limited by `max_chunk` in `read_fields`.
        .layer(DefaultBodyLimit::disable())
        .with_state(app)
}

async fn serve_app(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MockError> {
    let router = router(Arc::clone(&app));
    // Owns every connection's task: dropping it (this future aborted, as when a
    // `MockServer` is dropped) aborts them all; on shutdown it is drained.
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, router.clone(), Arc::clone(&app)));
                }
                Err(e) if is_connection_error(&e) => {}
                Err(_) => tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await,
            },
            // Reap finished connections so the set does not grow with them.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    app.closing.send_replace(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection (HTTP/1.1) until it ends, a `reset` fault drops it, or
/// shutdown closes it after its request in flight.
async fn serve_connection(stream: TcpStream, router: Router, app: Arc<App>) {
    // Answers are small and sent at once: never hold them back for Nagle.
    let _ = stream.set_nodelay(true);
    let control = ConnectionControl {
        reset: Arc::new(Notify::new()),
    };
    let reset = Arc::clone(&control.reset);
    let service = service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(control.clone());
        let mut router = router.clone();
        // axum's router is always ready, so `call` needs no `poll_ready` first.
        async move { router.call(request).await }
    });
    let io = TokioIo::new(Throttled::new(stream, app.bandwidth));
    let mut connection = pin!(http1::Builder::new().serve_connection(io, service));
    let mut closing = app.closing.subscribe();
    let mut closing_seen = false;
    loop {
        tokio::select! {
            _ = connection.as_mut() => break,
            // Returning drops the connection (and the handler waiting inside it)
            // and closes the socket: the client gets no answer at all.
            () = reset.notified() => break,
            _ = closing.wait_for(|closing| *closing), if !closing_seen => {
                closing_seen = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Serves `config` on a listener the caller bound, until `shutdown` resolves; then
/// finishes the requests in flight and returns.
pub async fn serve(
    listener: TcpListener,
    config: MockConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MockError> {
    let app = Arc::new(App::new(&config)?);
    serve_app(listener, app, shutdown).await
}

/// A running mock server (in this process), with ways to look inside it.
///
/// Dropping it stops the server without waiting; [`MockServer::shutdown`] waits.
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
        let app = Arc::new(App::new(&config)?);
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| MockError::Bind {
                    addr: config.listen,
                    source,
                })?;
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

    /// The base URL, `http://127.0.0.1:PORT` (give it to the client as the server).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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

    /// Makes every token expire now: later calls get 401 (a token that runs out
    /// mid-upload, at a moment a test chooses).
    pub fn expire_tokens(&self) {
        *self
            .app
            .tokens_expire
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
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

    /// Changes the fault rate from the next request on (the kinds, seed and RNG
    /// position stay): a test can let setup through, then break the transfers.
    pub fn set_fault_rate(&self, rate: f64) -> Result<(), MockError> {
        self.app.faults.set_rate(rate)
    }

    /// The write mode it serves.
    pub fn mode(&self) -> WriteMode {
        self.app.mode
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
