//! The fault matrix: the built `idb upload --json` against a real mock over
//! HTTP, one scenario per kind of trouble (resets mid-body, bursts of 500, 429
//! with `Retry-After`, stalls past the idle timeout, truncated chunks, lost
//! answers, all of them at once, the server killed with SIGKILL and started
//! again on its store, a full disk), each with the same six files (empty, one
//! byte, a chunk less one, one chunk, several chunks with a tail).
//!
//! What must hold in every scenario: every file ends either verified, with the
//! server's copy byte-exact, or failed with a reason (the `failed` event's
//! `error`); never verified but different, and nothing the server holds as
//! verified differs from the local file. Faults are seeded and drawn per call
//! (file, phase, offset, attempt), so a failure replays with the same seed as
//! long as the client makes the same calls (timeouts that halve the chunk size
//! can change them).
//! Each scenario prints one summary line on stderr (`--nocapture` shows it).
//!
//! The error style of the server is one dimension of the matrix (`Errors`):
//! the mock's JSON errors, or plain HTML pages (`--plain-errors`).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use idb_mock::{FaultConfig, FaultKind, FaultStats, MockConfig, WriteMode};

use crate::util::{
    CHUNK, CHUNK_ARG, DS, Dir, HANG, Mock, ServerProcess, TOKEN, TestCommand, assert_same_bytes,
    blake3_hex, random_bytes,
};

/// How the server answers errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Errors {
    /// The mock's JSON bodies (`expected_offset`, `received`, `error`).
    Json,
    /// Small HTML pages that give only the status (`--plain-errors`).
    Plain,
}

/// The error styles each scenario runs with: the engine must not depend on
/// the mock's error vocabulary.
const ERROR_STYLES: &[Errors] = &[Errors::Json, Errors::Plain];

/// The files of every scenario, with distinct sizes so that `--parallel 1`
/// takes them in a known order (largest first).
const FILES: [(&str, usize); 6] = [
    ("empty.bin", 0),
    ("one.bin", 1),
    ("under.bin", CHUNK - 1),
    ("exact.bin", CHUNK),
    ("three.bin", 3 * CHUNK + 17),
    ("five.bin", 5 * CHUNK + 333),
];

/// The most attempts per call in these runs (the engine's default): enough
/// that no file fails at the fault rates used here, few enough that a file
/// that keeps failing ends in seconds.
const ATTEMPTS: &str = "10";

/// One local file of a scenario.
struct Local {
    name: &'static str,
    path: PathBuf,
    bytes: Vec<u8>,
}

fn write_files(dir: &Dir) -> Vec<Local> {
    FILES
        .iter()
        .map(|&(name, size)| {
            let bytes = random_bytes(name, size);
            let path = dir.write(format!("data/{name}"), &bytes);
            Local { name, path, bytes }
        })
        .collect()
}

/// How each file of a run ended, from its `--json` lines.
#[derive(Default)]
struct Outcomes {
    /// Verified files: name -> the blake3 the client reported.
    verified: BTreeMap<String, String>,
    /// Failed files: name -> the `error` of the `failed` event.
    failed: BTreeMap<String, String>,
    /// Files left unfinished (`interrupted` events) when an error stopped the
    /// run, which the summary gives as the reason.
    interrupted: std::collections::BTreeSet<String>,
    /// `retry` events.
    retries: u64,
}

impl Outcomes {
    /// Reads the `--json` lines of a run (every line must be JSON).
    fn read(stdout: &str, run: &str) -> Self {
        let mut outcomes = Self::default();
        for line in stdout.lines() {
            let event: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{run}"));
            let name = event["name"].as_str().unwrap_or_default().to_owned();
            let text = |field: &str| event[field].as_str().unwrap_or_default().to_owned();
            match event["event"].as_str() {
                Some("verified") => {
                    let earlier = outcomes.verified.insert(name.clone(), text("blake3"));
                    assert!(earlier.is_none(), "{name} verified twice\n{run}");
                }
                Some("failed") => {
                    let earlier = outcomes.failed.insert(name.clone(), text("error"));
                    assert!(earlier.is_none(), "{name} failed twice\n{run}");
                }
                Some("retry") => outcomes.retries += 1,
                Some("interrupted") => {
                    outcomes.interrupted.insert(name);
                }
                _ => {}
            }
        }
        outcomes
    }

