//! The command line itself: help, usage errors, and `idb demo`.

use crate::util::{Dir, assert_nothing_left};

#[test]
fn help() {
    let dir = Dir::new("help");
    let run = dir.idb(["--help"]).run();
    run.expect_code(0)
        .stdout_has("upload")
        .stdout_has("mock-server")
        .stdout_has("demo");
}

#[test]
fn upload_help() {
    let dir = Dir::new("upload_help");
    let run = dir.idb(["upload", "--help"]).run();
    run.expect_code(0)
        .stdout_has("--dataset")
        .stdout_has("--token-file")
        .stdout_has("--chunk-size")
        .stdout_has("IDB_TOKEN");
}

#[test]
fn upload_without_files_exits_2() {
    let dir = Dir::new("upload_without_files_exits_2");
    let run = nowhere(&dir).run();
    run.expect_code(2).stderr_has("FILE");
}

#[test]
fn upload_without_a_dataset_exits_2() {
    let dir = Dir::new("upload_without_a_dataset_exits_2");
    let file = dir.write("data.bin", b"x");
    let run = dir.idb(["upload"]).token("tok").arg(&file).run();
    run.expect_code(2).stderr_has("--dataset");
}

/// `idb upload` to a server nothing answers on, with a token (for runs
/// refused before anything is sent); add the options and files.
fn nowhere(dir: &Dir) -> crate::util::TestCommand {
    dir.idb([
        "upload",
        "--dataset",
        "IDB-1",
        "--server",
        "http://127.0.0.1:9",
    ])
    .token("tok")
}

/// [`nowhere`] with `args`, of `file`, run.
fn upload_to_nowhere(dir: &Dir, args: &[&str], file: &std::path::Path) -> crate::util::Run {
    nowhere(dir).args(args).arg(file).run()
}

/// Options that contradict each other or that nothing could meet are refused
/// by name, before anything is sent.
#[test]
fn options_nothing_could_meet_exit_2() {
    let dir = Dir::new("options_nothing_could_meet_exit_2");
    let file = dir.write("data.bin", b"x");
    let upload = |args: &[&str], file: &std::path::Path| upload_to_nowhere(&dir, args, file);
    // With --json, stdout's one line says so too: the first problem.
    let refused = |run: crate::util::Run| {
        run.expect_code(2);
        let line: serde_json::Value = serde_json::from_str(run.stdout.trim())
            .unwrap_or_else(|e| panic!("{e}: {}", run.describe()));
        assert_eq!(line["event"], "refused", "{}", run.describe());
        line["errors"][0].as_str().unwrap().to_owned()
    };
    upload(
        &["--chunk-size", "16MiB", "--max-chunk-size", "8MiB"],
        &file,
    )
    .expect_code(2)
    .stderr_has("--max-chunk-size (8388608 bytes) is below --chunk-size (16777216 bytes)");
    let json = [
        "--json",
        "--chunk-size",
        "16MiB",
        "--max-chunk-size",
        "8MiB",
    ];
    assert!(refused(upload(&json, &file)).contains("--max-chunk-size"));
    let missing = refused(upload(&["--json"], &dir.join("missing.bin")));
    assert!(missing.ends_with("missing.bin: no such file"), "{missing}");
    upload(&["--attempts", "0"], &file)
        .expect_code(2)
        .stderr_has("--attempts");
    dir.idb(["mock-server", "--dataset", "IDB-1:tok", "--max-chunk", "0"])
        .run()
        .expect_code(2)
        .stderr_has("give at least 1 byte");
}

#[test]
fn unknown_subcommand_exits_2() {
    let dir = Dir::new("unknown_subcommand_exits_2");
    dir.idb(["uplaod"]).run().expect_code(2);
}

#[test]
fn demo_reports_a_byte_identical_copy() {
    let dir = Dir::new("demo_reports_a_byte_identical_copy");
    let run = dir
        .idb(["demo", "--size", "3MiB", "--chunk-size", "1MiB"])
        .run();
    run.expect_code(0)
        .stdout_has("byte-identical")
        .stdout_has("3.0 MiB");
}

/// The demo over tus: its mock serves tus when the protocol is asked for.
#[test]
fn demo_speaks_tus_when_asked() {
    let dir = Dir::new("demo_speaks_tus_when_asked");
    let run = dir
        .idb(["demo", "--size", "6MiB", "--protocol", "tus"])
        .run();
    run.expect_code(0)
        .stderr_has("protocol: tus")
        .stdout_has("byte-identical");
}

