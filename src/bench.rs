//! `idb bench`: the harness's scenarios against an in-process mock or a far end
//! given with `--server`; the table (or `--json`) on stdout, a progress line on
//! stderr, the evidence in `--report`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use clap::Parser;
use idb_harness::{BenchConfig, EngineDefaults, FarEnd, Scenario};

use crate::cli::{BenchArgs, Cli, Command};
use crate::exit::Exit;
use crate::signals::{Signals, Stop};
use crate::text::escape;

/// Where runs go by default: `target/harness/<UTC timestamp>`.
const DEFAULT_OUT_PARENT: &str = "target/harness";

pub async fn run(args: BenchArgs, given: Vec<&'static str>) -> anyhow::Result<Exit> {
    let config = match configure(&args, &given) {
        Ok(config) => config,
        Err(problem) => {
            say(&format!("error: {}", escape(&format!("{problem:#}"))));
            return Ok(Exit::BadInput);
        }
    };
    let progress = ProgressLine::new();
    let show = |line: &str| progress.show(line);
    let mut signals = Signals::install();
    let mut run = std::pin::pin!(idb_harness::run(&config, &show));
    let outcome = tokio::select! {
        outcome = &mut run => Ok(outcome),
        stop = signals.next() => Err(Exit::Signal(stop)),
        () = crate::console::stdout_gone() => Err(Exit::OutputClosed),
    };
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(exit) => {
            // The engine's sides stop at once (no grace for calls in flight),
            // no side starts, and a curl the run waits for is stopped; the run
            // then ends by itself, its journals closed and its temporary files
            // and directories removed, the header file that holds the token
            // with them. A second signal quits at once, leaving them.
            config.cancel.cancel();
            idb_harness::stop_children();
            let why = match exit {
                Exit::Signal(Stop::Interrupt) => "by Ctrl-C",
                Exit::Signal(Stop::Terminate) => "by SIGTERM",
                Exit::Signal(Stop::Hangup) => "by SIGHUP",
                _ => "as standard output was closed",
            };
            progress.show(&format!(
                "stopping {why}: removing the temporary data (a second Ctrl-C or SIGTERM quits \
                 at once)"
            ));
            tokio::select! {
                _ = &mut run => {}
                stop = signals.second() => {
                    progress.finish();
                    say(&format!(
                        "quit at once: temporary directories may be left behind \
                         (idb-harness-* in {}, idb-mock-* and idb-bench-curl-* in {}, \
                         idb-bench-state-* in {} or /dev/shm)",
                        config.data_dir.clone().unwrap_or_else(std::env::temp_dir).display(),
                        std::env::temp_dir().display(),
                        config.out_dir.display()
                    ));
                    std::process::exit(i32::from(stop.exit_code()));
                }
            }
            progress.finish();
            say(&format!(
                "stopped {why}: the scenarios that ended are in {}; the temporary data was \
                 removed",
                config.out_dir.display()
            ));
            return Ok(exit);
        }
    };
    progress.finish();
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) if error.chain().any(|e| e.is::<idb_harness::TokenRefused>()) => {
            say(&format!("error: {}", escape(&format!("{error:#}"))));
            return Ok(Exit::TokenRefused);
        }
        Err(error) => return Err(error),
    };
    let mut stdout = std::io::stdout().lock();
    let text = if args.json {
        serde_json::to_string_pretty(&outcome.results)? + "\n"
    } else {
        idb_harness::table(&outcome.results)
    };
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(Exit::OutputClosed),
        Err(e) => return Err(anyhow::Error::new(e).context("cannot write to standard output")),
    }
    say(&format!(
        "results, report{} and command written to {}",
        if outcome.out_dir.join(idb_harness::PLOT_FILE).exists() {
            ", plot"
        } else {
            ""
        },
        outcome.out_dir.display()
    ));
    Ok(Exit::Success)
}

/// One line on stderr; a stderr that is gone (`2>&1 | head`) loses it, never
/// a panic (as `eprintln!` would).
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Options that set a knob of the in-process mock, with what to do instead
/// with `--server` (whose knobs are the far end's own): clap's id, the flag,
/// and why it does nothing there.
const MOCK_ONLY: [(&str, &str, &str); 5] = [
    (
        "latencies",
        "--latencies",
        "the latency scenario measures the path's own round trip",
    ),
    (
        "latency_ms",
        "--latency-ms",
        "the round trip is the path's own",
    ),
    (
        "bandwidth",
        "--bandwidth",
        "start the far end with --bandwidth to cap it",
    ),
    (
        "fault_rate",
        "--fault-rate",
        "faults are measured in-process only",
    ),
    (
        "protocols_bandwidth",
        "--protocols-bandwidth",
        "start the far end with --bandwidth to cap it",
    ),
];

/// The ids of the in-process mock's options given on the command line (not
/// left at their defaults), from `bench`'s matches.
pub fn given_on_command_line(bench: Option<&clap::ArgMatches>) -> Vec<&'static str> {
    let Some(bench) = bench else {
        return Vec::new();
    };
    MOCK_ONLY
        .iter()
        .map(|(id, _, _)| *id)
        .filter(|id| bench.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
        .collect()
}

