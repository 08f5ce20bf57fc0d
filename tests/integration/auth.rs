//! Tokens and datasets: where the token comes from, what a refusal looks like
//! (exit 3, naming the dataset and the token's source, never the token), and
//! datasets that do not take uploads (404, exit 1).

use std::time::Duration;

use idb_mock::MockConfig;

use crate::util::{CHUNK, DS, Dir, Mock, TOKEN};

/// A wrong token, distinctive enough to search for in output.
const WRONG: &str = "wrong-tok-Zq81vXw3Lm";

#[test]
fn token_file_with_a_trailing_newline() {
    let dir = Dir::new("token_file_with_a_trailing_newline");
    let mock = Mock::standard();
    let token_file = dir.write("token.txt", format!("{TOKEN}\n").as_bytes());
    let (path, bytes) = dir.random_file("data.bin", CHUNK + 9);

    let run = dir
        .upload(&mock, DS)
        .arg("--token-file")
        .arg(&token_file)
        .arg(&path)
        .run();

    run.expect_code(0)
        .verified_exactly(&[(&path, &bytes)])
        .never_shows(TOKEN);
    mock.assert_stored(DS, "data.bin", &bytes);
}

/// --token-file wins over IDB_TOKEN.
#[test]
fn token_file_is_preferred_to_the_environment() {
    let dir = Dir::new("token_file_is_preferred_to_the_environment");
    let mock = Mock::standard();
    let token_file = dir.write("token.txt", TOKEN.as_bytes());
    let (path, bytes) = dir.random_file("data.bin", 10);

    let run = dir
        .upload(&mock, DS)
        .token(WRONG)
        .arg("--token-file")
        .arg(&token_file)
        .arg(&path)
        .run();

    run.expect_code(0).verified_exactly(&[(&path, &bytes)]);
}

#[test]
fn wrong_token_from_the_environment_exits_3() {
    let dir = Dir::new("wrong_token_from_the_environment_exits_3");
    let mock = Mock::standard();
    let (path, _) = dir.random_file("data.bin", 100);

    let run = dir.upload(&mock, DS).token(WRONG).arg(&path).run();

    run.expect_code(3)
        .stderr_has(DS)
        .stderr_has("401")
        .stderr_has("IDB_TOKEN")
        .never_shows(WRONG)
        .never_shows(TOKEN);
    assert!(run.verified_lines().is_empty(), "{}", run.describe());
    assert_eq!(mock.stats().files_verified, 0);
}

#[test]
fn wrong_token_from_a_file_exits_3_naming_the_file() {
    let dir = Dir::new("wrong_token_from_a_file_exits_3_naming_the_file");
    let mock = Mock::standard();
    let token_file = dir.write("secrets/idb-token", format!("{WRONG}\n").as_bytes());
    let (path, _) = dir.random_file("data.bin", 100);

    let run = dir
        .upload(&mock, DS)
        .arg("--token-file")
        .arg(&token_file)
        .arg(&path)
        .run();

    run.expect_code(3)
        .stderr_has(DS)
        .stderr_has(&token_file.display().to_string())
        .never_shows(WRONG)
        .never_shows(TOKEN);
}

/// A token works for its own dataset only.
#[test]
fn token_of_another_dataset_exits_3() {
    let dir = Dir::new("token_of_another_dataset_exits_3");
    let mock = Mock::start(
        MockConfig::new()
            .dataset("IDB-A", "tok-a-Hh71pQ")
            .dataset("IDB-B", "tok-b-Rr02wE"),
    );
    let (path, _) = dir.random_file("data.bin", 100);

    let run = dir
        .upload(&mock, "IDB-B")
        .token("tok-a-Hh71pQ")
        .arg(&path)
        .run();

    run.expect_code(3)
        .stderr_has("IDB-B")
        .never_shows("tok-a-Hh71pQ")
        .never_shows("tok-b-Rr02wE");
    assert!(mock.stored_file("IDB-B", "data.bin").is_none());
    assert!(mock.stored_file("IDB-A", "data.bin").is_none());
}

#[test]
fn expired_token_exits_3() {
    let dir = Dir::new("expired_token_exits_3");
    let mock = Mock::start(
        MockConfig::new()
            .dataset(DS, TOKEN)
            .token_ttl(Duration::ZERO),
    );
    let (path, _) = dir.random_file("data.bin", 100);

    let run = dir.upload(&mock, DS).token(TOKEN).arg(&path).run();

    run.expect_code(3)
        .stderr_has(DS)
        .stderr_has("IDB_TOKEN")
        .never_shows(TOKEN);
    assert_eq!(mock.stats().files_verified, 0);
}

