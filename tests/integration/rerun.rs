//! Re-running a command: files verified earlier are skipped by their receipts
//! (by metadata, or by blake3 when only the metadata changed), changed files go
//! up again (and meet the server's refusal of a verified name), `--force`
//! ignores receipts, and a run stopped by a signal sends only what is unfinished.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::util::{CHUNK, DS, Dir, Mock, TOKEN, journals};

/// Every file in the test's state directory, however deep.
pub fn state_files(dir: &Dir) -> Vec<PathBuf> {
    fn walk(path: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(path).into_iter().flatten() {
            let path = entry.expect("list the state directory").path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&dir.join("state"), &mut files);
    files
}

/// Asserts that no file of the test's state directory holds `secret`.
#[track_caller]
pub fn assert_state_never_holds(dir: &Dir, secret: &str) {
    for path in state_files(dir) {
        let text = std::fs::read(&path).expect("read a state file");
        assert!(
            !String::from_utf8_lossy(&text).contains(secret),
            "{} holds the secret",
            path.display()
        );
    }
}

/// The receipts files (`*.jsonl`) in the test's state directory.
pub fn receipt_files(dir: &Dir) -> Vec<PathBuf> {
    state_files(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect()
}

/// The token appears in no file of the state directory (journals, receipts,
/// the lock file).
#[track_caller]
fn assert_token_not_in_state(dir: &Dir) {
    let files = state_files(dir);
    assert!(!files.is_empty(), "the state directory is empty");
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "the token is in {}",
            file.display()
        );
    }
}

/// The line that says `path` was skipped (the date follows).
fn skipped(path: &Path) -> String {
    format!("skipped {}: already uploaded on ", path.display())
}

/// Sets a file's modification time (as `touch -d` would), keeping its bytes.
pub fn set_mtime(path: &Path, when: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(when))
        .unwrap_or_else(|e| panic!("set the mtime of {}: {e}", path.display()));
}

#[test]
fn a_rerun_after_success_sends_nothing_and_says_skipped() {
    let dir = Dir::new("a_rerun_after_success_sends_nothing_and_says_skipped");
    let mock = Mock::standard();
    let (one, _) = dir.random_file("one.bin", 3 * CHUNK + 1);
    let (two, _) = dir.random_file("two.bin", 100);
    let (empty, _) = dir.random_file("empty.bin", 0);
    let upload = || {
        dir.upload(&mock, DS)
            .token(TOKEN)
            .args([&one, &two, &empty])
    };
    upload().run().expect_code(0);
    let before = mock.stats();

    let run = upload().run();

    run.expect_code(0)
        .stderr_has(&skipped(&one))
        .stderr_has(&skipped(&two))
        .stderr_has(&skipped(&empty))
        .stderr_has(" UTC (receipt in the state directory)")
        .stderr_has("0 of 3 files verified (0 B), 3 skipped");
    assert!(run.verified_lines().is_empty(), "{}", run.describe());
    assert_eq!(
        mock.stats().requests_arrived,
        before.requests_arrived,
        "no setup, no transfer, no verify"
    );
    assert_eq!(receipt_files(&dir).len(), 1, "one receipts file a dataset");
    assert_token_not_in_state(&dir);
}

/// A receipt lost (a run killed with SIGKILL in the second before it saved
/// its receipts, or a state directory that could not take them): the re-run
/// meets the name in the dataset, and the message says it may be this very
/// file, verified by that run.
#[test]
fn a_lost_receipt_is_said_to_be_perhaps_this_very_file() {
    let dir = Dir::new("a_lost_receipt_is_said_to_be_perhaps_this_very_file");
    let mock = Mock::standard();
    let (one, _) = dir.random_file("one.bin", 100);
    let upload = || dir.upload(&mock, DS).token(TOKEN).arg(&one);
    upload().run().expect_code(0);
    for file in receipt_files(&dir) {
        std::fs::remove_file(file).unwrap();
    }

    upload()
        .run()
        .expect_code(1)
        .stderr_has("\"one.bin\" is already in dataset IDB-7000001 (verified earlier, not by a run")
        .stderr_has("a run killed or unable to save its receipts may have verified this very file");
}

