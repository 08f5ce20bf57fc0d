//! Protocol 2's registration call: `POST /api/dataset/{key}/datafile` with
//! `tus_url`, `filename` and `size` (no `phase`) makes the tus upload a file
//! of the dataset, as protocol 1's verify does (same receipt, same counters,
//! the file in the same place of the store).
//!
//! Like the service it trusts `size` and does not check that the upload is
//! complete, and a second registration of a name makes a second datafile;
//! unlike the service it counts both ([`super::TusStats`]) and lists every
//! registration ([`super::TusRegistration`]) so tests can see them. Only the
//! first datafile of a name is stored.
//!
//! The `tus_url` must name an upload of this server: a path (`/files/<id>`),
//! or a URL whose scheme is the server's and whose host and port are those
//! the request came to (its `Host`, as the creation's `Location` has them) or
//! the server's bound address. An absolute URL of another server is refused
//! (400), never taken for a local upload of the same id.

use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::Uri;
use axum::http::uri::Authority;
use axum::response::{IntoResponse, Response};
use idb_wire::{Fields, VerifyReceipt, validate_filename};
use serde_json::json;

use super::headers::upload_id;
use super::routes::forget_upload;
use super::uploads::{Missing, TusRegistration, Upload};
use crate::app::App;
use crate::lock::lock;
use crate::reply::Reply;

/// A registration call, from its fields.
pub(crate) struct Registration {
    tus_url: String,
    filename: String,
    size: u64,
}

impl Registration {
    /// `None` when the fields are not a registration (they have a `phase`,
    /// or no `tus_url`); else the registration, or why its fields are wrong.
    pub(crate) fn from_fields(fields: &Fields) -> Option<Result<Self, String>> {
        if fields.get("phase").is_some() {
            return None;
        }
        let tus_url = fields.get("tus_url")?;
        let text = |name: &str| {
            fields
                .get(name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::trim)
        };
        let tus_url = match std::str::from_utf8(tus_url) {
            Ok(url) => url.trim().to_owned(),
            Err(_) => return Some(Err("tus_url is not text".to_owned())),
        };
        // The name exactly as sent (as protocol 1's setup takes it): trimmed,
        // " a" and "a " would be one file of the dataset.
        let Some(filename) = fields
            .get("filename")
            .and_then(|v| std::str::from_utf8(v).ok())
        else {
            return Some(Err("a registration needs the filename field".to_owned()));
        };
        if let Err(e) = validate_filename(filename) {
            return Some(Err(e.to_string()));
        }
        let Some(size) = text("size").and_then(|s| s.parse().ok()) else {
            return Some(Err(
                "a registration needs size, the file's size in bytes".to_owned()
            ));
        };
        Some(Ok(Self {
            tus_url,
            filename: filename.to_owned(),
            size,
        }))
    }
}

/// Registers the upload for `dataset` (its token was checked already);
/// `host` is the request's `Host`.
pub(crate) async fn register(
    app: &Arc<App>,
    dataset: &str,
    registration: Registration,
    host: Option<String>,
) -> Response {
    let scheme = if app.tls.is_some() { "https" } else { "http" };
    let ours = Origins {
        scheme,
        host,
        bound: app.bound.get().copied(),
    };
    if let Err(theirs) = ours.admit(&registration.tus_url) {
        return Reply::error(
            400,
            "foreign_tus_url",
            format!(
                "tus_url {:?} names another server ({theirs}); register only an upload made \
                 on this server: its Location as the creation answered it, or the path \
                 /files/<id>",
                registration.tus_url
            ),
        )
        .into_response();
    }
    let app = Arc::clone(app);
    let dataset = dataset.to_owned();
    tokio::task::spawn_blocking(move || register_now(&app, dataset, registration))
        .await
        .unwrap_or_else(|_| Reply::error(500, "internal", "internal error".to_owned()))
        .into_response()
}

/// The origins a `tus_url` may name: the request's and the bound address.
struct Origins {
    scheme: &'static str,
    /// The request's `Host` (`host[:port]`).
    host: Option<String>,
    /// Where the server listens (`None` before it is bound).
    bound: Option<SocketAddr>,
}

