//! What `idb upload` shows, and that showing it can neither lie nor crash: bars
//! on a terminal, plain lines in a log, JSON lines, escaped names, a closed
//! stdout, a token that expires mid-run.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::mpsc;

use idb_mock::MockConfig;

use crate::util::*;

/// A pseudo-terminal: the master side (the test reads what is drawn) and the
/// slave side as a file (the child's stderr).
fn pseudo_terminal() -> (std::fs::File, std::fs::File) {
    // SAFETY: posix_openpt, grantpt, unlockpt and ptsname_r are called on the
    // descriptor just opened; each result is checked; the descriptors are owned
    // by the Files returned and closed with them.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(
            master >= 0,
            "posix_openpt: {}",
            std::io::Error::last_os_error()
        );
        let master_file = std::fs::File::from(OwnedFd::from_raw_fd(master));
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
        // A size, as a terminal window has: bars are laid out to it.
        let size = libc::winsize {
            ws_row: 40,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        assert_eq!(libc::ioctl(master, libc::TIOCSWINSZ, &size), 0);
        let path = std::ffi::CStr::from_ptr(name.as_ptr()).to_str().unwrap();
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        (master_file, slave)
    }
}

/// Under a terminal a run draws one line per active file and a total line.
#[test]
fn a_terminal_gets_a_line_per_file_and_a_total() {
    let dir = Dir::new("a_terminal_gets_a_line_per_file_and_a_total");
    let mock = Mock::start(MockConfig::new().dataset(DS, TOKEN));
    let (one, one_bytes) = dir.random_file("first-file.bin", 40 * CHUNK);
    let (two, two_bytes) = dir.random_file("second-file.bin", 40 * CHUNK);
    let (master, slave) = pseudo_terminal();
    // What the terminal shows, as it comes.
    let (shown, screen) = mpsc::channel::<Vec<u8>>();
    let mut reader = master.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buffer = [0; 4096];
        // Ends with EIO once the child and the test closed the slave side.
        while let Ok(n @ 1..) = reader.read(&mut buffer) {
            if shown.send(buffer[..n].to_vec()).is_err() {
                break;
            }
        }
    });

    // Two files in flight, held at the server until the bars are seen.
    let running = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .args(["--parallel", "2"])
        .arg(&one)
        .arg(&two)
        .stderr_to(slave)
        .spawn();
    // Until each file has a chunk on the server (two chunks of the first
    // alone, on a loaded machine, left the second's bar undrawn for a minute).
    let mut chunks = 2;
    loop {
        mock.block_on(mock.wait_for_chunks(chunks));
        let started = |name| !mock.accepted(DS, name).is_empty();
        if started("first-file.bin") && started("second-file.bin") {
            break;
        }
        chunks += 1;
    }
    mock.pause();
    let mut seen = String::new();
    let wanted = ["first-file.bin", "second-file.bin", "0/2 files"];
    while !wanted.iter().all(|w| seen.contains(w)) {
        match screen.recv_timeout(HANG) {
            Ok(bytes) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            Err(_) => panic!("the terminal never showed {wanted:?}; it showed:\n{seen}"),
        }
    }
    mock.resume();
    let run = running.wait();
    drop(master);

    run.expect_code(0)
        .verified_exactly(&[(&one, &one_bytes), (&two, &two_bytes)]);
    assert!(
        seen.contains('\u{1b}'),
        "bars are drawn with escape codes: {seen:?}"
    );
}

/// With stderr in a log, no escape codes: a plain line per file event, and a
/// progress line every --progress-interval.
#[test]
fn a_log_gets_plain_lines_and_progress_lines() {
    let dir = Dir::new("a_log_gets_plain_lines_and_progress_lines");
    let mock = Mock::start(MockConfig::new().dataset(DS, TOKEN));
    let (path, bytes) = dir.random_file("logged.bin", 20 * CHUNK);

    let running = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .args(["--progress-interval", "0.05"])
        .arg(&path)
        .spawn();
    mock.block_on(mock.wait_for_chunks(2));
    // Held at the server: the run is in the middle, and says so now and then.
    mock.pause();
    let line = running.wait_for_stderr("progress: ");
    mock.resume();
    let run = running.wait();

    run.expect_code(0)
        .verified_exactly(&[(&path, &bytes)])
        .stderr_has("logged.bin (1.2 MiB)")
        .stderr_has("started ");
    assert!(line.contains("0 of 1 files done, 1 active"), "{line}");
    assert!(
        !run.stderr.contains('\u{1b}') && !run.stdout.contains('\u{1b}'),
        "no escape codes in a log\n{}",
        run.describe()
    );
}

