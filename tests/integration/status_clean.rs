//! `idb status` (what the state directory knows of a dataset) and `idb clean`
//! (stale journals removed, a name in use kept, receipts never removed).

use std::time::{Duration, SystemTime};

use crate::rerun::{receipt_files, set_mtime};
use crate::util::{CHUNK, DS, Dir, Mock, TOKEN, blake3_hex, journals};

/// What a stopped run left: `done.bin` (12 chunks) went first and was verified
/// (a receipt); the run was stopped by SIGINT after 3 chunks of `part.bin` (10
/// chunks), whose journal stays.
struct Leftovers {
    done_bytes: Vec<u8>,
    part: std::path::PathBuf,
}

impl Leftovers {
    fn make(dir: &Dir, mock: &Mock) -> Self {
        let (done, done_bytes) = dir.random_file("done.bin", 12 * CHUNK);
        let (part, _) = dir.random_file("part.bin", 10 * CHUNK);
        let running = dir
            .upload(mock, DS)
            .token(TOKEN)
            .args(["--parallel", "1"])
            .args([&part, &done])
            .spawn();
        mock.block_on(mock.wait_for_chunks(12 + 3));
        // Hold the rest, so the stop finds it part way.
        mock.pause();
        running.signal(libc::SIGINT);
        running.wait().expect_code(130);
        mock.resume();
        assert_eq!(journals(dir).len(), 1);
        Self { done_bytes, part }
    }

    /// Uploads `part.bin` again with `args`, and asserts that it resumed from
    /// its journal rather than starting over.
    fn resumed_with(&self, dir: &Dir, mock: &Mock, args: &[&str]) {
        let before = mock.stats().bytes_received;
        dir.upload(mock, DS)
            .token(TOKEN)
            .args(args)
            .arg(&self.part)
            .run()
            .expect_code(0)
            .stderr_has(&format!("resuming {} at byte ", self.part.display()));
        assert!(
            mock.stats().bytes_received - before < 10 * CHUNK as u64,
            "the re-run resumed, not started over"
        );
    }
}

fn status(dir: &Dir, mock: &Mock, dataset: &str) -> crate::util::Run {
    dir.idb(["status", "--dataset", dataset, "--server", &mock.url()])
        .run()
}

#[test]
fn status_lists_unfinished_uploads_and_receipts() {
    let dir = Dir::new("status_lists_unfinished_uploads_and_receipts");
    let mock = Mock::standard();
    let left = Leftovers::make(&dir, &mock);

    let run = status(&dir, &mock, DS);

    run.expect_code(0)
        .stdout_has(&format!(
            "unfinished uploads into {DS} on {}/: 1\n",
            mock.url()
        ))
        .stdout_has(&format!("  part.bin  {}  ", left.part.display()))
        .stdout_has(" of 640.0 KiB acknowledged, saved ")
        .stdout_has("verified uploads (receipts): 1\n")
        .stdout_has("  done.bin  768.0 KiB  verified 2")
        .stdout_has(&format!(
            " UTC  blake3 {}\n",
            &blake3_hex(&left.done_bytes)[..12]
        ));
    assert!(!run.stdout.contains("changed since"), "{}", run.describe());

    // The local file changes: said. Another dataset: nothing.
    std::fs::write(&left.part, b"other").unwrap();
    status(&dir, &mock, DS)
        .expect_code(0)
        .stdout_has("; the local file changed since (a re-run starts it over)");
    status(&dir, &mock, "IDB-7000002")
        .expect_code(0)
        .stdout_has("unfinished uploads into IDB-7000002 on ")
        .stdout_has(": 0\n")
        .stdout_has("verified uploads (receipts): 0\n");
    // Asked with another address of the server: none, and where they are.
    let other = dir
        .idb(["status", "--dataset", DS, "--server", "http://localhost:1/"])
        .run();
    other
        .expect_code(0)
        .stdout_has(&format!(
            "unfinished uploads into {DS} on http://localhost:1/: 0\n"
        ))
        .stderr_has(&format!(
            "note: unfinished uploads into {DS} are recorded for another server address: {}/;",
            mock.url()
        ));
}

