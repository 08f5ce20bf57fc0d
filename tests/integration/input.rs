//! Bad input is found before anything is sent: exit 2, a message naming the
//! problem and the path, and not one request reaches the server.

use std::process::Command;

use idb_mock::MockConfig;

use crate::util::{DS, Dir, Mock, Run, TOKEN};

/// Asserts the run was refused as bad input and the server saw nothing.
#[track_caller]
fn refused_before_sending(run: &Run, mock: &Mock) {
    run.expect_code(2);
    assert!(run.verified_lines().is_empty(), "{}", run.describe());
    assert_eq!(
        mock.stats().requests,
        0,
        "nothing may be sent when the input is bad\n{}",
        run.describe()
    );
}

#[test]
fn missing_file() {
    let dir = Dir::new("missing_file");
    let mock = Mock::standard();
    let missing = dir.join("not-here.csv");

    let run = dir.upload(&mock, DS).token(TOKEN).arg(&missing).run();

    refused_before_sending(&run, &mock);
    run.stderr_has(&missing.display().to_string())
        .stderr_has("no such file");
}

#[test]
fn directory() {
    let dir = Dir::new("directory");
    let mock = Mock::standard();
    let sub = dir.join("a-folder");
    std::fs::create_dir(&sub).unwrap();

    let run = dir.upload(&mock, DS).token(TOKEN).arg(&sub).run();

    refused_before_sending(&run, &mock);
    run.stderr_has(&sub.display().to_string())
        .stderr_has("directory");
}

#[test]
fn fifo() {
    let dir = Dir::new("fifo");
    let mock = Mock::standard();
    let fifo = dir.join("pipe");
    match Command::new("mkfifo").arg(&fifo).status() {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("mkfifo {} failed: {status}", fifo.display()),
        Err(e) => {
            eprintln!("SKIPPED input::fifo: cannot run mkfifo ({e})");
            return;
        }
    }

    let run = dir.upload(&mock, DS).token(TOKEN).arg(&fifo).run();

    refused_before_sending(&run, &mock);
    run.stderr_has(&fifo.display().to_string())
        .stderr_has("FIFO");
}

#[test]
fn two_files_with_the_same_base_name() {
    let dir = Dir::new("two_files_with_the_same_base_name");
    let mock = Mock::standard();
    let first = dir.random_file("day1/readings.csv", 10).0;
    let second = dir.random_file("day2/readings.csv", 20).0;

    let run = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .arg(&first)
        .arg(&second)
        .run();

    refused_before_sending(&run, &mock);
    run.stderr_has(&first.display().to_string())
        .stderr_has(&second.display().to_string())
        .stderr_has("same name");
}

/// One bad file stops the whole run: the good ones are not sent either.
#[test]
fn one_bad_file_among_good_ones_sends_nothing() {
    let dir = Dir::new("one_bad_file_among_good_ones_sends_nothing");
    let mock = Mock::standard();
    let good = dir.random_file("good.bin", 1000).0;
    let missing = dir.join("missing.bin");
    let also_good = dir.random_file("also-good.bin", 1000).0;

    let run = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .args([&good, &missing, &also_good])
        .run();

    refused_before_sending(&run, &mock);
    run.stderr_has(&missing.display().to_string())
        .stderr_has("nothing was uploaded");
}

/// Every problem is reported at once, so the user can fix them in one go.
#[test]
fn every_bad_file_is_reported() {
    let dir = Dir::new("every_bad_file_is_reported");
    let mock = Mock::standard();
    let missing = dir.join("missing.bin");
    let folder = dir.join("folder");
    std::fs::create_dir(&folder).unwrap();

    let run = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .arg(&missing)
        .arg(&folder)
        .run();

    refused_before_sending(&run, &mock);
    run.stderr_has(&missing.display().to_string())
        .stderr_has(&folder.display().to_string());
}

#[test]
fn invalid_dataset_key() {
    let dir = Dir::new("invalid_dataset_key");
    let mock = Mock::standard();
    let file = dir.random_file("data.bin", 10).0;

    let run = dir.upload(&mock, "a/b").token(TOKEN).arg(&file).run();

    refused_before_sending(&run, &mock);
    run.stderr_has("\"a/b\"").stderr_has("dataset key");
}

