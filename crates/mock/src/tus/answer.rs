//! A tus answer before it becomes HTTP: a status, headers, and for an error
//! a line of text saying what happened and what to do.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::TUS_VERSION;
use super::headers::TUS_RESUMABLE;

/// A tus answer.
#[derive(Debug)]
pub(crate) struct TusAnswer {
    pub(crate) status: u16,
    headers: Vec<(&'static str, String)>,
    message: String,
}

impl TusAnswer {
    /// `status` with no body.
    pub(crate) fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            message: String::new(),
        }
    }

    /// `status` with `message` as its `text/plain` body.
    pub(crate) fn error(status: u16, message: String) -> Self {
        Self {
            status,
            headers: Vec::new(),
            message,
        }
    }

    /// Adds a header.
    pub(crate) fn header(mut self, name: &'static str, value: impl ToString) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
}

impl IntoResponse for TusAnswer {
    /// Every answer carries `Tus-Resumable: 1.0.0`.
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = if self.message.is_empty() {
            status.into_response()
        } else {
            let mut message = self.message;
            message.push('\n');
            (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                message,
            )
                .into_response()
        };
        let headers = response.headers_mut();
        headers.insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
        response
    }
}