/// Regression (found by an adversarial pass): a receipts file with a damaged
/// line in the middle loaded without a word, so `status` listed fewer
/// receipts and the re-run sent that file again, unexplained. The damage is
/// now said, naming the file and how many lines, by `status`, a dry run and
/// a run alike, and the good lines around it still count.
#[test]
fn a_damaged_receipt_line_is_warned_of_and_the_good_lines_still_skip() {
    let dir = Dir::new("a_damaged_receipt_line_is_warned_of_and_the_good_lines_still_skip");
    let mock = Mock::standard();
    let (a, _) = dir.random_file("a.bin", 300);
    let (b, _) = dir.random_file("b.bin", 200);
    let (c, _) = dir.random_file("c.bin", 100);
    let upload = || {
        dir.upload(&mock, DS)
            .token(TOKEN)
            .args(["--parallel", "1"])
            .args([&a, &b, &c])
    };
    upload().run().expect_code(0);
    let [file] = &receipt_files(&dir)[..] else {
        panic!("one receipts file");
    };
    let text = std::fs::read_to_string(file).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let cut = &lines[1][..lines[1].len() / 2];
    lines[1] = cut;
    std::fs::write(file, lines.join("\n") + "\n").unwrap();
    let warning = format!(
        "warning: {}: 1 of its 3 lines cannot be read (damaged); a file whose receipt was on a \
         damaged line is not skipped but sent again",
        file.display()
    );

    dir.idb(["status", "--dataset", DS, "--server", &mock.url()])
        .run()
        .expect_code(0)
        .stdout_has("verified uploads (receipts): 2\n")
        .stderr_has(&warning);
    upload()
        .arg("--dry-run")
        .run()
        .expect_code(0)
        .stdout_has(&format!("would upload {} (200 B)", b.display()))
        .stderr_has(&warning);
    upload()
        .run()
        .expect_code(1)
        .stderr_has(&warning)
        .stderr_has(&skipped(&a))
        .stderr_has(&skipped(&c))
        .stderr_has("\"b.bin\" is already in dataset");
}

/// A file whose name went up earlier with other bytes (another size): the dry
/// run says the real run will meet that name, rather than a plain "would
/// upload" (an adversarial pass found the real run then failing).
#[test]
fn a_dry_run_says_a_name_that_went_up_with_other_bytes() {
    let dir = Dir::new("a_dry_run_says_a_name_that_went_up_with_other_bytes");
    let mock = Mock::standard();
    let (grown, bytes) = dir.random_file("grown.bin", 100);
    let upload = || dir.upload(&mock, DS).token(TOKEN).arg(&grown);
    upload().run().expect_code(0);
    std::fs::write(&grown, [bytes.as_slice(), b"more"].concat()).unwrap();

    let run = upload().args(["--dry-run", "--json"]).run();
    run.expect_code(0)
        .stdout_has("\"event\":\"would_upload\"")
        .stdout_has("\"name_verified_at\":");
    let text = upload().arg("--dry-run").run();
    text.expect_code(0).stdout_has(&format!(
        "would upload {} (104 B), but its name went up on ",
        grown.display()
    ));
    text.stdout_has("with other bytes (100 B): the chunked API refuses a name the dataset holds");
}

