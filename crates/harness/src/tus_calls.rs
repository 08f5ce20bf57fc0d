//! Plain tus calls, for what the `protocols` scenario must know of a far end
//! before it measures: whether it serves tus at `<server>/files/` (OPTIONS),
//! whether it can join partial uploads (one 1-byte partial, joined), and the
//! termination (DELETE) that removes an upload's bytes from an in-process
//! mock's store after a repetition. Never a measurement: nothing here is timed.

use anyhow::Context;
use idb_wire::tus::{OFFSET_OCTET_STREAM, TUS_PATH, TUS_VERSION, header};
use reqwest::header::{self as http, HeaderValue};
use reqwest::{Method, Response, Url};

use crate::calls::Calls;

/// The extension that lets one file go as partial uploads joined at the end.
const CONCATENATION: &str = "concatenation";

/// The extension that serves DELETE.
const TERMINATION: &str = "termination";

/// The most characters of an answer's body quoted in a reason.
const QUOTED_BODY: usize = 200;

/// What a far end serves of protocol 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Offer {
    /// No tus there: what OPTIONS answered, for people.
    Absent(String),
    /// tus 1.0.0, with these extensions (comma-separated, as sent).
    Tus { extensions: String },
}

impl Offer {
    /// Whether it names concatenation among its extensions.
    pub(crate) fn concatenation(&self) -> bool {
        self.has(CONCATENATION)
    }

    fn has(&self, extension: &str) -> bool {
        match self {
            Offer::Absent(_) => false,
            Offer::Tus { extensions } => extensions
                .split(',')
                .any(|e| e.trim().eq_ignore_ascii_case(extension)),
        }
    }
}

/// tus calls on one server, with the token of a dataset on it.
pub(crate) struct TusCalls {
    endpoint: Url,
    calls: Calls,
}

impl TusCalls {
    /// The tus endpoint of the server at `base` (`<base>/files/`), sent to
    /// with the client, token and time limits of `calls`.
    pub(crate) fn new(base: &str, calls: Calls) -> anyhow::Result<Self> {
        let endpoint = format!("{}{TUS_PATH}", base.trim_end_matches('/'));
        Ok(Self {
            endpoint: endpoint
                .parse()
                .with_context(|| format!("{endpoint} is not a URL"))?,
            calls,
        })
    }

    /// The tus endpoint, for people.
    pub(crate) fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    /// A request with the protocol version and the token (the service's
    /// profile wants the token on OPTIONS too); like every call of the
    /// harness's own, it waits at most its answer's wait (its body is a byte).
    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        self.calls
            .http()
            .request(method, url)
            .timeout(self.calls.answer_wait)
            .header(header::TUS_RESUMABLE, TUS_VERSION)
            .header(http::AUTHORIZATION, self.calls.authorization())
    }

    /// `OPTIONS <server>/files/`: what it serves. Fails only when there is no
    /// answer at all.
    pub(crate) async fn offer(&self) -> anyhow::Result<Offer> {
        let answer = self
            .request(Method::OPTIONS, self.endpoint.clone())
            .send()
            .await
            .with_context(|| format!("OPTIONS {} got no answer", self.endpoint))?;
        let status = answer.status();
        // The service's tus wants the token on OPTIONS too.
        if matches!(status.as_u16(), 401 | 403) {
            return Err(crate::TokenRefused {
                call: format!("OPTIONS {}", self.endpoint),
                status: status.as_u16(),
            }
            .into());
        }
        let versions = text_header(&answer, header::TUS_VERSION);
        let serves = versions
            .as_deref()
            .is_some_and(|v| v.split(',').any(|v| v.trim() == TUS_VERSION));
        if status.is_success() && serves {
            return Ok(Offer::Tus {
                extensions: text_header(&answer, header::TUS_EXTENSION).unwrap_or_default(),
            });
        }
        Ok(Offer::Absent(match versions {
            Some(v) => format!("HTTP {}, Tus-Version {v:?}", status.as_u16()),
            None => format!("HTTP {}, no Tus-Version", status.as_u16()),
        }))
    }

    /// Whether the server joins partial uploads: `Ok(())`, or what it answered
    /// instead, for people. Sends one 1-byte partial and asks to join it, then
    /// terminates both uploads when termination is served (`offer`'s).
    pub(crate) async fn joins(&self, offer: &Offer) -> anyhow::Result<Result<(), String>> {
        let partial = self
            .create(&[
                (header::UPLOAD_LENGTH, "1"),
                (header::UPLOAD_CONCAT, "partial"),
            ])
            .await?;
        let partial = match partial {
            Ok(url) => url,
            Err(refused) => return Ok(Err(format!("creating a partial upload: {refused}"))),
        };
        let patched = self
            .request(Method::PATCH, partial.clone())
            .header(header::UPLOAD_OFFSET, "0")
            .header(http::CONTENT_TYPE, OFFSET_OCTET_STREAM)
            .body(vec![0x1d])
            .send()
            .await
            .with_context(|| format!("PATCH {partial} got no answer"))?;
        let joined = if patched.status().is_success() {
            self.create(&[(header::UPLOAD_CONCAT, &format!("final;{partial}"))])
                .await?
                .map_err(|refused| format!("joining a 1-byte partial: {refused}"))
        } else {
            Err(format!(
                "sending a partial's one byte: {}",
                refused(patched).await
            ))
        };
        if offer.has(TERMINATION) {
            if let Ok(url) = &joined {
                self.terminate(url.as_str()).await?;
            }
            self.terminate(partial.as_str()).await?;
        }
        Ok(joined.map(drop))
    }

    /// `POST <server>/files/` with `headers`: the new upload's address, or
    /// what the server answered instead.
    async fn create(&self, headers: &[(&str, &str)]) -> anyhow::Result<Result<Url, String>> {
        let mut request = self.request(Method::POST, self.endpoint.clone());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let answer = request
            .send()
            .await
            .with_context(|| format!("POST {} got no answer", self.endpoint))?;
        if answer.status().as_u16() != 201 {
            return Ok(Err(refused(answer).await));
        }
        let location = text_header(&answer, http::LOCATION.as_str())
            .with_context(|| format!("POST {} answered 201 without a Location", self.endpoint))?;
        let url = self
            .endpoint
            .join(&location)
            .with_context(|| format!("POST {} answered Location {location:?}", self.endpoint))?;
        Ok(Ok(url))
    }

    /// `DELETE <url>`: the upload and its bytes are gone (an upload already
    /// gone, 404 or 410, counts as done).
    pub(crate) async fn terminate(&self, url: &str) -> anyhow::Result<()> {
        let target = self
            .endpoint
            .join(url)
            .with_context(|| format!("{url:?} is not an upload's address"))?;
        let answer = self
            .request(Method::DELETE, target.clone())
            .send()
            .await
            .with_context(|| format!("DELETE {target} got no answer"))?;
        match answer.status().as_u16() {
            200..=299 | 404 | 410 => Ok(()),
            _ => anyhow::bail!("DELETE {target}: {}", refused(answer).await),
        }
    }
}

/// A header's value as text, if it is there and is text.
fn text_header(answer: &Response, name: &str) -> Option<String> {
    answer
        .headers()
        .get(name)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .map(str::to_owned)
}

/// An answer that is not the one hoped for, for people: its status and the
/// start of its body.
async fn refused(answer: Response) -> String {
    let status = answer.status().as_u16();
    let body = answer.text().await.unwrap_or_default();
    let body: String = body.trim().chars().take(QUOTED_BODY).collect();
    if body.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status} ({body})")
    }
}
