//! Calls with retries: backoff, `Retry-After`, idle timeouts, a new token after
//! a 401, and the error each refusal becomes.

use std::future::Future;
use std::time::Duration;

use idb_wire::{Outcome, Phase};
use tokio::time::Instant;

use crate::client::{Answer, Transport};
use crate::open_file::OpenFile;
use crate::protocol::{CallError, Protocol};
use crate::run::Run;
use crate::{Error, Event, bytes_text};

/// Attempts (at most) before a server that never answered in this run is called
/// unreachable (connections fail) or silent (nothing answered): with the first
/// answer timeout of 30 s, a silent server is reported in about 90 s.
const FIRST_CONTACT_ATTEMPTS: u32 = 3;

/// No answer to any call for this long, and a call out of attempts: the
/// server stopped answering, and the run stops rather than let every file
/// wait out its own attempts in turn. Long enough that calls still moving
/// bytes on a slow link answer within it.
const SERVER_STOPPED_AFTER: Duration = Duration::from_secs(5 * 60);

/// Why a call with retries did not succeed.
pub(crate) enum Failure {
    /// The server answered something that sending again will not change.
    Answer(Answer),
    /// Gave up, or the file changed.
    Error(Error),
}

/// A call that succeeded: its value, and how long the successful attempt took.
pub(crate) struct Done<T> {
    pub(crate) value: T,
    pub(crate) elapsed: Duration,
}

/// A call that failed, and whether an earlier attempt may have been applied by
/// the server without us hearing so (its answer was lost: a broken connection,
/// an idle timeout, a 5xx).
pub(crate) struct Failed {
    pub(crate) failure: Failure,
    pub(crate) uncertain: bool,
    /// An earlier attempt got no answer at all (a broken connection, an idle
    /// timeout), as opposed to an answer saying it failed (a 5xx).
    pub(crate) answer_lost: bool,
}

