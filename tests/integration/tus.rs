//! Protocol 2 end to end: `idb upload` speaking tus to the mock (its `tus`
//! option on), in order and by concatenation, with lost answers at exact calls
//! (a proxy loses them), kill -9 mid-PATCH, and a crash between the
//! registration call and its answer. Every file ends byte-exact and registered
//! exactly once.

use idb_mock::{MockConfig, TusProfile};

use crate::proxy::{Lose, Proxy};
use crate::util::*;

/// The longest the 48.8 GiB upload may take (it moves every byte through
/// blake3 on both sides, in a debug build).
const BIG_UPLOAD: std::time::Duration = std::time::Duration::from_secs(600);

/// A mock serving both protocols.
fn tus_mock() -> MockConfig {
    MockConfig::new().dataset(DS, TOKEN).tus(true)
}

/// `idb upload` with 5 MiB chunks (the smallest part) to `server`.
fn upload(dir: &Dir, server: &str) -> TestCommand {
    dir.upload_to(server, DS, "5MiB").token(TOKEN)
}

/// Asserts the mock registered `name` exactly once, complete, and stored it
/// byte-exact.
#[track_caller]
fn assert_registered_once(mock: &Mock, name: &str, bytes: &[u8]) {
    let registrations: Vec<_> = mock
        .tus_registrations()
        .into_iter()
        .filter(|r| r.filename == name)
        .collect();
    assert_eq!(
        registrations.len(),
        1,
        "{name} registered exactly once: {registrations:?}"
    );
    assert_eq!(registrations[0].size, bytes.len() as u64);
    let stats = mock.tus_stats();
    assert_eq!(stats.repeated_registrations, 0, "{stats:?}");
    assert_eq!(stats.incomplete_registrations, 0, "{stats:?}");
    mock.assert_stored(DS, name, bytes);
}

#[test]
fn auto_picks_tus_when_the_server_serves_it_and_says_so() {
    let dir = Dir::new("tus_auto");
    let mock = Mock::start(tus_mock());
    let (path, bytes) = dir.random_file("in-order.bin", 12 * 1024 * 1024 + 17);
    let (small, small_bytes) = dir.random_file("small.bin", 1000);
    let run = upload(&dir, &mock.url())
        .args(["--no-concat"])
        .arg(&path)
        .arg(&small)
        .run();
    run.expect_code(0)
        .stderr_has("protocol: tus")
        .verified_exactly(&[(&path, &bytes), (&small, &small_bytes)]);
    assert_registered_once(&mock, "in-order.bin", &bytes);
    assert_registered_once(&mock, "small.bin", &small_bytes);
    // Every PATCH carried a checksum the mock checked (crc32, the cheapest).
    let stats = mock.tus_stats();
    assert_eq!(stats.checksums_matched, stats.patches_applied, "{stats:?}");
    assert!(stats.patches_applied >= 4, "{stats:?}");
}

#[test]
fn auto_falls_back_to_the_chunked_api_and_says_why() {
    let dir = Dir::new("tus_fallback");
    let mock = Mock::start(MockConfig::new().dataset(DS, TOKEN));
    let (path, bytes) = dir.random_file("p1.bin", 100_000);
    upload(&dir, &mock.url())
        .arg(&path)
        .run()
        .expect_code(0)
        .stderr_has("protocol: chunked (no tus server at")
        .verified_exactly(&[(&path, &bytes)]);
    mock.assert_stored(DS, "p1.bin", &bytes);
    // Forcing tus on a server without it is a clear error, and nothing is sent.
    let (other, _) = dir.random_file("other.bin", 1000);
    upload(&dir, &mock.url())
        .args(["--protocol", "tus"])
        .arg(&other)
        .run()
        .expect_code(1)
        .stderr_has("no tus server at");
}

#[test]
fn concatenation_sends_partials_in_parallel_and_joins_them() {
    let dir = Dir::new("tus_concat");
    let mock = Mock::start(tus_mock());
    // Five partials of 5 MiB and a short last one.
    let (path, bytes) = dir.random_file("joined.bin", 25 * 1024 * 1024 + 4321);
    upload(&dir, &mock.url())
        .arg(&path)
        .run()
        .expect_code(0)
        .verified_exactly(&[(&path, &bytes)]);
    assert_registered_once(&mock, "joined.bin", &bytes);
    // Six partials and the final upload.
    assert_eq!(
        mock.tus_stats().uploads_created,
        7,
        "{:?}",
        mock.tus_stats()
    );
}