/// A file name with a newline cannot forge a line: refused before anything is
/// sent, and shown escaped.
#[test]
fn a_name_with_a_newline_is_refused_and_shown_escaped() {
    let dir = Dir::new("a_name_with_a_newline_is_refused_and_shown_escaped");
    let mock = Mock::standard();
    let (forged, _) = dir.random_file("x (1 bytes)\nverified fake.bin", 1);
    let (escape, _) = dir.random_file("red\u{1b}[31m.bin", 1);

    let run = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .arg(&forged)
        .arg(&escape)
        .run();

    run.expect_code(2)
        .stderr_has("x (1 bytes)\\nverified fake.bin")
        .stderr_has("red\\x1b[31m.bin")
        .stderr_has("control character");
    assert!(run.stdout.is_empty(), "{}", run.describe());
    assert!(
        !run.stderr.lines().any(|l| l.starts_with("verified")) && !run.stderr.contains('\u{1b}'),
        "{}",
        run.describe()
    );
    assert_eq!(mock.stats().requests, 0);
}

/// `idb upload ... | head -1`: the reader goes away after one line; the run
/// stops as for Ctrl-C (exit 141), no panic, and the same command finishes.
#[test]
fn a_closed_stdout_stops_the_run_cleanly() {
    let dir = Dir::new("a_closed_stdout_stops_the_run_cleanly");
    let mock = Mock::standard();
    let files: Vec<_> = (0..6)
        .map(|i| dir.random_file(&format!("piped-{i}.bin"), 3 * CHUNK))
        .collect();
    let command = || {
        dir.upload(&mock, DS)
            .token(TOKEN)
            .args(["--parallel", "1"])
            .args(files.iter().map(|(p, _)| p))
    };

    let mut running = command().own_stdout().spawn();
    let mut stdout = BufReader::new(running.take_stdout());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with("verified "), "{first:?}");
    // As `head -1` does: read one line, then close the pipe; the server holds
    // the next file's calls until the pipe is closed, so the next line meets
    // a closed pipe.
    mock.pause();
    drop(stdout);
    mock.resume();
    let run = running.wait();

    run.expect_code(141)
        .stderr_has("standard output was closed")
        .stderr_has("run the same command to resume");
    assert!(!run.stderr.contains("panicked"), "{}", run.describe());
    let verified = mock.stats().files_verified;
    assert!(verified < 6, "the run stopped: {verified} files verified");

    // The closed pipe lost nothing: every file ends up in the dataset whole.
    let again = command().run();
    again.expect_code(0);
    for (path, bytes) in &files {
        let name = path.file_name().unwrap().to_str().unwrap();
        mock.assert_stored(DS, name, bytes);
    }
    assert!(!again.stderr.contains("panicked"), "{}", again.describe());
}

/// A reader of stdout that goes away before any result line (`| head -1`
/// while the first file is still going up, `| true`) stops the run within a
/// moment, not when the first result is written: the file under way is left
/// unfinished (exit 141), not sent to its end first.
#[test]
fn a_stdout_closed_before_any_result_stops_the_run_at_once() {
    let dir = Dir::new("a_stdout_closed_before_any_result_stops_the_run_at_once");
    // 6 MiB through 1 MiB/s: about 6 s, were the run not stopped.
    let mock = Mock::start(
        idb_mock::MockConfig::new()
            .dataset(DS, TOKEN)
            .bandwidth(Some(1024 * 1024)),
    );
    let (path, _) = dir.random_file("slow.bin", 6 * 1024 * 1024);
    let mut running = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .arg(&path)
        .own_stdout()
        .spawn();
    drop(running.take_stdout());
    let run = running.wait();
    run.expect_code(141)
        .stderr_has("stopping: standard output was closed")
        .stderr_has("1 file unfinished");
    assert_eq!(mock.stats().files_verified, 0, "{}", run.describe());
}