/// A backslash is legal in a Unix file name but not in a Data Bank one.
#[test]
fn file_name_with_a_backslash() {
    let dir = Dir::new("file_name_with_a_backslash");
    let mock = Mock::standard();
    let file = dir.random_file("back\\slash.txt", 10).0;

    let run = dir.upload(&mock, DS).token(TOKEN).arg(&file).run();

    refused_before_sending(&run, &mock);
    run.stderr_has(&file.display().to_string())
        .stderr_has("rename the file");
}

#[test]
fn zero_chunk_size() {
    let dir = Dir::new("zero_chunk_size");
    let mock = Mock::standard();
    let file = dir.random_file("data.bin", 10).0;

    let run = dir
        .upload_chunked(&mock, DS, "0")
        .token(TOKEN)
        .arg(&file)
        .run();

    refused_before_sending(&run, &mock);
    run.stderr_has("chunk size");
}

#[test]
fn unparsable_chunk_size() {
    let dir = Dir::new("unparsable_chunk_size");
    let mock = Mock::standard();
    let file = dir.random_file("data.bin", 10).0;

    let run = dir
        .upload_chunked(&mock, DS, "8parsecs")
        .token(TOKEN)
        .arg(&file)
        .run();

    refused_before_sending(&run, &mock);
    run.stderr_has("8parsecs");
}

#[test]
fn server_that_is_not_a_url() {
    let dir = Dir::new("server_that_is_not_a_url");
    let file = dir.random_file("data.bin", 10).0;

    let run = dir
        .idb(["upload", "--dataset", DS, "--server", "not a url"])
        .token(TOKEN)
        .arg(&file)
        .run();

    run.expect_code(2).stderr_has("--server").never_shows(TOKEN);
}

/// A server URL carrying a password or another scheme is refused before sending.
#[test]
fn server_url_with_credentials_or_another_scheme() {
    let dir = Dir::new("server_url_with_credentials_or_another_scheme");
    let mock = Mock::standard();
    let file = dir.random_file("data.bin", 10).0;
    let port = mock.addr().port();
    for server in [
        format!("http://user:pw-Vb63@127.0.0.1:{port}"),
        format!("ftp://127.0.0.1:{port}"),
    ] {
        let run = dir
            .idb(["upload", "--dataset", DS, "--server", &server])
            .token(TOKEN)
            .arg(&file)
            .run();
        refused_before_sending(&run, &mock);
        run.stderr_has("server").never_shows(TOKEN);
    }
}