/// A 401 stops the run: no later file is tried, none is verified, exit 3. (One
/// file at a time, so "later" is well defined.)
#[test]
fn refused_token_stops_a_run_of_several_files() {
    let dir = Dir::new("refused_token_stops_a_run_of_several_files");
    let mock = Mock::standard();
    let files = [
        dir.random_file("one.bin", CHUNK + 1).0,
        dir.random_file("two.bin", 10).0,
        dir.random_file("three.bin", 0).0,
    ];

    let run = dir
        .upload(&mock, DS)
        .args(["--parallel", "1"])
        .token(WRONG)
        .args(&files)
        .run();

    run.expect_code(3)
        .stderr_has("0 of 3 files verified")
        .never_shows(WRONG)
        .never_shows(TOKEN);
    assert!(run.verified_lines().is_empty(), "{}", run.describe());
    let stats = mock.stats();
    assert_eq!(stats.files_verified, 0, "{}", run.describe());
    assert_eq!(stats.bytes_accepted, 0, "{}", run.describe());
    assert_eq!(
        stats.requests,
        1,
        "the run should stop at the first 401\n{}",
        run.describe()
    );
}

#[test]
fn unknown_dataset_exits_1_with_404() {
    let dir = Dir::new("unknown_dataset_exits_1_with_404");
    let mock = Mock::standard();
    let (path, _) = dir.random_file("data.bin", 100);

    let run = dir
        .upload(&mock, "IDB-9999999")
        .token(TOKEN)
        .arg(&path)
        .run();

    run.expect_code(1)
        .stderr_has("IDB-9999999")
        .stderr_has("404")
        .never_shows(TOKEN);
    assert_eq!(mock.stats().files_verified, 0);
}

#[test]
fn published_dataset_exits_1_with_404() {
    let dir = Dir::new("published_dataset_exits_1_with_404");
    let mock = Mock::start(
        MockConfig::new()
            .dataset(DS, TOKEN)
            .published_dataset("IDB-PUB", "tok-pub-Yy55uI"),
    );
    let (path, _) = dir.random_file("data.bin", 100);

    let run = dir
        .upload(&mock, "IDB-PUB")
        .token("tok-pub-Yy55uI")
        .arg(&path)
        .run();

    run.expect_code(1)
        .stderr_has("IDB-PUB")
        .stderr_has("404")
        .never_shows("tok-pub-Yy55uI");
    assert!(mock.stored_file("IDB-PUB", "data.bin").is_none());
}

/// A 404 stops the run too: one request, then nothing.
#[test]
fn unknown_dataset_stops_a_run_of_several_files() {
    let dir = Dir::new("unknown_dataset_stops_a_run_of_several_files");
    let mock = Mock::standard();
    let files = [
        dir.random_file("one.bin", 10).0,
        dir.random_file("two.bin", 10).0,
    ];

    let run = dir
        .upload(&mock, "IDB-0")
        .args(["--parallel", "1"])
        .token(TOKEN)
        .args(&files)
        .run();

    run.expect_code(1)
        .stderr_has("404")
        .stderr_has("0 of 2 files verified");
    assert_eq!(mock.stats().requests, 1, "{}", run.describe());
}

#[test]
fn no_token_at_all_exits_2() {
    let dir = Dir::new("no_token_at_all_exits_2");
    let mock = Mock::standard();
    let (path, _) = dir.random_file("data.bin", 100);

    let run = dir.upload(&mock, DS).arg(&path).run();

    run.expect_code(2)
        .stderr_has("IDB_TOKEN")
        .stderr_has("--token-file");
    assert_eq!(mock.stats().requests, 0, "{}", run.describe());
}

#[test]
fn missing_token_file_exits_2_naming_it() {
    let dir = Dir::new("missing_token_file_exits_2_naming_it");
    let mock = Mock::standard();
    let (path, _) = dir.random_file("data.bin", 100);
    let token_file = dir.join("no-such-token");

    let run = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .arg("--token-file")
        .arg(&token_file)
        .arg(&path)
        .run();

    run.expect_code(2)
        .stderr_has(&token_file.display().to_string());
    assert_eq!(mock.stats().requests, 0, "{}", run.describe());
}

/// An empty token file is bad input, not a request the server will refuse.
#[test]
fn blank_token_file_exits_2() {
    let dir = Dir::new("blank_token_file_exits_2");
    let mock = Mock::standard();
    let (path, _) = dir.random_file("data.bin", 100);
    let token_file = dir.write("token.txt", b"  \n");

    let run = dir
        .upload(&mock, DS)
        .arg("--token-file")
        .arg(&token_file)
        .arg(&path)
        .run();

    run.expect_code(2)
        .stderr_has(&token_file.display().to_string());
    assert_eq!(mock.stats().requests, 0, "{}", run.describe());
}

/// A token that cannot be sent in a header is refused locally without echoing it.
#[test]
fn unsendable_token_exits_2_without_showing_it() {
    let dir = Dir::new("unsendable_token_exits_2_without_showing_it");
    let mock = Mock::standard();
    let (path, _) = dir.random_file("data.bin", 100);

    let run = dir
        .upload(&mock, DS)
        .token("bad token-Qx9,zz")
        .arg(&path)
        .run();

    run.expect_code(2)
        .stderr_has("IDB_TOKEN")
        .never_shows("Qx9");
    assert_eq!(mock.stats().requests, 0, "{}", run.describe());
}