#[test]
fn one_file_by_concatenation_has_more_partials_in_flight_than_the_offset_window() {
    let dir = Dir::new("tus_concat_window");
    // Every answer held back 200 ms, so partials in flight overlap.
    let mock = Mock::start(tus_mock().latency(std::time::Duration::from_millis(200)));
    // Twenty partials of 5 MiB.
    let (path, bytes) = dir.random_file("wide.bin", 100 * 1024 * 1024);
    upload(&dir, &mock.url())
        .arg(&path)
        .run()
        .expect_code(0)
        .verified_exactly(&[(&path, &bytes)]);
    assert_registered_once(&mock, "wide.bin", &bytes);
    // The run's window starts at 2 and doubles per round of answers until
    // trouble; one file's partials may use all of it (--parallel x --window,
    // 12), not only --window's 4, which was one file's cap before.
    let peak = mock.stats().requests_in_flight_peak;
    assert!(
        peak > idb_engine::DEFAULT_OFFSET_WINDOW as u64,
        "at most {peak} calls in flight"
    );
    assert!(peak <= 12, "{peak} calls in flight, past the run's window");
}

#[test]
fn a_file_of_more_parts_than_a_join_may_name_goes_as_fewer_larger_partials() {
    let dir = Dir::new("tus_concat_cap");
    let mock = Mock::start(tus_mock());
    // 1280 chunks and parts of 64 KiB: one partial each would make the
    // joining POST name 1280; at most 1000 may go.
    let (path, bytes) = dir.random_file("many-parts.bin", 80 * 1024 * 1024);
    dir.upload_to(&mock.url(), DS, "64KiB")
        .token(TOKEN)
        .args(["--tus-part-size", "64KiB"])
        .arg(&path)
        .run()
        .expect_code(0)
        .verified_exactly(&[(&path, &bytes)]);
    assert_registered_once(&mock, "many-parts.bin", &bytes);
    let created = mock.tus_stats().uploads_created;
    // The partials and the joined upload.
    assert!(
        (3..=1001).contains(&created),
        "{created} uploads for 1280 parts"
    );
}

/// A part size below the server's: its PATCH bodies are dropped whole and
/// answered 204 with the offset where it was. The file fails saying to set
/// the part size (a 204 is no refusal: the server "did not take" them), and the
/// run does not end by telling to run the same command, which would fail alike.
#[test]
fn parts_smaller_than_the_servers_are_said_to_need_another_part_size() {
    let dir = Dir::new("tus_small_parts");
    let mock = Mock::start(tus_mock().tus_profile(TusProfile::S3));
    let (path, _) = dir.random_file("small-parts.bin", 1024 * 1024);
    let run = dir
        .upload_to(&mock.url(), DS, "64KiB")
        .token(TOKEN)
        .args(["--tus-part-size", "64KiB", "--no-concat"])
        .arg(&path)
        .run();
    run.expect_code(1)
        .stderr_has("the server did not take transfer at byte 0 (HTTP 204)")
        .stderr_has("--tus-part-size")
        .stderr_has("changed as the errors above say");
    assert!(
        !run.stderr.contains("run the same command again"),
        "{}",
        run.describe()
    );
}

#[test]
fn a_file_whose_partials_would_not_fit_the_memory_budget_twice_goes_in_order() {
    // Partials of one 64 KiB part each (a 16 MiB file needs no larger ones
    // to stay under 1000 partials), with a memory budget of `memory`.
    let upload = |memory: &str| {
        let dir = Dir::new(&format!("tus_concat_memory_{memory}"));
        let mock = Mock::start(tus_mock());
        let (path, bytes) = dir.random_file("roomy.bin", 16 * 1024 * 1024);
        let run = dir
            .upload_to(&mock.url(), DS, "64KiB")
            .token(TOKEN)
            .args(["--tus-part-size", "64KiB", "--memory", memory, "-v"])
            .arg(&path)
            .run();
        run.expect_code(0).verified_exactly(&[(&path, &bytes)]);
        assert_registered_once(&mock, "roomy.bin", &bytes);
        (run, mock.tus_stats().uploads_created)
    };
    // Two partials fit 128 KiB: the file goes as 256 of them, then joined.
    let (_, created) = upload("128KiB");
    assert_eq!(created, 256 + 1);
    // They do not fit 64 KiB twice: one upload in order, and -v says why.
    let (run, created) = upload("64KiB");
    run.stderr_has("sent as one upload in order");
    assert_eq!(created, 1);
}

