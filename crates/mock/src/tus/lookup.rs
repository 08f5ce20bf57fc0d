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
use super::uploads::Uploads;
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
    let (worker, id) = (Arc::clone(&app), id.to_owned());
    let Ok(found) = tokio::task::spawn_blocking(move || registered(&worker.tus, &key, &id)).await
    else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
    };
    let body = serde_json::to_vec(&RegistrationLookup {
        registered: found.is_some(),
        receipt: found,
    })
    .unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The receipt of a registration of upload `id` in `dataset`, if one went
/// through. A registration being applied holds the upload until it is
/// recorded: this waits for it, so a client asking while its earlier
/// registration is still being applied (a process killed after sending it,
/// run again at once) hears "registered", never "not registered" and then
/// registers twice. Blocking.
fn registered(tus: &Uploads, dataset: &str, id: &str) -> Option<idb_wire::VerifyReceipt> {
    let upload = tus.get(id).ok();
    let _applied = upload.as_ref().map(|upload| lock(upload));
    lock(&tus.registrations)
        .iter()
        .find(|r| r.dataset == dataset && upload_id(&r.tus_url) == Some(id))
        .map(|r| r.receipt.clone())
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::tus::TusProfile;
    use crate::tus::uploads::{Concat, TusRegistration};

    #[test]
    fn a_lookup_waits_for_a_registration_being_applied() {
        let tus = Arc::new(Uploads::new(
            None,
            TusProfile::Plain,
            Duration::from_secs(60),
        ));
        let id = tus.create(Some(3), None, Concat::None).unwrap();
        let upload = tus.get(&id).unwrap();
        // A registration being applied: it holds the upload.
        let applying = lock(&upload);
        let (answer, answered) = mpsc::channel();
        let (tid, thread_id) = mpsc::channel();
        let asking = {
            let (tus, id) = (Arc::clone(&tus), id.clone());
            std::thread::spawn(move || {
                // SAFETY: gettid has no preconditions.
                tid.send(unsafe { libc::gettid() }).unwrap();
                answer.send(registered(&tus, "IDB-1", &id)).unwrap();
            })
        };
        // The lookup either answers (at once: the bug) or sleeps on the upload's
        // lock (its thread's state turns to S): wait for one or the other.
        let stat = format!("/proc/self/task/{}/stat", thread_id.recv().unwrap());
        let sleeping = || {
            std::fs::read_to_string(&stat)
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('S')))
                .unwrap_or(false)
        };
        // Bounded: a thread that neither answers nor is seen asleep (no
        // /proc to read) fails the test rather than spin forever.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let early = loop {
            match answered.try_recv() {
                Ok(early) => break Some(early),
                Err(_) if sleeping() => break None,
                Err(_) if std::time::Instant::now() > deadline => {
                    panic!("the lookup neither answered nor slept on the lock within 30 s")
                }
                Err(_) => std::thread::yield_now(),
            }
        };
        assert_eq!(
            early, None,
            "the lookup answered while a registration was applied"
        );
        // Recorded while the upload is still held, as `register_now` does.
        let receipt = idb_wire::VerifyReceipt {
            filename: "a.bin".into(),
            size: 3,
            blake3: blake3::hash(b"abc").to_hex().to_string(),
        };
        lock(&tus.registrations).push(TusRegistration {
            dataset: "IDB-1".into(),
            filename: "a.bin".into(),
            tus_url: format!("/files/{id}"),
            size: 3,
            length: Some(3),
            datafile: 1,
            receipt: receipt.clone(),
        });
        drop(applying);
        asking.join().unwrap();
        assert_eq!(answered.recv().unwrap(), Some(receipt));
        // Another dataset's lookup of it finds nothing.
        assert_eq!(registered(&tus, "IDB-2", &id), None);
    }
}