/// A bad option is refused (exit 2, as for `upload`) before the mock starts
/// or the file is made.
#[test]
fn demo_refuses_a_bad_option_before_making_anything() {
    let dir = Dir::new("demo_refuses_a_bad_option_before_making_anything");
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let run = dir
        .idb(["demo", "--size", "3MiB", "--parallel", "0"])
        .env("TMPDIR", &tmp)
        .run();
    run.expect_code(2).stderr_has("--parallel");
    assert!(!run.stderr.contains("generating"), "{}", run.describe());
    assert_nothing_left(&tmp, &run);
}

/// Regression: `idb demo | head -1` panicked (exit 101) on its last line,
/// and a demo stopped by a signal left its file and the mock's store (as
/// large as the file) in the temporary directory. Now a closed stdout ends
/// it with 141, a signal with 128 + its number, and nothing is left.
#[test]
fn demo_stopped_by_a_closed_stdout_or_a_signal_leaves_nothing() {
    let dir = Dir::new("demo_stopped_by_a_closed_stdout_or_a_signal_leaves_nothing");
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let demo = |size: &str| {
        dir.idb(["demo", "--size", size, "--chunk-size", "1MiB"])
            .args(["--max-chunk-size", "1MiB", "--latency-ms", "100"])
            .env("TMPDIR", &tmp)
    };

    // Closed before the end (a second of calls at least), or at the last line.
    for size in ["16MiB", "1MiB"] {
        let mut running = demo(size).own_stdout().spawn();
        drop(running.take_stdout());
        let run = running.wait();
        run.expect_code(141);
        assert!(!run.stderr.contains("panicked"), "{}", run.describe());
        assert_nothing_left(&tmp, &run);
    }

    // A signal while the file is going up.
    for (signal, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let running = demo("16MiB").spawn();
        running.wait_for_stderr("started");
        running.signal(signal);
        let run = running.wait();
        run.expect_code(code)
            .stderr_has("the demo's temporary data was removed");
        assert_nothing_left(&tmp, &run);
    }
}

/// Regression (found by an adversarial pass): `--server http://HOST/#frag`
/// was taken, though a query is refused: messages then named
/// `.../files/#frag` and receipts were kept under a server with the fragment.
/// Both are refused alike, naming the part, before anything is sent.
#[test]
fn a_server_address_with_a_fragment_is_refused_as_one_with_a_query_is() {
    use crate::util::{DS, Mock, TOKEN};
    let dir = Dir::new("a_server_address_with_a_fragment_is_refused_as_one_with_a_query_is");
    let mock = Mock::standard();
    let file = dir.write("data.bin", b"x");
    for (extra, part) in [("/#frag", "a fragment (#...)"), ("/?x=1", "a query (?...)")] {
        for dry_run in [false, true] {
            let server = format!("{}{extra}", mock.url());
            let run = dir
                .upload_to(&server, DS, "64KiB")
                .token(TOKEN)
                .args(dry_run.then_some("--dry-run"))
                .arg(&file)
                .run();
            run.expect_code(2).stderr_has(&format!(
                "error: invalid configuration: the server URL (--server) has {part}, which a \
                 Data Bank address never has; give only its scheme, host, port and path"
            ));
        }
    }
    assert_eq!(mock.stats().requests_arrived, 0, "nothing was sent");
    assert!(!dir.join("state").exists(), "nothing was recorded");
}

/// Regression (found by an adversarial pass): `--chunk-size 1GiB` with the
/// default --memory was refused saying "lower --max-chunk-size", an option
/// not given. The refusal names the option that set the largest chunk.
#[test]
fn a_chunk_larger_than_the_memory_budget_names_the_option_that_set_it() {
    let dir = Dir::new("a_chunk_larger_than_the_memory_budget_names_the_option_that_set_it");
    let file = dir.write("data.bin", b"x");
    let cases: [(&[&str], &str); 4] = [
        (
            &["--chunk-size", "1GiB"],
            "(--chunk-size); raise --memory or lower --chunk-size",
        ),
        (
            &["--max-chunk-size", "1GiB"],
            "(--max-chunk-size); raise --memory or lower --max-chunk-size",
        ),
        (
            &["--chunk-size", "1GiB", "--max-chunk-size", "1GiB"],
            "(--chunk-size and --max-chunk-size); raise --memory or lower both",
        ),
        (
            &["--memory", "32MiB"],
            "(--max-chunk-size's default); raise --memory or lower --max-chunk-size",
        ),
    ];
    for (args, says) in cases {
        upload_to_nowhere(&dir, args, &file)
            .expect_code(2)
            .stderr_has("error: --memory (")
            .stderr_has(" must hold at least one chunk of the largest size, ")
            .stderr_has(says);
    }
}