/// -vv logs one "call" line per request sent: a resumed or chosen protocol's
/// preparation and protocol 1's preparation of a verify send nothing and
/// are not logged as a setup and a second verify (an adversarial pass saw
/// both).
#[test]
fn very_verbose_logs_only_the_calls_that_were_sent() {
    let dir = Dir::new("very_verbose_logs_only_the_calls_that_were_sent");
    let mock = Mock::standard();
    let (path, _) = dir.random_file("calls.bin", 3 * CHUNK + 5);
    let run = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .args(["-vv", "--protocol", "chunked"])
        .arg(&path)
        .run();
    run.expect_code(0);
    let calls = |phase: &str| {
        run.stderr
            .lines()
            .filter(|l| l.contains(" call ") && l.contains(&format!("phase={phase} ")))
            .count()
    };
    assert_eq!(
        (calls("setup"), calls("transfer"), calls("verify")),
        (1, 4, 1),
        "{}",
        run.describe()
    );
    assert_eq!(mock.stats().requests, 6);
}

/// The token never shows, whatever is asked to be shown: -vv, --json, a log.
#[test]
fn the_token_never_shows_at_any_verbosity() {
    for flags in [&["-vv"][..], &["--json"], &["-q"], &["-v", "--json"]] {
        let dir = Dir::new("the_token_never_shows_at_any_verbosity");
        let mock = Mock::standard();
        let (path, bytes) = dir.random_file("secret-safe.bin", 3 * CHUNK + 5);
        let run = dir
            .upload(&mock, DS)
            .token(TOKEN)
            .args(flags)
            .arg(&path)
            .run();
        run.expect_code(0).never_shows(TOKEN);
        mock.assert_stored(DS, "secret-safe.bin", &bytes);
        if flags.contains(&"-vv") {
            run.stderr_has("setup answered").stderr_has("call");
        }
        // Nor in what the run leaves behind.
        crate::rerun::assert_state_never_holds(&dir, TOKEN);
    }
}

/// A token that expires mid-run, with --token-file: idb waits for a new one in
/// the file and the same run finishes, byte-exact; with --json the wait is an
/// event too (a script can tell a paused run from a stuck one).
#[test]
fn a_token_that_expires_mid_run_waits_for_a_new_one_in_the_file() {
    for json in [false, true] {
        let dir = Dir::new("a_token_that_expires_mid_run_waits_for_a_new_one_in_the_file");
        let mock = Mock::start(
            MockConfig::new()
                .dataset(DS, TOKEN)
                .latency(std::time::Duration::from_millis(5)),
        );
        let (path, bytes) = dir.random_file("long.bin", 40 * CHUNK);
        let token_file = dir.write("token", format!("{TOKEN}\n").as_bytes());
        const NEW: &str = "rotated-tok-W2x9";

        let running = dir
            .upload(&mock, DS)
            .args(json.then_some("--json"))
            .arg("--token-file")
            .arg(&token_file)
            .arg(&path)
            .spawn();
        mock.block_on(mock.wait_for_chunks(3));
        mock.expire_token(TOKEN);
        let waiting = running.wait_for_stderr("waiting up to 30 min for a new token");
        assert!(waiting.contains("token"), "{waiting}");
        mock.add_token(DS, NEW, None).unwrap();
        std::fs::write(&token_file, format!("{NEW}\n")).unwrap();
        let run = running.wait();

        run.expect_code(0)
            .stderr_has("found a new token")
            .never_shows(TOKEN)
            .never_shows(NEW);
        if json {
            run.stdout_has("\"event\":\"token_wait\"")
                .stdout_has("\"event\":\"token_found\"")
                .stdout_has("\"wait_seconds\":1800");
        } else {
            run.verified_exactly(&[(&path, &bytes)]);
        }
        mock.assert_stored(DS, "long.bin", &bytes);
    }
}

/// Regression: a token refused at the first transfer, after the setup had
/// accepted it, failed the run (exit 3) instead of waiting for a new one in
/// the file: only an acknowledged chunk counted as the token having worked.
#[test]
fn a_token_refused_right_after_its_setup_is_waited_for() {
    let dir = Dir::new("a_token_refused_right_after_its_setup_is_waited_for");
    let mock = Mock::start(MockConfig::new().dataset(DS, TOKEN));
    let proxy = crate::proxy::Proxy::start(
        mock.addr(),
        "name=\"phase\"\r\n\r\ntransfer",
        crate::proxy::Lose::Status(401),
        1,
    );
    let (path, bytes) = dir.random_file("first.bin", 3 * CHUNK);
    let token_file = dir.write("token", format!("{TOKEN}\n").as_bytes());
    const NEW: &str = "renewed-tok-Q7p1";

    let running = dir
        .upload_to(&proxy.url(), DS, CHUNK_ARG)
        .args(["--protocol", "chunked", "--token-file"])
        .arg(&token_file)
        .arg(&path)
        .spawn();
    running.wait_for_stderr("waiting up to 30 min for a new token");
    mock.add_token(DS, NEW, None).unwrap();
    std::fs::write(&token_file, format!("{NEW}\n")).unwrap();
    let run = running.wait();

    run.expect_code(0)
        .verified_exactly(&[(&path, &bytes)])
        .never_shows(NEW);
    mock.assert_stored(DS, "first.bin", &bytes);
}