impl Origins {
    /// `Ok` when `url` is a path, or names one of these origins; else the
    /// origin it names, for the refusal.
    fn admit(&self, url: &str) -> Result<(), String> {
        if url.starts_with('/') && !url.starts_with("//") {
            return Ok(());
        }
        let Ok(uri) = url.parse::<Uri>() else {
            return Err("a URL that cannot be read".to_owned());
        };
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err("no scheme and host".to_owned());
        };
        let origin = format!("{scheme}://{authority}");
        if !scheme.eq_ignore_ascii_case(self.scheme) {
            return Err(origin);
        }
        let host = bare_host(authority.host());
        let port = authority.port_u16().unwrap_or(self.default_port());
        let by_host = self
            .host
            .as_deref()
            .and_then(|h| h.parse::<Authority>().ok())
            .is_some_and(|ours| {
                bare_host(ours.host()).eq_ignore_ascii_case(host)
                    && ours.port_u16().unwrap_or(self.default_port()) == port
            });
        let by_address = self.bound.is_some_and(|bound| {
            let ip = bound.ip();
            let same_host = match host.parse::<IpAddr>() {
                Ok(named) => named == ip,
                Err(_) => host.eq_ignore_ascii_case("localhost") && ip.is_loopback(),
            };
            same_host && bound.port() == port
        });
        if by_host || by_address {
            Ok(())
        } else {
            Err(origin)
        }
    }

    fn default_port(&self) -> u16 {
        if self.scheme == "https" { 443 } else { 80 }
    }
}

/// A host without the brackets of an IPv6 literal.
fn bare_host(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

fn register_now(app: &App, dataset: String, r: Registration) -> Reply {
    let Some(id) = upload_id(&r.tus_url) else {
        return Reply::error(
            400,
            "bad_tus_url",
            format!(
                "tus_url {:?} is not an upload URL of this server",
                r.tus_url
            ),
        );
    };
    let missing = |missing: Missing| {
        let (status, error) = match missing {
            Missing::NotFound => (404, "no_tus_upload"),
            Missing::Expired => (410, "tus_upload_expired"),
        };
        Reply::error(
            status,
            error,
            format!(
                "tus upload {id} is not on this server; upload {} again",
                r.filename
            ),
        )
    };
    let upload = match app.tus.get(id) {
        Ok(upload) => upload,
        Err(m) => return missing(m),
    };
    // Held while the file is placed, so no PATCH changes it meanwhile.
    let mut u = match app.tus.live(id, &upload) {
        Ok(u) => u,
        Err(m) => return missing(m),
    };
    let receipt = VerifyReceipt {
        filename: r.filename.clone(),
        size: u.offset,
        blake3: u.hasher.finalize().to_hex().to_string(),
    };
    let complete = u.complete() && r.size == u.offset;
    // Saved with the upload before it is applied, as being applied (datafile
    // 0): a server killed between the dataset's record of the file and the
    // upload's record of its registration must not answer the lookup "not
    // registered" for a file the dataset has (the client would register it
    // twice). A start keeps such a one only if the dataset has the name.
    let mut registration = TusRegistration {
        dataset: dataset.clone(),
        filename: r.filename.clone(),
        tus_url: r.tus_url.clone(),
        size: r.size,
        length: u.length,
        datafile: 0,
        receipt: receipt.clone(),
    };
    u.registered.push(registration.clone());
    if let Err(e) = app.tus.save(&u) {
        u.registered.pop();
        return Reply::error(
            500,
            "storage",
            format!("cannot save the server state: {e}; nothing was registered"),
        );
    }
    let placed = app.sessions.register_done(
        &dataset,
        &r.filename,
        receipt.clone(),
        u.log.clone(),
        |dest| place(&u, dest),
    );
    let datafile = match placed {
        Ok(datafile) => datafile,
        Err(reply) => {
            u.registered.pop();
            let _ = app.tus.save(&u);
            return reply;
        }
    };
    let counters = &app.tus.counters;
    counters.registrations.fetch_add(1, Ordering::Relaxed);
    if !complete {
        counters
            .incomplete_registrations
            .fetch_add(1, Ordering::Relaxed);
    }
    if datafile > 1 {
        counters
            .repeated_registrations
            .fetch_add(1, Ordering::Relaxed);
    }
    // The client is done with the upload: its calls' fault counters go.
    forget_upload(app, id);
    registration.datafile = datafile;
    lock(&app.tus.registrations).push(registration.clone());
    // Saved again with its number; if it cannot be, the client is told, and
    // asks the lookup of this server.
    if let Some(last) = u.registered.last_mut() {
        *last = registration;
    }
    if let Err(e) = app.tus.save(&u) {
        return Reply::error(
            500,
            "storage",
            format!("registered, but cannot save the server state: {e}"),
        );
    }
    Reply::ok(json!(receipt))
}

/// Puts the upload's bytes at `dest`: a hard link when it is complete (no
/// PATCH can change it any more), else a copy of what it has.
fn place(upload: &Upload, dest: &Path) -> io::Result<()> {
    let Some(from) = &upload.path else {
        return Ok(());
    };
    if upload.complete() && fs::hard_link(from, dest).is_ok() {
        return Ok(());
    }
    fs::copy(from, dest).map(drop)
}
