//! Accepting and serving connections: the accept loop, one task per
//! connection, the router, and [`serve`].
//!
//! Connections are served here rather than by `axum::serve`, for three reasons: a
//! `reset` fault must drop a connection without writing any answer (a handler can
//! only ever produce a response), the bandwidth caps wrap each socket, and the
//! admin route needs the peer's address. With a certificate
//! ([`crate::MockConfig::tls`]) each connection's task runs the TLS handshake
//! first (never the accept loop, so a slow handshake holds up no one else).
//!
//! Limits against slow or many clients: at most
//! [`crate::MockConfig::max_connections`] connections are served at once (the
//! accept loop takes a slot before it accepts, so beyond the limit a new
//! connection waits in the kernel's listen backlog until one ends, rather than
//! being refused: a client sees a slow connect, not an error); a connection
//! that does not send a request's headers within
//! [`crate::MockConfig::header_read_timeout`] is closed (hyper's timer, which
//! also bounds how long a kept-alive connection sits idle); and a request body
//! that stops moving is cut (`body_idle.rs`).

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{any, post};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tower_service::Service;

use crate::admin::{ADMIN_TOKENS_PATH, Peer, admin_tokens};
use crate::app::App;
use crate::body_idle::IdleTimeout;
use crate::config::MockConfig;
use crate::counters::OpenConnection;
use crate::datafile::{ConnectionControl, count_hold_and_delay, datafile};
use crate::error::MockError;
use crate::html_errors::html_errors;
use crate::throttle::Throttled;
use crate::tls::TLS_HANDSHAKE_TIMEOUT;
use crate::tus::{registration_lookup, tus_collection, tus_upload};

/// How long the accept loop pauses after an accept error that is not about one
/// connection (such as running out of file descriptors), as hyper and axum do.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// The routes: the datafile endpoint (counted, held while paused, delayed and
/// faulted) and the admin route.
fn router(app: Arc<App>) -> Router {
    let mut router = Router::new().route(
        "/api/dataset/{key}/datafile",
        post(datafile).get(registration_lookup),
    );
    if app.serve_tus {
        // Protocol 2 (`tus/`): counted, held, delayed and faulted as well.
        router = router
            .route("/files", any(tus_collection))
            .route("/files/", any(tus_collection))
            .route("/files/{id}", any(tus_upload));
    }
    router
        // Only the upload endpoints are counted, held, delayed and faulted
        // (not a path the server does not serve: a client's probe for tus on
        // a server without it is answered 404 and not counted).
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            count_hold_and_delay,
        ))
        .route(ADMIN_TOKENS_PATH, post(admin_tokens))
        // Bodies are streamed and limited by `max_chunk` in `read_fields`.
        .layer(DefaultBodyLimit::disable())
        // Outermost: with `plain_errors` every error of every route is HTML.
        .layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            html_errors,
        ))
        .with_state(app)
}

/// Accepts connections on `listener` until `shutdown` resolves; then lets
/// every connection finish its request in flight, and returns.
pub(crate) async fn serve_app(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MockError> {
    if let Ok(addr) = listener.local_addr() {
        let _ = app.bound.set(addr);
    }
    let router = router(Arc::clone(&app));
    // Owns every connection's task: dropping it (this future aborted, as when a
    // `MockServer` is dropped) aborts them all; on shutdown it is drained.
    let mut connections = JoinSet::new();
    // Bounds the connections served at once: one permit a connection, taken
    // before `accept` and held by the connection's task to its end. Never
    // closed.
    let slots = Arc::new(Semaphore::new(app.max_connections));
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            // Cancel-safe: a slot taken for an accept that loses the race is
            // given back, and `accept` itself loses no connection.
            (slot, accepted) = accept_in_a_slot(&listener, &slots) => match accepted {
                Ok((stream, peer)) => {
                    let connection = serve_connection(stream, Peer(peer), router.clone(), Arc::clone(&app));
                    connections.spawn(async move {
                        connection.await;
                        drop(slot);
                    });
                }
                Err(e) if is_connection_error(&e) => {}
                Err(_) => tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await,
            },
            // Reap finished connections so the set does not grow with them.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Also lets go the requests a pause holds: shutdown never waits for a resume.
    app.closing.send_replace(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Waits for a free connection slot, then for a connection.
async fn accept_in_a_slot(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> (
    Option<OwnedSemaphorePermit>,
    io::Result<(TcpStream, std::net::SocketAddr)>,
) {
    // `ok()`: the semaphore is never closed, so this is always `Some`.
    let slot = Arc::clone(slots).acquire_owned().await.ok();
    (slot, listener.accept().await)
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection (HTTP/1.1, inside TLS when the server has a
/// certificate) until it ends, a `reset` fault drops it, or shutdown closes it
/// after its request in flight.
async fn serve_connection(stream: TcpStream, peer: Peer, router: Router, app: Arc<App>) {
    // Answers are small and sent at once: never hold them back for Nagle.
    let _ = stream.set_nodelay(true);
    // The caps count the bytes on the wire, TLS records included.
    let io = Throttled::new(stream, app.bandwidth, app.bandwidth_total.clone());
    match app.tls.clone() {
        None => serve_http(io, peer, router, app).await,
        Some(tls) => {
            if let Some(io) = tls_handshake(&tls, io, &app).await {
                serve_http(io, peer, router, app).await;
            }
        }
    }
}

/// The server side of a TLS handshake, given at most [`TLS_HANDSHAKE_TIMEOUT`].
/// `None` (the connection is then dropped) when it failed, timed out, or
/// shutdown began: a client that never finishes a handshake holds nothing.
async fn tls_handshake<S>(tls: &TlsAcceptor, io: S, app: &App) -> Option<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut closing = app.closing.subscribe();
    tokio::select! {
        done = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(io)) => done.ok()?.ok(),
        _ = closing.wait_for(|closing| *closing) => None,
    }
}

/// Serves HTTP/1.1 on one connection's byte stream (plain or TLS).
async fn serve_http<S>(io: S, peer: Peer, router: Router, app: Arc<App>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let control = ConnectionControl {
        reset: Arc::new(Notify::new()),
    };
    let reset = Arc::clone(&control.reset);
    let _open = OpenConnection::new(&app.sessions.counters);
    let body_idle_timeout = app.body_idle_timeout;
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let mut request =
            request.map(|body| axum::body::Body::new(IdleTimeout::new(body, body_idle_timeout)));
        request.extensions_mut().insert(control.clone());
        request.extensions_mut().insert(peer);
        let mut router = router.clone();
        // axum's router is always ready, so `call` needs no `poll_ready` first.
        async move { router.call(request).await }
    });
    let io = TokioIo::new(io);
    let mut connection = pin!(
        http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(app.header_read_timeout)
            .serve_connection(io, service)
    );
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
/// [`crate::MockServer::start_on`] and [`crate::MockServer::warnings`] to show them.
pub async fn serve(
    listener: TcpListener,
    config: MockConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MockError> {
    let app = App::start(config).await?;
    serve_app(listener, app, shutdown).await
}