#[test]
fn a_lost_answer_to_the_joining_post_is_settled_without_sending_the_file_again() {
    let dir = Dir::new("tus_lost_final");
    let mock = Mock::start(tus_mock());
    let proxy = Proxy::start(mock.addr(), "upload-concat: final", Lose::Drop, 1);
    let size = 15 * 1024 * 1024 + 99;
    let (path, bytes) = dir.random_file("lost-final.bin", size);
    upload(&dir, &proxy.url())
        .arg(&path)
        .run()
        .expect_code(0)
        .verified_exactly(&[(&path, &bytes)]);
    proxy.wait_for_loss(HANG);
    assert_registered_once(&mock, "lost-final.bin", &bytes);
    // The partials were not sent again: the payload went up once.
    let received = mock.stats().bytes_received;
    assert!(
        received < 2 * size as u64,
        "{received} bytes received for a file of {size}"
    );
}

/// The service's server deletes the partials once it joined them: a lost
/// answer to the join leaves the joined upload's address unknown, and nothing
/// to join again. The file starts over (said), and is still registered once.
#[test]
fn a_lost_join_answer_on_the_s3_profile_starts_the_file_over_and_registers_it_once() {
    let dir = Dir::new("tus_lost_final_s3");
    let mock = Mock::start(tus_mock().tus_profile(TusProfile::S3));
    let proxy = Proxy::start(mock.addr(), "upload-concat: final", Lose::Drop, 1);
    let size = 15 * 1024 * 1024 + 99;
    let (path, bytes) = dir.random_file("joined-twice.bin", size);
    let run = upload(&dir, &proxy.url()).arg(&path).run();
    run.expect_code(0)
        .stderr_has("over from byte 0")
        .verified_exactly(&[(&path, &bytes)]);
    proxy.wait_for_loss(HANG);
    assert_registered_once(&mock, "joined-twice.bin", &bytes);
}

#[test]
fn a_lost_registration_answer_is_settled_by_asking_not_by_registering_again() {
    let dir = Dir::new("tus_lost_registration");
    let mock = Mock::start(tus_mock());
    let proxy = Proxy::start(mock.addr(), "name=\"tus_url\"", Lose::Drop, 1);
    let (path, bytes) = dir.random_file("lost-answer.bin", 6 * 1024 * 1024);
    upload(&dir, &proxy.url())
        .arg(&path)
        .run()
        .expect_code(0)
        .verified_exactly(&[(&path, &bytes)]);
    proxy.wait_for_loss(HANG);
    assert_registered_once(&mock, "lost-answer.bin", &bytes);
}

/// A gateway that answers 502 for a registration the server applied: the
/// registration is not sent again before asking.
#[test]
fn a_5xx_to_an_applied_registration_is_settled_by_asking() {
    let dir = Dir::new("tus_registration_502");
    let mock = Mock::start(tus_mock());
    let proxy = Proxy::start(mock.addr(), "name=\"tus_url\"", Lose::Status(502), 1);
    let (path, bytes) = dir.random_file("gateway.bin", 2 * 1024 * 1024);
    upload(&dir, &proxy.url())
        .arg(&path)
        .run()
        .expect_code(0)
        .verified_exactly(&[(&path, &bytes)]);
    proxy.wait_for_loss(HANG);
    assert_registered_once(&mock, "gateway.bin", &bytes);
}

