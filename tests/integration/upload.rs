//! Uploads that reach the server: every byte stored exactly, around every chunk
//! boundary, one file or several; and the refusals that fail a file (exit 1).

use idb_mock::MockConfig;

use crate::util::{CHUNK, DS, Dir, Mock, TOKEN, assert_same_bytes};

/// Uploads one seeded file of `size` bytes with 64 KiB chunks and checks the
/// stored copy, the receipt, the output, and how many chunks carried it.
fn upload_one(test: &str, size: usize) {
    let dir = Dir::new(test);
    let mock = Mock::standard();
    let name = format!("{test}.bin");
    let (path, bytes) = dir.random_file(&name, size);

    let run = dir.upload(&mock, DS).token(TOKEN).arg(&path).run();

    run.expect_code(0)
        .verified_exactly(&[(&path, &bytes)])
        .stderr_has("1 of 1 files verified")
        .never_shows(TOKEN);
    // Stdout is for results only: progress and summaries go to stderr.
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.describe());
    mock.assert_stored(DS, &name, &bytes);
    let stats = mock.stats();
    assert_eq!(stats.files_verified, 1, "{}", run.describe());
    assert_eq!(stats.bytes_accepted, size as u64, "{}", run.describe());
    assert_eq!(
        stats.chunks_accepted,
        size.div_ceil(CHUNK) as u64,
        "a {size}-byte file in {CHUNK}-byte chunks\n{}",
        run.describe()
    );
}

#[test]
fn empty_file() {
    upload_one("empty_file", 0);
}

#[test]
fn one_byte() {
    upload_one("one_byte", 1);
}

#[test]
fn one_byte_short_of_a_chunk() {
    upload_one("one_byte_short_of_a_chunk", CHUNK - 1);
}

#[test]
fn exactly_one_chunk() {
    upload_one("exactly_one_chunk", CHUNK);
}

#[test]
fn one_byte_over_a_chunk() {
    upload_one("one_byte_over_a_chunk", CHUNK + 1);
}

#[test]
fn many_chunks_and_a_tail() {
    upload_one("many_chunks_and_a_tail", 7 * CHUNK + 12_345);
}

/// `--no-mmap` reads with positional reads; the result is the same.
#[test]
fn positional_reads_give_the_same_bytes() {
    let dir = Dir::new("positional_reads_give_the_same_bytes");
    let mock = Mock::standard();
    let (path, bytes) = dir.random_file("pread.dat", 5 * CHUNK + 3);
    let run = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .arg("--no-mmap")
        .arg(&path)
        .run();
    run.expect_code(0).verified_exactly(&[(&path, &bytes)]);
    mock.assert_stored(DS, "pread.dat", &bytes);
}

/// `1M` means 1 MiB (binary, as in dd and curl): a 3 MiB file goes in 3 chunks,
/// where 1 MB chunks would take 4.
#[test]
fn chunk_size_written_as_1m() {
    let dir = Dir::new("chunk_size_written_as_1m");
    let mock = Mock::standard();
    let (path, bytes) = dir.random_file("three-mib.dat", 3 << 20);

    let run = dir
        .upload_chunked(&mock, DS, "1M")
        .token(TOKEN)
        .arg(&path)
        .run();

    run.expect_code(0).verified_exactly(&[(&path, &bytes)]);
    mock.assert_stored(DS, "three-mib.dat", &bytes);
    assert_eq!(mock.stats().chunks_accepted, 3, "{}", run.describe());
}

#[test]
fn four_files_in_one_command() {
    let dir = Dir::new("four_files_in_one_command");
    let mock = Mock::standard();
    let files = [
        dir.random_file("a/first.csv", 0),
        dir.random_file("a/second.csv", CHUNK),
        dir.random_file("b/third.tif", 3 * CHUNK + 7),
        dir.random_file("fourth.txt", 100),
    ];

    let run = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .args(files.iter().map(|(path, _)| path))
        .run();

    let expected: Vec<_> = files
        .iter()
        .map(|(p, b)| (p.as_path(), b.as_slice()))
        .collect();
    run.expect_code(0).verified_exactly(&expected);
    run.stderr_has("4 of 4 files verified");
    for (path, bytes) in &files {
        let name = path.file_name().unwrap().to_str().unwrap();
        mock.assert_stored(DS, name, bytes);
    }
    assert_eq!(mock.stats().files_verified, 4, "{}", run.describe());
}