#[test]
fn socket() {
    let dir = Dir::new("socket");
    let mock = Mock::standard();
    let path = dir.join("control.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();

    let run = dir.upload(&mock, DS).token(TOKEN).arg(&path).run();

    refused_before_sending(&run, &mock);
    run.stderr_has(&path.display().to_string())
        .stderr_has("a socket, not a regular file");
}

#[test]
fn device() {
    let dir = Dir::new("device");
    let mock = Mock::standard();

    let run = dir.upload(&mock, DS).token(TOKEN).arg("/dev/null").run();

    refused_before_sending(&run, &mock);
    run.stderr_has("/dev/null: a device, not a regular file");
}

/// A file whose size says 0 but that reads as bytes (a file of /proc) fails
/// alone at its turn rather than go up empty.
#[test]
fn a_file_whose_size_is_unknown_is_not_sent_empty() {
    let dir = Dir::new("size_unknown");
    let mock = Mock::standard();
    let (fine, bytes) = dir.random_file("fine.bin", 1000);

    let run = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .arg("/proc/self/status")
        .arg(&fine)
        .run();

    run.expect_code(1)
        .stderr_has("/proc/self/status: its size says 0 bytes, but reading it gives bytes")
        .verified_exactly(&[(&fine, &bytes)]);
    assert_eq!(mock.stats().files_verified, 1);
}

/// A sparse file over 2 TiB (no disk used) is refused by its size alone.
#[test]
fn file_over_two_tebibytes() {
    let dir = Dir::new("file_over_two_tebibytes");
    let mock = Mock::standard();
    let path = dir.join("huge.h5");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(2 * 1024 * 1024 * 1024 * 1024 + 1)
        .unwrap();

    let run = dir.upload(&mock, DS).token(TOKEN).arg(&path).run();

    refused_before_sending(&run, &mock);
    run.stderr_has("2199023255553 bytes is over the Data Bank's limit of 2 TiB");
}

/// A symbolic link to nothing is said to be one, not "no such file".
#[test]
fn broken_symbolic_link() {
    let dir = Dir::new("broken_symbolic_link");
    let mock = Mock::standard();
    let link = dir.join("latest.h5");
    std::os::unix::fs::symlink(dir.join("run-0042.h5"), &link).unwrap();

    let run = dir.upload(&mock, DS).token(TOKEN).arg(&link).run();

    refused_before_sending(&run, &mock);
    run.stderr_has("latest.h5: a broken symbolic link")
        .stderr_has("run-0042.h5 does not exist");
    assert!(!run.stderr.contains("no such file"), "{}", run.describe());
}

/// A file this user may not read is refused before anything is sent (as
/// `nobody` when the tests run as root, where permissions do not apply).
#[test]
fn unreadable_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new("unreadable_file");
    let mock = Mock::standard();
    let (path, _) = dir.random_file("secret.bin", 10);
    let open = |p: &std::path::Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    open(dir.path(), 0o755);
    open(&path, 0o000);
    let state = dir.join("open-state");
    std::fs::create_dir(&state).unwrap();
    open(&state, 0o777);

    let run = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .arg("--state-dir")
        .arg(&state)
        .arg(&path)
        .unprivileged()
        .run();

    refused_before_sending(&run, &mock);
    run.stderr_has(&path.display().to_string())
        .stderr_has("ermission denied");
}

/// Spaces and non-ASCII letters are ordinary in a name: uploaded as they are.
#[test]
fn names_with_spaces_and_unicode_upload() {
    let dir = Dir::new("names_with_spaces_and_unicode_upload");
    let mock = Mock::standard();
    let (path, bytes) = dir.random_file("run 7 — Zürich ñ 東京.csv", 1000);

    let run = dir.upload(&mock, DS).token(TOKEN).arg(&path).run();

    run.expect_code(0).verified_exactly(&[(&path, &bytes)]);
    mock.assert_stored(DS, "run 7 — Zürich ñ 東京.csv", &bytes);
}

/// Regression: a name holding an invisible character (zero-width space, a
/// right-to-left override, a byte-order mark) or a space at either end was
/// uploaded, then failed as "verified as another name" (the server's receipt
/// was escaped and trimmed before it was compared), and every run after met
/// the name already in the dataset. Both protocols take such names as they
/// are, and a re-run skips them.
#[test]
fn names_with_invisible_characters_or_edge_spaces_upload_and_are_skipped_after() {
    let names = [
        "q\u{200b}q.txt",
        "r\u{202e}txt.exe",
        "\u{feff}bom.txt",
        " lead.txt",
        "trail.txt ",
    ];
    for protocol in ["chunked", "tus"] {
        let dir = Dir::new(&format!("names_with_invisible_characters_{protocol}"));
        let mock = Mock::start(MockConfig::new().dataset(DS, TOKEN).tus(true));
        let files: Vec<_> = names
            .iter()
            .map(|name| dir.random_file(name, 1000))
            .collect();
        let upload = || {
            dir.upload(&mock, DS)
                .token(TOKEN)
                .args(["--protocol", protocol])
                .args(files.iter().map(|(path, _)| path))
        };

        let run = upload().run();
        run.expect_code(0);
        assert_eq!(
            run.verified_lines().len(),
            names.len(),
            "{}",
            run.describe()
        );
        for (name, (_, bytes)) in names.iter().zip(&files) {
            mock.assert_stored(DS, name, bytes);
        }

        let again = upload().run();
        again.expect_code(0);
        assert!(again.verified_lines().is_empty(), "{}", again.describe());
        assert_eq!(
            again.stderr.matches("skipped ").count(),
            names.len(),
            "{}",
            again.describe()
        );
    }
}
