//! The HTTP side: routing, authentication, latency, start and shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use idb_wire::{
    DatasetKey, PhaseRequest, Token, VerifyReceipt, WWW_AUTHENTICATE, parse_authorization,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::body::{BodyError, drain, read_fields};
use crate::sessions::{Reply, Sessions};
use crate::{MockConfig, MockError, Stats, Storage};

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
    tokens_expire: Option<Instant>,
    sessions: Sessions,
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
            tokens_expire: config.token_ttl.map(|ttl| Instant::now() + ttl),
            sessions: Sessions::new(store.clone()),
            _temp: temp,
            store,
        })
    }

    fn authorized(&self, dataset: &Dataset, headers: &HeaderMap) -> bool {
        if self.tokens_expire.is_some_and(|at| Instant::now() >= at) {
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

async fn datafile(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Dataset first, then token, as the service does: an unknown or published
    // dataset is 404 whatever the token.
    let Some(dataset) = app.datasets.get(&key).filter(|d| !d.published) else {
        drain(body).await;
        return text(StatusCode::NOT_FOUND, "Dataset Not Found");
    };
    if !app.authorized(dataset, &headers) {
        drain(body).await;
        return unauthorized();
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let fields = match read_fields(content_type, content_length, body, app.max_chunk).await {
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
    let worker = Arc::clone(&app);
    // Storage is plain file I/O: keep it off the async worker threads.
    match tokio::task::spawn_blocking(move || worker.sessions.apply(&key, request)).await {
        Ok(reply) => json_reply(reply),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
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
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(MockError::Serve)
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

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        self.app.sessions.counters.snapshot()
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
