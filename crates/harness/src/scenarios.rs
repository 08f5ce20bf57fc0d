//! The network-path scenarios: each names its points (the far end's knobs and
//! the sides measured under them) and leaves the measuring to [`Runner::point`].
//! A scenario that needs a knob a remote far end does not have is skipped, with
//! the reason in its result.

use std::time::Duration;

use idb_mock::{FaultConfig, FaultKind, WriteMode};

use crate::config::{FAULT_STALL, SAMPLE_CLIENT_CHUNK};
use crate::cpu_floor::REMOTE_FLOOR;
use crate::curl_upload::Curl;
use crate::far_end::Knobs;
use crate::point::{PointSpec, Runner, SideSpec};
use crate::report::{compact, human};
use crate::results::{Point, ScenarioResult};

mod protocols;

/// Target (shown, never asserted): engine / the model bound with setup and
/// verify counted, at 50 ms.
const MODEL_TARGET: f64 = 0.95;

/// Target: engine / sample-client pattern at 50 ms.
const SAMPLE_CLIENT_TARGET: f64 = 10.0;

/// Target: engine / single-request ceiling on a capped path.
const SHAPED_TARGET: f64 = 0.95;

/// The latency at which the model and sample-client targets are stated.
const TARGET_LATENCY: Duration = Duration::from_millis(50);

/// The seed of the `faults` scenario's fault RNG (the same faults every run).
const FAULT_SEED: u64 = 12;

/// The `Retry-After` of a 429 fault in `faults` (the mock sends whole seconds).
const FAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

fn ms(latency: Duration) -> String {
    format!("{} ms", latency.as_millis())
}