/// Killed while the joining POST is out: the next run checks the partials
/// and joins them (they are still there on this profile), sending nothing
/// again, and registers once.
#[test]
fn a_crash_during_the_join_is_settled_on_the_next_run() {
    let dir = Dir::new("tus_crash_join");
    let mock = Mock::start(tus_mock());
    let proxy = Proxy::start(mock.addr(), "upload-concat: final", Lose::Hold, 1);
    let size = 16 * 1024 * 1024 + 1;
    let (path, bytes) = dir.random_file("crash-join.bin", size);
    let running = upload(&dir, &proxy.url())
        .args(["--journal-interval", "0"])
        .arg(&path)
        .spawn();
    proxy.wait_for_loss(HANG);
    running.kill9();
    let before = mock.stats().bytes_received;
    upload(&dir, &proxy.url())
        .arg(&path)
        .run()
        .expect_code(0)
        .verified_exactly(&[(&path, &bytes)]);
    assert_registered_once(&mock, "crash-join.bin", &bytes);
    let resent = mock.stats().bytes_received - before;
    assert!(resent < size as u64, "resent {resent} of {size}");
}

#[test]
fn a_crash_between_the_registration_and_its_answer_is_settled_on_the_next_run() {
    let dir = Dir::new("tus_crash_registration");
    let mock = Mock::start(tus_mock());
    let proxy = Proxy::start(mock.addr(), "name=\"tus_url\"", Lose::Hold, 1);
    let (path, bytes) = dir.random_file("crash.bin", 11 * 1024 * 1024 + 5);
    let running = upload(&dir, &proxy.url()).arg(&path).spawn();
    // The server registered it; its answer is held: the process dies waiting.
    proxy.wait_for_loss(HANG);
    running.kill9();
    assert_eq!(mock.tus_registrations().len(), 1);
    let run = upload(&dir, &proxy.url()).arg(&path).run();
    run.expect_code(0).verified_exactly(&[(&path, &bytes)]);
    assert_registered_once(&mock, "crash.bin", &bytes);
}

#[test]
fn a_server_that_cannot_say_whether_a_registration_went_through_is_not_asked_twice() {
    let dir = Dir::new("tus_unsettled");
    let mock = Mock::start(tus_mock());
    // The registration's answer is lost, and this server has no lookup (404,
    // as the service answers any unknown call).
    let proxy = Proxy::with_rules(
        mock.addr(),
        &[
            ("name=\"tus_url\"", Lose::Drop, 1),
            ("get /api/dataset/", Lose::Status(404), 1),
        ],
    );
    let (path, bytes) = dir.random_file("unsettled.bin", 1024 * 1024);
    upload(&dir, &proxy.url())
        .arg(&path)
        .run()
        .expect_code(1)
        .stderr_has("sent but not answered")
        .stderr_has("would add the file twice");
    assert_eq!(mock.tus_registrations().len(), 1, "sent once, never again");
    // The journal was kept: the same command, once the server can say,
    // settles it.
    upload(&dir, &proxy.url())
        .arg(&path)
        .run()
        .expect_code(0)
        .verified_exactly(&[(&path, &bytes)]);
    assert_registered_once(&mock, "unsettled.bin", &bytes);
}

/// A server whose registration answer, or whose lookup's receipt after a
/// lost answer, gives a size but no blake3: a size other than the file's
/// fails it as the server's copy differing (the lookup's made its whole answer
/// unreadable, and the registration stayed unsettled on every run); the
/// file's own size settles it.
#[test]
fn a_registration_receipt_with_only_a_size_is_compared_with_the_file() {
    const SIZE: usize = 1024 * 1024;
    const SHORT: &str = r#"{"filename": "sized.bin", "size": 1000}"#;
    const WHOLE: &str = r#"{"filename": "sized.bin", "size": "1048576"}"#;
    const SHORT_LOOKUP: &str = r#"{"registered": true, "receipt": {"size": 1000}}"#;
    const WHOLE_LOOKUP: &str = r#"{"registered": true, "receipt": {"size": 1048576.0}}"#;
    let lost = ("name=\"tus_url\"", Lose::Drop, 1);
    let lookup = |body| ("get /api/dataset/", Lose::Json(body), 1);
    for (case, rules, fails) in [
        (
            "registration",
            vec![("name=\"tus_url\"", Lose::Json(SHORT), 1)],
            true,
        ),
        (
            "registration",
            vec![("name=\"tus_url\"", Lose::Json(WHOLE), 1)],
            false,
        ),
        ("lookup", vec![lost, lookup(SHORT_LOOKUP)], true),
        ("lookup", vec![lost, lookup(WHOLE_LOOKUP)], false),
    ] {
        let dir = Dir::new("tus_sized_receipt");
        let mock = Mock::start(tus_mock());
        let proxy = Proxy::with_rules(mock.addr(), &rules);
        let (path, bytes) = dir.random_file("sized.bin", SIZE);
        let run = upload(&dir, &proxy.url()).arg(&path).run();
        if fails {
            run.expect_code(1).stderr_has(&format!(
                "the server's copy differs from what was sent (it has 1000 bytes, we sent {SIZE})"
            ));
        } else {
            run.expect_code(0).verified_exactly(&[(&path, &bytes)]);
        }
        for rule in 0..rules.len() {
            assert_eq!(proxy.wait_for_loss(HANG), rule, "{case}");
        }
        assert_registered_once(&mock, "sized.bin", &bytes);
    }
}