#[test]
fn clean_removes_the_journal_of_a_changed_file_and_keeps_receipts() {
    let dir = Dir::new("clean_removes_the_journal_of_a_changed_file_and_keeps_receipts");
    let mock = Mock::standard();
    let left = Leftovers::make(&dir, &mock);

    // A fresh journal of an unchanged file is not stale.
    dir.idb(["clean"])
        .run()
        .expect_code(0)
        .stderr_has("removed 0 stale journals");
    assert_eq!(journals(&dir).len(), 1);

    let mut bytes = std::fs::read(&left.part).unwrap();
    bytes.push(1);
    std::fs::write(&left.part, &bytes).unwrap();
    let what = format!(
        "the journal of {} (part.bin into {DS} on ",
        left.part.display()
    );
    dir.idb(["clean", "--dry-run"])
        .run()
        .expect_code(0)
        .stdout_has(&format!("would remove {what}"))
        .stdout_has("the local file changed since")
        .stderr_has("nothing was removed (--dry-run)");
    assert_eq!(journals(&dir).len(), 1, "a dry run removes nothing");

    // Another dataset's scope leaves it alone.
    dir.idb(["clean", "--dataset", "IDB-7000002"])
        .run()
        .expect_code(0)
        .stderr_has("removed 0 stale journals");
    assert_eq!(journals(&dir).len(), 1);

    dir.idb(["clean", "--dataset", DS])
        .run()
        .expect_code(0)
        .stdout_has(&format!("removed {what}"))
        .stderr_has("removed 1 stale journals")
        .stderr_has("receipts of verified files are kept");
    assert!(journals(&dir).is_empty());
    assert_eq!(receipt_files(&dir).len(), 1, "receipts are never removed");
}

/// Regression (found by an adversarial pass): after a `chmod` of a file
/// whose upload was stopped, `status` said a re-run starts it over and
/// `clean` removed its journal, though the upload resumes (the bytes the
/// server holds are hashed again). Both now say what the re-run does, the
/// journal is kept, and the re-run resumes.
#[test]
fn a_chmod_after_a_stop_keeps_the_journal_and_the_upload_resumes() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new("a_chmod_after_a_stop_keeps_the_journal_and_the_upload_resumes");
    let mock = Mock::standard();
    let left = Leftovers::make(&dir, &mock);
    std::fs::set_permissions(&left.part, std::fs::Permissions::from_mode(0o600)).unwrap();

    let run = status(&dir, &mock, DS);
    run.expect_code(0)
        .stdout_has("; the local file's status changed since (a chmod, ")
        .stdout_has("a re-run hashes again what it read before (at least the ");
    assert!(!run.stdout.contains("starts it over"), "{}", run.describe());
    dir.idb(["clean"])
        .run()
        .expect_code(0)
        .stderr_has("removed 0 stale journals");
    assert_eq!(journals(&dir).len(), 1);

    left.resumed_with(&dir, &mock, &["--parallel", "1"]);
}

#[test]
fn clean_help_says_receipts_are_never_removed() {
    let dir = Dir::new("clean_help_says_receipts_are_never_removed");
    dir.idb(["clean", "--help"])
        .run()
        .expect_code(0)
        .stdout_has("Receipts of verified files are never removed");
}

/// A state directory that is not there (a mistyped --state-dir) is said to
/// be absent, by status and by clean, rather than shown as merely empty.
#[test]
fn an_absent_state_directory_is_said_to_be_absent() {
    let dir = Dir::new("an_absent_state_directory_is_said_to_be_absent");
    let missing = dir.join("no-such-state");
    let absent = " (it does not exist: no upload has recorded anything there)";
    dir.idb(["status", "--dataset", "IDB-1", "--state-dir"])
        .arg(&missing)
        .run()
        .expect_code(0)
        .stdout_has(&format!("state directory: {}{absent}", missing.display()));
    dir.idb(["clean", "--state-dir"])
        .arg(&missing)
        .run()
        .expect_code(0)
        .stderr_has(&format!(
            "stale journals from {}{absent}",
            missing.display()
        ));
    assert!(!missing.exists(), "neither made it");
}

