//! The command line itself: help, usage errors, and `idb demo`.

use crate::util::Dir;

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
    let run = dir
        .idb([
            "upload",
            "--dataset",
            "IDB-1",
            "--server",
            "http://127.0.0.1:9",
        ])
        .token("tok")
        .run();
    run.expect_code(2).stderr_has("FILE");
}

#[test]
fn upload_without_a_dataset_exits_2() {
    let dir = Dir::new("upload_without_a_dataset_exits_2");
    let file = dir.write("data.bin", b"x");
    let run = dir.idb(["upload"]).token("tok").arg(&file).run();
    run.expect_code(2).stderr_has("--dataset");
}

/// Options that contradict each other or that nothing could meet are refused
/// by name, before anything is sent.
#[test]
fn options_nothing_could_meet_exit_2() {
    let dir = Dir::new("options_nothing_could_meet_exit_2");
    let file = dir.write("data.bin", b"x");
    let upload = |args: &[&str], file: &std::path::Path| {
        dir.idb([
            "upload",
            "--dataset",
            "IDB-1",
            "--server",
            "http://127.0.0.1:9",
        ])
        .args(args)
        .token("tok")
        .arg(file)
        .run()
    };
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
