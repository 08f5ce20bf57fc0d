//! The far end of a run: mocks started in this process on the mock's own
//! runtime with the knobs a point asks for, or one server elsewhere, which has
//! the knobs it has.

use std::time::Duration;

use anyhow::Context;
use idb_engine::Token;
use idb_mock::{
    DEFAULT_MAX_CHUNK, FaultConfig, MockConfig, MockServer, Storage, TusProfile, WriteMode,
};
use tokio::runtime::Handle;

use crate::FarEnd;
use crate::calls::{Calls, SLOWEST_PATH};
use crate::mock_runtime::MockRuntime;
use crate::results::{FarEndFacts, MockFacts};
use crate::tus_calls::TusCalls;

/// The dataset of every in-process mock.
const MOCK_DATASET: &str = "IDB-BENCH";

/// Its token (a mock's token, not a secret).
const MOCK_TOKEN: &str = "idb-harness-token";

/// What a point wants of the far end.
#[derive(Debug, Clone)]
pub(crate) struct Knobs {
    /// Added to every response (remotely, the path has its own).
    pub(crate) latency: Duration,
    /// Strict or offset.
    pub(crate) mode: WriteMode,
    /// A cap per connection, bytes per second.
    pub(crate) bandwidth: Option<u64>,
    /// A cap on the whole server (every connection together, as a real link),
    /// bytes per second.
    pub(crate) bandwidth_total: Option<u64>,
    /// Injected faults.
    pub(crate) faults: Option<FaultConfig>,
    /// The largest chunk the sides send (the ceiling sends whole files).
    pub(crate) max_chunk: u64,
    /// Serve tus too, with this profile (`None`: protocol 1 only).
    pub(crate) tus: Option<TusProfile>,
    /// Keep the bytes, in a temporary directory removed with the mock (a
    /// sink keeps none, so it cannot join partial uploads); each repetition's
    /// files are removed after it ([`Endpoint::discard`]).
    pub(crate) store: bool,
}

impl Knobs {
    /// A healthy strict server with `latency`, accepting chunks up to `max_chunk`.
    pub(crate) fn plain(latency: Duration, max_chunk: u64) -> Self {
        Self {
            latency,
            mode: WriteMode::Strict,
            bandwidth: None,
            bandwidth_total: None,
            faults: None,
            max_chunk: max_chunk.max(DEFAULT_MAX_CHUNK),
            tus: None,
            store: false,
        }
    }

    /// What a remote far end cannot be asked for, if anything (the reason a
    /// scenario that needs it is skipped).
    pub(crate) fn remote_lacks(&self) -> Option<String> {
        let needs = match self {
            Knobs {
                faults: Some(_), ..
            } => "injected faults (the mock's --fault-rate)",
            Knobs {
                bandwidth: Some(_), ..
            } => "a bandwidth cap set per run (the mock's --bandwidth)",
            Knobs {
                bandwidth_total: Some(_),
                ..
            } => "a cap on the whole server set per run (the mock's --bandwidth-total)",
            Knobs {
                mode: WriteMode::Offset,
                ..
            } => "a server in each write mode (the mock's --mode)",
            _ => return None,
        };
        // Faults fail the baselines (curl, the sample client: no retries),
        // so a far end started with them cannot stand in either.
        let instead = if self.faults.is_some() {
            "run it with an in-process mock"
        } else {
            "run it with an in-process mock, or start the far end with that option and run \
             --scenario latency against it"
        };
        Some(format!(
            "needs {needs}, which a far end given with --server cannot be asked for; {instead}"
        ))
    }
}

/// The far end of a whole run.
pub(crate) enum Far {
    /// Mocks in this process, on their own runtime.
    Local(MockRuntime),
    /// A server elsewhere.
    Remote {
        url: String,
        dataset: String,
        token: Token,
        trust: Trust,
    },
}

/// Certificate authorities trusted on top of the system's (`--ca-cert`).
#[derive(Clone, Default)]
pub(crate) struct Trust {
    /// The PEM files, for the engine and curl.
    pub(crate) files: Vec<std::path::PathBuf>,
    /// Their certificates, read once, for the harness's own calls.
    pub(crate) roots: Vec<reqwest::Certificate>,
}