/// --token-wait without --token-file does nothing, and says so (it was
/// accepted in silence); the run goes on.
#[test]
fn token_wait_without_a_token_file_is_said_to_do_nothing() {
    let dir = Dir::new("token_wait_without_a_token_file_is_said_to_do_nothing");
    let mock = Mock::standard();
    let (path, bytes) = dir.random_file("one.bin", 10);
    let note = "note: --token-wait has no effect without --token-file";

    let run = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .args(["--token-wait", "5m"])
        .arg(&path)
        .run();
    run.expect_code(0)
        .stderr_has(note)
        .verified_exactly(&[(&path, &bytes)]);
    // Its default is no reason to say anything.
    let (other, _) = dir.random_file("two.bin", 10);
    let quiet = dir.upload(&mock, DS).token(TOKEN).arg(&other).run();
    assert!(!quiet.stderr.contains(note), "{}", quiet.describe());
}

/// --token-wait 0: a token that expires mid-run stops the run at once (exit
/// 3), as without a token file.
#[test]
fn token_wait_zero_never_waits() {
    let dir = Dir::new("token_wait_zero_never_waits");
    let mock = Mock::start(
        MockConfig::new()
            .dataset(DS, TOKEN)
            .latency(std::time::Duration::from_millis(5)),
    );
    let (path, _) = dir.random_file("long.bin", 40 * CHUNK);
    let token_file = dir.write("token", format!("{TOKEN}\n").as_bytes());
    let running = dir
        .upload(&mock, DS)
        .args(["--token-wait", "0", "--token-file"])
        .arg(&token_file)
        .arg(&path)
        .spawn();
    mock.block_on(mock.wait_for_chunks(3));
    mock.expire_token(TOKEN);
    let run = running.wait();
    run.expect_code(3).stderr_has("put a new token in");
    assert!(!run.stderr.contains("waiting"), "{}", run.describe());
}

/// A wrong token from the start is not waited for: exit 3 at once.
#[test]
fn a_token_refused_from_the_start_is_not_waited_for() {
    let dir = Dir::new("a_token_refused_from_the_start_is_not_waited_for");
    let mock = Mock::standard();
    let (path, _) = dir.random_file("data.bin", 100);
    let token_file = dir.write("token", b"not-the-token\n");
    let run = dir
        .upload(&mock, DS)
        .arg("--token-file")
        .arg(&token_file)
        .arg(&path)
        .run();
    run.expect_code(3);
    assert!(!run.stderr.contains("waiting"), "{}", run.describe());

    // Over tus by partials, whose start of a file asks only OPTIONS (which
    // needs no token): that start is no sign the token works.
    let mock = Mock::start(MockConfig::new().dataset(DS, TOKEN).tus(true));
    let (path, _) = dir.random_file("partials.bin", 16 * 1024 * 1024 + 1);
    let run = dir
        .upload_to(&mock.url(), DS, "5MiB")
        .args(["--protocol", "tus", "--token-wait", "10s", "--token-file"])
        .arg(&token_file)
        .arg(&path)
        .run();
    run.expect_code(3);
    assert!(!run.stderr.contains("waiting"), "{}", run.describe());
}

/// Addresses: a missing scheme gets a suggestion; https:// to a plain-http
/// port says TLS is not spoken there, at once.
#[test]
fn server_addresses_get_helpful_errors() {
    let dir = Dir::new("server_addresses_get_helpful_errors");
    let mock = Mock::standard();
    let (path, _) = dir.random_file("data.bin", 100);
    let bare = mock.url().trim_start_matches("http://").to_owned();

    let run = dir
        .upload_to(&bare, DS, CHUNK_ARG)
        .token(TOKEN)
        .arg(&path)
        .run();
    run.expect_code(2)
        .stderr_has("--server")
        .stderr_has(&format!("did you mean https://{bare}"));

    let tls = mock.url().replacen("http://", "https://", 1);
    let run = dir
        .upload_to(&tls, DS, CHUNK_ARG)
        .token(TOKEN)
        .arg(&path)
        .run();
    run.expect_code(1)
        .stderr_has("does not speak TLS")
        .stderr_has(&format!("try {}", mock.url()));
}