#[test]
fn a_touched_file_is_skipped_and_a_modified_one_meets_the_verified_name() {
    let dir = Dir::new("a_touched_file_is_skipped_and_a_modified_one_meets_the_verified_name");
    let mock = Mock::standard();
    let (touched, _) = dir.random_file("touched.bin", 2 * CHUNK + 9);
    let (modified, first_bytes) = dir.random_file("modified.bin", CHUNK + 3);
    let upload = || {
        dir.upload(&mock, DS)
            .token(TOKEN)
            .args([&touched, &modified])
    };
    upload().run().expect_code(0);
    // Same bytes, new times; same size, other bytes.
    set_mtime(
        &touched,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
    );
    let mut other = first_bytes.clone();
    other[7] ^= 0xff;
    std::fs::write(&modified, &other).unwrap();
    let before = mock.stats();

    let run = upload().run();

    run.expect_code(1)
        .stderr_has(&skipped(&touched))
        .stderr_has("\"modified.bin\" is already in dataset IDB-7000001")
        .stderr_has("by a run recorded in the state directory")
        .stderr_has("remove it on the dataset's page, or rename the local file")
        .stderr_has("0 of 2 files verified (0 B), 1 skipped, 1 failed");
    let after = mock.stats();
    assert_eq!(
        after.requests_arrived - before.requests_arrived,
        1,
        "one setup, of the modified file, refused; nothing of the touched one"
    );
    assert_eq!(after.bytes_received, before.bytes_received, "no transfer");
    mock.assert_stored(DS, "modified.bin", &first_bytes);
    // The touched file's receipt was saved again with its new times: the next
    // run knows it without reading it.
    let receipts = std::fs::read_to_string(&receipt_files(&dir)[0]).unwrap();
    let touched_lines: Vec<&str> = receipts
        .lines()
        .filter(|l| l.contains("\"touched.bin\""))
        .collect();
    assert_eq!(touched_lines.len(), 2, "{receipts}");
    assert!(
        touched_lines[1].contains("\"modified\":[1000000,0]"),
        "{receipts}"
    );
}

#[test]
fn force_sends_setup_again_and_the_refusal_says_already_in_the_dataset() {
    let dir = Dir::new("force_sends_setup_again_and_the_refusal_says_already_in_the_dataset");
    let mock = Mock::standard();
    let (path, bytes) = dir.random_file("data.bin", 2 * CHUNK);
    dir.upload(&mock, DS)
        .token(TOKEN)
        .arg(&path)
        .run()
        .expect_code(0);
    let before = mock.stats();

    let run = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .arg("--force")
        .arg(&path)
        .run();

    run.expect_code(1)
        .stderr_has("\"data.bin\" is already in dataset IDB-7000001")
        .stderr_has("nothing of this file was sent")
        .stderr_has("--force does not overwrite")
        .stderr_has("0 of 1 files verified (0 B), 1 failed");
    assert!(!run.stderr.contains(&skipped(&path)), "{}", run.describe());
    assert!(!run.stderr.contains("gave up"), "{}", run.describe());
    let after = mock.stats();
    assert_eq!(after.requests_arrived - before.requests_arrived, 1, "setup");
    assert_eq!(after.bytes_received, before.bytes_received);
    mock.assert_stored(DS, "data.bin", &bytes);
}

/// A run stopped by SIGINT with two files verified and one part way: the same
/// command skips the two, resumes the third, and sends nothing twice.
#[test]
fn a_rerun_after_sigint_uploads_only_the_unfinished_files() {
    rerun_after_signal(libc::SIGINT, 130);
}

/// The same after SIGHUP (a closed terminal or ssh session): stopped as for
/// SIGTERM, exit 129. (Under `nohup`, SIGHUP stays ignored: this test then
/// cannot send it, and says so.)
#[test]
fn a_rerun_after_sighup_uploads_only_the_unfinished_files() {
    // SAFETY: reads the current action only.
    let ignored = unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old);
        old.sa_sigaction == libc::SIG_IGN
    };
    if ignored {
        eprintln!("skipped: SIGHUP is ignored in this test process (nohup?), and so in idb");
        return;
    }
    rerun_after_signal(libc::SIGHUP, 129);
}

