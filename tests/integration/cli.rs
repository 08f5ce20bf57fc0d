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
    let upload = |args: &[&str]| {
        dir.idb([
            "upload",
            "--dataset",
            "IDB-1",
            "--server",
            "http://127.0.0.1:9",
        ])
        .args(args)
        .token("tok")
        .arg(&file)
        .run()
    };
    upload(&["--chunk-size", "16MiB", "--max-chunk-size", "8MiB"])
        .expect_code(2)
        .stderr_has("--max-chunk-size (8388608 bytes) is below --chunk-size (16777216 bytes)");
    // With --json, stdout says it too.
    let run = upload(&[
        "--json",
        "--chunk-size",
        "16MiB",
        "--max-chunk-size",
        "8MiB",
    ]);
    run.expect_code(2);
    let line: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(line["event"], "refused", "{}", run.describe());
    assert!(
        line["errors"][0]
            .as_str()
            .unwrap()
            .contains("--max-chunk-size")
    );
    let missing = dir
        .idb([
            "upload",
            "--dataset",
            "IDB-1",
            "--server",
            "http://127.0.0.1:9",
            "--json",
        ])
        .token("tok")
        .arg(dir.join("missing.bin"))
        .run();
    missing.expect_code(2);
    let line: serde_json::Value = serde_json::from_str(missing.stdout.trim()).unwrap();
    assert_eq!(line["event"], "refused", "{}", missing.describe());
    assert!(
        line["errors"][0]
            .as_str()
            .unwrap()
            .ends_with("missing.bin: no such file")
    );
    upload(&["--attempts", "0"])
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