    /// Asserts what must hold whatever the faults: each file verified (the
    /// blake3 reported and the server's copy both exact), failed with a
    /// reason, or left unfinished by an error that stopped the run; never two
    /// of them, never none; and whatever the server holds as verified is
    /// exact. `stored` reads the server's copy of a verified name.
    #[track_caller]
    fn check(&self, files: &[Local], stored: impl Fn(&str) -> Option<Vec<u8>>, run: &str) {
        for file in files {
            let name = file.name;
            let held = stored(name);
            if let Some(held) = &held {
                assert_same_bytes(
                    &format!("the server's verified copy of {name}"),
                    &file.bytes,
                    held,
                );
            }
            match (self.verified.get(name), self.failed.get(name)) {
                (Some(blake3), None) => {
                    assert_eq!(
                        *blake3,
                        blake3_hex(&file.bytes),
                        "{name} was reported verified with another blake3\n{run}"
                    );
                    assert!(
                        held.is_some(),
                        "{name} verified, but the server has no copy\n{run}"
                    );
                }
                (None, Some(error)) => {
                    assert!(
                        !error.trim().is_empty(),
                        "{name} failed without a reason\n{run}"
                    );
                }
                (Some(_), Some(_)) => panic!("{name} was reported verified and failed\n{run}"),
                (None, None) => assert!(
                    self.interrupted.contains(name),
                    "{name} was neither verified nor reported failed or unfinished\n{run}"
                ),
            }
        }
    }
}

/// The scenario's line on stderr: what ran, what was injected, how it ended.
fn summary(scenario: &str, errors: Errors, faults: &str, outcomes: &Outcomes) {
    eprintln!(
        "fault matrix: {scenario} ({errors:?} errors): {} uploads, faults injected: {faults}, \
         {} retries, {} verified, {} failed: ok",
        FILES.len(),
        outcomes.retries,
        outcomes.verified.len(),
        outcomes.failed.len(),
    );
}

/// The injected faults, by kind, as the summary says them.
fn described(faults: &FaultStats) -> String {
    let mut parts: Vec<String> = FaultKind::ALL
        .into_iter()
        .filter(|&kind| faults.of(kind) > 0)
        .map(|kind| format!("{} {kind}", faults.of(kind)))
        .collect();
    if faults.disk_full > 0 {
        parts.push(format!("{} disk full (507)", faults.disk_full));
    }
    format!("{} ({})", faults.total(), parts.join(", "))
}

/// `idb upload --json` of every file to `server`, with `extra` flags (and
/// `--attempts` [`ATTEMPTS`] unless they give it).
fn upload(dir: &Dir, server: &str, files: &[Local], extra: &[&str]) -> TestCommand {
    let mut command = dir
        .upload_to(server, DS, CHUNK_ARG)
        .token(TOKEN)
        .arg("--json")
        .args(extra);
    if !extra.contains(&"--attempts") {
        command = command.args(["--attempts", ATTEMPTS]);
    }
    command.args(files.iter().map(|f| &f.path))
}

/// The bytes of `path`, if it exists.
fn read_if_there(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// The in-process mock's copy of a verified name, if it has one.
fn verified_copy(mock: &Mock) -> impl Fn(&str) -> Option<Vec<u8>> + '_ {
    |name| read_if_there(&mock.stored_file(DS, name)?)
}

// ---------------------------------------------------------------------------
// Faults of an in-process mock
// ---------------------------------------------------------------------------

