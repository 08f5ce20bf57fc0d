//! `plain_errors`: every error answered as a web framework's HTML page, the
//! model of a server that speaks less than the mock (see
//! [`crate::MockConfig::plain_errors`]).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::app::App;

/// The outermost layer of every route: with `plain_errors`, an answer of 400
/// or above has its body replaced by [`page`] (its other headers, such as
/// `Retry-After` and `WWW-Authenticate`, stay); otherwise answers pass as they
/// are.
pub(crate) async fn html_errors(
    State(app): State<Arc<App>>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    if !app.plain_errors
        || !(response.status().is_client_error() || response.status().is_server_error())
    {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = Body::from(page(parts.status));
    Response::from_parts(parts, body)
}

/// A small HTML page that says the status and nothing else.
fn page(status: StatusCode) -> String {
    let title = match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    };
    format!(
        "<!DOCTYPE html>\n<html>\n<head><title>{title}</title></head>\n\
         <body><h1>{title}</h1></body>\n</html>\n"
    )
}