/// IDB_DATASET and IDB_SERVER stand in for --dataset and --server.
#[test]
fn dataset_and_server_from_the_environment() {
    let dir = Dir::new("dataset_and_server_from_the_environment");
    let mock = Mock::standard();
    let (path, bytes) = dir.random_file("env.bin", CHUNK + 3);

    let run = dir
        .idb(["upload", "--chunk-size", "64KiB"])
        .env("IDB_DATASET", DS)
        .env("IDB_SERVER", mock.url())
        .token(TOKEN)
        .arg(&path)
        .run();

    run.expect_code(0).verified_exactly(&[(&path, &bytes)]);
    mock.assert_stored(DS, "env.bin", &bytes);
}

/// A relative path is uploaded under its base name.
#[test]
fn relative_path_keeps_the_base_name() {
    let dir = Dir::new("relative_path_keeps_the_base_name");
    let mock = Mock::standard();
    let (_, bytes) = dir.random_file("deep/er/data.nc", 5000);

    let run = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .arg("deep/er/data.nc")
        .run();

    run.expect_code(0)
        .stdout_has("verified deep/er/data.nc (5000 bytes");
    mock.assert_stored(DS, "data.nc", &bytes);
}

/// A name already verified in the dataset is refused (409 on setup): exit 1, the
/// message says so, and the stored copy is the first one.
#[test]
fn second_upload_of_a_name_is_refused_and_the_first_kept() {
    let dir = Dir::new("second_upload_of_a_name_is_refused_and_the_first_kept");
    let mock = Mock::standard();
    let (first, first_bytes) = dir.random_file("one/results.csv", 2 * CHUNK + 5);
    let (second, _) = dir.random_file("two/results.csv", 2 * CHUNK + 5);

    dir.upload(&mock, DS)
        .token(TOKEN)
        .arg(&first)
        .run()
        .expect_code(0);
    let run = dir.upload(&mock, DS).token(TOKEN).arg(&second).run();

    run.expect_code(1)
        .stderr_has("\"results.csv\" is already in dataset")
        .stderr_has(DS)
        .stderr_has(&second.display().to_string())
        .stderr_has("0 of 1 files verified");
    assert!(run.verified_lines().is_empty(), "{}", run.describe());
    mock.assert_stored(DS, "results.csv", &first_bytes);
    assert_eq!(mock.stats().files_verified, 1);
}

/// A refused file fails only itself: the other files of the run still go up.
#[test]
fn an_existing_name_fails_only_that_file() {
    let dir = Dir::new("an_existing_name_fails_only_that_file");
    let mock = Mock::standard();
    let (old, old_bytes) = dir.random_file("old/taken.bin", 10);
    dir.upload(&mock, DS)
        .token(TOKEN)
        .arg(&old)
        .run()
        .expect_code(0);
    let (taken, _) = dir.random_file("new/taken.bin", 20);
    let (fresh, fresh_bytes) = dir.random_file("new/fresh.bin", CHUNK + 1);

    let run = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .arg(&taken)
        .arg(&fresh)
        .run();

    run.expect_code(1)
        .verified_exactly(&[(&fresh, &fresh_bytes)])
        .stderr_has("\"taken.bin\" is already in dataset")
        .stderr_has("1 of 2 files verified");
    mock.assert_stored(DS, "taken.bin", &old_bytes);
    mock.assert_stored(DS, "fresh.bin", &fresh_bytes);
}

/// A chunk over the server's limit gets 413: exit 1, and the message points at
/// --chunk-size.
#[test]
fn chunk_over_the_server_limit_exits_1_with_413() {
    let dir = Dir::new("chunk_over_the_server_limit_exits_1_with_413");
    let mock = Mock::start(MockConfig::new().dataset(DS, TOKEN).max_chunk(1024));
    let (path, _) = dir.random_file("big.bin", 10_000);

    let run = dir
        .upload_chunked(&mock, DS, "4KiB")
        .token(TOKEN)
        .arg(&path)
        .run();

    run.expect_code(1)
        .stderr_has("413")
        .stderr_has("--chunk-size")
        .stderr_has(&path.display().to_string())
        // Regression: "run the same command again to resume" followed, and
        // the same command fails the same way.
        .stderr_has("when the command runs again, changed as the errors above say");
    assert!(
        !run.stderr.contains("run the same command again"),
        "{}",
        run.describe()
    );
    assert!(run.verified_lines().is_empty(), "{}", run.describe());
    assert_eq!(mock.stats().files_verified, 0);
    assert!(mock.stored_file(DS, "big.bin").is_none());
}

