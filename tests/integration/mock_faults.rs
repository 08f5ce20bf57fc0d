//! `idb mock-server`'s knobs for modes, faults and bandwidth, as a process: the
//! flags parse, bad values are refused with a message that says what to give, and
//! each knob shows on the wire (raw HTTP over a `TcpStream`, so a connection closed
//! without an answer is seen as exactly that).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::util::{CHUNK, Dir, HANG, ServerProcess};

const KEY: &str = "IDB-X";
const TOK: &str = "tok-x";

/// `--listen 127.0.0.1:0 --dataset IDB-X:tok-x --sink` and `extra`.
fn start(dir: &Dir, extra: &[&str]) -> ServerProcess {
    ServerProcess::sink(dir, extra)
}

/// Stops a server and asserts it exits 0.
fn stop(server: ServerProcess) {
    let (status, _, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

/// What came back on one raw connection.
struct Raw {
    /// Every byte the server wrote before the connection ended.
    received: Vec<u8>,
    took: Duration,
}

impl Raw {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.received).into_owned()
    }

    /// The status of the first line, if a status line came.
    fn status(&self) -> Option<u16> {
        let text = self.text();
        text.lines()
            .next()?
            .strip_prefix("HTTP/1.1 ")?
            .get(..3)?
            .parse()
            .ok()
    }

    /// A response header's value (names compared case-insensitively).
    fn header(&self, name: &str) -> Option<String> {
        let text = self.text();
        let head = text.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// POSTs an urlencoded `body` to the dataset's endpoint with `Connection: close`
/// and reads until the server ends the connection (at most [`HANG`]). Write
/// errors are ignored: a reset may come while the body is still going out.
fn post(url: &str, body: &[u8]) -> Raw {
    let addr = url.strip_prefix("http://").expect("an http:// URL");
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(HANG))
        .expect("set a read timeout");
    let mut request = format!(
        "POST /api/dataset/{KEY}/datafile HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Token token={TOK}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let _ = stream.write_all(&request);
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("no end of the connection within {HANG:?}")
            }
            Err(_) => break, // reset by the server
        }
    }
    Raw {
        received,
        took: start.elapsed(),
    }
}

fn setup_body(name: &str, size: u64) -> Vec<u8> {
    format!("phase=setup&filename={name}&filesize={size}").into_bytes()
}

// ---------------------------------------------------------------------------
// Refused values
// ---------------------------------------------------------------------------

/// Runs `idb mock-server` with `extra` and expects a usage error (exit 2) that
/// names each of `needles`, without ever listening.
#[track_caller]
fn refused(name: &str, extra: &[&str], needles: &[&str]) {
    let dir = Dir::new(name);
    let run = dir
        .idb([
            "mock-server",
            "--listen",
            "127.0.0.1:0",
            "--dataset",
            "IDB-X:tok-x",
            "--sink",
        ])
        .args(extra)
        .run();
    run.expect_code(2);
    for needle in needles {
        run.stderr_has(needle);
    }
    assert!(
        !run.stdout.contains("listening on"),
        "it must not listen\n{}",
        run.describe()
    );
}

#[test]
fn a_fault_rate_that_is_not_a_probability_is_refused() {
    refused(
        "fault_rate_2",
        &["--fault-rate", "2"],
        &["--fault-rate", "not a probability", "from 0 to 1"],
    );
    refused(
        "fault_rate_text",
        &["--fault-rate", "often"],
        &["--fault-rate", "often", "from 0 to 1"],
    );
    refused(
        "fault_rate_negative",
        &["--fault-rate=-0.1"],
        &["not a probability"],
    );
}

#[test]
fn an_unknown_fault_kind_is_refused() {
    refused(
        "fault_kinds_bogus",
        &["--fault-kinds", "500,bogus"],
        &[
            "--fault-kinds",
            "bogus",
            "500, 429, reset, stall or truncate",
        ],
    );
}

#[test]
fn an_unknown_mode_is_refused() {
    refused(
        "mode_weird",
        &["--mode", "weird"],
        &["--mode", "weird", "strict or offset"],
    );
}

#[test]
fn a_zero_or_malformed_bandwidth_is_refused() {
    refused(
        "bandwidth_zero",
        &["--bandwidth", "0"],
        &["--bandwidth", "lets nothing through"],
    );
    refused(
        "bandwidth_parsecs",
        &["--bandwidth", "8 parsecs"],
        &["--bandwidth", "unknown unit"],
    );
}

