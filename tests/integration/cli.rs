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
