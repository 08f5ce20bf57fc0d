//! The registration lookup (mock contract): `GET /api/dataset/{key}/datafile
//! ?tus_url=<url>` answers whether a registration of that upload went
//! through ([`idb_wire::tus::RegistrationLookup`]), so a client whose
//! registration answer was lost can ask instead of registering twice. The
//! service has no such call (a client then cannot settle it, and says so).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use idb_wire::parse_urlencoded;
use idb_wire::tus::{LOOKUP_PARAM, RegistrationLookup};

use super::headers::upload_id;
use crate::app::App;
use crate::datafile::unauthorized;
use crate::lock::lock;

/// `GET` on the datafile endpoint: the lookup (token of the dataset needed).
pub(crate) async fn registration_lookup(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(dataset) = app.datasets.get(&key).filter(|d| !d.published) else {
        return (StatusCode::NOT_FOUND, "Dataset Not Found").into_response();
    };
    if !dataset.authorized(&headers) {
        return unauthorized();
    }
    let asked = parse_urlencoded(query.unwrap_or_default().as_bytes())
        .ok()
        .and_then(|pairs| {
            pairs
                .into_iter()
                .find(|(name, _)| name == LOOKUP_PARAM)
                .and_then(|(_, url)| String::from_utf8(url.to_vec()).ok())
        });
    let Some(id) = asked.as_deref().and_then(upload_id) else {
        return (
            StatusCode::BAD_REQUEST,
            "give the upload's address as ?tus_url=<url>",
        )
            .into_response();
    };
    let found = lock(&app.tus.registrations)
        .iter()
        .find(|r| r.dataset == key && upload_id(&r.tus_url) == Some(id))
        .map(|r| r.receipt.clone());
    let body = serde_json::to_vec(&RegistrationLookup {
        registered: found.is_some(),
        receipt: found,
    })
    .unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