/// Regression: the receipt of a lookup (after a lost registration answer) was
/// kept raw, so a server quoting the token in it put the token in the output
/// and the state directory. It is scrubbed like a verify's: the file fails as
/// verified under another name, and the token is nowhere.
#[test]
fn a_lookup_receipt_quoting_the_token_is_scrubbed() {
    let hash = "0".repeat(64);
    let body = format!(
        r#"{{"registered": true, "receipt": {{"filename": "quote {TOKEN} end", "size": 1000, "blake3": "{hash}"}}}}"#
    );
    // The proxy's answers live as long as the test process; one, small.
    let body: &'static str = Box::leak(body.into_boxed_str());
    let dir = Dir::new("tus_lookup_quotes_token");
    let mock = Mock::start(tus_mock());
    let proxy = Proxy::with_rules(
        mock.addr(),
        &[
            ("name=\"tus_url\"", Lose::Drop, 1),
            ("get /api/dataset/", Lose::Json(body), 1),
        ],
    );
    let (path, _) = dir.random_file("quoted.bin", 1000);
    let run = upload(&dir, &proxy.url()).arg("--json").arg(&path).run();
    run.expect_code(1)
        .stderr_has("quote <redacted> end")
        .never_shows(TOKEN);
    assert_eq!(proxy.wait_for_loss(HANG), 0);
    assert_eq!(proxy.wait_for_loss(HANG), 1);
    crate::rerun::assert_state_never_holds(&dir, TOKEN);
}

/// The bytes the upload's journal says the server acknowledged.
fn journaled(dir: &Dir) -> u64 {
    journals(dir)
        .iter()
        .filter_map(|path| std::fs::read(path).ok())
        .filter_map(|text| serde_json::from_slice::<serde_json::Value>(&text).ok())
        .filter_map(|entry| entry["acked"].as_u64())
        .max()
        .unwrap_or(0)
}