/// Regression (found by an adversarial pass): `--window` had no upper bound
/// (`--window 1000` opened about 1700 connections to an offset-mode mock,
/// past its 512), and the open-file note then blamed --parallel alone. A
/// window past 64 is refused as the options are read, and the note names
/// the window when it is part of what does not fit.
#[test]
fn a_window_past_64_is_refused_and_the_open_file_note_names_a_wide_one() {
    let dir = Dir::new("a_window_past_64_is_refused_and_the_open_file_note_names_a_wide_one");
    let file = dir.write("data.bin", b"x");
    for (window, says) in [
        (
            "1000",
            "invalid value '1000' for '--window <W>': more than 64; give 1 to 64",
        ),
        (
            "65",
            "invalid value '65' for '--window <W>': more than 64; give 1 to 64",
        ),
        (
            "0",
            "invalid value '0' for '--window <W>': 0 chunks in flight would send nothing",
        ),
    ] {
        upload_to_nowhere(&dir, &["--window", window], &file)
            .expect_code(2)
            .stderr_has(says);
    }
    dir.idb(["demo", "--window", "65"])
        .run()
        .expect_code(2)
        .stderr_has("more than 64");

    // 64 is taken; under a limit of 200 open files, 67 a file in flight fit
    // twice, and the note says the window is why.
    let run = nowhere(&dir)
        .args(["--dry-run", "--window", "64"])
        .hard_max_open_files(200)
        .arg(&file)
        .run();
    run.stderr_has(
        "note: --parallel 3 lowered to 2: with --window 64, each file in flight may hold 67 \
         open files, and this process may have only 200 open at once (ulimit -n); raise that \
         limit, or lower --window, to upload more files at once",
    );
}

/// Regression (found by an adversarial pass): `IDB_STATE_DIR= idb upload ...`
/// was refused with clap's "a value is required for '--state-dir <DIR>' but
/// none was supplied", naming an option the user never gave. An empty
/// IDB_DATASET, IDB_SERVER or IDB_STATE_DIR counts as unset, as a shell's
/// `${VAR:-default}` would have it.
#[test]
fn an_empty_environment_variable_counts_as_unset() {
    use crate::util::DS;
    let dir = Dir::new("an_empty_environment_variable_counts_as_unset");
    let home = dir.join("home");
    let status = || {
        dir.idb(["status"])
            .env("HOME", &home)
            .env("XDG_STATE_HOME", "")
            .env("IDB_STATE_DIR", "")
            .env("IDB_SERVER", "")
    };
    status()
        .env("IDB_DATASET", DS)
        .run()
        .expect_code(0)
        .stdout_has(&format!(
            "state directory: {}",
            home.join(".local/state/idb").display()
        ))
        .stdout_has(&format!(
            "unfinished uploads into {DS} on https://databank.illinois.edu/: 0"
        ));
    // Empty, the dataset is missing as if unset: said by its own message.
    status()
        .env("IDB_DATASET", "")
        .run()
        .expect_code(2)
        .stderr_has("error: no dataset: pass --dataset KEY or set IDB_DATASET");
    dir.idb(["clean", "--dry-run"])
        .env("IDB_STATE_DIR", "")
        .env("IDB_SERVER", "")
        .env("IDB_DATASET", "")
        .env("HOME", &home)
        .env("XDG_STATE_HOME", "")
        .run()
        .expect_code(0)
        .stderr_has("0 stale journals in ");
    let file = dir.write("data.bin", b"x");
    let run = nowhere(&dir)
        .env("IDB_STATE_DIR", "")
        .env("HOME", &home)
        .env("XDG_STATE_HOME", "")
        .args(["--dry-run", "--window", "2"])
        .arg(&file)
        .run();
    assert!(
        !run.stderr.contains("a value is required"),
        "{}",
        run.describe()
    );
    run.stdout_has(&format!("would upload {} (1 B)", file.display()));
}

/// Regression (found by an adversarial pass): the demo of an empty file said
/// "with 8.0 MiB chunks" (or "chunks of 8.0 MiB growing to ...") though no
/// chunk was sent, over either protocol.
#[test]
fn the_demo_of_an_empty_file_names_no_chunks() {
    let dir = Dir::new("the_demo_of_an_empty_file_names_no_chunks");
    for protocol in ["chunked", "tus"] {
        let run = dir
            .idb(["demo", "--size", "0", "--protocol", protocol])
            .run();
        run.expect_code(0)
            .stdout_has("uploaded 0 B in ")
            .stdout_has(
                " s (an empty file: no chunk to send); the server's copy is byte-identical",
            );
        assert!(!run.stdout.contains("chunks"), "{}", run.describe());
    }
}
