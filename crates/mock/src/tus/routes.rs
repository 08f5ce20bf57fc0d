//! The tus routes: `<base>/files/` (OPTIONS, POST) and `<base>/files/{id}`
//! (HEAD, PATCH, DELETE, OPTIONS): the checks every request meets (the
//! token, then the protocol version), the faults drawn for it, then the
//! method.
//!
//! A fault is drawn for a POST on the collection and for a PATCH, HEAD or
//! DELETE of an upload, keyed by the method, the upload and `Upload-Offset`.
//! A call answered 2xx without a fault drops its attempt counter (but the
//! creation POST, one counter for all creations: dropping it would give every
//! creation the same first draw); an upload that is gone (terminated,
//! expired, removed by a join, or registered) drops all of its own (see
//! `faults.rs`).

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use super::answer::TusAnswer;
use super::checksum::{ALGORITHMS, Checksum, ChecksumProblem};
use super::headers::{
    ConcatRequest, OFFSET_OCTET_STREAM, TUS_RESUMABLE, TUS_VERSION_HEADER, UPLOAD_CHECKSUM,
    UPLOAD_CONCAT, UPLOAD_DEFER_LENGTH, UPLOAD_EXPIRES, UPLOAD_LENGTH, UPLOAD_METADATA,
    UPLOAD_OFFSET, concat, metadata, number, text,
};
use super::http_date::http_date;
use super::patch::Patch;
use super::uploads::{Concat, Missing};
use super::{TUS_EXTENSIONS, TUS_EXTENSIONS_SINK, TUS_MAX_SIZE, TUS_PATH, TUS_VERSION, TusProfile};
use crate::app::App;
use crate::datafile::{
    ConnectionControl, content_length, reset_connection, stall, too_many_requests, unauthorized,
};
use crate::faults::{Call, FaultKind};
use crate::payload_feed::payload_feed;
use crate::reply::Reply;

/// `<base>/files/`: OPTIONS and POST (creation).
pub(crate) async fn tus_collection(
    State(app): State<Arc<App>>,
    Extension(connection): Extension<ConnectionControl>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    tus(app, connection, method, None, headers, body).await
}

/// `<base>/files/{id}`: HEAD, PATCH, DELETE and OPTIONS.
pub(crate) async fn tus_upload(
    State(app): State<Arc<App>>,
    Extension(connection): Extension<ConnectionControl>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    tus(app, connection, method, Some(id), headers, body).await
}

async fn tus(
    app: Arc<App>,
    connection: ConnectionControl,
    method: Method,
    id: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if method == Method::OPTIONS {
        drain(&app, body).await;
        // The service checks the token of every request under /files, OPTIONS
        // included (tus itself asks no authorisation of OPTIONS).
        if app.tus.profile == TusProfile::S3 && !app.datasets.token_known(&headers) {
            return with_tus_resumable(unauthorized());
        }
        return options(app.tus.stores()).into_response();
    }
    // Faults are drawn for the call: method, upload and offset.
    let faulted = match (&method, &id) {
        (&Method::POST, None) => true,
        (method, Some(_)) => FAULTED_ON_AN_UPLOAD.contains(method),
        _ => false,
    };
    let call = faulted.then(|| Call {
        dataset: String::new(),
        filename: call_name(&method, id.as_deref().unwrap_or("")),
        phase: None,
        offset: number(&headers, UPLOAD_OFFSET).ok().flatten().unwrap_or(0),
    });
    let fault = call.as_ref().and_then(|call| app.faults.draw(call));
    let is_patch = method == Method::PATCH;
    match fault {
        // A truncate of a request with no body to cut is a plain 500.
        Some(kind @ (FaultKind::ServerError | FaultKind::Truncate))
            if kind == FaultKind::ServerError || !is_patch =>
        {
            drain(&app, body).await;
            return injected_500(&app);
        }
        Some(FaultKind::TooManyRequests) => {
            drain(&app, body).await;
            return with_tus_resumable(too_many_requests(&app));
        }
        Some(FaultKind::Reset) => {
            return reset_connection(&app, &connection, &headers, body).await;
        }
        Some(FaultKind::ServerError | FaultKind::Stall | FaultKind::Truncate) | None => {}
    }
    let answer = answer(
        &app,
        &method,
        id.clone(),
        &headers,
        body,
        fault == Some(FaultKind::Truncate),
    )
    .await;
    if let (Some(call), Some(id)) = (&call, &id) {
        let status = answer.status();
        // A stalled call keeps its counter: the client sends it again, and
        // its retry must get a fresh draw.
        if status.is_success() && fault.is_none() {
            app.faults.forget_call(call);
        }
        // Done with the upload: its counters go, unless this call was
        // faulted (stalled), whose retry must get a fresh draw like any other.
        let gone = status == StatusCode::NOT_FOUND || status == StatusCode::GONE;
        if fault.is_none() && (gone || (method == Method::DELETE && status.is_success())) {
            forget_upload(&app, id);
        }
    }
    if fault == Some(FaultKind::Stall) {
        stall(&app).await;
    }
    answer
}