/// One far end a point uploads to.
pub(crate) struct Endpoint {
    pub(crate) url: String,
    pub(crate) dataset: String,
    pub(crate) token: Token,
    /// Certificate authorities to trust for it (none for a mock in-process).
    pub(crate) trust: Trust,
    pub(crate) facts: MockFacts,
    /// The in-process mock and the runtime it runs on.
    server: Option<(MockServer, Handle)>,
}

impl Far {
    pub(crate) fn new(far_end: &FarEnd) -> anyhow::Result<Self> {
        Ok(match far_end {
            FarEnd::InProcess => Far::Local(MockRuntime::start()?),
            FarEnd::Remote {
                url,
                dataset,
                token,
                ca_certs,
            } => Far::Remote {
                url: url.trim_end_matches('/').to_owned(),
                dataset: dataset.clone(),
                token: token.clone(),
                trust: Trust {
                    files: ca_certs.clone(),
                    roots: idb_engine::load_ca_certs(ca_certs)?,
                },
            },
        })
    }

    /// Whether the far end is another server.
    pub(crate) fn is_remote(&self) -> bool {
        matches!(self, Far::Remote { .. })
    }

    /// The mock runtime, whose CPU time is not the client's.
    pub(crate) fn mock_runtime(&self) -> Option<&MockRuntime> {
        match self {
            Far::Local(runtime) => Some(runtime),
            Far::Remote { .. } => None,
        }
    }

    pub(crate) fn facts(&self) -> FarEndFacts {
        match self {
            Far::Local(_) => FarEndFacts {
                kind: "in-process".into(),
                url: None,
                dataset: None,
                client_cpu: "the process's CPU time less the CPU clocks of the mock's runtime \
                             threads (workers and blocking pool)"
                    .into(),
            },
            Far::Remote { url, dataset, .. } => FarEndFacts {
                kind: "remote".into(),
                url: Some(url.clone()),
                dataset: Some(dataset.clone()),
                client_cpu: "the process's CPU time (the far end is another process)".into(),
            },
        }
    }

    /// A far end with `knobs`, known as `label`: a fresh in-process mock, or the
    /// remote server (whose knobs are its own: check [`Knobs::remote_lacks`]
    /// first).
    pub(crate) async fn endpoint(&self, label: &str, knobs: &Knobs) -> anyhow::Result<Endpoint> {
        match self {
            Far::Remote {
                url,
                dataset,
                token,
                trust,
            } => Ok(Endpoint {
                url: url.clone(),
                dataset: dataset.clone(),
                token: token.clone(),
                trust: trust.clone(),
                facts: MockFacts {
                    label: label.to_owned(),
                    kind: "remote".into(),
                    latency_ms: None,
                    mode: None,
                    bandwidth: None,
                    bandwidth_total: None,
                    fault_rate: None,
                    max_chunk: None,
                    tus_profile: None,
                    storage: None,
                },
                server: None,
            }),
            Far::Local(runtime) => {
                let mut config = MockConfig::new()
                    .storage(if knobs.store {
                        Storage::TempDir
                    } else {
                        Storage::Sink
                    })
                    .mode(knobs.mode)
                    .latency(knobs.latency)
                    .max_chunk(knobs.max_chunk)
                    .bandwidth(knobs.bandwidth)
                    .bandwidth_total(knobs.bandwidth_total)
                    .dataset(MOCK_DATASET, MOCK_TOKEN);
                if let Some(faults) = &knobs.faults {
                    config = config.faults(faults.clone());
                }
                if let Some(profile) = knobs.tus {
                    config = config.tus(true).tus_profile(profile);
                }
                let handle = runtime.handle();
                let server = handle
                    .spawn(MockServer::start(config))
                    .await
                    .context("the mock's start panicked")?
                    .context("cannot start the mock")?;
                Ok(Endpoint {
                    url: server.url(),
                    dataset: MOCK_DATASET.into(),
                    token: Token::new(MOCK_TOKEN)?,
                    trust: Trust::default(),
                    facts: MockFacts {
                        label: label.to_owned(),
                        kind: "in-process".into(),
                        latency_ms: Some(knobs.latency.as_secs_f64() * 1e3),
                        mode: Some(knobs.mode.as_str().to_owned()),
                        bandwidth: knobs.bandwidth,
                        bandwidth_total: knobs.bandwidth_total,
                        fault_rate: knobs.faults.as_ref().map(|f| f.rate),
                        max_chunk: Some(knobs.max_chunk),
                        tus_profile: knobs.tus.map(|p| p.as_str().to_owned()),
                        storage: Some(
                            if knobs.store {
                                "temporary directory"
                            } else {
                                "sink"
                            }
                            .to_owned(),
                        ),
                    },
                    server: Some((server, handle)),
                })
            }
        }
    }
}