/// Shell completions and the manual page come from the same definition as
/// the parser.
#[test]
fn completions_and_the_manual_page() {
    let dir = Dir::new("completions_and_the_manual_page");
    let run = dir.idb(["completions", "bash"]).run();
    run.expect_code(0).stdout_has("--token-file");
    let run = dir.idb(["man"]).run();
    run.expect_code(0).stdout_has(".TH idb");
    // A page per command, named as `man idb-upload` finds it; no help pages.
    let pages = dir.join("man/man1");
    dir.idb(["man", "--dir"]).arg(&pages).run().expect_code(0);
    let upload = std::fs::read_to_string(pages.join("idb-upload.1")).unwrap();
    assert!(upload.contains("chunk\\-size"), "{upload}");
    assert!(pages.join("idb-mock-server.1").exists());
    assert!(pages.join("idb.1").exists());
    assert!(!pages.join("idb-help.1").exists());
    let run = dir.idb(["upload", "--help"]).run();
    run.expect_code(0);
    // --dataset may come from IDB_DATASET: the usage line must not demand it.
    let usage = run
        .stdout
        .lines()
        .find(|l| l.starts_with("Usage:"))
        .unwrap();
    assert!(!usage.contains("--dataset"), "{usage}");
}

/// A dry run lists the files, the total and what receipts would skip, probes
/// the round trip, and sends no setup and no transfer.
#[test]
fn a_dry_run_lists_and_estimates_and_sends_nothing() {
    let dir = Dir::new("a_dry_run_lists_and_estimates_and_sends_nothing");
    let mock = Mock::standard();
    let (one, _) = dir.random_file("one.bin", 3 * CHUNK);
    let (two, _) = dir.random_file("two.bin", 10);
    let (done, _) = dir.random_file("done.bin", 10);
    dir.upload(&mock, DS)
        .token(TOKEN)
        .arg(&done)
        .run()
        .expect_code(0);
    let before = mock.stats();

    let run = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .args(["--dry-run", "--bwlimit", "1MiB"])
        .arg(&one)
        .arg(&two)
        .arg(&done)
        .run();

    run.expect_code(0)
        .stdout_has(&format!("would upload {} (192.0 KiB)", one.display()))
        .stdout_has(&format!("would upload {} (10 B)", two.display()))
        .stdout_has(&format!(
            "would skip {}: already uploaded on ",
            done.display()
        ))
        .stderr_has("dry run: 2 files to upload, 192.0 KiB in total (1 more skipped")
        .stderr_has("round trip to ")
        .stderr_has("about 8 calls, 2 files at once")
        .never_shows(TOKEN);
    let stats = mock.stats();
    // Only the two probes (HEAD of the server's address, which the mock does
    // not count): no upload call.
    assert_eq!(stats.requests, before.requests, "{stats:?}");
    assert_eq!(stats.bytes_received, before.bytes_received);
    assert_eq!(stats.files_verified, 1);
    assert!(journals(&dir).is_empty());
}

/// Regression (found by an adversarial pass): the dry run's `--json` lines
/// for files had `path` but no `name`, though every file event carries both;
/// `name` is the name the file is sent as.
#[test]
fn a_dry_run_json_line_names_each_file_as_it_is_sent() {
    let dir = Dir::new("a_dry_run_json_line_names_each_file_as_it_is_sent");
    let mock = Mock::standard();
    let (new, _) = dir.random_file("d/new.bin", 10);
    let (done, _) = dir.random_file("d/done.bin", 20);
    let (touched, _) = dir.random_file("d/touched.bin", 30);
    dir.upload(&mock, DS)
        .token(TOKEN)
        .args([&done, &touched])
        .run()
        .expect_code(0);
    crate::rerun::set_mtime(&touched, std::time::SystemTime::UNIX_EPOCH);

    let run = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .args(["--dry-run", "--json"])
        .args([&new, &done, &touched])
        .run();

    run.expect_code(0);
    let mut seen = Vec::new();
    for line in run.stdout.lines() {
        let object: serde_json::Value = serde_json::from_str(line).unwrap();
        let event = object["event"].as_str().unwrap().to_owned();
        if event == "dry_run" {
            continue;
        }
        let path = std::path::PathBuf::from(object["path"].as_str().unwrap());
        assert_eq!(
            object["name"].as_str(),
            path.file_name().and_then(|n| n.to_str()),
            "{line}"
        );
        seen.push((event, path));
    }
    assert_eq!(
        seen,
        [
            ("would_upload".to_owned(), new),
            ("would_skip".to_owned(), done),
            ("would_check".to_owned(), touched),
        ],
        "{}",
        run.describe()
    );
}

