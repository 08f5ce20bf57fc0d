//! Plain datafile calls with reqwest and idb-wire's encoders, one at a time: what the
//! sample-client pattern, the single-request ceiling and the round-trip probe send.
//! No retries, no pipelining: any answer but 200 fails the measurement. Each call
//! is timed from its request to its whole answer.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use idb_wire::{
    Boundary, DatasetKey, Token, VerifyReceipt, datafile_path, encode_urlencoded, summarize_body,
    transfer_body,
};
use reqwest::header::{self, HeaderValue};

/// The far end refused the token (401, or 403) to a call of the harness's own or of the
/// engine: the run stops, and a caller can tell this from other failures (the
/// CLI exits 3, as `idb upload` does).
#[derive(Debug)]
pub struct TokenRefused {
    /// The call refused, such as `setup of NAME`.
    pub call: String,
    /// The status it got (401, or 403, which the engine takes the same way).
    pub status: u16,
}

impl std::fmt::Display for TokenRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: the far end refused the token (HTTP {}): give the token of the far end's \
             --dataset KEY:TOKEN in IDB_TOKEN or --token-file",
            self.call, self.status
        )
    }
}

impl std::error::Error for TokenRefused {}

/// How long a call may wait for its answer once its body is sent (and how
/// long curl may go without moving a byte): a far end that accepts
/// connections but stops answering fails the run in about a minute instead
/// of holding it for ever.
pub(crate) const ANSWER_WAIT: Duration = Duration::from_secs(60);

/// The slowest path a call's body is given time for, in bytes per second:
/// a call may last [`ANSWER_WAIT`] plus its body's length at this rate (or at
/// a lower cap of the mock's, [`Calls::slowest`]).
pub(crate) const SLOWEST_PATH: f64 = (1 << 20) as f64;

/// The content type of the sample client's setup and verify calls.
const URLENCODED: &str = "application/x-www-form-urlencoded";

/// One dataset's datafile endpoint, over one reused connection.
pub(crate) struct Calls {
    http: reqwest::Client,
    endpoint: String,
    /// `Token token=...`, marked sensitive.
    authorization: HeaderValue,
    boundary: Boundary,
    /// How long a call may wait for its answer once its body is sent:
    /// [`ANSWER_WAIT`], plus the far end's latency when the harness set it.
    pub(crate) answer_wait: Duration,
    /// The slowest rate a call's body is given time for, bytes per second:
    /// [`SLOWEST_PATH`], or a lower cap the harness set on its mock.
    pub(crate) slowest: f64,
    /// Whether certificate authorities were given (`--ca-cert`), for what a
    /// refused certificate's message advises.
    extra_roots: bool,
    /// The server's base, for the wrong scheme's message (`None`: not a URL,
    /// which the calls then say).
    base: Option<reqwest::Url>,
}

/// The multipart envelope of one `transfer` call (idb-wire's encoding), to be
/// wrapped around a payload read straight into the buffer that is sent.
pub(crate) struct Envelope {
    content_type: String,
    head: Bytes,
    tail: Bytes,
}

/// A `transfer` body in one buffer, ready to send without a copy.
pub(crate) struct PreparedTransfer {
    content_type: String,
    body: Bytes,
}

impl Envelope {
    /// Builds the body: the head, `len` payload bytes written by `fill`, the tail.
    /// Blocking when `fill` reads a file: call it off the async threads.
    pub(crate) fn wrap(
        self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> std::io::Result<()>,
    ) -> anyhow::Result<PreparedTransfer> {
        let (head, tail) = (self.head, self.tail);
        let mut body = Vec::with_capacity(head.len() + len + tail.len());
        body.extend_from_slice(&head);
        body.resize(head.len() + len, 0);
        fill(&mut body[head.len()..]).context("cannot read the chunk")?;
        body.extend_from_slice(&tail);
        Ok(PreparedTransfer {
            content_type: self.content_type,
            body: body.into(),
        })
    }
}

impl Calls {
    /// A client for `dataset` on the server at `base` (such as `http://127.0.0.1:PORT`).
    /// `roots`: certificate authorities trusted on top of the system's.
    pub(crate) fn new(
        base: &str,
        dataset: &str,
        token: &Token,
        roots: &[reqwest::Certificate],
    ) -> anyhow::Result<Self> {
        // reqwest is built without a default crypto provider and will not build a
        // client, even for http://, without one: install ring's unless the process
        // chose one (the engine does the same).
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        // A simple client keeps its connection: at most one idle per host, so every
        // call goes over the same one. Nagle off, as urllib3 (under the sample
        // client's `requests`) and the engine both do.
        let mut http = reqwest::Client::builder()
            .user_agent(concat!("idb-harness/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(1)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none());
        for root in roots {
            http = http.add_root_certificate(root.clone());
        }
        let http = http
            .build()
            .context("cannot build the harness's HTTP client")?;
        let key = DatasetKey::new(dataset)?;
        let mut authorization = HeaderValue::from_str(&token.authorization())
            .context("the token cannot be sent in a header")?;
        authorization.set_sensitive(true);
        Ok(Self {
            http,
            endpoint: format!("{}{}", base.trim_end_matches('/'), datafile_path(&key)),
            authorization,
            boundary: Boundary::from_random(0x1db_4a12_e55e),
            answer_wait: ANSWER_WAIT,
            slowest: SLOWEST_PATH,
            extra_roots: !roots.is_empty(),
            base: reqwest::Url::parse(base).ok(),
        })
    }

    /// The datafile endpoint's URL, where every call goes.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The HTTP client (its one kept connection), for other calls to the
    /// same server.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The `Authorization` header's value (marked sensitive).
    pub(crate) fn authorization(&self) -> HeaderValue {
        self.authorization.clone()
    }

    async fn post(&self, content_type: &str, body: Bytes) -> anyhow::Result<(u16, Bytes)> {
        // The call may last the answer's wait plus its body at the slowest
        // path's rate.
        let limit = self.answer_wait + Duration::from_secs_f64(body.len() as f64 / self.slowest);
        let timed_out = |e: &reqwest::Error| {
            e.is_timeout().then(|| {
                anyhow::anyhow!(
                    "no whole answer within {:.1} s (a call may take {:.0} s plus its body at \
                     {:.0} KiB/s): the far end stopped answering, or the path is slower than \
                     that",
                    limit.as_secs_f64(),
                    self.answer_wait.as_secs_f64(),
                    self.slowest / 1024.0
                )
            })
        };
        let response = match self
            .http
            .post(&self.endpoint)
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::CONTENT_TYPE, content_type)
            .timeout(limit)
            .body(body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => {
                // The engine's words for a refused certificate (with what to do).
                if let Some(problem) = idb_engine::certificate_problem(&e, self.extra_roots) {
                    bail!(
                        "the far end's certificate was refused ({}): {problem}",
                        self.endpoint
                    );
                }
                // And for the wrong scheme: said at once, with the one to try.
                if let Some(problem) = self
                    .base
                    .as_ref()
                    .and_then(|base| idb_engine::scheme_problem(&e, base))
                {
                    bail!("{problem}");
                }
                return Err(timed_out(&e)
                    .unwrap_or_else(|| anyhow::Error::new(e).context("the call got no answer")));
            }
        };
        let status = response.status().as_u16();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => {
                return Err(timed_out(&e)
                    .unwrap_or_else(|| anyhow::Error::new(e).context("the answer broke off")));
            }
        };
        Ok((status, body))
    }