#[test]
fn a_killed_tus_upload_resumes_where_the_server_is() {
    for concat in [false, true] {
        let dir = Dir::new("tus_kill9");
        // Slow enough that the kill comes mid-upload.
        let mock = Mock::start(tus_mock().bandwidth(Some(8 * 1024 * 1024)));
        let size = 30 * 1024 * 1024 + 3;
        let (path, bytes) = dir.random_file("killed.bin", size);
        let mut watch = JournalWatch::new(&dir);
        let mut command = upload(&dir, &mock.url()).args(["--journal-interval", "0"]);
        if !concat {
            command = command.arg("--no-concat");
        }
        let running = command.arg(&path).spawn();
        // Once the journal records bytes the server acknowledged.
        while journaled(&dir) == 0 {
            watch.wait_for_write();
        }
        running.kill9();
        assert!(mock.stats().bytes_received > 0);
        let mut command = upload(&dir, &mock.url());
        if !concat {
            command = command.arg("--no-concat");
        }
        let run = command.arg(&path).run();
        run.expect_code(0)
            .stderr_has("resuming")
            .verified_exactly(&[(&path, &bytes)]);
        assert_registered_once(&mock, "killed.bin", &bytes);
        // What the server held was not sent again: the run started past it.
        // (The mock's byte count cannot tell: the killed run's sockets may
        // still deliver what they had buffered after the kill.)
        let resumed_at = run
            .stderr
            .split("from byte ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<u64>().ok());
        assert!(
            resumed_at.is_some_and(|at| at > 0),
            "concat {concat}: started from {resumed_at:?}\n{}",
            run.describe()
        );
    }
}

#[test]
fn a_registration_the_journal_cannot_record_first_is_not_sent() {
    let dir = Dir::new("tus_unrecorded");
    // Slow enough that the kill comes mid-upload.
    let mock = Mock::start(tus_mock().bandwidth(Some(8 * 1024 * 1024)));
    let (path, bytes) = dir.random_file("unrecorded.bin", 12 * 1024 * 1024 + 5);
    let mut watch = JournalWatch::new(&dir);
    let running = upload(&dir, &mock.url())
        .args(["--journal-interval", "0", "--no-concat"])
        .arg(&path)
        .spawn();
    while journals(&dir).is_empty() {
        watch.wait_for_write();
    }
    running.kill9();
    // The upload's journal file becomes a directory: no write of it can
    // succeed, while the journal directory itself is fine.
    for journal in journals(&dir) {
        std::fs::remove_file(&journal).unwrap();
        std::fs::create_dir(&journal).unwrap();
    }
    let run = upload(&dir, &mock.url()).arg(&path).run();
    run.expect_code(1)
        .stderr_has("its registration as unrecorded.bin was not sent")
        .stderr_has("the journal could not record it first");
    assert!(
        mock.tus_registrations().is_empty(),
        "registered without a journal to say so: {:?}",
        mock.tus_registrations()
    );
    // The bytes did all reach the server: only the registration is missing.
    let stats = mock.stats();
    assert!(stats.bytes_received >= bytes.len() as u64, "{stats:?}");
}

/// The trap of the service's server: past 10000 x 5 MiB its parts are larger
/// than 5 MiB, and a PATCH of 5 MiB stores nothing. The engine sends whole
/// parts and completes (a sparse file of 48.8 GiB, into a sink; without
/// checksums, which would only hash every byte twice more: the receipt's
/// blake3 still checks the bytes end to end).
#[test]
fn a_file_past_ten_thousand_five_mib_parts_completes_on_the_s3_profile() {
    let dir = Dir::new("tus_s3_big");
    let mock = Mock::start(
        tus_mock()
            .tus_profile(TusProfile::S3)
            .storage(idb_mock::Storage::Sink),
    );
    let size = 10_000 * 5 * 1024 * 1024 + 3 * 1024 * 1024 + 1;
    let path = dir.join("sparse.bin");
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(size))
        .expect("a sparse file");
    let run = dir
        .idb([
            "upload",
            "--dataset",
            DS,
            "--server",
            &mock.url(),
            "--no-concat",
            "--no-tus-checksum",
        ])
        .token(TOKEN)
        .arg(&path)
        .spawn()
        .wait_within(BIG_UPLOAD);
    run.expect_code(0)
        .stdout_has(&format!("sparse.bin ({size} bytes"));
    let stats = mock.tus_stats();
    assert_eq!(stats.bytes_dropped, 0, "{stats:?}");
    assert_eq!(stats.registrations, 1);
}

// ---------------------------------------------------------------------------
// Against an independent tus server: @tus/server with @tus/file-store
// (`tus_peer`), with its stub of the registration call. It serves neither
// concatenation nor checksums: `idb` sends in order, without checksums.
// ---------------------------------------------------------------------------

/// Asserts the peer registered `name` exactly once, with the bytes on its disk
/// byte-exact.
#[track_caller]
fn assert_peer_registered_once(node: &crate::tus_peer::NodeTus, name: &str, bytes: &[u8]) {
    let registrations: Vec<_> = node
        .registrations()
        .into_iter()
        .filter(|r| r.filename == name)
        .collect();
    assert_eq!(registrations.len(), 1, "{name}: {registrations:?}");
    assert_eq!(registrations[0].size, bytes.len() as u64);
    let stored = std::fs::read(&registrations[0].path).expect("the peer's copy");
    assert_same_bytes(&format!("the peer's copy of {name}"), bytes, &stored);
}