/// The methods whose calls on an upload draw faults (and have counters).
const FAULTED_ON_AN_UPLOAD: [Method; 3] = [Method::PATCH, Method::HEAD, Method::DELETE];

/// The file-name part of the fault key of a tus call: method and upload.
fn call_name(method: &Method, id: &str) -> String {
    format!("tus {method} {id}")
}

/// Drops the fault attempt counters of every call on the upload `id` (it is
/// gone, or done with).
pub(crate) fn forget_upload(app: &App, id: &str) {
    for method in &FAULTED_ON_AN_UPLOAD {
        app.faults.forget("", &call_name(method, id));
    }
}

/// The normal answer to a tus request other than OPTIONS.
async fn answer(
    app: &Arc<App>,
    method: &Method,
    id: Option<String>,
    headers: &HeaderMap,
    body: Body,
    truncate: bool,
) -> Response {
    // The token first: the service checks it before its tus server sees
    // the request.
    if !app.datasets.token_known(headers) {
        drain(app, body).await;
        return with_tus_resumable(unauthorized());
    }
    if text(headers, TUS_RESUMABLE).map(str::trim) != Some(TUS_VERSION) {
        drain(app, body).await;
        return TusAnswer::error(
            412,
            format!("send Tus-Resumable: {TUS_VERSION}; this server speaks tus {TUS_VERSION} only"),
        )
        .header(TUS_VERSION_HEADER, TUS_VERSION)
        .into_response();
    }
    let answer = match (method, id) {
        (&Method::POST, None) => {
            drain(app, body).await;
            create(app, headers).await
        }
        (&Method::PATCH, Some(id)) => return patch(app, id, headers, body, truncate).await,
        (&Method::HEAD, Some(id)) => {
            drain(app, body).await;
            blocking(app, move |app| head(app, &id))
                .await
                .unwrap_or_else(|e| e)
        }
        (&Method::DELETE, Some(id)) => {
            drain(app, body).await;
            blocking(app, move |app| delete(app, &id))
                .await
                .unwrap_or_else(|e| e)
        }
        (method, _) => {
            drain(app, body).await;
            TusAnswer::error(405, format!("{method} is not a tus request on this URL"))
        }
    };
    answer.into_response()
}

/// `OPTIONS`: what the server speaks (`stores`: it keeps bytes, so it can
/// join partials).
fn options(stores: bool) -> TusAnswer {
    let extensions = if stores {
        TUS_EXTENSIONS
    } else {
        TUS_EXTENSIONS_SINK
    };
    TusAnswer::new(204)
        .header(TUS_VERSION_HEADER, TUS_VERSION)
        .header("tus-extension", extensions)
        .header("tus-max-size", TUS_MAX_SIZE)
        .header("tus-checksum-algorithm", ALGORITHMS)
}

