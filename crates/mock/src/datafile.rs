//! The datafile endpoint, `POST /api/dataset/{key}/datafile`: the faults drawn
//! for a request (for the call read from the start of its body, `call_peek.rs`),
//! authentication, reading the body, and the answer of the sessions as HTTP.

use std::future::pending;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use idb_wire::{
    Fields, Phase, PhaseRequest, WRITE_MODE_HEADER, WRITE_MODE_OFFSET, WWW_AUTHENTICATE, WriteMode,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::body::{BodyError, Limits, PayloadDest, read_fields, read_some};
use crate::call_peek::peek_call;
use crate::counters::InFlight;
use crate::faults::FaultKind;
use crate::payload_feed::{PayloadFeed, payload_feed};
use crate::reply::Reply;
use crate::tus::{Registration, register};

/// What a handler may do to the connection its request came on.
#[derive(Clone)]
pub(crate) struct ConnectionControl {
    /// Notified by a `reset` fault: the connection's task then drops the
    /// connection, closing the socket without writing any answer. `notify_one`
    /// keeps the permit if the task is not waiting yet, so no notice is lost.
    pub(crate) reset: Arc<Notify>,
}

/// `POST /api/dataset/{key}/datafile`: draws the request's fault, then answers
/// it as that fault says, or normally ([`answer`]).
pub(crate) async fn datafile(
    State(app): State<Arc<App>>,
    Extension(connection): Extension<ConnectionControl>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Faults are drawn for the call, not the arrival: its fields come first.
    let (call, body) = if app.faults.active() {
        let (call, body) = peek_call(&key, &headers, body).await;
        (Some(call), body)
    } else {
        (None, body)
    };
    let fault = call.as_ref().and_then(|call| app.faults.draw(call));
    match fault {
        Some(FaultKind::ServerError) => {
            // Read the body first, so the client sees the 500, not a reset.
            discard(&app, &headers, body).await;
            app.sessions.counters.fault(FaultKind::ServerError);
            return Reply::injected(
                FaultKind::ServerError,
                "injected fault: internal server error; nothing was applied".to_owned(),
            )
            .into_response();
        }
        Some(FaultKind::TooManyRequests) => {
            discard(&app, &headers, body).await;
            return too_many_requests(&app);
        }
        Some(FaultKind::Reset) => return reset_connection(&app, &connection, &headers, body).await,
        Some(FaultKind::Stall | FaultKind::Truncate) | None => {}
    }
    let truncate = fault == Some(FaultKind::Truncate);
    let response = answer(&app, key, &headers, body, truncate).await;
    if let Some(call) = &call
        && call.phase == Some(Phase::Verify)
        && response.status() == StatusCode::OK
        && fault.is_none()
    {
        // The name is done and the client gets its answer: its attempt
        // counters are not needed any more. (After a stalled verify the client
        // sends it again, and that retry must get a fresh draw.)
        app.faults.forget(&call.dataset, &call.filename);
    }
    if let Some(call) = &call
        && call.phase.is_none()
        && response.status() == StatusCode::OK
        && fault.is_none()
    {
        // Only a tus registration (no phase) is answered 200: its own
        // counter goes (its upload's went with it, `tus/register.rs`).
        app.faults.forget_call(call);
    }
    if fault == Some(FaultKind::Stall) {
        stall(&app).await;
    }
    response
}

/// The answer of an injected `429` (counted), with its `Retry-After`; the
/// request's body was read already.
pub(crate) fn too_many_requests(app: &App) -> Response {
    app.sessions.counters.fault(FaultKind::TooManyRequests);
    let secs = app.faults.retry_after_secs();
    let mut response = Reply {
        status: 429,
        body: serde_json::json!({
            "error": "too_many_requests",
            "fault": FaultKind::TooManyRequests.as_str(),
            "message": format!("injected fault: slow down, retry after {secs} s; nothing was applied"),
        }),
    }
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// An injected `reset` (counted): reads about half the body, then has the
/// connection dropped without any answer. Never returns.
pub(crate) async fn reset_connection(
    app: &App,
    connection: &ConnectionControl,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    // Reading the body of a request that asked `Expect: 100-continue`
    // would first send `100 Continue`, a status line: cut it off before.
    let expects_continue = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !expects_continue {
        let length = content_length(headers).unwrap_or(0);
        read_some(body, (length / 2).max(1)).await;
    }
    app.sessions.counters.fault(FaultKind::Reset);
    connection.reset.notify_one();
    // Never answer: the connection's task drops this future with the
    // connection, so no status line is ever written.
    pending().await
}

/// An injected `stall` (counted): holds the answer of a call already applied
/// for the stall time, or until shutdown begins.
pub(crate) async fn stall(app: &App) {
    app.sessions.counters.fault(FaultKind::Stall);
    let mut closing = app.closing.subscribe();
    tokio::select! {
        // This sleep is the behaviour under test (a lost or slow ack), not a wait.
        () = tokio::time::sleep(app.faults.stall) => {}
        _ = closing.wait_for(|closing| *closing) => {}
    }
}

/// Reads a body the answer does not depend on (so the client sees the answer, not
/// a reset connection), counting its payload in `bytes_received` and holding none
/// of it.
async fn discard(app: &App, headers: &HeaderMap, body: Body) {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let _ = read_fields(
        content_type,
        content_length(headers),
        body,
        limits(app),
        |_, _| PayloadDest::Drop,
    )
    .await;
}

/// The limits every datafile body is read under.
fn limits(app: &App) -> Limits<'_> {
    Limits {
        max_chunk: app.max_chunk,
        received: &app.sessions.counters.bytes_received,
    }
}

pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
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
    if !dataset.authorized(headers) {
        discard(app, headers, body).await;
        return unauthorized();
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let length = content_length(headers);
    // A strict transfer's payload is streamed into its session as it arrives
    // (`stream_transfer`), once the fields before it make a valid transfer. A
    // truncate fault must know the chunk's length before it stores anything,
    // and offset mode holds chunks that arrive ahead anyway: those payloads are
    // held whole and applied after the body, as are urlencoded ones.
    let streamable = app.mode == WriteMode::Strict && !truncate;
    let mut streaming: Option<Streaming> = None;
    let choose = |fields: &Fields, payload_name: &str| {
        if !streamable {
            return PayloadDest::Hold;
        }
        match Streaming::start(app, &key, fields, payload_name) {
            Some((started, feed)) => {
                streaming = Some(started);
                PayloadDest::Stream(feed)
            }
            None => PayloadDest::Hold,
        }
    };
    let read = read_fields(content_type, length, body, limits(app), choose).await;
    let (fields, feed) = match read {
        Ok(read) => read,
        Err(e) => {
            // The feed was dropped: the worker undoes what it did; wait for it,
            // so the next call on this name finds the session as it was.
            if let Some(streaming) = streaming {
                streaming.worker.await.ok();
            }
            return body_error(app, e);
        }
    };
    // Protocol 2's registration call: `tus_url`, `filename`, `size`, no phase.
    if let Some(registration) = Registration::from_fields(&fields) {
        if let Some(streaming) = streaming {
            drop(feed);
            streaming.worker.await.ok();
        }
        if truncate {
            // No payload to cut: a plain 500 fault instead, as for a verify.
            app.sessions.counters.fault(FaultKind::ServerError);
            return Reply::injected(
                FaultKind::ServerError,
                "injected fault: internal server error; the registration was not applied"
                    .to_owned(),
            )
            .into_response();
        }
        return match registration {
            Ok(registration) => {
                let host = headers
                    .get(header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                register(app, &key, registration, host).await
            }
            Err(message) => bad_request(message),
        };
    }
    let request = match PhaseRequest::from_fields(&fields) {
        Ok(request) => request,
        Err(e) => {
            if let Some(streaming) = streaming {
                drop(feed);
                streaming.worker.await.ok();
            }
            return bad_request(e.to_string());
        }
    };
    drop(fields);
    match (streaming, feed) {
        (Some(streaming), Some(feed)) => return streaming.finish(&request, feed).await,
        // A streamed payload always ends with its feed (else the body failed).
        (Some(streaming), None) => {
            streaming.worker.await.ok();
            return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
        (None, _) => {}
    }
    let phase = request.phase();
    if truncate && phase != Phase::Transfer {
        // No payload to cut: a setup or verify gets a plain 500 fault instead.
        app.sessions.counters.fault(FaultKind::ServerError);
        return Reply::injected(
            FaultKind::ServerError,
            format!("injected fault: internal server error; the {phase} was not applied"),
        )
        .into_response();
    }
    let worker = Arc::clone(app);
    // Storage is plain file I/O: keep it off the async worker threads.
    let mut response =
        match tokio::task::spawn_blocking(move || worker.sessions.apply(&key, request, truncate))
            .await
        {
            Ok(reply) => reply.into_response(),
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

/// The answer to a body that could not be read as fields.
fn body_error(app: &App, error: BodyError) -> Response {
    match error {
        BodyError::TooLarge => Reply {
            status: 413,
            body: serde_json::json!({ "error": "too_large", "max_chunk": app.max_chunk }),
        }
        .into_response(),
        BodyError::Malformed(e) => bad_request(e.to_string()),
        BodyError::UnsupportedType => text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send multipart/form-data or application/x-www-form-urlencoded",
        ),
        BodyError::Io => text(StatusCode::BAD_REQUEST, "the request body broke off"),
    }
}

/// A strict transfer whose payload is being streamed into its session.
struct Streaming {
    /// The transfer as the fields before the payload made it.
    filename: String,
    previous_size: u64,
    /// The blocking task that applies the payload (`None`: the body did not
    /// come whole, nothing was changed). One a request streaming a payload, so
    /// at most `max_connections` at once; tokio's blocking pool bounds them too.
    worker: JoinHandle<Option<Reply>>,
}

impl Streaming {
    /// Starts the worker of a payload whose part begins after `fields`, if
    /// those make a valid transfer; else `None` (the payload is held whole).
    fn start(
        app: &Arc<App>,
        key: &str,
        fields: &Fields,
        payload_name: &str,
    ) -> Option<(Self, PayloadFeed)> {
        let mut probe = fields.clone();
        probe.push(payload_name, Bytes::new());
        let PhaseRequest::Transfer {
            filename,
            previous_size,
            ..
        } = PhaseRequest::from_fields(&probe).ok()?
        else {
            return None;
        };
        let (feed, pieces) = payload_feed();
        let worker_app = Arc::clone(app);
        let session = (key.to_owned(), filename.clone());
        let worker = tokio::task::spawn_blocking(move || {
            worker_app
                .sessions
                .stream_transfer(&session, previous_size, pieces)
        });
        let streaming = Self {
            filename,
            previous_size,
            worker,
        };
        Some((streaming, feed))
    }

    /// Ends the payload: applied and answered if the whole body still makes
    /// the same transfer, else undone and refused (a field after the payload
    /// changed the call, which a streamed payload cannot follow).
    async fn finish(self, request: &PhaseRequest, feed: PayloadFeed) -> Response {
        let same = matches!(
            request,
            PhaseRequest::Transfer { filename, previous_size, .. }
                if *filename == self.filename && *previous_size == self.previous_size
        );
        if same {
            feed.finish().await;
        } else {
            drop(feed);
        }
        match self.worker.await {
            Ok(Some(reply)) if same => reply.into_response(),
            Ok(_) if !same => bad_request(
                "a field after the bytechunk part changed the phase, filename or \
                 previous_size; send the payload last"
                    .to_owned(),
            ),
            _ => text(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        }
    }
}

/// The datafile route's outer layer: counts every request on arrival, holds it
/// while the server is paused (before anything else happens to it: its body is
/// not read, no fault is drawn), counts it again when answered, and holds every
/// answer back by the configured latency; it is in flight throughout.
pub(crate) async fn count_hold_and_delay(
    State(app): State<Arc<App>>,
    request: Request,
    next: Next,
) -> Response {
    app.sessions.counters.arrived();
    let _in_flight = InFlight::new(&app.sessions.counters);
    app.pause.hold(&app.closing).await;
    let response = next.run(request).await;
    app.sessions
        .counters
        .requests
        .fetch_add(1, Ordering::Relaxed);
    if !app.latency.is_zero() {
        // This sleep is the behaviour under test (a slow server), not a wait.
        tokio::time::sleep(app.latency).await;
    }
    response
}

fn text(status: StatusCode, message: &'static str) -> Response {
    (status, message).into_response()
}

pub(crate) fn unauthorized() -> Response {
    let mut response = text(StatusCode::UNAUTHORIZED, "Bad credentials");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(WWW_AUTHENTICATE),
    );
    response
}

fn bad_request(message: String) -> Response {
    Reply {
        status: 400,
        body: serde_json::json!({ "error": "bad_request", "message": message }),
    }
    .into_response()
}