#[test]
fn idb_uploads_to_an_independent_tus_server_byte_exact_and_registers_once() {
    let dir = Dir::new("tus_node_upload");
    let Some(node) = crate::tus_peer::start_node_tus(&dir.join("store"), TOKEN) else {
        return;
    };
    let (big, big_bytes) = dir.random_file("several-parts.bin", 17 * 1024 * 1024 + 11);
    let (small, small_bytes) = dir.random_file("one-part.bin", 4321);
    let run = upload(&dir, node.url.as_str()).arg(&big).arg(&small).run();
    run.expect_code(0)
        .stderr_has("protocol: tus")
        .verified_exactly(&[(&big, &big_bytes), (&small, &small_bytes)]);
    assert_peer_registered_once(&node, "several-parts.bin", &big_bytes);
    assert_peer_registered_once(&node, "one-part.bin", &small_bytes);
}

#[test]
fn idb_resumes_an_interrupted_patch_on_an_independent_tus_server() {
    let dir = Dir::new("tus_node_resume");
    let Some(node) = crate::tus_peer::start_node_tus(&dir.join("store"), TOKEN) else {
        return;
    };
    let size = 24 * 1024 * 1024 + 7;
    let (path, bytes) = dir.random_file("resumed.bin", size);
    let mut watch = JournalWatch::new(&dir);
    // Slow enough that the kill comes mid-upload, and mid-PATCH most likely.
    let running = upload(&dir, node.url.as_str())
        .args(["--journal-interval", "0", "--bwlimit", "8MiB"])
        .arg(&path)
        .spawn();
    while journaled(&dir) == 0 {
        watch.wait_for_write();
    }
    running.kill9();
    let run = upload(&dir, node.url.as_str()).arg(&path).run();
    run.expect_code(0)
        .stderr_has("resuming")
        .verified_exactly(&[(&path, &bytes)]);
    assert_peer_registered_once(&node, "resumed.bin", &bytes);
}

/// The mock's full disk (`--disk-full-after`) holds for tus uploads as for
/// protocol 1's: a PATCH past it is refused 507 and nothing of it kept, and
/// the run stops there, as no other file fits either.
#[test]
fn a_full_disk_refuses_a_patch_and_stops_the_run() {
    let dir = Dir::new("tus_disk_full");
    // Room for the first file (in order: under 10 MiB), not the second.
    let mock = Mock::start(tus_mock().disk_full_after(8 * 1024 * 1024));
    let (first, first_bytes) = dir.random_file("a-first.bin", 6 * 1024 * 1024 + 1);
    let (second, _) = dir.random_file("b-second.bin", 6 * 1024 * 1024);
    let (third, _) = dir.random_file("c-third.bin", 6 * 1024 * 1024 - 1);
    let run = upload(&dir, &mock.url())
        .args(["--parallel", "1"])
        .args([&first, &second, &third])
        .run();
    run.expect_code(1)
        .stderr_has("b-second.bin")
        .stderr_has("HTTP 507")
        .stderr_has("the server's disk is full, so no other file fits either")
        .verified_exactly(&[(&first, &first_bytes)]);
    assert_registered_once(&mock, "a-first.bin", &first_bytes);
    assert_eq!(mock.tus_stats().registrations, 1, "{}", run.describe());
    // Stopped at the full disk: the third file was not begun.
    run.stderr_has("1 file unfinished");
    assert_eq!(mock.stats().faults.disk_full, 1, "{}", run.describe());
}

/// An upload journaled under one protocol and run again under the other
/// starts over from byte 0 saying why, where it used to say it was resuming
/// and then that the server had no open upload.
#[test]
fn an_upload_journaled_under_one_protocol_starts_over_under_the_other() {
    for (first, then) in [("tus", "chunked"), ("chunked", "tus")] {
        let dir = Dir::new("tus_switch");
        // Slow enough that the kill comes mid-upload.
        let mock = Mock::start(tus_mock().bandwidth(Some(8 * 1024 * 1024)));
        let (path, bytes) = dir.random_file("switched.bin", 30 * 1024 * 1024 + 3);
        let mut watch = JournalWatch::new(&dir);
        let running = upload(&dir, &mock.url())
            .args([
                "--journal-interval",
                "0",
                "--no-concat",
                "--protocol",
                first,
            ])
            .arg(&path)
            .spawn();
        while journaled(&dir) == 0 {
            watch.wait_for_write();
        }
        running.kill9();
        let run = upload(&dir, &mock.url())
            .args(["--no-concat", "--protocol", then])
            .arg(&path)
            .run();
        run.expect_code(0)
            .stderr_has(&format!(
                "starting {} over from byte 0: its unfinished upload went by {first}, and this \
                 run speaks {then}",
                path.display()
            ))
            .verified_exactly(&[(&path, &bytes)]);
        for misleading in ["resuming", "no open upload"] {
            assert!(
                !run.stderr.contains(misleading),
                "{first} then {then}: {}",
                run.describe()
            );
        }
        mock.assert_stored(DS, "switched.bin", &bytes);
    }
}