/// A row of the matrix served by an in-process mock.
struct Scenario {
    name: &'static str,
    /// The faults (seeded).
    faults: FaultConfig,
    mode: WriteMode,
    /// More `idb upload` flags (such as a short idle timeout).
    upload: &'static [&'static str],
}

impl Scenario {
    fn new(name: &'static str, seed: u64, rate: f64, kinds: &[FaultKind]) -> Self {
        Self {
            name,
            faults: FaultConfig {
                seed,
                retry_after: Duration::ZERO,
                ..FaultConfig::new(rate, kinds.iter().copied())
            },
            mode: WriteMode::Strict,
            upload: &[],
        }
    }

    /// `429` faults ask for this wait.
    fn retry_after(mut self, wait: Duration) -> Self {
        self.faults.retry_after = wait;
        self
    }

    /// `stall` faults hold their answer this long, and the client gives up on
    /// an answer after 1 s of silence (`--idle-timeout 1`).
    fn stall(mut self, hold: Duration) -> Self {
        self.faults.stall = hold;
        self.upload = &["--idle-timeout", "1"];
        self
    }

    fn mode(mut self, mode: WriteMode) -> Self {
        self.mode = mode;
        self
    }

    /// Runs the scenario with each error style: every file must verify
    /// byte-exact (at these rates and attempts no file runs out of attempts),
    /// and the faults asked for must have been injected.
    fn run(self) {
        for &errors in ERROR_STYLES {
            let dir = Dir::new(&format!("matrix_{}_{errors:?}", self.name));
            let config = MockConfig::new()
                .dataset(DS, TOKEN)
                .mode(self.mode)
                .faults(self.faults.clone())
                .plain_errors(errors == Errors::Plain);
            let mock = Mock::start(config);
            let files = write_files(&dir);
            let run = upload(&dir, &mock.url(), &files, self.upload).run();
            let shown = run.describe();
            let outcomes = Outcomes::read(&run.stdout, &shown);
            outcomes.check(&files, verified_copy(&mock), &shown);
            assert!(
                outcomes.failed.is_empty(),
                "{}: files failed under faults they have attempts for\n{shown}",
                self.name
            );
            run.expect_code(0).never_shows(TOKEN);
            let faults = mock.stats().faults;
            for kind in &self.faults.kinds {
                assert!(
                    faults.of(*kind) > 0,
                    "{}: seed {} injected no {kind} fault, so the scenario tested nothing\n{shown}",
                    self.name,
                    self.faults.seed
                );
            }
            summary(self.name, errors, &described(&faults), &outcomes);
        }
    }
}

/// A `reset` reads half the body, then closes the connection without a word.
#[test]
fn resets_mid_body_lose_nothing() {
    Scenario::new("resets_mid_body", 101, 0.3, &[FaultKind::Reset]).run();
}

/// At rate 0.5 a call often meets several 500s in a row (each retry is a new
/// draw).
#[test]
fn bursts_of_500_lose_nothing() {
    Scenario::new("bursts_of_500", 102, 0.5, &[FaultKind::ServerError]).run();
}

/// 429 with `Retry-After: 1`: the engine waits what the server asks.
#[test]
fn too_many_requests_with_retry_after_lose_nothing() {
    Scenario::new("429_retry_after", 103, 0.25, &[FaultKind::TooManyRequests])
        .retry_after(Duration::from_secs(1))
        .run();
}

/// Answers held 1.5 s (the call applied) against a client whose idle timeout is
/// 1 s: it gives up, sends again, and the late answer goes nowhere. On an
/// offset-mode server, so several chunks of a file are in flight meanwhile.
#[test]
fn stalls_past_the_idle_timeout_lose_nothing() {
    Scenario::new("stalls_past_idle_timeout", 104, 0.25, &[FaultKind::Stall])
        .stall(Duration::from_millis(1500))
        .mode(WriteMode::Offset)
        .run();
}

