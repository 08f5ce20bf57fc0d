//! The HTTP side: connections, routing, authentication, faults, latency, start and
//! shutdown.
//!
//! Connections are served here rather than by `axum::serve`, for three reasons: a
//! `reset` fault must drop a connection without writing any answer (a handler can
//! only ever produce a response), the bandwidth cap wraps each socket, and the
//! admin route needs the peer's address.

use std::collections::HashMap;
use std::future::{Future, pending};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use idb_wire::{
    DatasetKey, Phase, PhaseRequest, Token, VerifyReceipt, WRITE_MODE_HEADER, WRITE_MODE_OFFSET,
    WWW_AUTHENTICATE, parse_authorization, parse_urlencoded,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tower_service::Service;

use crate::body::{BodyError, drain, read_fields, read_some};
use crate::faults::{FaultKind, Faults};
use crate::sessions::{Reply, Sessions, lock};
use crate::throttle::Throttled;
use crate::{MockConfig, MockError, Stats, Storage, WriteMode};

/// How long the accept loop pauses after an accept error that is not about one
/// connection (such as running out of file descriptors), as hyper and axum do.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// The path of the admin route that adds a token to a running server (loopback
/// peers only; see [`MockServer::add_token`]).
pub const ADMIN_TOKENS_PATH: &str = "/admin/tokens";

/// The largest admin request body read; larger ones get 413.
const ADMIN_BODY_LIMIT: usize = 64 * 1024;

/// What the server knows about one dataset.
struct Dataset {
    published: bool,
    /// The tokens that may upload into it, each with its own expiry. Locked
    /// briefly by every authorisation and by `add_token` / `expire_tokens`.
    tokens: Mutex<Vec<Grant>>,
}

/// One token of a dataset.
struct Grant {
    token: Token,
    /// It stops working at this instant (`None`: never).
    expires: Option<Instant>,
}

impl Grant {
    /// A grant of `token` from now for `ttl` (`None`: for ever; a `ttl` past what
    /// the clock can count also means for ever).
    fn new(token: Token, ttl: Option<Duration>) -> Self {
        Self {
            token,
            expires: ttl.and_then(|ttl| Instant::now().checked_add(ttl)),
        }
    }
}

/// Shared state of a running mock.
struct App {
    /// Fixed at start: `add_token` adds tokens, never datasets.
    datasets: HashMap<String, Dataset>,
    latency: Duration,
    max_chunk: u64,
    sessions: Sessions,
    /// What could not be loaded from the store's saved state, for people.
    warnings: Vec<String>,
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
                tokens: Mutex::default(),
            });
            entry.published |= d.published;
            let tokens = entry.tokens.get_mut().unwrap_or_else(|e| e.into_inner());
            tokens.push(Grant::new(token, config.token_ttl));
        }
        let faults = Faults::new(&config.faults)?;
        if config.bandwidth == Some(0) {
            return Err(MockError::ZeroBandwidth);
        }
        // Only a directory of the caller's is worth saving state into: a
        // temporary store starts empty every time.
        let persist = matches!(config.storage, Storage::Dir(_));
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
        let (sessions, warnings) = Sessions::new(store.clone(), config.mode, persist);
        Ok(Self {
            datasets,
            latency: config.latency,
            max_chunk: config.max_chunk,
            sessions,
            warnings,
            mode: config.mode,
            faults,
            bandwidth: config.bandwidth,
            closing: watch::Sender::new(false),
            _temp: temp,
            store,
        })
    }

    /// Builds the state on a blocking thread: loading a store's saved state
    /// hashes the staged bytes of every open upload.
    async fn start(config: MockConfig) -> Result<Arc<Self>, MockError> {
        tokio::task::spawn_blocking(move || Self::new(&config))
            .await
            .map_err(|e| MockError::Serve(io::Error::other(e)))?
            .map(Arc::new)
    }

    fn authorized(&self, dataset: &Dataset, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_authorization)
        else {
            return false;
        };
        let now = Instant::now();
        lock(&dataset.tokens)
            .iter()
            .any(|g| g.token.expose() == given && g.expires.is_none_or(|at| now < at))
    }

    /// See [`MockServer::add_token`].
    fn add_token(
        &self,
        dataset: &str,
        token: &str,
        ttl: Option<Duration>,
    ) -> Result<(), MockError> {
        let Some(entry) = self.datasets.get(dataset) else {
            return Err(MockError::UnknownDataset {
                dataset: dataset.chars().take(64).collect(),
            });
        };
        let grant = Grant::new(Token::new(token)?, ttl);
        let mut tokens = lock(&entry.tokens);
        // The same token again: it lives from now on, as a new grant would.
        tokens.retain(|g| g.token != grant.token);
        tokens.push(grant);
        Ok(())
    }

    /// Makes the tokens `which` picks expire now (those expired already stay
    /// as they are); returns whether it picked any.
    fn expire(&self, which: impl Fn(&Token) -> bool) -> bool {
        let now = Instant::now();
        let mut any = false;
        for dataset in self.datasets.values() {
            for grant in lock(&dataset.tokens).iter_mut().filter(|g| which(&g.token)) {
                grant.expires = Some(grant.expires.map_or(now, |at| at.min(now)));
                any = true;
            }
        }
        any
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
            discard(&app, &headers, body).await;
            app.sessions.counters.fault(FaultKind::ServerError);
            return json_reply(Reply::injected(
                FaultKind::ServerError,
                "injected fault: internal server error; nothing was applied".to_owned(),
            ));
        }
        Some(FaultKind::TooManyRequests) => {
            discard(&app, &headers, body).await;
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

/// Reads a body the answer does not depend on (so the client sees the answer, not
/// a reset connection), counting its payload in `bytes_received`.
async fn discard(app: &App, headers: &HeaderMap, body: Body) {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let received = &app.sessions.counters.bytes_received;
    let _ = read_fields(
        content_type,
        content_length(headers),
        body,
        app.max_chunk,
        received,
    )
    .await;
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
        discard(app, headers, body).await;
        return text(StatusCode::NOT_FOUND, "Dataset Not Found");
    };
    if !app.authorized(dataset, headers) {
        discard(app, headers, body).await;
        return unauthorized();
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let received = &app.sessions.counters.bytes_received;
    let length = content_length(headers);
    let fields = match read_fields(content_type, length, body, app.max_chunk, received).await {
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

/// The address a connection comes from, for the admin route.
#[derive(Clone, Copy)]
struct Peer(SocketAddr);

/// Whether the admin route answers this peer: loopback only (127.0.0.0/8, ::1,
/// and 127.0.0.0/8 mapped into IPv6 by a dual-stack listener).
fn admin_allowed(peer: SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
}

/// `POST /admin/tokens`: adds a token to a dataset of the running server (see
/// [`MockServer::add_token`]). The body is urlencoded or JSON with `dataset`,
/// `token` and optionally `ttl_secs`. Answers 200 `{"dataset", "expires_in"}`
/// (seconds, or null for never; the token is never echoed), 400 for a missing or
/// bad field, 403 to a peer that is not loopback, 404 for an unknown dataset.
async fn admin_tokens(
    State(app): State<Arc<App>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !admin_allowed(peer) {
        drain(body).await;
        return json_reply(Reply::error(
            403,
            "forbidden",
            "the admin routes answer only connections from this host (loopback)".to_owned(),
        ));
    }
    let bytes = match http_body_util::Limited::new(body, ADMIN_BODY_LIMIT)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return json_reply(Reply::error(
                413,
                "too_large",
                format!("an admin request body is at most {ADMIN_BODY_LIMIT} bytes"),
            ));
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let request = match TokenRequest::parse(content_type, &bytes) {
        Ok(request) => request,
        Err(message) => return json_reply(Reply::error(400, "bad_request", message)),
    };
    let ttl = request.ttl_secs.map(Duration::from_secs);
    match app.add_token(&request.dataset, &request.token, ttl) {
        Ok(()) => json_reply(Reply {
            status: 200,
            body: serde_json::json!({
                "dataset": request.dataset,
                "expires_in": request.ttl_secs,
            }),
        }),
        Err(e @ MockError::UnknownDataset { .. }) => {
            json_reply(Reply::error(404, "unknown_dataset", e.to_string()))
        }
        // The token's text is never part of the message.
        Err(e) => json_reply(Reply::error(400, "bad_token", e.to_string())),
    }
}

/// The fields of an admin token request.
struct TokenRequest {
    dataset: String,
    token: String,
    ttl_secs: Option<u64>,
}

impl TokenRequest {
    /// Reads a JSON (`application/json`) or urlencoded body; `Err` says what is
    /// wrong, without quoting the token.
    fn parse(content_type: &str, body: &[u8]) -> Result<Self, String> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        let field = |name: &str, value: Option<String>| {
            value.ok_or_else(|| format!("give the {name} field"))
        };
        let (dataset, token, ttl) = if media.eq_ignore_ascii_case("application/json") {
            let value: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
            let text = |name: &str| match value.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(serde_json::Value::Number(n)) if name == "ttl_secs" => Ok(Some(n.to_string())),
                Some(_) => Err(format!("the {name} field should be a string")),
            };
            (text("dataset")?, text("token")?, text("ttl_secs")?)
        } else if media.eq_ignore_ascii_case("application/x-www-form-urlencoded")
            || media.is_empty()
        {
            let pairs =
                parse_urlencoded(body).map_err(|e| format!("the body is not urlencoded: {e}"))?;
            let text = |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| String::from_utf8(v.to_vec()))
                    .transpose()
                    .map_err(|_| format!("the {name} field is not UTF-8"))
            };
            (text("dataset")?, text("token")?, text("ttl_secs")?)
        } else {
            return Err("send application/x-www-form-urlencoded or application/json".to_owned());
        };
        let ttl_secs = match ttl {
            None => None,
            Some(text) => Some(text.trim().parse::<u64>().map_err(|_| {
                "ttl_secs should be a whole number of seconds, like 259200 for 3 days".to_owned()
            })?),
        };
        Ok(Self {
            dataset: field("dataset", dataset)?,
            token: field("token", token)?,
            ttl_secs,
        })
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/api/dataset/{key}/datafile", post(datafile))
        // Only the datafile endpoint is counted, delayed and faulted.
        .layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            count_and_delay,
        ))
        .route(ADMIN_TOKENS_PATH, post(admin_tokens))
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
                Ok((stream, peer)) => {
                    let connection = serve_connection(stream, Peer(peer), router.clone(), Arc::clone(&app));
                    connections.spawn(connection);
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
async fn serve_connection(stream: TcpStream, peer: Peer, router: Router, app: Arc<App>) {
    // Answers are small and sent at once: never hold them back for Nagle.
    let _ = stream.set_nodelay(true);
    let control = ConnectionControl {
        reset: Arc::new(Notify::new()),
    };
    let reset = Arc::clone(&control.reset);
    let service = service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(control.clone());
        request.extensions_mut().insert(peer);
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
///
/// Warnings about a store's saved state are dropped here; use
/// [`MockServer::start_on`] and [`MockServer::warnings`] to show them.
pub async fn serve(
    listener: TcpListener,
    config: MockConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MockError> {
    let app = App::start(config).await?;
    serve_app(listener, app, shutdown).await
}

/// A running mock server (in this process), with ways to look inside it.
///
/// Dropping it stops the server without waiting; [`MockServer::shutdown`] waits.
///
/// With [`Storage::Dir`] the server saves its state in `<dir>/+state.json` after
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

    /// Makes every token known so far expire now: later calls with them get 401
    /// (a token that runs out mid-upload, at a moment a test chooses). Tokens
    /// added afterwards with [`MockServer::add_token`] work.
    pub fn expire_tokens(&self) {
        self.app.expire(|_| true);
    }

    /// Makes `token` expire now, for every dataset that has it; the other tokens
    /// keep their expiry (a depositor's old token running out after a new one
    /// was issued). Returns whether any dataset had it.
    pub fn expire_token(&self, token: &str) -> bool {
        self.app.expire(|t| t.expose() == token.trim())
    }

    /// Lets `token` upload into `dataset` from now on, for `ttl` (`None`: for
    /// ever), as a depositor asking the Data Bank for a new token would. Giving
    /// a token the dataset has already restarts its life from now. The standalone
    /// server offers the same through `POST /admin/tokens` (loopback only).
    ///
    /// Errors: [`MockError::UnknownDataset`] for a key the server was not started
    /// with, [`MockError::Config`] for a token that is not valid.
    pub fn add_token(
        &self,
        dataset: &str,
        token: &str,
        ttl: Option<Duration>,
    ) -> Result<(), MockError> {
        self.app.add_token(dataset, token, ttl)
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
        let mut chunks = self.app.sessions.counters.chunks.subscribe();
        // The sender lives in `self.app`, so it outlives this borrow: no error.
        let _ = chunks.wait_for(|&accepted| accepted >= n).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_peers_may_use_the_admin_route() {
        for allowed in [
            "127.0.0.1:5",
            "127.9.8.7:5",
            "[::1]:5",
            "[::ffff:127.0.0.1]:5",
        ] {
            assert!(admin_allowed(allowed.parse().unwrap()), "{allowed}");
        }
        for refused in [
            "192.0.2.2:5",
            "10.0.0.1:5",
            "0.0.0.0:5",
            "[fd00::2]:5",
            "[::ffff:192.0.2.2]:5",
            "[::]:5",
        ] {
            assert!(!admin_allowed(refused.parse().unwrap()), "{refused}");
        }
    }

    #[test]
    fn token_requests_read_both_encodings_and_never_quote_the_token() {
        let form = "application/x-www-form-urlencoded";
        let r = TokenRequest::parse(form, b"dataset=IDB-1&token=t%2B1&ttl_secs=60").unwrap();
        assert_eq!((r.dataset.as_str(), r.token.as_str()), ("IDB-1", "t+1"));
        assert_eq!(r.ttl_secs, Some(60));
        let json = br#"{"dataset":"IDB-1","token":"t1","ttl_secs":"7"}"#;
        let r = TokenRequest::parse("application/json; charset=utf-8", json).unwrap();
        assert_eq!(r.ttl_secs, Some(7));
        let bad = [
            (form, &b"dataset=IDB-1&token=secret-Q&ttl_secs=-1"[..]),
            (form, b"dataset=IDB-1"),
            ("application/json", br#"{"dataset":"IDB-1","token":5}"#),
            (
                "application/json",
                br#"{"dataset":"IDB-1","token":"secret-Q","ttl_secs":1.5}"#,
            ),
            ("text/plain", b"dataset=IDB-1&token=secret-Q"),
        ];
        for (content_type, body) in bad {
            let Err(message) = TokenRequest::parse(content_type, body) else {
                panic!("accepted {content_type} {body:?}");
            };
            assert!(!message.contains("secret-Q"), "{message}");
        }
    }
}