/// A registration the server refused outright (a dataset it does not have:
/// its tus endpoint takes any token it knows) is no registration in doubt:
/// the run after says the same refusal, not "sent but not answered".
#[test]
fn a_registration_refused_outright_is_not_in_doubt_on_the_next_run() {
    let dir = Dir::new("a_registration_refused_outright_is_not_in_doubt_on_the_next_run");
    let mock = Mock::start(tus_mock());
    let (path, _) = dir.random_file("small.bin", 1000);
    for _ in 0..2 {
        dir.upload_to(&mock.url(), "IDB-9999999", "64KiB")
            .token(TOKEN)
            .args(["--protocol", "tus"])
            .arg(&path)
            .run()
            .expect_code(1)
            .stderr_has("dataset IDB-9999999 was not found")
            .never_shows("was sent but not answered");
    }
}

/// tus options with `--protocol chunked` do nothing: a note says so, and the
/// run goes on (a script switching protocol keeps its other options).
#[test]
fn tus_options_with_the_chunked_protocol_are_said_to_do_nothing() {
    let dir = Dir::new("tus_options_with_the_chunked_protocol_are_said_to_do_nothing");
    let mock = Mock::start(tus_mock());
    let (path, bytes) = dir.random_file("plain.bin", 1000);
    let run = upload(&dir, &mock.url())
        .args([
            "--protocol",
            "chunked",
            "--no-concat",
            "--tus-part-size",
            "8MiB",
        ])
        .args(["--no-tus-checksum"])
        .arg(&path)
        .run();
    run.expect_code(0).verified_exactly(&[(&path, &bytes)]);
    for option in ["--tus-part-size", "--no-concat", "--no-tus-checksum"] {
        run.stderr_has(&format!(
            "note: {option} is an option of tus; it does nothing with --protocol chunked"
        ));
    }
    assert_eq!(mock.tus_stats().uploads_created, 0);
}

/// Regression: a token that occurs in a file's name (a short one, as a test
/// server may have) made the name the server verified differ from the one
/// sent, because the receipt was scrubbed of the token before the two were
/// compared: all the bytes went up, then the file failed as "verified as
/// another name", and so did every run after. Over protocol 1's verify, tus's
/// registration, and tus's lookup after a lost registration answer; a re-run
/// skips the file.
#[test]
fn a_token_that_occurs_in_a_name_does_not_change_the_name_verified() {
    let token = "scan";
    let name = "scan-0001.tif";
    for (protocol, lose) in [("chunked", false), ("tus", false), ("tus", true)] {
        let dir = Dir::new(&format!("token_in_name_{protocol}_{lose}"));
        let mock = Mock::start(MockConfig::new().dataset(DS, token).tus(true));
        let proxy = lose.then(|| Proxy::start(mock.addr(), "name=\"tus_url\"", Lose::Drop, 1));
        let server = proxy.as_ref().map_or_else(|| mock.url(), Proxy::url);
        let (path, bytes) = dir.random_file(name, 6 * 1024 * 1024);
        let upload = || {
            dir.upload_to(&server, DS, "5MiB")
                .token(token)
                .args(["--protocol", protocol])
                .arg(&path)
        };

        upload()
            .run()
            .expect_code(0)
            .verified_exactly(&[(&path, &bytes)]);
        if let Some(proxy) = &proxy {
            proxy.wait_for_loss(HANG);
        }
        if protocol == "tus" {
            assert_registered_once(&mock, name, &bytes);
        } else {
            mock.assert_stored(DS, name, &bytes);
        }
        let again = upload().run();
        again.expect_code(0).stderr_has("skipped ");
        assert!(again.verified_lines().is_empty(), "{}", again.describe());
    }
}