    /// Sends one call; its answer's body and how long the call took.
    async fn post_ok(
        &self,
        what: &str,
        content_type: &str,
        body: Bytes,
    ) -> anyhow::Result<(Bytes, Duration)> {
        let started = Instant::now();
        let (status, body) = self.post(content_type, body).await?;
        let took = started.elapsed();
        match status {
            200 => Ok((body, took)),
            // The engine takes a 403 for a refused token too.
            401 | 403 => Err(TokenRefused {
                call: what.to_owned(),
                status,
            }
            .into()),
            413 => bail!(
                "{what}: the server refused the request as too large (HTTP 413): start the far \
                 end with a larger --max-chunk (at least the size of the file the \
                 single-request ceiling sends)"
            ),
            _ => bail!("{what}: HTTP {status}: {}", summarize_body(&body)),
        }
    }

    /// `setup` as the sample client sends it (urlencoded); how long it took.
    pub(crate) async fn setup(&self, filename: &str, filesize: u64) -> anyhow::Result<Duration> {
        let size = filesize.to_string();
        let body = encode_urlencoded(&[
            ("phase", b"setup"),
            ("filename", filename.as_bytes()),
            ("filesize", size.as_bytes()),
        ]);
        let (_, took) = self
            .post_ok(&format!("setup of {filename}"), URLENCODED, body.into())
            .await?;
        Ok(took)
    }

    /// The envelope of the `transfer` of `filename` at `previous_size`.
    pub(crate) fn envelope(&self, filename: &str, previous_size: u64) -> anyhow::Result<Envelope> {
        let body = transfer_body(&self.boundary, filename, previous_size, Bytes::new());
        let content_type = body.content_type().to_owned();
        // The encoder's segments are: envelope head, payload, envelope tail.
        let [head, _, tail]: [Bytes; 3] = body.into_segments().try_into().map_err(|_| {
            anyhow::anyhow!("idb-wire's transfer body no longer has three segments")
        })?;
        Ok(Envelope {
            content_type,
            head,
            tail,
        })
    }

    /// Sends a prepared `transfer` (multipart, as the sample client does); how
    /// long it took.
    pub(crate) async fn transfer(&self, prepared: PreparedTransfer) -> anyhow::Result<Duration> {
        let (_, took) = self
            .post_ok("transfer", &prepared.content_type, prepared.body)
            .await?;
        Ok(took)
    }

    /// `verify` as the sample client sends it (urlencoded); the receipt, and how
    /// long it took.
    pub(crate) async fn verify(&self, filename: &str) -> anyhow::Result<(VerifyReceipt, Duration)> {
        let body = encode_urlencoded(&[("phase", b"verify"), ("filename", filename.as_bytes())]);
        let (answer, took) = self
            .post_ok(&format!("verify of {filename}"), URLENCODED, body.into())
            .await?;
        let receipt = VerifyReceipt::parse(&answer)
            .with_context(|| format!("verify of {filename}: the server sent no receipt"))?;
        Ok((receipt, took))
    }

    /// The time of one empty call (a `setup` of a 0-byte file): a round trip plus
    /// the server's fixed cost per call.
    pub(crate) async fn empty_call(&self, filename: &str) -> anyhow::Result<Duration> {
        self.setup(filename, 0).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A far end that takes the connection and the request but never answers
    /// fails the call when its time is up, saying so, instead of holding the
    /// run for ever.
    #[tokio::test]
    async fn a_far_end_that_never_answers_fails_the_call_in_bounded_time() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        // Accepts one connection and holds it open, reading nothing back.
        let holding = std::thread::spawn(move || listener.accept().map(|(stream, _)| stream));
        let mut calls = Calls::new(&base, "IDB-X", &Token::new("tok").unwrap(), &[]).unwrap();
        calls.answer_wait = Duration::from_millis(300);
        let error = calls.setup("f.bin", 10).await.unwrap_err();
        let told = format!("{error:#}");
        assert!(told.contains("no whole answer within 0.3 s"), "{told}");
        drop(holding.join().unwrap().unwrap());
    }
}
