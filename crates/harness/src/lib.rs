//! Throughput scenarios for `idb`: the engine measured against what the path allows
//! and against the service's sample client, in the same run.
//!
//! `idb-harness` owns the measurements of the transfer pipeline. Each scenario starts
//! an in-process `idb-mock` (sink storage, strict mode), generates incompressible
//! data (blake3's extendable output) into a temporary directory, and runs its sides
//! back to back, `reps` times each, alternating, against the same mock:
//!
//! - `ceiling`: one file; the engine with defaults against ONE request carrying the
//!   whole file (setup, one transfer, verify), no latency.
//! - `latency`: one file, 50 ms per response; the engine against the sample-client
//!   pattern (2 MiB chunks, one call after another, one connection), and against
//!   the one-chunk-in-flight bound `c / (RTT + c/B)` with RTT and B measured in the
//!   same run.
//! - `many-files`: 200 files of 4 MiB, 20 ms per response; the engine (at
//!   `parallel` files at once, and at its default) against the sample-client pattern
//!   file after file.
//!
//! Every side records wall time, throughput, process CPU time (user and system),
//! peak RSS (reset before each part) and retries; every upload is checked (the
//! mock's blake3 of what it received equals the generated file's), so no number
//! comes from a broken upload. Results are ratios between medians of the same run,
//! never absolute thresholds. A run writes `results.json` (every repetition),
//! `summary.md` (Markdown tables) and `command.txt` (command and machine) into
//! [`BenchConfig::out_dir`].
//!
//! Main types: [`BenchConfig`], [`Scenario`], [`run`], [`BenchOutcome`],
//! [`Results`], [`ProgressSink`].
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use idb_harness::{BenchConfig, Scenario};
//!
//! let mut config = BenchConfig::new("target/harness/example".into());
//! config.scenarios = vec![Scenario::Ceiling];
//! config.size = 64 << 20;
//! let outcome = idb_harness::run(&config, &|line: &str| eprintln!("{line}")).await?;
//! println!("{}", outcome.summary);
//! # Ok(()) }
//! ```
//!
//! It never prints (progress goes to the caller's [`ProgressSink`], the summary is
//! returned) and never exits. The mock runs in this process, so CPU time and peak
//! RSS include it. Engine and mock never depend on this crate.
#![deny(missing_docs)]

mod calls;
mod config;
mod data;
mod engine_run;
mod journal_cost;
mod measure;
mod report;
mod results;
mod sample_client;
mod scenarios;
mod single_request;

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context;

pub use config::{
    BenchConfig, DEFAULT_BENCH_PARALLEL, DEFAULT_FILE_SIZE, DEFAULT_FILES, DEFAULT_JOURNAL_CHUNK,
    DEFAULT_JOURNAL_SIZE, DEFAULT_LATENCY, DEFAULT_MANY_FILES_LATENCY, DEFAULT_REPS,
    DEFAULT_RTT_PROBES, DEFAULT_SIZE, DEFAULT_SMALL_FILE_SIZE, DEFAULT_SMALL_FILES, MAX_SIZE,
    SAMPLE_CLIENT_CHUNK, Scenario, UnknownScenario,
};
pub use data::{DataFile, generate as generate_data};
pub use engine_run::EngineSettings;
pub use report::{
    COMMAND_FILE, RESULTS_FILE, SUMMARY_FILE, human as human_bytes, utc_minute, utc_timestamp,
};
pub use results::{
    Machine, Medians, MockFacts, ModelBound, Ratio, Rep, Results, ScenarioResult, Side,
};

/// Receives progress lines (for stderr). Called between measured parts only.
pub trait ProgressSink {
    /// Handles one line.
    fn note(&self, line: &str);
}

impl<F: Fn(&str)> ProgressSink for F {
    fn note(&self, line: &str) {
        self(line)
    }
}

/// What a finished run produced.
#[derive(Debug)]
pub struct BenchOutcome {
    /// Where the three files were written.
    pub out_dir: PathBuf,
    /// The Markdown summary (also in `summary.md`).
    pub summary: String,
    /// The raw results (also in `results.json`).
    pub results: Results,
}

/// Runs the configured scenarios, writing the results as it goes (after each
/// scenario, so a run that fails part way keeps what it measured). Fails if any
/// upload fails or does not verify with the expected blake3.
pub async fn run(
    config: &BenchConfig,
    progress: &dyn ProgressSink,
) -> anyhow::Result<BenchOutcome> {
    config.validate()?;
    let out_dir = config.out_dir.clone();
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let mut results = Results {
        harness: concat!("idb-harness ", env!("CARGO_PKG_VERSION")).to_owned(),
        started_utc: utc_timestamp(SystemTime::now()),
        command: config.command_line.clone(),
        machine: report::machine(),
        reps: config.reps,
        scenarios: Vec::new(),
    };
    report::write_command(&out_dir, &results)?;
    let parent = config.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    let data = tempfile::Builder::new()
        .prefix("idb-harness-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a data directory in {}", parent.display()))?;
    let runner = scenarios::Runner {
        config,
        progress,
        data: data.path(),
    };
    let mut summary = report::write_results(&out_dir, &results)?;
    for scenario in &config.scenarios {
        let result = match scenario {
            Scenario::Ceiling => runner.ceiling().await,
            Scenario::Latency => runner.latency().await,
            Scenario::ManyFiles => runner.many_files().await,
            Scenario::Journal => runner.journal().await,
            Scenario::SmallFiles => runner.small_files().await,
        }
        .with_context(|| format!("scenario {scenario}"))?;
        results.scenarios.push(result);
        summary = report::write_results(&out_dir, &results)?;
        // The next scenario generates its own data: free the disk now.
        clear_dir(data.path())?;
    }
    Ok(BenchOutcome {
        out_dir,
        summary,
        results,
    })
}

fn clear_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    Ok(())
}
