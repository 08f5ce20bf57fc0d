//! Calls with retries: backoff, `Retry-After`, idle timeouts, a new token after
//! a 401, and the error each refusal becomes.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use idb_wire::{Outcome, Phase};

use crate::client::{Answer, Transport};
use crate::open_file::OpenFile;
use crate::protocol::{CallError, Protocol};
use crate::run::Run;
use crate::{Error, Event};

/// Attempts before a server that never answered in this run is called unreachable.
const FIRST_CONTACT_ATTEMPTS: u32 = 3;

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
}

impl<P: Protocol> Run<'_, P> {
    /// Sends a call until it succeeds, a non-retryable answer comes, or the retry
    /// policy gives up (attempts or deadline; refreshed tokens count as attempts).
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
        // Whether an earlier attempt may have reached the server and been applied.
        let mut uncertain = false;
        let failed = |failure, uncertain| Failed { failure, uncertain };
        loop {
            attempt += 1;
            let t0 = Instant::now();
            let generation = self.protocol.token_generation();
            let result = call().await;
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
                },
                "call"
            );
            if matches!(result, Ok(_) | Err(CallError::Refused(_))) {
                self.contacted.store(true, Ordering::Relaxed);
            }
            // A run that must stop at once sends nothing again (a verify, let
            // finish its attempt, ends on a failure).
            let out_of_attempts = attempt >= policy.max_attempts
                || started.elapsed() >= policy.deadline
                || self.stop.is_now();
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
                    (format!("nothing moved for {}s", after.as_secs()), None)
                }
                Err(CallError::Transport(Transport::Http { reason, plain_http })) => {
                    // A mapped chunk of a file truncated meanwhile fails to send
                    // (the kernel answers EFAULT): name the real cause.
                    f.source
                        .check_identity()
                        .map_err(|e| failed(Failure::Error(e.into()), uncertain))?;
                    uncertain = true;
                    if plain_http && let Some(error) = self.plain_http_answer() {
                        return Err(failed(Failure::Error(error), uncertain));
                    }
                    // A server never reached in this run is more likely a wrong
                    // address than a blip: say so after a few quick attempts.
                    if !self.contacted.load(Ordering::Relaxed) && attempt >= FIRST_CONTACT_ATTEMPTS
                    {
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
                Err(CallError::Refused(answer)) => match answer.outcome {
                    Outcome::Retry { after } => {
                        // A 5xx may come after the server applied the call.
                        uncertain |= answer.status >= 500;
                        (status_and_said(&answer), after)
                    }
                    // A new token is in place (fetched now or by another call since
                    // this one went out): send again, at once the first time, after
                    // a backoff if the server keeps refusing new tokens.
                    Outcome::Unauthorized
                        if !out_of_attempts && self.refresh_token(generation).await =>
                    {
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
            if out_of_attempts {
                return Err(failed(
                    Failure::Error(Error::GaveUp {
                        path: f.path.clone(),
                        phase,
                        offset,
                        attempts: attempt,
                        last: reason,
                    }),
                    uncertain,
                ));
            }
            let delay = self.backoff.delay(attempt, retry_after);
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

    /// A TLS handshake answered in plain HTTP: sending again cannot help.
    fn plain_http_answer(&self) -> Option<Error> {
        let server = &self.config.server;
        if server.scheme() != "https" {
            return None;
        }
        // The same port: the one that answered in plain HTTP.
        let port = server.port_or_known_default();
        let mut plain = server.clone();
        plain.set_scheme("http").ok()?;
        plain.set_port(port).ok()?;
        Some(Error::NotTls {
            server: server.clone(),
            plain: plain.to_string(),
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
            Outcome::Ok | Outcome::Retry { .. } | Outcome::TooLarge | Outcome::Rejected => {
                let message = match (answer.status, answer.location) {
                    (300..=399, Some(location)) => {
                        format!(
                            "the server redirects to {location}; use that address as the server"
                        )
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
