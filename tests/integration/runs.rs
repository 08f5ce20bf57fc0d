//! Whole runs: thousands of files under a small descriptor limit, a file deleted
//! between the check and its turn, two processes on one name, a stop by signal.

use idb_mock::MockConfig;

use crate::util::{CHUNK, DS, Dir, Mock, TOKEN, journals};

/// Regression: preflight opened (and mapped) every file and kept it open, so 1500
/// files under `ulimit -n 1024` failed before anything was sent. Files are now
/// checked from metadata and opened when their turn comes: 5000 files go through
/// a soft limit of 256 descriptors.
#[test]
fn five_thousand_files_under_a_limit_of_256_descriptors() {
    const FILES: usize = 5000;
    let dir = Dir::new("five_thousand_files_under_a_limit_of_256_descriptors");
    let mock = Mock::standard();
    let files: Vec<_> = (0..FILES)
        .map(|i| dir.random_file(&format!("f{i:04}.bin"), 100 + i % 700))
        .collect();
    let run = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .max_open_files(256)
        .args(files.iter().map(|(path, _)| path.file_name().unwrap()))
        .run();
    run.expect_code(0);
    assert_eq!(run.verified_lines().len(), FILES, "{}", run.describe());
    for (path, bytes) in &files {
        let name = path.file_name().unwrap().to_str().unwrap();
        mock.assert_stored(DS, name, bytes);
    }
    // Small files finish before the journal's first write: none was left behind.
    assert!(journals(&dir).is_empty());
}

/// A file deleted after the checks, before its turn, fails alone with what
/// happened; the others verify.
#[test]
fn a_file_deleted_before_its_turn_fails_alone() {
    let dir = Dir::new("a_file_deleted_before_its_turn_fails_alone");
    let mock = Mock::standard();
    let (first, first_bytes) = dir.random_file("first.bin", 4 * CHUNK);
    let (last, last_bytes) = dir.random_file("last.bin", 2 * CHUNK);
    let (victim, _) = dir.random_file("victim.bin", 100);
    // One file at a time, largest first: the victim's turn comes last. The first
    // file's setup is held at the server, so the checks are done and the victim
    // is not open yet when it is deleted.
    mock.pause();
    let running = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .args(["--parallel", "1"])
        .args([&first, &victim, &last])
        .spawn();
    mock.block_on(mock.wait_for_requests(1));
    std::fs::remove_file(&victim).unwrap();
    mock.resume();
    let run = running.wait();
    run.expect_code(1)
        .verified_exactly(&[(&first, &first_bytes), (&last, &last_bytes)])
        .stderr_has("victim.bin: it disappeared since the check at the start");
    assert!(mock.accepted(DS, "victim.bin").is_empty());
}

/// Regression: two `idb upload` runs of different files with the same name into
/// one dataset interleaved their chunks, each realigning onto the other's, and
/// both ended with a corrupt copy. The second is now refused at once, naming the
/// first, and sends nothing; the first's copy is exact.
#[test]
fn a_second_process_on_the_same_name_is_refused() {
    let dir = Dir::new("a_second_process_on_the_same_name_is_refused");
    let mock = Mock::standard();
    let (mine, my_bytes) = dir.random_file("a/data.bin", 10 * CHUNK);
    let (theirs, _) = dir.random_file("b/data.bin", 10 * CHUNK);
    // The first run's setup is held at the server: it holds the name meanwhile.
    mock.pause();
    let first = dir.upload(&mock, DS).token(TOKEN).arg(&mine).spawn();
    mock.block_on(mock.wait_for_requests(1));
    let second = dir.upload(&mock, DS).token(TOKEN).arg(&theirs).run();
    second.expect_code(1).stderr_has(&format!(
        "another idb (pid {}) is uploading \"data.bin\" into {DS}",
        first.pid()
    ));
    assert_eq!(
        mock.stats().requests_arrived,
        1,
        "only the first's held setup: the second sent nothing"
    );
    mock.resume();
    first
        .wait()
        .expect_code(0)
        .verified_exactly(&[(&mine, &my_bytes)]);
    mock.assert_stored(DS, "data.bin", &my_bytes);
}

/// Ctrl-C or SIGTERM stops the run (the calls in flight land), writes how far
/// each file got, says so, and exits 130 or 143; the same command resumes.
#[test]
fn a_signal_stops_the_run_and_the_same_command_resumes() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let dir = Dir::new("a_signal_stops_the_run_and_the_same_command_resumes");
        let mock = Mock::start(
            MockConfig::new()
                .dataset(DS, TOKEN)
                .latency(std::time::Duration::from_millis(5)),
        );
        let (path, bytes) = dir.random_file("big.bin", 40 * CHUNK + 7);
        let running = dir.upload(&mock, DS).token(TOKEN).arg(&path).spawn();
        mock.block_on(mock.wait_for_chunks(5));
        running.signal(signal);
        let run = running.wait();
        run.expect_code(128 + signal)
            .stderr_has("stopping")
            .stderr_has("interrupted: 1 file unfinished; run the same command to resume");
        assert_eq!(journals(&dir).len(), 1, "{}", run.describe());

        let run = dir.upload(&mock, DS).token(TOKEN).arg(&path).run();
        run.expect_code(0)
            .verified_exactly(&[(&path, &bytes)])
            .stderr_has("resuming");
        mock.assert_stored(DS, "big.bin", &bytes);
    }
}