/// The server keeps the first half of a chunk and answers 500.
#[test]
fn truncated_chunks_lose_nothing() {
    Scenario::new("truncated_chunks", 105, 0.3, &[FaultKind::Truncate]).run();
}

/// Calls applied whose answer never comes within the run (held until the
/// server stops): the client's retry meets what the server already has.
#[test]
fn lost_answers_lose_nothing() {
    Scenario::new("lost_answers", 106, 0.25, &[FaultKind::Stall])
        .stall(Duration::from_secs(3600))
        .run();
}

/// Every kind at once.
#[test]
fn every_fault_at_once_loses_nothing() {
    Scenario::new("every_fault_at_once", 107, 0.3, &FaultKind::ALL)
        .stall(Duration::from_millis(1500))
        .run();
}

// ---------------------------------------------------------------------------
// A full disk
// ---------------------------------------------------------------------------

/// The disk fills after the two largest files and 1000 bytes more: one file at
/// a time, largest first, the files that fit verify, the next one meets the
/// full disk mid-way and fails with the server's 507, which stops the run (no
/// other file fits either): the files after it are left unfinished.
#[test]
fn a_full_disk_fails_the_files_beyond_it_and_verifies_the_rest() {
    let mut by_size: Vec<_> = FILES.iter().map(|&(name, size)| (name, size)).collect();
    by_size.sort_by_key(|&(_, size)| std::cmp::Reverse(size));
    let limit = (by_size[0].1 + by_size[1].1 + 1000) as u64;
    // Which files the disk takes, as the knob promises.
    let mut room = limit;
    let mut full = false;
    // name -> "verified", "failed" or "unfinished".
    let mut expected = BTreeMap::new();
    for &(name, size) in &by_size {
        let end = if full {
            "unfinished"
        } else if size as u64 <= room {
            room -= size as u64;
            "verified"
        } else {
            full = true;
            "failed"
        };
        expected.insert(name, end);
    }
    for &errors in ERROR_STYLES {
        let dir = Dir::new(&format!("matrix_disk_full_{errors:?}"));
        let mock = Mock::start(
            MockConfig::new()
                .dataset(DS, TOKEN)
                .disk_full_after(limit)
                .plain_errors(errors == Errors::Plain),
        );
        let files = write_files(&dir);
        let run = upload(
            &dir,
            &mock.url(),
            &files,
            &["--parallel", "1", "--attempts", "3"],
        )
        .run();
        let shown = run.describe();
        let outcomes = Outcomes::read(&run.stdout, &shown);
        outcomes.check(&files, verified_copy(&mock), &shown);
        for (name, end) in &expected {
            match *end {
                "verified" => assert!(
                    outcomes.verified.contains_key(*name),
                    "{name} fits the disk but did not verify\n{shown}"
                ),
                "failed" => {
                    let error = outcomes.failed.get(*name).unwrap_or_else(|| {
                        panic!("{name} meets the full disk but did not fail\n{shown}")
                    });
                    assert!(
                        error.contains("507"),
                        "{name}'s error does not name the server's refusal (507): {error}\n{shown}"
                    );
                }
                _ => assert!(
                    outcomes.interrupted.contains(*name),
                    "{name} comes after the full disk stopped the run but was tried\n{shown}"
                ),
            }
        }
        assert_eq!(outcomes.failed.len(), 1, "{shown}");
        run.expect_code(1).never_shows(TOKEN);
        let faults = mock.stats().faults;
        assert!(faults.disk_full > 0, "{shown}");
        summary("disk_full", errors, &described(&faults), &outcomes);
    }
}

// ---------------------------------------------------------------------------
// The server killed and started again
// ---------------------------------------------------------------------------

