//! `--bwlimit`: one cap for the whole run, shared by the files sent at once (not
//! one per connection), as the mock measures it on its own clock; a rate of 0 or
//! a malformed one is refused before anything is sent.

use crate::util::{DS, Dir, Mock, TOKEN};

const MIB: u64 = 1024 * 1024;

/// How far the mean receive rate may be from the cap, either way (a bound on the
/// cap, not a speed claim: on an idle loopback the engine keeps up with 4 MiB/s).
const TOLERANCE: f64 = 0.10;

#[test]
fn the_cap_holds_for_the_run_with_files_sent_at_once() {
    let dir = Dir::new("the_cap_holds_for_the_run");
    let mock = Mock::standard();
    // 12 MiB at 4 MiB/s: three seconds, three files on three connections.
    let files: Vec<_> = (0..3)
        .map(|i| dir.random_file(&format!("capped-{i}.bin"), (4 * MIB) as usize))
        .collect();
    let run = dir
        .upload_chunked(&mock, DS, "1MiB")
        .token(TOKEN)
        .args(["--parallel", "3", "--bwlimit", "4MiB/s"])
        .args(files.iter().map(|(path, _)| path))
        .run();
    let expected: Vec<_> = files.iter().map(|(p, b)| (p.as_path(), &b[..])).collect();
    run.expect_code(0).verified_exactly(&expected);

    let stats = mock.stats();
    assert_eq!(stats.bytes_received, 12 * MIB, "{}", run.describe());
    let (Some(first), Some(last)) = (stats.first_payload_at, stats.last_payload_at) else {
        panic!("the mock saw no payload: {stats:?}");
    };
    let rate = stats.bytes_received as f64 / (last - first).as_secs_f64();
    let cap = (4 * MIB) as f64;
    assert!(
        rate <= cap * (1.0 + TOLERANCE) && rate >= cap * (1.0 - TOLERANCE),
        "the mock received {} bytes in {:?}: {:.2} MiB/s, the cap is 4 MiB/s\n{}",
        stats.bytes_received,
        last - first,
        rate / MIB as f64,
        run.describe()
    );
}

#[test]
fn a_zero_or_malformed_rate_is_refused_naming_the_option() {
    let dir = Dir::new("bwlimit_zero_is_refused");
    let mock = Mock::standard();
    let (path, _) = dir.random_file("data.bin", 10);
    for (rate, says) in [("0", "--bwlimit 0 would send nothing"), ("fast", "fast")] {
        let run = dir
            .upload(&mock, DS)
            .token(TOKEN)
            .args(["--bwlimit", rate])
            .arg(&path)
            .run();
        run.expect_code(2)
            .stderr_has("--bwlimit")
            .stderr_has(says)
            .never_shows(TOKEN);
    }
    assert_eq!(mock.stats().requests_arrived, 0, "nothing may be sent");
}

/// A low cap sends small frames often, not 256 KiB at long intervals: a server
/// that cuts a body idle for 2 s (the mock's `--body-timeout`) takes the whole
/// file at 64 KiB/s, where a 256 KiB frame would wait 4 s.
#[test]
fn a_low_cap_keeps_a_body_moving_for_a_server_that_cuts_idle_bodies() {
    let dir = Dir::new("a_low_cap_keeps_a_body_moving");
    let mock = Mock::start(
        idb_mock::MockConfig::new()
            .dataset(DS, TOKEN)
            .body_idle_timeout(std::time::Duration::from_secs(2)),
    );
    let (path, bytes) = dir.random_file("slow.bin", 512 * 1024);
    let run = dir
        .upload_chunked(&mock, DS, "1MiB")
        .token(TOKEN)
        .args(["--bwlimit", "64KiB/s"])
        .arg(&path)
        .run();
    run.expect_code(0).verified_exactly(&[(&path, &bytes)]);
    assert_eq!(
        mock.stats().bytes_received,
        512 * 1024,
        "{}",
        run.describe()
    );
}