impl<P: Protocol> Run<'_, P> {
    /// Sends a call until it succeeds, a non-retryable answer comes, or the retry
    /// policy gives up (attempts or the call's deadline; refreshed tokens count
    /// as attempts), or the file's deadline passes.
    pub(crate) async fn retrying<T, F, Fut>(
        &self,
        f: &OpenFile,
        phase: Phase,
        offset: u64,
        mut call: F,
    ) -> Result<Done<T>, Failed>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let started = Instant::now();
        let policy = self.backoff.policy();
        let (mut attempt, mut refreshed) = (0, 0);
        // Time spent waiting for a new token (a person may take a while): not
        // held against the call's deadline.
        let mut token_waits = Duration::ZERO;
        // Whether an earlier attempt may have reached the server and been applied.
        let mut uncertain = false;
        // Set with `uncertain` when an attempt got no answer at all; read by
        // `failed` (shared with the closure, which sees later changes; this
        // task alone touches it).
        let answer_lost = std::sync::atomic::AtomicBool::new(false);
        let failed = |failure, uncertain| Failed {
            failure,
            uncertain,
            answer_lost: answer_lost.load(std::sync::atomic::Ordering::Relaxed),
        };
        loop {
            if let Some(error) = f.past_deadline(Instant::now()) {
                return Err(failed(Failure::Error(error), uncertain));
            }
            attempt += 1;
            let t0 = Instant::now();
            let generation = self.protocol.token_generation();
            let answered_before = self.protocol.last_answer();
            let result = call().await;
            // A step that asked the server nothing (the protocol chosen already,
            // a verify's preparation that protocol 1 does not need) is no call.
            let asked = result.is_err() || self.protocol.last_answer() != answered_before;
            if asked {
                tracing::debug!(
                file = %f.filename,
                %phase,
                offset,
                attempt,
                ms = t0.elapsed().as_millis() as u64,
                answer = %match &result {
                    Ok(_) => "ok".to_owned(),
                    Err(CallError::Refused(answer)) => format!("HTTP {}", answer.status),
                    Err(CallError::Transport(Transport::Idle(_))) => "idle timeout".to_owned(),
                    Err(CallError::Transport(Transport::Http { .. })) => {
                        "connection error".to_owned()
                    }
                    Err(CallError::Unsettled { status }) => format!("unsettled (HTTP {status})"),
                    Err(CallError::Fatal(_)) => "cannot succeed".to_owned(),
                    Err(CallError::SizeMismatch { reported }) => {
                        format!("ok, but {} reported", bytes_text(*reported))
                    }
                },
                "call"
                );
            }
            let call_deadline = started + policy.deadline + token_waits;
            // A run that must stop at once sends nothing again (a verify, let
            // finish its attempt, ends on a failure).
            let out_of_attempts = attempt >= policy.max_attempts
                || Instant::now() >= call_deadline
                || self.stop.is_now();
            // A server never heard from in this run is more likely a wrong
            // address (or not listening) than a blip: say so after a few
            // quick attempts, and stop the run.
            let first_contact_over = !self.protocol.heard_from()
                && (attempt >= FIRST_CONTACT_ATTEMPTS || out_of_attempts);
            // Silence is "never answered" only for a setup (see the client's
            // idle timeout): other calls wait their full idle timeout.
            let silent_first_contact = first_contact_over && phase == Phase::Setup;
            let (reason, retry_after) = match result {
                Ok(value) => {
                    return Ok(Done {
                        value,
                        elapsed: t0.elapsed(),
                    });
                }
                Err(CallError::Transport(Transport::Idle(after))) => {
                    self.sizer.after_timeout();
                    uncertain = true;
                    answer_lost.store(true, std::sync::atomic::Ordering::Relaxed);
                    if silent_first_contact {
                        return Err(failed(
                            Failure::Error(Error::NoAnswer {
                                server: self.config.server.clone(),
                                attempts: attempt,
                                waited: after,
                            }),
                            uncertain,
                        ));
                    }
                    (format!("nothing moved for {}s", after.as_secs_f32()), None)
                }
                Err(CallError::Transport(Transport::Http {
                    reason,
                    plain_http,
                    not_http,
                    certificate,
                })) => {
                    // A mapped chunk of a file truncated meanwhile fails to send
                    // (the kernel answers EFAULT): name the real cause.
                    f.source
                        .check_identity()
                        .map_err(|e| failed(Failure::Error(e.into()), uncertain))?;
                    uncertain = true;
                    answer_lost.store(true, std::sync::atomic::Ordering::Relaxed);
                    // The wrong scheme, when the server never answered in
                    // this run; after it did, one reply that is no HTTP (a
                    // proxy's blip) is a broken connection like another.
                    let never_answered = self.protocol.last_answer().is_none();
                    if never_answered
                        && plain_http
                        && let Some(error) = self.plain_http_answer()
                    {
                        return Err(failed(Failure::Error(error), uncertain));
                    }
                    if never_answered
                        && not_http
                        && let Some(error) = self.tls_answer()
                    {
                        return Err(failed(Failure::Error(error), uncertain));
                    }
                    if let Some(problem) = certificate {
                        let error = Error::UntrustedCertificate {
                            server: self.config.server.clone(),
                            problem,
                        };
                        return Err(failed(Failure::Error(error), uncertain));
                    }
                    if first_contact_over {
                        return Err(failed(
                            Failure::Error(Error::Unreachable {
                                server: self.config.server.clone(),
                                last: reason,
                            }),
                            uncertain,
                        ));
                    }
                    (reason, None)
                }
                Err(CallError::Fatal(error)) => {
                    return Err(failed(Failure::Error(*error), uncertain));
                }
                Err(CallError::SizeMismatch { reported }) => {
                    let error = Error::IntegrityMismatch {
                        path: f.path.clone(),
                        what: format!("it has {}, we sent {}", bytes_text(reported), f.size),
                    };
                    return Err(failed(Failure::Error(error), uncertain));
                }
                Err(CallError::Unsettled { status }) => {
                    let error = Error::RegistrationUnsettled {
                        path: f.path.clone(),
                        filename: f.filename.clone(),
                        status,
                    };
                    return Err(failed(Failure::Error(error), uncertain));
                }
                Err(CallError::Refused(answer)) => match answer.outcome {
                    Outcome::Retry { after } => {
                        // A 5xx may come after the server applied the call.
                        uncertain |= answer.status >= 500;
                        (status_and_said(&answer), after)
                    }
                    // A new token is in place (fetched now or by another call since
                    // this one went out): send again, at once the first time, after
                    // a backoff if the server keeps refusing new tokens.
                    Outcome::Unauthorized if !out_of_attempts => {
                        let asked = Instant::now();
                        let renewed = self.refresh_token(generation).await;
                        token_waits += asked.elapsed();
                        if !renewed {
                            return Err(failed(Failure::Answer(answer), uncertain));
                        }
                        refreshed += 1;
                        if refreshed > 1 {
                            // The backoff itself: behaviour, not a wait for something.
                            tokio::time::sleep(self.backoff.delay(refreshed - 1, None)).await;
                        }
                        continue;
                    }
                    _ => return Err(failed(Failure::Answer(answer), uncertain)),
                },
            };
            self.congestion.on_trouble();
            let delay = self.backoff.delay(attempt, retry_after);
            let next = Instant::now() + delay;
            if let Some(error) = f.past_deadline(next) {
                return Err(failed(Failure::Error(error), uncertain));
            }
            // Waiting past the deadline (a long `Retry-After`) only to give up
            // then: give up now.
            let waits_past_deadline = next > call_deadline;
            if out_of_attempts || waits_past_deadline {
                let last = if waits_past_deadline && !out_of_attempts {
                    format!(
                        "{reason}; the next attempt, in {}, would come after the call deadline",
                        crate::event::wait_text(delay)
                    )
                } else {
                    reason
                };
                let mut error = Error::GaveUp {
                    path: f.path.clone(),
                    phase,
                    offset,
                    attempts: attempt,
                    elapsed: started.elapsed().saturating_sub(token_waits),
                    last,
                };
                // Not one answer to any call for long: not this call's trouble
                // but the server's; the run stops. (Not for a verify: a server
                // may take long over one.)
                let silent = self
                    .protocol
                    .last_answer()
                    .is_none_or(|at| at.elapsed() >= SERVER_STOPPED_AFTER);
                if silent && phase != Phase::Verify {
                    error = Error::ServerStopped {
                        server: self.config.server.clone(),
                        gave_up: Box::new(error),
                    };
                }
                return Err(failed(Failure::Error(error), uncertain));
            }
            self.emit(Event::Retry {
                path: f.path.clone(),
                phase,
                offset,
                attempt,
                reason,
                delay,
            });
            // The backoff itself: behaviour, not a wait for something to happen.
            tokio::time::sleep(delay).await;
        }
    }

    /// The server's address over `scheme` instead, on the same port, when it
    /// was given over `given`.
    fn over(&self, given: &str, scheme: &str) -> Option<String> {
        crate::tls::swap_scheme(&self.config.server, given, scheme)
    }

    /// A TLS handshake answered in plain HTTP: sending again cannot help.
    fn plain_http_answer(&self) -> Option<Error> {
        Some(Error::NotTls {
            server: self.config.server.clone(),
            plain: self.over("https", "http")?,
        })
    }

    /// A plain HTTP request answered with what is not HTTP (a TLS server's
    /// alert, most likely): sending again cannot help.
    fn tls_answer(&self) -> Option<Error> {
        Some(Error::NotHttp {
            server: self.config.server.clone(),
            https: self.over("http", "https")?,
        })
    }

    /// After a 401 on a call sent with token `generation`: is a different token
    /// in place now? Fetches one through the configured refresh if no other call
    /// did meanwhile.
    async fn refresh_token(&self, generation: u64) -> bool {
        let Some(refresh) = &self.config.token_refresh else {
            return false;
        };
        let _one_at_a_time = self.token_lock.lock().await;
        if self.protocol.token_generation() != generation {
            return true;
        }
        // A stopping run (another call's refresh gave up, or a cancel) waits
        // for no token.
        if self.stop.is_set() {
            return false;
        }
        let Some(token) = refresh.fetch().await else {
            return false;
        };
        match self.protocol.replace_token(&token) {
            Ok(true) => {
                self.emit(Event::TokenRefreshed);
                true
            }
            _ => false,
        }
    }

    /// The error for a non-retryable answer.
    pub(crate) fn refusal(
        &self,
        f: &OpenFile,
        phase: Phase,
        offset: u64,
        len: u64,
        answer: Answer,
    ) -> Error {
        let path = f.path.clone();
        let dataset = self.config.dataset.clone();
        match answer.outcome {
            Outcome::Unauthorized => Error::Unauthorized { dataset },
            Outcome::NotFound => Error::DatasetNotFound {
                dataset,
                server: self.config.server.clone(),
            },
            Outcome::AlreadyExists => Error::AlreadyExists {
                path,
                filename: f.filename.clone(),
                dataset,
                recorded: self.receipts.contains_key(&f.filename),
            },
            Outcome::Rejected if phase == Phase::Setup && answer.status == 409 => {
                Error::SetupConflict {
                    path,
                    filename: f.filename.clone(),
                    dataset,
                    message: answer.said,
                }
            }
            Outcome::TooLarge if phase == Phase::Transfer => Error::ChunkTooLarge { path, len },
            Outcome::Realign { expected_offset } => Error::OffsetConflict {
                path,
                sent: offset,
                expected: expected_offset,
            },
            Outcome::Incomplete { received, expected } => Error::Incomplete {
                path,
                received,
                expected,
            },
            Outcome::NoSession => Error::SessionLost { path },
            Outcome::NotDataBank => Error::NotDataBank {
                server: self.config.server.clone(),
                phase,
                status: answer.status,
                received: answer.said,
            },
            Outcome::Ok | Outcome::Retry { .. } | Outcome::TooLarge | Outcome::Rejected => {
                let message = match (answer.status, answer.location) {
                    (300..=399, Some(location)) => {
                        // The datafile endpoint's own address elsewhere: the
                        // server moved, and its new base is what --server takes.
                        let endpoint = format!("api/dataset/{}/datafile", self.config.dataset);
                        let path_end = location.find(['?', '#']).unwrap_or(location.len());
                        match location[..path_end].strip_suffix(endpoint.as_str()) {
                            Some(base) if base.ends_with('/') => format!(
                                "the server redirects to {location}; if the Data Bank moved \
                                 there, run the same command with --server {base}"
                            ),
                            _ => format!(
                                "the server redirects to {location}; if the Data Bank moved, \
                                 give its new address with --server"
                            ),
                        }
                    }
                    _ => answer.said,
                };
                Error::Rejected {
                    path,
                    phase,
                    offset,
                    status: answer.status,
                    message,
                }
            }
        }
    }

    pub(crate) fn failure(
        &self,
        f: &OpenFile,
        phase: Phase,
        offset: u64,
        failure: Failure,
    ) -> Error {
        match failure {
            Failure::Error(e) => e,
            Failure::Answer(answer) => self.refusal(f, phase, offset, 0, answer),
        }
    }
}

/// `HTTP 503`, and what the server said with it, if anything (cleaned).
fn status_and_said(answer: &Answer) -> String {
    if answer.said.is_empty() {
        format!("HTTP {}", answer.status)
    } else {
        format!("HTTP {}: {}", answer.status, answer.said)
    }
}