/// A journal not written for longer than a token lives is stale (its mtime is
/// set back rather than waited for); while an idb uploads that name, it is kept.
#[test]
fn clean_removes_old_journals_but_not_one_in_use() {
    let dir = Dir::new("clean_removes_old_journals_but_not_one_in_use");
    let mock = Mock::standard();
    let left = Leftovers::make(&dir, &mock);
    let journal = journals(&dir).pop().unwrap();
    set_mtime(
        &journal,
        SystemTime::now() - Duration::from_secs(4 * 24 * 3600 + 60),
    );
    let what = format!("the journal of {}", left.part.display());
    dir.idb(["clean", "--dry-run"])
        .run()
        .expect_code(0)
        .stdout_has(&format!("would remove {what}"))
        .stdout_has("not written for 4 days (a token lives 3 days)")
        .stderr_has("1 stale journals in ");

    // The same upload resumes; its first transfer is held at the server, so it
    // holds the name meanwhile (and writes no journal: nothing is acknowledged).
    mock.pause();
    let arrived = mock.stats().requests_arrived;
    let running = dir.upload(&mock, DS).token(TOKEN).arg(&left.part).spawn();
    mock.block_on(mock.wait_for_requests(arrived + 1));
    dir.idb(["clean"])
        .run()
        .expect_code(0)
        .stdout_has(&format!("kept {what} (part.bin into {DS} on "))
        .stdout_has(&format!(
            "but idb (pid {}) is uploading that name now",
            running.pid()
        ))
        .stderr_has("removed 0 stale journals");
    // A dry run meanwhile counts it as kept, not as one it would remove.
    dir.idb(["clean", "--dry-run"])
        .run()
        .expect_code(0)
        .stdout_has(&format!("kept {what}"))
        .stderr_has("0 stale journals in ");
    assert_eq!(journals(&dir), [journal]);

    // Once it is gone, the old journal goes.
    running.kill9();
    mock.resume();
    dir.idb(["clean"])
        .run()
        .expect_code(0)
        .stdout_has(&format!("removed {what}"))
        .stdout_has("not written for 4 days")
        .stderr_has("removed 1 stale journals");
    assert!(journals(&dir).is_empty());
}

/// Regression (found by an adversarial pass): `status` and `clean` passed
/// over a damaged journal without a word, and `clean` never removed it
/// ("0 stale journals"), though it can never help a resume. `status` now
/// lists it, in the words a run uses ("is damaged"), and `clean` removes it,
/// whatever --dataset says (it cannot say whose it was), and says so. A
/// journal of another version is listed and kept.
#[test]
fn damaged_journals_are_listed_by_status_and_removed_by_clean() {
    let dir = Dir::new("damaged_journals_are_listed_by_status_and_removed_by_clean");
    let garbage = dir.write(
        "state/journal/00112233445566778899aabbccddeeff.json",
        b"\x00garbage, not a journal",
    );
    let newer = dir.write(
        "state/journal/ffeeddccbbaa99887766554433221100.json",
        br#"{"version": 99, "written by": "a later idb"}"#,
    );
    let shown = |path: &std::path::Path| path.display().to_string();

    dir.idb(["status", "--dataset", DS])
        .run()
        .expect_code(0)
        .stdout_has("journals that cannot be used (of any dataset): 2\n")
        .stdout_has(&format!("  {} is damaged: ", shown(&garbage)))
        .stdout_has("(it can never help a resume; `idb clean` removes it)\n")
        .stdout_has(&format!(
            "  {} has journal version 99, this idb reads version 2 (not used by this idb; \
             `idb clean` keeps it)\n",
            shown(&newer)
        ));

    dir.idb(["clean", "--dry-run"])
        .run()
        .expect_code(0)
        .stdout_has(&format!(
            "would remove a damaged journal: {} is damaged: ",
            shown(&garbage)
        ))
        .stderr_has("0 stale journals and 1 damaged in ");
    assert_eq!(journals(&dir).len(), 2, "a dry run removes nothing");

    // Scoped to a dataset, as IDB_DATASET often has it: removed all the same.
    let run = dir.idb(["clean", "--dataset", DS]).run();
    run.expect_code(0)
        .stdout_has(&format!(
            "removed a damaged journal: {} is damaged: ",
            shown(&garbage)
        ))
        .stdout_has("(it can never help a resume)\n")
        .stderr_has("removed 0 stale journals and 1 damaged from ");
    assert!(!run.stdout.contains(&shown(&newer)), "{}", run.describe());
    assert_eq!(journals(&dir), [newer]);
}

/// `--force` ignores receipts, not journals: an unfinished upload goes on
/// from its journal as without it (the README said it sent every file's
/// setup again; an adversarial pass found the resume, which is what a
/// journal is for).
#[test]
fn force_still_resumes_an_unfinished_upload_from_its_journal() {
    let dir = Dir::new("force_still_resumes_an_unfinished_upload_from_its_journal");
    let mock = Mock::standard();
    let left = Leftovers::make(&dir, &mock);
    left.resumed_with(&dir, &mock, &["--force"]);
}