impl Runner<'_> {
    /// The label and latency of a one-point scenario: the configured latency
    /// in-process, the path's own round trip remotely.
    fn one_point(&self) -> (String, Option<Duration>) {
        if self.far.is_remote() {
            ("the path".into(), None)
        } else {
            (ms(self.config.latency), Some(self.config.latency))
        }
    }

    fn result(&self, name: &str, title: String, points: Vec<Point>) -> ScenarioResult {
        ScenarioResult {
            name: name.into(),
            title,
            skipped: None,
            points,
            notes: Vec::new(),
        }
    }

    /// A scenario that cannot run here, and why.
    fn skipped(&self, name: &str, title: String, knobs: &Knobs) -> Option<ScenarioResult> {
        if !self.far.is_remote() {
            return None;
        }
        let reason = knobs.remote_lacks()?;
        self.note(format!("{name}: skipped: {reason}"));
        Some(ScenarioResult {
            name: name.into(),
            title,
            skipped: Some(reason),
            points: Vec::new(),
            notes: Vec::new(),
        })
    }

    /// Targets of a one-file point at `latency`.
    fn targets(latency: Option<Duration>) -> Vec<(&'static str, f64)> {
        if latency == Some(TARGET_LATENCY) {
            vec![
                ("engine/model-with-setup-verify", MODEL_TARGET),
                ("engine/sample-client", SAMPLE_CLIENT_TARGET),
            ]
        } else {
            Vec::new()
        }
    }

    /// `latency`: the large file at each latency of the sweep (remotely, at the
    /// path's round trip): the engine, the ceiling, the sample client, the model.
    pub(crate) async fn latency(&self) -> anyhow::Result<ScenarioResult> {
        let (file, prefix) = self.large().await?;
        let conditions: Vec<(String, Option<Duration>)> = if self.far.is_remote() {
            vec![("the path".into(), None)]
        } else {
            self.config
                .latencies
                .iter()
                .map(|&l| (ms(l), Some(l)))
                .collect()
        };
        // Looked for once: the point that compares CPU says why it has no curl.
        let curl = Curl::probe(self.config.curl.as_deref());
        let mut points = Vec::new();
        for (label, latency) in conditions {
            let knobs = Knobs::plain(latency.unwrap_or_default(), file.size);
            let endpoint = self.far.endpoint(&label, &knobs).await?;
            let mut spec = PointSpec::on(
                label,
                latency,
                endpoint,
                Self::standard_sides(&file, &prefix),
            );
            spec.targets = Self::targets(latency);
            let mut point = self.point("latency", spec).await?;
            // CPU is compared at 0 ms in-process (the floor too), and at the
            // one point remotely (curl alone: the far end's CPU is not seen).
            let remote = self.far.is_remote();
            if remote {
                point.cpu_floor_skipped = Some(REMOTE_FLOOR.into());
            }
            if remote || latency == Some(Duration::ZERO) {
                self.cpu_comparisons(&file, &knobs, !remote, &curl, &mut point)
                    .await?;
            }
            points.push(point);
        }
        let mut result = self.result(
            "latency",
            format!("latency: one {} file across round trips", human(file.size)),
            points,
        );
        if prefix.size < file.size {
            result.notes.push(format!(
                "the sample client uploads the first {} of the file and its throughput is \
                 compared: it sends one 2 MiB chunk per round trip whatever the size, but its \
                 setup and verify weigh a little more on the smaller file ({} calls instead \
                 of {}), which understates it slightly",
                human(prefix.size),
                prefix.size.div_ceil(SAMPLE_CLIENT_CHUNK) + 2,
                file.size.div_ceil(SAMPLE_CLIENT_CHUNK) + 2
            ));
        }
        Ok(result)
    }

    /// `many-files`: many small files; the engine at the CLI's `--parallel`, the
    /// sample client file after file, the ceiling carrying all the bytes in one
    /// request.
    pub(crate) async fn many_files(&self) -> anyhow::Result<ScenarioResult> {
        let (count, size) = (self.config.files, self.config.file_size);
        let files = self
            .many_data(count, size, |i| format!("many-{i:05}.bin"))
            .await?;
        let total = size * count as u64;
        let all = self.data("many-all.bin", total, "many-all").await?;
        let (label, latency) = self.one_point();
        let knobs = Knobs::plain(latency.unwrap_or_default(), total);
        let endpoint = self.far.endpoint(&label, &knobs).await?;
        let mut ceiling = SideSpec::ceiling(all);
        ceiling.label = format!("one request carrying all {}", human(total));
        let sides = vec![
            SideSpec::engine(files.clone()),
            ceiling,
            SideSpec::sample_client(
                "sample-client pattern (2 MiB, sequential), file after file".into(),
                files,
            ),
        ];
        let spec = PointSpec::on(label, latency, endpoint, sides);
        let point = self.point("many-files", spec).await?;
        let mut result = self.result(
            "many-files",
            format!("many-files: {count} x {}", human(size)),
            vec![point],
        );
        result.notes.push(
            "the model bound here is the one-file bound times the files the engine has in \
             flight (its --parallel), at most B, unless the engine's connections together went \
             past one connection's B (a far end or path that caps each connection): then each \
             connection has its own B; with setup and verify it counts three round trips a file \
             at least"
                .into(),
        );
        Ok(result)
    }

    /// `bandwidth`: the large file through a per-connection cap, and through
    /// the same cap on the whole server (one bucket every connection draws
    /// from, as a real shaped link).
    pub(crate) async fn bandwidth(&self) -> anyhow::Result<ScenarioResult> {
        let cap = self.config.bandwidth;
        let title = format!(
            "bandwidth: one {} file, {}/s per connection, then shared by all",
            human(self.config.size),
            human(cap)
        );
        let latency = self.config.latency;
        let (file, prefix) = self.large().await?;
        let knobs = Knobs {
            bandwidth: Some(cap),
            ..Knobs::plain(latency, file.size)
        };
        if let Some(skipped) = self.skipped("bandwidth", title.clone(), &knobs) {
            return Ok(skipped);
        }
        let label = format!("{}/s per connection, {}", human(cap), ms(latency));
        let endpoint = self.far.endpoint(&label, &knobs).await?;
        let mut spec = PointSpec::on(
            label,
            Some(latency),
            endpoint,
            Self::standard_sides(&file, &prefix),
        );
        spec.targets = vec![("engine/ceiling", SHAPED_TARGET)];
        let per_connection = self.point("bandwidth", spec).await?;
        let knobs = Knobs {
            bandwidth: None,
            bandwidth_total: Some(cap),
            ..knobs
        };
        let label = format!(
            "{}/s shared by all connections, {}",
            human(cap),
            ms(latency)
        );
        let endpoint = self.far.endpoint(&label, &knobs).await?;
        let mut spec = PointSpec::on(
            label,
            Some(latency),
            endpoint,
            Self::standard_sides(&file, &prefix),
        );
        spec.targets = vec![("engine/ceiling", SHAPED_TARGET)];
        let shared = self.point("bandwidth", spec).await?;
        let mut result = self.result("bandwidth", title, vec![per_connection, shared]);
        result.notes.push(
            "the first point caps each connection on its own; the second caps the server as \
             a whole (one bucket every connection draws from), as a real shaped link does"
                .into(),
        );
        Ok(result)
    }

    /// `faults`: the large file with faults injected, against the engine on a
    /// healthy mock (the harness's own clients never retry, so they run on the
    /// healthy one).
    pub(crate) async fn faults(&self) -> anyhow::Result<ScenarioResult> {
        let rate = self.config.fault_rate;
        let latency = self.config.latency;
        let title = format!(
            "faults: one {} file, {}% of requests faulted, {}",
            human(self.config.size),
            rate * 100.0,
            ms(latency)
        );
        let (file, prefix) = self.large().await?;
        let clean = Knobs::plain(latency, file.size);
        let faulty = Knobs {
            faults: Some(FaultConfig {
                seed: FAULT_SEED,
                stall: FAULT_STALL,
                retry_after: FAULT_RETRY_AFTER,
                ..FaultConfig::new(rate, FaultKind::ALL)
            }),
            ..clean.clone()
        };
        if let Some(skipped) = self.skipped("faults", title.clone(), &faulty) {
            return Ok(skipped);
        }
        let endpoints = vec![
            self.far.endpoint("healthy", &clean).await?,
            self.far.endpoint("faults", &faulty).await?,
        ];
        let mut faulted = SideSpec::engine_with(
            "engine-faults",
            "engine, the CLI's defaults, with faults".into(),
            vec![file.clone()],
            |_| {},
        )
        .on(1);
        faulted.label = format!("engine, the CLI's defaults, {}% faults", rate * 100.0);
        let mut sides = vec![faulted];
        sides.extend(Self::standard_sides(&file, &prefix));
        let spec = PointSpec {
            label: format!("{}% faults, {}", rate * 100.0, ms(latency)),
            latency: Some(latency),
            endpoints,
            sides,
            ratios: vec![("engine-faults".into(), "engine".into(), None)],
            targets: Vec::new(),
            skipped_sides: Vec::new(),
        };
        let point = self.point("faults", spec).await?;
        let mut result = self.result("faults", title, vec![point]);
        result.notes.push(format!(
            "faults drawn from 500, 429 (Retry-After {} s), reset, stall ({} ms) and truncate, \
             seed {FAULT_SEED}; the engine without faults, the ceiling and the sample client \
             run against a healthy mock with the same latency",
            FAULT_RETRY_AFTER.as_secs(),
            FAULT_STALL.as_millis()
        ));
        Ok(result)
    }

    /// `modes`: the large file into a strict and an offset-mode mock.
    pub(crate) async fn modes(&self) -> anyhow::Result<ScenarioResult> {
        let latency = self.config.latency;
        let title = format!(
            "modes: one {} file, strict and offset, {}",
            human(self.config.size),
            ms(latency)
        );
        let (file, prefix) = self.large().await?;
        let strict = Knobs::plain(latency, file.size);
        let offset = Knobs {
            mode: WriteMode::Offset,
            ..strict.clone()
        };
        if let Some(skipped) = self.skipped("modes", title.clone(), &offset) {
            return Ok(skipped);
        }
        let endpoints = vec![
            self.far.endpoint("strict", &strict).await?,
            self.far.endpoint("offset", &offset).await?,
        ];
        let mut sides = Self::standard_sides(&file, &prefix);
        sides.insert(
            1,
            SideSpec::engine_with(
                "engine-offset",
                "engine, the CLI's defaults, offset-mode server".into(),
                vec![file.clone()],
                |_| {},
            )
            .on(1),
        );
        let spec = PointSpec {
            label: format!("strict and offset, {}", ms(latency)),
            latency: Some(latency),
            endpoints,
            sides,
            ratios: vec![("engine-offset".into(), "engine".into(), None)],
            targets: Vec::new(),
            skipped_sides: Vec::new(),
        };
        let point = self.point("modes", spec).await?;
        let mut result = self.result("modes", title, vec![point]);
        result.notes.push(
            "`engine` runs against the strict mock (one chunk in flight); `engine-offset` \
             against the offset-mode one, where the engine keeps several chunks of the file in \
             flight, so it may pass the one-chunk model bound"
                .into(),
        );
        Ok(result)
    }

    /// `chunks`: the large file in fixed chunk sizes and with the adaptive one.
    pub(crate) async fn chunks(&self) -> anyhow::Result<ScenarioResult> {
        let (file, prefix) = self.large().await?;
        let (label, latency) = self.one_point();
        let knobs = Knobs::plain(latency.unwrap_or_default(), file.size);
        let endpoint = self.far.endpoint(&label, &knobs).await?;
        let mut sides = Self::standard_sides(&file, &prefix);
        sides[0].label = "engine, the CLI's defaults (adaptive chunk size)".into();
        let mut ratios = Vec::new();
        for &chunk in &self.config.fixed_chunks {
            let key = format!("engine-fixed-{}", compact(chunk));
            sides.insert(
                sides.len() - 2,
                SideSpec::engine_with(
                    &key,
                    format!("engine, fixed {} chunks", human(chunk)),
                    vec![file.clone()],
                    move |c| *c = c.clone().fixed_chunk_size(chunk),
                ),
            );
            ratios.push((key, "engine".to_owned(), None));
        }
        let mut spec = PointSpec::on(label, latency, endpoint, sides);
        spec.ratios = ratios;
        spec.targets = Self::targets(latency);
        let point = self.point("chunks", spec).await?;
        Ok(self.result(
            "chunks",
            format!(
                "chunks: one {} file, fixed and adaptive chunk sizes",
                human(file.size)
            ),
            vec![point],
        ))
    }
}