#[test]
fn help_lists_the_knobs() {
    let dir = Dir::new("mock_help_lists_the_knobs");
    let run = dir.idb(["mock-server", "--help"]).run();
    run.expect_code(0);
    for flag in [
        "--mode",
        "--fault-rate",
        "--fault-kinds",
        "--seed",
        "--stall-ms",
        "--retry-after",
        "--bandwidth",
        "--disk-full-after",
    ] {
        run.stdout_has(flag);
    }
}

// ---------------------------------------------------------------------------
// The knobs on the wire
// ---------------------------------------------------------------------------

#[test]
fn offset_mode_says_so_on_setup_and_strict_mode_does_not() {
    let dir = Dir::new("offset_mode_says_so_on_setup");
    let offset = start(&dir, &["--mode", "offset"]);
    let answer = post(&offset.url, &setup_body("a.bin", 3));
    assert_eq!(answer.status(), Some(200), "{}", answer.text());
    assert_eq!(answer.header("idb-write-mode").as_deref(), Some("offset"));
    stop(offset);

    let strict = start(&dir, &["--mode", "strict"]);
    let answer = post(&strict.url, &setup_body("a.bin", 3));
    assert_eq!(answer.status(), Some(200), "{}", answer.text());
    assert_eq!(answer.header("idb-write-mode"), None, "{}", answer.text());
    stop(strict);
}

#[test]
fn an_upload_to_an_offset_mode_server_verifies() {
    let dir = Dir::new("an_upload_to_an_offset_mode_server_verifies");
    let server = start(&dir, &["--mode", "offset"]);
    let (path, bytes) = dir.random_file("offset.bin", 5 * CHUNK + 3);
    let run = dir
        .upload_to(&server.url, KEY, "64KiB")
        .token(TOK)
        .arg(&path)
        .run();
    run.expect_code(0).verified_exactly(&[(&path, &bytes)]);
    stop(server);
}

#[test]
fn fault_flags_inject_429_with_the_given_retry_after() {
    let dir = Dir::new("fault_flags_inject_429");
    let server = start(
        &dir,
        &[
            "--fault-rate",
            "1",
            "--fault-kinds",
            "429",
            "--retry-after",
            "7",
        ],
    );
    let answer = post(&server.url, &setup_body("a.bin", 3));
    assert_eq!(answer.status(), Some(429), "{}", answer.text());
    assert_eq!(answer.header("retry-after").as_deref(), Some("7"));
    stop(server);
}

#[test]
fn a_reset_fault_ends_the_connection_without_a_status_line() {
    let dir = Dir::new("a_reset_fault_ends_the_connection");
    let server = start(&dir, &["--fault-rate", "1.0", "--fault-kinds", "reset"]);
    let answer = post(&server.url, &setup_body("a.bin", 3));
    assert!(
        answer.received.is_empty(),
        "a reset wrote {:?}",
        answer.text()
    );
    stop(server);
}

#[test]
fn a_stall_holds_the_answer_for_stall_ms() {
    let dir = Dir::new("a_stall_holds_the_answer");
    let server = start(
        &dir,
        &[
            "--fault-rate",
            "1",
            "--fault-kinds",
            "stall",
            "--stall-ms",
            "300",
        ],
    );
    let answer = post(&server.url, &setup_body("a.bin", 3));
    assert_eq!(answer.status(), Some(200), "{}", answer.text());
    assert!(
        answer.took >= Duration::from_millis(300),
        "answered after {:?}",
        answer.took
    );
    stop(server);
}

/// The statuses of 30 setups sent one after another to a new process.
fn statuses(dir: &Dir, seed: &str) -> Vec<Option<u16>> {
    let server = start(
        dir,
        &[
            "--fault-rate",
            "0.5",
            "--fault-kinds",
            "500,429",
            "--retry-after",
            "0",
            "--seed",
            seed,
        ],
    );
    let out = (0..30)
        .map(|i| post(&server.url, &setup_body(&format!("f{i}.bin"), 1)).status())
        .collect();
    stop(server);
    out
}

#[test]
fn the_same_seed_gives_the_same_faults_across_processes() {
    let dir = Dir::new("the_same_seed_gives_the_same_faults");
    let a = statuses(&dir, "9");
    let b = statuses(&dir, "9");
    let c = statuses(&dir, "10");
    assert_eq!(a, b, "same seed, same requests, other faults");
    assert_ne!(a, c, "another seed gave the very same 30 faults");
    for status in [200, 500, 429] {
        assert!(a.contains(&Some(status)), "no {status} in {a:?}");
    }
}

