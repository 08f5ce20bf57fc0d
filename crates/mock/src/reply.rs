//! A JSON answer before it becomes HTTP: what the sessions and the routes decide.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::faults::FaultKind;

/// A reply before it becomes HTTP: a status and a JSON body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: serde_json::Value,
}

impl Reply {
    /// 200 with `body`.
    pub(crate) fn ok(body: serde_json::Value) -> Self {
        Self { status: 200, body }
    }

    /// `status` with `{"error": error, "message": message}`.
    pub(crate) fn error(status: u16, error: &str, message: String) -> Self {
        Self {
            status,
            body: json!({ "error": error, "message": message }),
        }
    }

    /// The 500 of an injected fault.
    pub(crate) fn injected(kind: FaultKind, message: String) -> Self {
        Self {
            status: 500,
            body: json!({ "error": "injected_fault", "fault": kind.as_str(), "message": message }),
        }
    }
}

impl IntoResponse for Reply {
    /// The status (500 if it is not one) with the body as `application/json`.
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.body).unwrap_or_default();
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}