/// `idb mock-server` on a store is killed with SIGKILL once the first chunk of
/// the run is acknowledged (a `progress` line), and started again on the same
/// port and store: the run goes on against it. Every answer is held 40 ms, so
/// the kill comes with most of the run still to do, and with calls applied
/// but not yet answered.
#[test]
fn a_server_killed_and_restarted_mid_run_loses_nothing() {
    for &errors in ERROR_STYLES {
        killed_and_restarted(errors, false);
    }
}

/// The same over tus (`--tus`, `--protocol tus`): the restarted server still
/// has every upload the killed one had created, at the offset it had
/// acknowledged, so no file starts over.
#[test]
fn a_tus_server_killed_and_restarted_mid_run_loses_nothing_and_starts_nothing_over() {
    killed_and_restarted(Errors::Json, true);
}

fn killed_and_restarted(errors: Errors, tus: bool) {
    {
        let protocol = if tus { "tus" } else { "chunked" };
        let dir = Dir::new(&format!("matrix_killed_{errors:?}_{protocol}"));
        let store = dir.join("store");
        let store_arg = store.to_str().expect("a UTF-8 temp path").to_owned();
        let dataset = format!("{DS}:{TOKEN}");
        let serve = |listen: &str| {
            let mut args = vec![
                "--listen",
                listen,
                "--dataset",
                &dataset,
                "--store",
                &store_arg,
                "--latency-ms",
                "40",
            ];
            if errors == Errors::Plain {
                args.push("--plain-errors");
            }
            if tus {
                args.push("--tus");
            }
            ServerProcess::start(&dir, &args)
        };
        let server = serve("127.0.0.1:0");
        let url = server.url.clone();
        let listen = url.strip_prefix("http://").expect("plain HTTP").to_owned();
        let files = write_files(&dir);

        // tus PATCHes are a part (5 MiB by default) at least: parts of a
        // chunk here, so the kill finds files half sent.
        let mut running = upload(&dir, &url, &files, &["--protocol", protocol])
            .args(if tus {
                &["--tus-part-size", CHUNK_ARG][..]
            } else {
                &[]
            })
            .own_stdout()
            .spawn();
        let stdout = running.take_stdout();
        let (line_tx, lines) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                all.push_str(&line);
                all.push('\n');
                // The test may have stopped listening: the rest is still kept.
                let _ = line_tx.send(line);
            }
            all
        });
        // The first acknowledgement of a file with more to send.
        loop {
            let line = lines
                .recv_timeout(HANG)
                .unwrap_or_else(|e| panic!("no progress line within {HANG:?} ({e})"));
            let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            let (acked, size) = (event["acked"].as_u64(), event["size"].as_u64());
            if event["event"] == "progress"
                && let (Some(acked), Some(size)) = (acked, size)
                && acked < size
            {
                break;
            }
        }
        let (_, _, killed_stderr) = server.signal("-KILL");
        let server = serve(&listen);
        assert_eq!(
            server.url, url,
            "the new server listens where the old one did"
        );

        let mut run = running.wait();
        run.stdout = reader.join().expect("the stdout reader");
        let shown = format!(
            "{}\n--- the killed server's stderr ---\n{killed_stderr}",
            run.describe()
        );
        let (status, _, stderr) = server.terminate();
        assert_eq!(status.code(), Some(0), "{stderr}");

        let outcomes = Outcomes::read(&run.stdout, &shown);
        let verified_copy = |name: &str| read_if_there(&store.join(DS).join(name));
        outcomes.check(&files, verified_copy, &shown);
        assert!(
            outcomes.failed.is_empty(),
            "files failed across a restart\n{shown}"
        );
        assert!(
            outcomes.retries > 0,
            "no call met the killed server: the kill came after the run\n{shown}"
        );
        run.expect_code(0).never_shows(TOKEN);
        if tus {
            assert!(!run.stderr.contains(" over from byte "), "{shown}");
        }
        summary(
            &format!("server_killed_and_restarted_{protocol}"),
            errors,
            "1 (kill -9, restart)",
            &outcomes,
        );
    }
}