/// `POST <base>/files/`: a new upload, or the final upload of a concatenation.
async fn create(app: &Arc<App>, headers: &HeaderMap) -> TusAnswer {
    let bad = |message: &str| TusAnswer::error(400, message.to_owned());
    let Ok(length) = number(headers, UPLOAD_LENGTH) else {
        return bad("Upload-Length must be a non-negative integer");
    };
    let defer = text(headers, UPLOAD_DEFER_LENGTH).map(str::trim) == Some("1");
    let raw_metadata = text(headers, UPLOAD_METADATA).map(str::to_owned);
    if raw_metadata
        .as_deref()
        .is_some_and(|m| metadata(m).is_none())
    {
        return bad("Upload-Metadata must be `key base64` pairs separated by commas");
    }
    let concat_request = match text(headers, UPLOAD_CONCAT) {
        None => None,
        Some(value) => match concat(value) {
            Some(request) => Some(request),
            None => return bad("Upload-Concat must be `partial` or `final;<url> <url> ...`"),
        },
    };
    let created = match concat_request {
        Some(ConcatRequest::Final(urls)) => {
            if length.is_some() || defer {
                return bad("a final upload takes no Upload-Length: it is the partials' sum");
            }
            blocking(app, move |app| {
                let (id, removed) = app.tus.create_final(urls, raw_metadata)?;
                for partial in removed {
                    forget_upload(app, &partial);
                }
                Ok(id)
            })
            .await
            .and_then(|created| created)
        }
        other => {
            let concat = match other {
                Some(ConcatRequest::Partial) => Concat::Partial,
                _ => Concat::None,
            };
            let length = match (length, defer) {
                (Some(length), false) => Some(length),
                (None, true) => None,
                _ => return bad("send either Upload-Length or Upload-Defer-Length: 1"),
            };
            if length.is_some_and(|l| l > TUS_MAX_SIZE) {
                return TusAnswer::error(
                    413,
                    format!("Upload-Length is over the server's Tus-Max-Size {TUS_MAX_SIZE}"),
                );
            }
            app.tus.create(length, raw_metadata, concat)
        }
    };
    let id = match created {
        Ok(id) => id,
        Err(answer) => return answer,
    };
    let location = match text(headers, header::HOST.as_str()) {
        Some(host) => {
            let scheme = if app.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{host}{TUS_PATH}{id}")
        }
        None => format!("{TUS_PATH}{id}"),
    };
    let mut answer = TusAnswer::new(201).header("location", location);
    // The expiration extension: the creation answer says when an unfinished
    // upload expires.
    if let Ok(upload) = app.tus.get(&id)
        && let Ok(u) = app.tus.live(&id, &upload)
        && !u.complete()
    {
        answer = answer.header(UPLOAD_EXPIRES, http_date(u.expires_said));
    }
    answer
}

/// `HEAD <base>/files/{id}`: where the upload stands.
fn head(app: &App, id: &str) -> TusAnswer {
    let upload = match app.tus.get(id) {
        Ok(upload) => upload,
        Err(missing) => return missing.answer(id),
    };
    let u = match app.tus.live(id, &upload) {
        Ok(u) => u,
        Err(missing) => return missing.answer(id),
    };
    let mut answer = TusAnswer::new(200)
        .header(UPLOAD_OFFSET, u.offset)
        .header("cache-control", "no-store");
    answer = match u.length {
        Some(length) => answer.header(UPLOAD_LENGTH, length),
        None => answer.header(UPLOAD_DEFER_LENGTH, 1),
    };
    if let Some(metadata) = &u.metadata {
        answer = answer.header(UPLOAD_METADATA, metadata);
    }
    match &u.concat {
        Concat::None => {}
        Concat::Partial => answer = answer.header(UPLOAD_CONCAT, "partial"),
        Concat::Final(urls) => {
            answer = answer.header(UPLOAD_CONCAT, format!("final;{}", urls.join(" ")))
        }
    }
    if !u.complete() {
        answer = answer.header(UPLOAD_EXPIRES, http_date(u.expires_said));
    }
    answer
}

/// `DELETE <base>/files/{id}`: termination.
fn delete(app: &App, id: &str) -> TusAnswer {
    let upload = match app.tus.get(id) {
        Ok(upload) => upload,
        Err(missing) => return missing.answer(id),
    };
    let mut u = match app.tus.live(id, &upload) {
        Ok(u) => u,
        Err(missing) => return missing.answer(id),
    };
    app.tus.remove(id, &mut u, Missing::NotFound);
    TusAnswer::new(204)
}