#[test]
fn disk_full_after_answers_507_once_the_payload_is_over_the_size() {
    let dir = Dir::new("disk_full_after_answers_507");
    let server = start(&dir, &["--disk-full-after", "5"]);
    let answer = post(&server.url, &setup_body("a.bin", 8));
    assert_eq!(answer.status(), Some(200), "{}", answer.text());
    let transfer = |offset: u64, chunk: &str| {
        let body =
            format!("phase=transfer&filename=a.bin&previous_size={offset}&bytechunk={chunk}");
        post(&server.url, body.as_bytes())
    };
    let answer = transfer(0, "abcd");
    assert_eq!(answer.status(), Some(200), "{}", answer.text());
    let answer = transfer(4, "efgh");
    assert_eq!(answer.status(), Some(507), "{}", answer.text());
    assert!(
        answer.text().contains("insufficient_storage"),
        "{}",
        answer.text()
    );
    stop(server);
}

/// A body of B bytes to a server capped at R bytes/s takes at least B/R (a lower
/// bound only, so the test holds on any machine).
#[test]
fn bandwidth_caps_what_a_connection_receives() {
    let dir = Dir::new("bandwidth_caps_what_a_connection_receives");
    let server = start(&dir, &["--bandwidth", "256KiB"]);
    let chunk = 128 * 1024;
    let answer = post(&server.url, &setup_body("a.bin", chunk as u64));
    assert_eq!(answer.status(), Some(200), "{}", answer.text());
    // Each `post` is a new connection, which has saved up nothing.
    let body = format!(
        "phase=transfer&filename=a.bin&previous_size=0&bytechunk={}",
        "x".repeat(chunk)
    );
    let answer = post(&server.url, body.as_bytes());
    assert_eq!(answer.status(), Some(200), "{}", answer.text());
    let least = Duration::from_secs_f64(body.len() as f64 / (256.0 * 1024.0));
    assert!(
        answer.took >= least,
        "{} bytes took {:?}, less than {least:?}",
        body.len(),
        answer.took
    );
    stop(server);
}

// ---------------------------------------------------------------------------
// --bandwidth-total: one cap for all connections together
// ---------------------------------------------------------------------------

#[test]
fn a_zero_or_malformed_total_bandwidth_is_refused() {
    refused(
        "bandwidth_total_zero",
        &["--bandwidth-total", "0"],
        &["--bandwidth-total", "lets nothing through"],
    );
    refused(
        "bandwidth_total_parsecs",
        &["--bandwidth-total", "8 parsecs"],
        &["--bandwidth-total", "unknown unit"],
    );
}

/// Two bodies of B bytes sent at once, each on its own connection, to a server
/// capped at R bytes/s in total: the later answer comes no sooner than 2B/R,
/// less one burst the idle server saved up (a lower bound only; a cap per
/// connection would let both through in B/R).
#[test]
fn bandwidth_total_caps_all_connections_together() {
    let dir = Dir::new("bandwidth_total_caps_all_connections_together");
    let server = start(&dir, &["--bandwidth-total", "256KiB"]);
    let chunk = 128 * 1024;
    let bodies: Vec<Vec<u8>> = ["a.bin", "b.bin"]
        .iter()
        .map(|name| {
            let answer = post(&server.url, &setup_body(name, chunk as u64));
            assert_eq!(answer.status(), Some(200), "{}", answer.text());
            format!(
                "phase=transfer&filename={name}&previous_size=0&bytechunk={}",
                "x".repeat(chunk)
            )
            .into_bytes()
        })
        .collect();
    // From before either connection opens to after both answered: skew between
    // the two threads' starts cannot make it shorter than the cap allows.
    let started = std::time::Instant::now();
    let answers: Vec<Raw> = std::thread::scope(|scope| {
        let sending: Vec<_> = bodies
            .iter()
            .map(|body| scope.spawn(|| post(&server.url, body)))
            .collect();
        sending.into_iter().map(|s| s.join().unwrap()).collect()
    });
    for answer in &answers {
        assert_eq!(answer.status(), Some(200), "{}", answer.text());
    }
    let sent: usize = bodies.iter().map(Vec::len).sum();
    let least = Duration::from_secs_f64(sent as f64 / (256.0 * 1024.0))
        .saturating_sub(idb_mock::BANDWIDTH_BURST);
    let took = started.elapsed();
    assert!(
        took >= least,
        "{sent} bytes on two connections took {took:?}, less than {least:?}"
    );
    stop(server);
}