fn rerun_after_signal(signal: libc::c_int, code: i32) {
    let dir = Dir::new(&format!("a_rerun_after_signal_{signal}"));
    let mock = Mock::standard();
    // One file at a time, largest first: first, second, then last.
    let (first, first_bytes) = dir.random_file("first.bin", 12 * CHUNK);
    let (second, second_bytes) = dir.random_file("second.bin", 11 * CHUNK);
    let (last, last_bytes) = dir.random_file("last.bin", 10 * CHUNK + 5);
    let upload = || {
        dir.upload(&mock, DS)
            .token(TOKEN)
            .args(["--parallel", "1"])
            .args([&last, &second, &first])
    };
    let running = upload().spawn();
    // Three chunks of the last file accepted: the other two are verified (its
    // setup came after their verify); hold it there.
    mock.block_on(mock.wait_for_chunks(12 + 11 + 3));
    mock.pause();
    running.signal(signal);
    if signal == libc::SIGHUP {
        // A closing terminal often sends it twice: still one clean stop.
        // (The two may arrive as one; the second cannot be forced apart.)
        running.signal(signal);
    }
    let run = running.wait();
    run.expect_code(code)
        .verified_exactly(&[(&first, &first_bytes), (&second, &second_bytes)])
        .stderr_has("interrupted: ");
    assert_eq!(journals(&dir).len(), 1, "{}", run.describe());
    assert_token_not_in_state(&dir);
    mock.resume();
    let before = mock.stats();
    let held: u64 = mock.accepted(DS, "last.bin").iter().map(|c| c.1).sum();

    let run = upload().run();

    run.expect_code(0)
        .verified_exactly(&[(&last, &last_bytes)])
        .stderr_has(&skipped(&first))
        .stderr_has(&skipped(&second))
        .stderr_has(&format!("resuming {}", last.display()))
        .stderr_has(" 2 skipped;")
        .stderr_has("1 of 3 files verified (");
    let after = mock.stats();
    assert_eq!(after.files_verified - before.files_verified, 1);
    // Only the rest of the unfinished file: what the server held when the first
    // run ended, give or take the chunk it had in flight (its answer lost, or
    // its body cut short by the exit).
    let sent = after.bytes_received - before.bytes_received;
    let rest = last_bytes.len() as u64 - held;
    assert!(
        sent <= rest + 2 * CHUNK as u64 && sent < last_bytes.len() as u64,
        "sent {sent} bytes, the rest was {rest}\n{}",
        run.describe()
    );
    for (name, bytes) in [
        ("first.bin", &first_bytes),
        ("second.bin", &second_bytes),
        ("last.bin", &last_bytes),
    ] {
        mock.assert_stored(DS, name, bytes);
    }
    assert!(journals(&dir).is_empty());
    assert_token_not_in_state(&dir);
}

/// A file under a directory whose name is not UTF-8 (its own name is): its
/// journal and receipt record the path as bytes, so it goes up over either
/// protocol (tus needs its journal to register it) and a re-run skips it.
#[test]
fn a_file_under_a_directory_named_in_other_bytes_than_utf8_goes_up_and_is_skipped_after() {
    use std::os::unix::ffi::OsStrExt;
    for protocol in ["tus", "chunked"] {
        let dir = Dir::new(&format!("non_utf8_directory_{protocol}"));
        let mock = Mock::start(idb_mock::MockConfig::new().dataset(DS, TOKEN).tus(true));
        let odd = std::ffi::OsStr::from_bytes(b"data/\xff\xfe dir/ok.bin");
        let bytes = crate::util::random_bytes("ok.bin", CHUNK + 5);
        let file = dir.write(odd, &bytes);
        let upload = || {
            dir.upload(&mock, DS)
                .token(TOKEN)
                .args(["--protocol", protocol])
                .arg(&file)
        };
        let run = upload().run();
        run.expect_code(0);
        assert!(!run.stderr.contains("warning"), "{}", run.describe());
        mock.assert_stored(DS, "ok.bin", &bytes);
        upload()
            .run()
            .expect_code(0)
            .stderr_has("data/\\xff\\xfe dir/ok.bin: already uploaded on ");
    }
}

/// `--server http://host//` is the server `http://host` was: a re-run so
/// spelt skips what the first run verified (it once uploaded it again).
#[test]
fn a_server_address_with_a_doubled_slash_is_the_same_server() {
    let dir = Dir::new("a_server_address_with_a_doubled_slash_is_the_same_server");
    let mock = Mock::standard();
    let (path, _) = dir.random_file("once.bin", 1000);
    let url = mock.url();
    let url = url.trim_end_matches('/');
    for server in [url.to_owned(), format!("{url}//")] {
        dir.upload_to(&server, DS, "64KiB")
            .token(TOKEN)
            .arg(&path)
            .run()
            .expect_code(0);
    }
    assert_eq!(mock.stats().files_verified, 1);
}