/// What each mock-only option `given` would have done, so that with
/// `--server` it is not taken for having done it.
fn unused_with_server(given: &[&str]) -> Vec<String> {
    MOCK_ONLY
        .iter()
        .filter(|(id, _, _)| given.contains(id))
        .map(|(_, flag, instead)| format!("{flag} has no effect with --server: {instead}"))
        .collect()
}

/// The harness's configuration from the arguments.
fn configure(args: &BenchArgs, given: &[&str]) -> anyhow::Result<BenchConfig> {
    let out_dir = args.report.clone().unwrap_or_else(|| {
        PathBuf::from(DEFAULT_OUT_PARENT).join(idb_harness::utc_timestamp(SystemTime::now()))
    });
    let mut config = BenchConfig::new(out_dir);
    config.scenarios = Scenario::select(&args.scenario)?;
    config.engine_defaults = upload_defaults()?;
    if let (Some(server), Some(dataset)) = (&args.server, &args.dataset) {
        let dataset =
            idb_engine::DatasetKey::new(dataset).map_err(|e| anyhow::anyhow!("--dataset: {e}"))?;
        let (token, _, _) = crate::token::load(args.token_file.as_deref())?;
        for note in unused_with_server(given) {
            say(&format!("note: {note}"));
        }
        config.far_end = FarEnd::Remote {
            url: server.as_str().trim_end_matches('/').to_owned(),
            dataset: dataset.as_str().to_owned(),
            token,
            ca_certs: args.ca_certs.clone(),
        };
    }
    config.reps = args.reps as usize;
    config.size = args.size;
    config.sample_size = args.sample_size;
    // Two points of one latency would carry one label: ambiguous.
    if let Some(twice) = args
        .latencies
        .iter()
        .enumerate()
        .find_map(|(i, ms)| args.latencies[..i].contains(ms).then_some(ms))
    {
        anyhow::bail!("--latencies gives {twice} ms twice; give each latency once");
    }
    config.latencies = args
        .latencies
        .iter()
        .map(|&ms| Duration::from_millis(ms))
        .collect();
    config.latency = Duration::from_millis(args.latency_ms);
    config.files = args.files as usize;
    config.file_size = args.file_size;
    config.bandwidth = args.bandwidth;
    config.fault_rate = args.fault_rate;
    config.fixed_chunks = args.fixed_chunks.clone();
    config.journal_size = args.journal_size;
    config.small_files = args.small_files as usize;
    config.small_file_size = args.small_file_size;
    config.rtt_probes = args.rtt_probes as usize;
    config.protocols_bandwidth = args.protocols_bandwidth;
    config.data_dir = args.data_dir.clone();
    config.command_line = command_line();
    config.validate()?;
    Ok(config)
}

/// What `idb upload` sets when no option is given: its options' defaults, as
/// clap gives them, applied to the engine's configuration the way `upload` does.
fn upload_defaults() -> anyhow::Result<EngineDefaults> {
    let cli = Cli::try_parse_from(["idb", "upload", "file"])?;
    let Command::Upload(upload) = cli.command else {
        anyhow::bail!("`idb upload file` did not parse as an upload");
    };
    Ok(EngineDefaults::new(move |config| {
        *config = upload.transfer.apply(config.clone());
        config.journal_interval = upload.journal_interval;
    }))
}

/// The progress line on stderr: rewritten in place on a terminal, one line per
/// step in a log.
struct ProgressLine {
    terminal: bool,
    /// Whether a line is drawn and not yet ended (terminal only).
    drawn: Mutex<bool>,
}

impl ProgressLine {
    fn new() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            drawn: Mutex::new(false),
        }
    }

    fn show(&self, line: &str) {
        let line = escape(line);
        let mut err = std::io::stderr().lock();
        if self.terminal {
            // Carriage return, erase the line: one line that changes.
            let _ = write!(err, "\r\x1b[2K{line}");
            *self.drawn.lock().unwrap_or_else(|e| e.into_inner()) = true;
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    fn finish(&self) {
        let mut drawn = self.drawn.lock().unwrap_or_else(|e| e.into_inner());
        if *drawn {
            let _ = writeln!(std::io::stderr());
            *drawn = false;
        }
    }
}

/// The command line as typed (arguments with spaces quoted), for the record.
fn command_line() -> String {
    std::env::args()
        .map(|arg| {
            if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'') {
                format!("'{}'", arg.replace('\'', r"'\''"))
            } else {
                arg
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn given(args: &[&str]) -> Vec<&'static str> {
        let matches = Cli::command()
            .try_get_matches_from(["idb", "bench"].iter().chain(args))
            .unwrap();
        given_on_command_line(matches.subcommand_matches("bench"))
    }

    #[test]
    fn only_the_mock_options_given_on_the_command_line_get_a_note() {
        assert!(given(&[]).is_empty(), "defaults are not given");
        // Given with its default value is still given.
        let ids = given(&["--latency-ms", "50", "--bandwidth=8MiB", "--reps", "1"]);
        assert_eq!(ids, ["latency_ms", "bandwidth"]);
        assert_eq!(
            unused_with_server(&ids),
            [
                "--latency-ms has no effect with --server: the round trip is the path's own",
                "--bandwidth has no effect with --server: start the far end with --bandwidth to \
                 cap it",
            ]
        );
        assert!(given_on_command_line(None).is_empty());
    }
}