/// A file that failed in a way the same command can get past (the server's
/// trouble passing) is resumed by running the same command again, as the run
/// ends by saying.
#[test]
fn a_file_that_gave_up_is_resumed_by_the_same_command() {
    let dir = Dir::new("a_file_that_gave_up_is_resumed_by_the_same_command");
    let mock = Mock::standard();
    let proxy =
        crate::proxy::Proxy::start(mock.addr(), "transfer", crate::proxy::Lose::Status(503), 1);
    let (path, bytes) = dir.random_file("trouble.bin", 3 * CHUNK);
    let upload = || {
        dir.upload_to(&proxy.url(), DS, &CHUNK.to_string())
            .token(TOKEN)
            .args(["--attempts", "1"])
            .arg(&path)
            .run()
    };
    upload()
        .expect_code(1)
        .stderr_has("gave up")
        .stderr_has("run the same command again to resume the unfinished files");
    upload().expect_code(0).verified_exactly(&[(&path, &bytes)]);
    mock.assert_stored(DS, "trouble.bin", &bytes);
}

/// The same limit, respected: chunks at the limit go through.
#[test]
fn chunk_at_the_server_limit_is_accepted() {
    let dir = Dir::new("chunk_at_the_server_limit_is_accepted");
    let mock = Mock::start(MockConfig::new().dataset(DS, TOKEN).max_chunk(1024));
    let (path, bytes) = dir.random_file("fits.bin", 10_000);

    let run = dir
        .upload_chunked(&mock, DS, "1KiB")
        .token(TOKEN)
        .arg(&path)
        .run();

    run.expect_code(0).verified_exactly(&[(&path, &bytes)]);
    mock.assert_stored(DS, "fits.bin", &bytes);
    assert_eq!(mock.stats().chunks_accepted, 10);
}

/// Stored bytes are compared with the source even for data full of the bytes a
/// multipart encoder could trip on (CR, LF, `--`).
#[test]
fn multipart_lookalike_bytes_survive() {
    let dir = Dir::new("multipart_lookalike_bytes_survive");
    let mock = Mock::standard();
    let mut bytes = Vec::new();
    while bytes.len() < 3 * CHUNK {
        bytes.extend_from_slice(b"\r\n--\r\n--boundary\r\nContent-Disposition: form-data\r\n\r\n");
    }
    let path = dir.write("lookalike.txt", &bytes);

    let run = dir.upload(&mock, DS).token(TOKEN).arg(&path).run();

    run.expect_code(0).verified_exactly(&[(&path, &bytes)]);
    assert_same_bytes("stored copy", &bytes, &mock.stored(DS, "lookalike.txt"));
}

/// A server URL with a trailing slash names the same endpoint.
#[test]
fn server_url_with_a_trailing_slash() {
    let dir = Dir::new("server_url_with_a_trailing_slash");
    let mock = Mock::standard();
    let (path, bytes) = dir.random_file("slash.bin", CHUNK + 2);

    let run = dir
        .upload_to(&format!("{}/", mock.url()), DS, "64KiB")
        .token(TOKEN)
        .arg(&path)
        .run();

    run.expect_code(0).verified_exactly(&[(&path, &bytes)]);
    mock.assert_stored(DS, "slash.bin", &bytes);
}

/// Nobody listening: exit 1, the message names the server, the token stays hidden.
#[test]
fn unreachable_server_exits_1() {
    let dir = Dir::new("unreachable_server_exits_1");
    // A port that was free a moment ago and has no listener now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port();
    let server = format!("http://127.0.0.1:{port}");
    let (path, _) = dir.random_file("data.bin", 10);

    let run = dir
        .idb(["upload", "--dataset", DS, "--server", &server])
        .token(TOKEN)
        .arg(&path)
        .run();

    run.expect_code(1)
        .stderr_has(&format!("127.0.0.1:{port}"))
        .stderr_has(&path.display().to_string())
        .never_shows(TOKEN);
    assert!(run.verified_lines().is_empty(), "{}", run.describe());
}

/// Names travel as form values: spaces, non-ASCII, quotes, `;`, `%` and `=` arrive
/// unchanged.
#[test]
fn unusual_file_names_arrive_unchanged() {
    let dir = Dir::new("unusual_file_names_arrive_unchanged");
    let mock = Mock::standard();
    let names = [
        "my data (v2).csv",
        "café-größe-東京.txt",
        "quote\"semi;pct%20eq=.bin",
        "-starts-with-dash",
        ".hidden",
    ];
    let files: Vec<_> = names.iter().map(|n| dir.random_file(n, 3000)).collect();

    let run = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .arg("--")
        .args(files.iter().map(|(path, _)| path))
        .run();

    let expected: Vec<_> = files
        .iter()
        .map(|(p, b)| (p.as_path(), b.as_slice()))
        .collect();
    run.expect_code(0).verified_exactly(&expected);
    for (name, (_, bytes)) in names.iter().zip(&files) {
        mock.assert_stored(DS, name, bytes);
    }
}