impl Endpoint {
    /// The harness's own datafile calls to it, given time for the latency
    /// and the bandwidth caps set on an in-process mock.
    pub(crate) fn calls(&self) -> anyhow::Result<Calls> {
        let mut calls = Calls::new(&self.url, &self.dataset, &self.token, &self.trust.roots)?;
        let facts = &self.facts;
        calls.answer_wait += Duration::from_secs_f64(facts.latency_ms.unwrap_or(0.0) / 1e3);
        calls.slowest = [facts.bandwidth, facts.bandwidth_total]
            .into_iter()
            .flatten()
            .fold(SLOWEST_PATH, |slowest, cap| slowest.min(cap as f64));
        Ok(calls)
    }

    /// The harness's own tus calls to it.
    pub(crate) fn tus_calls(&self) -> anyhow::Result<TusCalls> {
        TusCalls::new(&self.url, self.calls()?)
    }
    /// tus uploads the in-process mock created so far (`None`: no tus served,
    /// or a far end elsewhere).
    pub(crate) fn tus_uploads(&self) -> Option<u64> {
        let (server, _) = self.server.as_ref()?;
        self.facts
            .tus_profile
            .is_some()
            .then(|| server.tus_stats().uploads_created)
    }

    /// Removes the bytes of files `names`, uploaded and verified, from an
    /// in-process mock's store: the stored file, and the tus upload it was
    /// registered from (terminated, which removes its bytes). Each name is
    /// uploaded once and never asked for again, so a run's store holds one
    /// repetition's files at most. Nothing to do for a sink or a far end
    /// elsewhere (whose files are its own).
    pub(crate) async fn discard(&self, names: &[&str]) -> anyhow::Result<()> {
        let Some((server, _)) = &self.server else {
            return Ok(());
        };
        if server.store_dir().is_none() {
            return Ok(());
        }
        let registrations = if self.facts.tus_profile.is_some() {
            server.tus_registrations()
        } else {
            Vec::new()
        };
        let mut uploads = registrations
            .iter()
            .filter(|r| r.dataset == self.dataset && names.contains(&r.filename.as_str()))
            .peekable();
        if uploads.peek().is_some() {
            let tus = self.tus_calls()?;
            for registration in uploads {
                tus.terminate(&registration.tus_url).await?;
            }
        }
        for name in names {
            if let Some(path) = server.stored_file(&self.dataset, name) {
                std::fs::remove_file(&path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
            }
        }
        Ok(())
    }

    /// Stops an in-process mock (letting calls in flight finish).
    pub(crate) async fn shutdown(self) {
        if let Some((server, handle)) = self.server {
            let _ = handle.spawn(server.shutdown()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::ANSWER_WAIT;

    /// The harness's own calls to a mock it slowed down are given the time
    /// the mock takes: its latency, and its body at the lowest cap.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_to_a_slowed_mock_are_given_its_time() {
        let far = Far::new(&FarEnd::InProcess).unwrap();
        let knobs = Knobs {
            bandwidth: Some(512 << 10),
            bandwidth_total: Some(4 << 20),
            ..Knobs::plain(Duration::from_millis(250), 1 << 20)
        };
        let endpoint = far.endpoint("slow", &knobs).await.unwrap();
        let calls = endpoint.calls().unwrap();
        assert_eq!(calls.slowest, (512 << 10) as f64);
        assert_eq!(calls.answer_wait, ANSWER_WAIT + Duration::from_millis(250));
        let plain = far
            .endpoint("plain", &Knobs::plain(Duration::ZERO, 1 << 20))
            .await
            .unwrap();
        let calls = plain.calls().unwrap();
        assert_eq!(calls.slowest, SLOWEST_PATH);
        assert_eq!(calls.answer_wait, ANSWER_WAIT);
        endpoint.shutdown().await;
        plain.shutdown().await;
    }
}