/// A dry run that cannot reach the server still ends its `--json` with the
/// `dry_run` object, saying why (found by an adversarial pass: the script got
/// no last line), and exits 1.
#[test]
fn a_dry_run_that_cannot_reach_the_server_still_ends_with_its_object() {
    let dir = Dir::new("a_dry_run_that_cannot_reach_the_server_still_ends_with_its_object");
    let (one, _) = dir.random_file("one.bin", 10);
    // A port nothing listens on: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);

    let run = dir
        .upload_to(&server, DS, "64KiB")
        .token(TOKEN)
        .args(["--dry-run", "--json"])
        .arg(&one)
        .run();

    run.expect_code(1);
    let last: serde_json::Value =
        serde_json::from_str(run.stdout.lines().last().expect("a last line")).unwrap();
    assert_eq!(last["event"], "dry_run", "{}", run.describe());
    assert_eq!(last["files"], 1);
    assert!(last["rtt_ms"].is_null());
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.contains("could not reach")),
        "{}",
        run.describe()
    );
}

/// `--json`: every line parses, carries the schema, and a run with a retry, a
/// skipped and a failing file shows every event type.
#[test]
fn json_lines_carry_every_event_of_a_run() {
    let dir = Dir::new("json_lines_carry_every_event_of_a_run");
    let faults = idb_mock::FaultConfig {
        rate: 0.0,
        kinds: vec![idb_mock::FaultKind::ServerError],
        ..idb_mock::FaultConfig::default()
    };
    let mock = Mock::start(MockConfig::new().dataset(DS, TOKEN).faults(faults));
    // Earlier runs: one file verified (its receipt skips it), and another local
    // file's upload of the name `taken.bin`.
    let (skipped, _) = dir.random_file("skipped.bin", 100);
    let (earlier, _) = dir.random_file("earlier/taken.bin", 50);
    for path in [&skipped, &earlier] {
        dir.upload(&mock, DS)
            .token(TOKEN)
            .arg(path)
            .run()
            .expect_code(0);
    }
    let (taken, _) = dir.random_file("taken.bin", 60);
    let (good, good_bytes) = dir.random_file("good.bin", 6 * CHUNK);

    // Every datafile request fails with 500 until the first retry is seen.
    mock.set_fault_rate(1.0).unwrap();
    let running = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .args(["--json", "--parallel", "1"])
        .args([&good, &taken, &skipped])
        .spawn();
    running.wait_for_stderr("retrying ");
    mock.set_fault_rate(0.0).unwrap();
    let run = running.wait();

    run.expect_code(1).never_shows(TOKEN);
    mock.assert_stored(DS, "good.bin", &good_bytes);
    let mut events = std::collections::BTreeSet::new();
    for line in run.stdout.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{}", run.describe()));
        assert_eq!(value["schema"], 1, "{line}");
        if value["event"] == "verified" {
            // The mock reports the size and blake3 it holds.
            assert_eq!(value["server_checked"], true, "{line}");
        }
        events.insert(value["event"].as_str().unwrap().to_owned());
    }
    let expected = [
        "failed", "progress", "protocol", "retry", "skipped", "started", "summary", "verified",
    ];
    assert_eq!(
        events.iter().map(String::as_str).collect::<Vec<_>>(),
        expected,
        "{}",
        run.describe()
    );
    let last: serde_json::Value = serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        (
            &last["event"],
            &last["verified"],
            &last["unchecked"],
            &last["skipped"],
            &last["failed"]
        ),
        (
            &"summary".into(),
            &1.into(),
            &0.into(),
            &1.into(),
            &1.into()
        )
    );
    assert!(
        !run.stderr.contains("reported no size"),
        "{}",
        run.describe()
    );
}