/// `PATCH <base>/files/{id}`: the body streamed into the upload (`patch.rs`).
async fn patch(
    app: &Arc<App>,
    id: String,
    headers: &HeaderMap,
    body: Body,
    truncate: bool,
) -> Response {
    let media = text(headers, header::CONTENT_TYPE.as_str())
        .and_then(|t| t.split(';').next())
        .map(str::trim);
    let refusal = if !media.is_some_and(|m| m.eq_ignore_ascii_case(OFFSET_OCTET_STREAM)) {
        Some(TusAnswer::error(
            415,
            format!("a PATCH body must be sent as Content-Type: {OFFSET_OCTET_STREAM}"),
        ))
    } else {
        None
    };
    let offset = number(headers, UPLOAD_OFFSET);
    let length = number(headers, UPLOAD_LENGTH);
    let checksum = text(headers, UPLOAD_CHECKSUM)
        .map(Checksum::parse)
        .transpose();
    let refusal = refusal.or_else(|| match (&offset, &length, &checksum) {
        (Ok(None) | Err(()), _, _) => Some(TusAnswer::error(
            400,
            "a PATCH needs Upload-Offset, a non-negative integer".to_owned(),
        )),
        (_, Err(()), _) => Some(TusAnswer::error(
            400,
            "Upload-Length must be a non-negative integer".to_owned(),
        )),
        (_, _, Err(ChecksumProblem::Malformed)) => Some(TusAnswer::error(
            400,
            "Upload-Checksum must be `<algorithm> <base64 digest>`".to_owned(),
        )),
        (_, _, Err(ChecksumProblem::Unsupported(name))) => Some(TusAnswer::error(
            400,
            format!("checksum algorithm {name:?} is not supported; use one of {ALGORITHMS}"),
        )),
        _ => None,
    });
    if let Some(refusal) = refusal {
        drain(app, body).await;
        return refusal.into_response();
    }
    let patch = Patch {
        id,
        offset: offset.ok().flatten().unwrap_or(0),
        length: length.ok().flatten(),
        checksum: checksum.ok().flatten(),
        keep: truncate.then(|| content_length(headers).unwrap_or(0) / 2),
    };
    let (feed, pieces) = payload_feed();
    let worker_app = Arc::clone(app);
    // One blocking task per PATCH in flight, so at most `max_connections`;
    // tokio's blocking pool bounds them too.
    let worker = tokio::task::spawn_blocking(move || {
        worker_app
            .tus
            .patch(patch, pieces, &worker_app.sessions.counters)
    });
    let mut body = body;
    let whole = loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    app.sessions.counters.bytes_received.add(data.len() as u64);
                    feed.send(data).await;
                }
            }
            Some(Err(_)) => break false,
            None => break true,
        }
    };
    if whole {
        feed.finish().await;
    } else {
        // The feed dropped without its end: the worker undoes what it did.
        drop(feed);
    }
    match worker.await {
        Ok(Some(answer)) => answer.into_response(),
        _ => TusAnswer::error(
            400,
            "the request body broke off; nothing was stored".to_owned(),
        )
        .into_response(),
    }
}

/// Runs `work` on a blocking thread (it may wait for an upload's lock, held by
/// a PATCH in flight).
async fn blocking<T: Send + 'static>(
    app: &Arc<App>,
    work: impl FnOnce(&App) -> T + Send + 'static,
) -> Result<T, TusAnswer> {
    let app = Arc::clone(app);
    tokio::task::spawn_blocking(move || work(&app))
        .await
        .map_err(|_| TusAnswer::error(500, "internal error".to_owned()))
}

/// Reads a body the answer does not depend on, counting its bytes as received.
async fn drain(app: &App, mut body: Body) {
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            app.sessions.counters.bytes_received.add(data.len() as u64);
        }
    }
}

/// The answer of an injected `500` (counted): nothing was applied.
fn injected_500(app: &App) -> Response {
    app.sessions.counters.fault(FaultKind::ServerError);
    with_tus_resumable(
        Reply::injected(
            FaultKind::ServerError,
            "injected fault: internal server error; nothing was applied".to_owned(),
        )
        .into_response(),
    )
}

/// `response` with `Tus-Resumable: 1.0.0`, as every tus answer.
fn with_tus_resumable(mut response: Response) -> Response {
    response.headers_mut().insert(
        TUS_RESUMABLE,
        axum::http::HeaderValue::from_static(TUS_VERSION),
    );
    response
}
