//! `idb upload` against servers the mock will not play, each a few lines of raw
//! HTTP on 127.0.0.1:0: one that quotes the request's headers back in its
//! errors, one that accepts connections and never answers, and a plain web
//! server that is no Data Bank.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::util::{DS, Dir};

/// A token with characters that percent-encoding and HTML change.
const SECRET: &str = "cli/s3cr3t+T0k&en%9";

/// How the server answers a request of `phase` whose header lines are
/// `headers`: `None` leaves it unanswered, the connection open.
type Answer = dyn Fn(&str, &[String]) -> Option<(u16, String, Vec<u8>)> + Send + Sync;

/// A raw HTTP/1.1 server, a thread per connection; it lives as long as the
/// test process (its threads end when their client goes).
struct RawServer {
    url: String,
    requests: Arc<AtomicUsize>,
}

impl RawServer {
    fn start(answer: Arc<Answer>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        std::thread::spawn(move || {
            for socket in listener.incoming().flatten() {
                let (answer, counter) = (Arc::clone(&answer), Arc::clone(&counter));
                std::thread::spawn(move || serve(socket, &*answer, &counter));
            }
        });
        Self { url, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn serve(mut socket: TcpStream, answer: &Answer, counter: &AtomicUsize) {
    let mut buffer = Vec::new();
    let mut piece = [0; 64 * 1024];
    loop {
        // A request: its head, then Content-Length bytes of body.
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            match socket.read(&mut piece) {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&piece[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let headers: Vec<String> = head.split("\r\n").skip(1).map(str::to_owned).collect();
        let length: usize = headers
            .iter()
            .find_map(|h| h.strip_prefix("content-length: "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + 4 + length {
            match socket.read(&mut piece) {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&piece[..n]),
            }
        }
        let body =
            String::from_utf8_lossy(&buffer[head_end + 4..head_end + 4 + length]).into_owned();
        buffer.drain(..head_end + 4 + length);
        counter.fetch_add(1, Ordering::SeqCst);
        let phase = ["setup", "transfer", "verify"]
            .into_iter()
            .find(|p| body.contains(&format!("name=\"phase\"\r\n\r\n{p}\r\n")))
            .unwrap_or("");
        let Some((status, reason, body)) = answer(phase, &headers) else {
            // Never answer: wait for the client to give up and close.
            while matches!(socket.read(&mut piece), Ok(n) if n > 0) {}
            return;
        };
        let mut out = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        if socket.write_all(&out).is_err() {
            return;
        }
    }
}

/// `text` percent-encoded, every byte but letters and digits, in upper or
/// lower case hex.
fn percent(text: &str, upper: bool) -> String {
    text.bytes()
        .map(|b| match (b.is_ascii_alphanumeric(), upper) {
            (true, _) => (b as char).to_string(),
            (false, true) => format!("%{b:02X}"),
            (false, false) => format!("%{b:02x}"),
        })
        .collect()
}

/// Every header, `Authorization` first, as sent and percent-encoded both ways.
fn echo(headers: &[String]) -> String {
    let mut headers = headers.to_vec();
    headers.sort_by_key(|h| !h.starts_with("authorization"));
    headers
        .iter()
        .flat_map(|h| [h.clone(), percent(h, true), percent(h, false)])
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A server answering every request of `failing` (and after) with `status`,
/// echoing every request header in its body and reason phrase, and the phases
/// before with 200: nothing of the token reaches stdout (`--json`), stderr
/// (`-vv`) or the state directory, while what the server said is shown.
#[test]
fn a_server_echoing_the_headers_in_its_errors_never_gets_the_token_printed() {
    let phases = ["setup", "transfer", "verify"];
    // With the requests each run makes: the protocol probe (OPTIONS on the
    // tus endpoint, answered 200 without tus headers), setup, the chunks
    // before a failing one, and two attempts of a 500.
    let cases = [
        ("setup", 400, 2),
        ("transfer", 403, 3),
        ("verify", 500, 6),
        ("setup", 422, 2),
    ];
    for (failing, status, requests) in cases {
        let dir = Dir::new("echoing_server");
        let server = RawServer::start(Arc::new(move |phase: &str, headers: &[String]| {
            let at = |p: &str| phases.iter().position(|q| *q == p);
            if at(phase) < at(failing) {
                return Some((200, "OK".to_owned(), Vec::new()));
            }
            let echo = echo(headers);
            Some((
                status,
                echo.clone(),
                format!("refused: {echo}").into_bytes(),
            ))
        }));
        let (path, _) = dir.random_file("data.bin", 100_000);
        let run = dir
            .upload_to(&server.url, DS, "64KiB")
            .token(SECRET)
            .args(["--json", "-vv", "--attempts", "2"])
            .arg(&path)
            .run();

        let case = format!("{failing} answered {status}");
        run.expect_code(1);
        for form in [
            SECRET.to_owned(),
            percent(SECRET, true),
            percent(SECRET, false),
        ] {
            run.never_shows(&form);
            for file in crate::rerun::state_files(&dir) {
                let text = std::fs::read(&file).unwrap();
                assert!(
                    !String::from_utf8_lossy(&text).contains(&form),
                    "{case}: {} holds {form:?}",
                    file.display()
                );
            }
        }
        // What the server said was shown, with the token cut out of it.
        run.stderr_has("<redacted>").stdout_has("<redacted>");
        assert!(
            run.stdout.contains("\"event\":\"failed\""),
            "{case}\n{}",
            run.describe()
        );
        assert_eq!(server.requests(), requests, "{case}\n{}", run.describe());
    }
}

/// A server that takes connections and never answers: reported after the
/// attempts, saying so, exit 1. (A short idle timeout keeps the test quick.)
#[test]
fn a_server_that_never_answers_is_reported_as_such() {
    let dir = Dir::new("silent_server");
    let server = RawServer::start(Arc::new(|_: &str, _: &[String]| None));
    let (path, _) = dir.random_file("data.bin", 1000);
    let run = dir
        .upload_to(&server.url, DS, "64KiB")
        .token(SECRET)
        .args(["--idle-timeout", "1", "--attempts", "2"])
        .arg(&path)
        .run();

    run.expect_code(1)
        .stderr_has(&format!(
            "{}/ accepted the connection but never answered (2 attempts, idle timeout 1 s each)",
            server.url
        ))
        .never_shows(SECRET);
    assert_eq!(server.requests(), 2, "{}", run.describe());
}

/// A plain web server: its answer to setup (501, or a page with 200) says it
/// is no Data Bank; one request, exit 1, and what it sent is quoted (a page
/// by its title).
#[test]
fn a_web_server_is_not_taken_for_a_data_bank() {
    let page = b"<!DOCTYPE html><html><title>Welcome to nginx!</title></html>";
    for (status, body, quoted) in [
        (501, &b"Not Implemented"[..], "Not Implemented"),
        (200, &page[..], "Welcome to nginx!"),
    ] {
        let dir = Dir::new("web_server");
        let server = RawServer::start(Arc::new(move |_: &str, _: &[String]| {
            Some((status, "Whatever".to_owned(), body.to_vec()))
        }));
        let (one, _) = dir.random_file("one.bin", 1000);
        let (two, _) = dir.random_file("two.bin", 1000);
        let run = dir
            .upload_to(&server.url, DS, "64KiB")
            .token(SECRET)
            .args(["--parallel", "1"])
            .arg(&one)
            .arg(&two)
            .run();

        run.expect_code(1)
            .stderr_has(&format!(
                "this does not look like a Data Bank API at {}/",
                server.url
            ))
            .stderr_has(quoted)
            .stderr_has("1 file unfinished; fix the error above, then run the same command")
            .never_shows(SECRET);
        // The protocol probe (no tus there), then one setup.
        assert_eq!(server.requests(), 2, "{}", run.describe());
    }
}

/// A server that answers 200 and nothing more to every call (all the documented
/// API promises): the files are verified by its word alone, and the run says
/// so, in the summary and in `--json`; the results stay on stdout with `-q`.
#[test]
fn a_server_that_reports_nothing_to_compare_is_said_to_have_checked_nothing() {
    let dir = Dir::new("says_only_ok");
    let server = RawServer::start(Arc::new(|_: &str, _: &[String]| {
        Some((200, "OK".to_owned(), b"OK".to_vec()))
    }));
    let (one, _) = dir.random_file("one.bin", 1000);
    let (two, _) = dir.random_file("two.bin", 1000);
    let run = dir
        .upload_to(&server.url, DS, "64KiB")
        .token(SECRET)
        .arg("--json")
        .arg(&one)
        .arg(&two)
        .run();
    run.expect_code(0)
        .stderr_has("for all of the files verified the server reported no blake3");
    let lines: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let verified: Vec<_> = lines.iter().filter(|l| l["event"] == "verified").collect();
    assert_eq!(verified.len(), 2, "{}", run.describe());
    assert!(verified.iter().all(|l| l["server_checked"] == false));
    let summary = lines.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["unchecked"], 2);

    // -q keeps the results on stdout, and the note, which is the summary's.
    let dir = Dir::new("says_only_ok_quiet");
    let (three, _) = dir.random_file("three.bin", 1000);
    let run = dir
        .upload_to(&server.url, DS, "64KiB")
        .token(SECRET)
        .arg("-q")
        .arg(&three)
        .run();
    run.expect_code(0)
        .stdout_has("verified ")
        .stderr_has("reported no blake3");
}

/// A server (or a proxy before it) that forbids everything with 403 is a
/// refusal told as it is, as protocol 1 tells it, not a refused token (the
/// service refuses a token with 401): exit 1, whichever protocol was asked.
#[test]
fn a_403_to_everything_is_a_refusal_not_a_refused_token() {
    for protocol in ["auto", "tus", "chunked"] {
        let dir = Dir::new("forbidden");
        let server = RawServer::start(Arc::new(|_: &str, _: &[String]| {
            let page = b"<html><title>Forbidden</title></html>".to_vec();
            Some((403, "Forbidden".to_owned(), page))
        }));
        let (one, _) = dir.random_file("one.bin", 1000);
        let run = dir
            .upload_to(&server.url, DS, "64KiB")
            .token(SECRET)
            .args(["--protocol", protocol])
            .arg(&one)
            .run();
        run.expect_code(1)
            .stderr_has("HTTP 403")
            .never_shows("HTTP 401")
            .never_shows(SECRET);
    }
}

/// A server whose verify receipt names the file otherwise than it was sent
/// (one that trims or changes names: " a.bin" kept as "a.bin" overwrites
/// another file) has not verified this file: it fails, saying both names,
/// though size and blake3 match.
#[test]
fn a_receipt_of_another_name_is_no_verification() {
    let dir = Dir::new("renaming_server");
    let bytes = crate::util::random_bytes("renamed", 1000);
    let receipt = serde_json::json!({
        "filename": "a.bin",
        "size": 1000,
        "blake3": blake3::hash(&bytes).to_hex().to_string(),
    })
    .to_string()
    .into_bytes();
    let server = RawServer::start(Arc::new(move |phase: &str, _: &[String]| {
        let body = if phase == "verify" {
            receipt.clone()
        } else {
            Vec::new()
        };
        Some((200, "OK".to_owned(), body))
    }));
    let path = dir.write(" a.bin", &bytes);
    dir.upload_to(&server.url, DS, "64KiB")
        .token(SECRET)
        .args(["--protocol", "chunked"])
        .arg(&path)
        .run()
        .expect_code(1)
        .stderr_has(
            "the server verified it as \"a.bin\", not as \" a.bin\", the name it was sent as",
        )
        .stderr_has("0 of 1 files verified (0 B), 1 failed");
}
