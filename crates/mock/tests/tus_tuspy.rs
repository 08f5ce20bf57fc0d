//! A real peer: tuspy (an independent tus client, from PyPI) uploads to the
//! mock's tus endpoint, byte-exact, a checksum with every PATCH. `.ci/run`
//! installs tuspy into a venv and names its Python in `IDB_TUS_PYTHON`;
//! without tuspy the test skips, and says so where `cargo test` shows it even
//! for a test that passes: straight on the process's stderr, past the test
//! harness's capture of `eprintln!`.

mod support;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;

use support::tus::{Tus, offset_of, register};
use support::{AUTH, Api, DS, assert_verified_in, config, data, start};

/// The Python that has tuspy: `IDB_TUS_PYTHON`, else the venv `.ci/run`
/// makes, else `python3`.
fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("IDB_TUS_PYTHON") {
        return python.into();
    }
    if let Some(home) = std::env::var_os("HOME") {
        let venv = PathBuf::from(home).join(".cache/idb-ci/tus-venv/bin/python3");
        if venv.exists() {
            return venv;
        }
    }
    "python3".into()
}

/// Whether `python` can import tuspy's module.
fn has_tuspy(python: &PathBuf) -> bool {
    Command::new(python)
        .args(["-c", "import tusclient"])
        .output()
        .is_ok_and(|out| out.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuspy_uploads_to_the_mock_byte_exact_with_checksums() {
    let python = python();
    if !has_tuspy(&python) {
        // `std::io::stderr()` itself, not `eprintln!`: libtest captures the
        // macros' output of a passing test, not writes to the stream.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED tuspy_uploads_to_the_mock_byte_exact_with_checksums: {} cannot import \
             tusclient; install it with `pip install tuspy` (as .ci/run does) or set IDB_TUS_PYTHON",
            python.display()
        );
        return;
    }
    let server = start(config()).await;
    let dir = tempfile::tempdir().unwrap();
    let name = "from-tuspy.bin";
    let bytes = data(3 * 1024 * 1024 + 123, 12);
    let path = dir.path().join(name);
    std::fs::write(&path, &bytes).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/tuspy_upload.py");
    let endpoint = server.tus_url();
    let run = tokio::task::spawn_blocking(move || {
        // Bounded: a wedged server or client fails the test instead of hanging
        // the run (coreutils' `timeout` kills the script after 120 s).
        Command::new("timeout")
            .arg("120")
            .arg(&python)
            .arg(script)
            .arg(&endpoint)
            .arg(&path)
            .arg((1024 * 1024).to_string())
            .env("IDB_TUS_AUTH", AUTH)
            .output()
            .expect("run the tuspy script")
    });
    let out = run.await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tuspy failed: {stderr}");
    let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let head = Tus::new(&server).head(&url).await;
    assert_eq!(offset_of(&head), bytes.len() as u64);
    let stats = server.tus_stats();
    assert_eq!(
        stats.patches_applied, 4,
        "1 MiB chunks of 3 MiB + 123 bytes"
    );
    assert_eq!(stats.checksum_mismatches, 0);
    // Checksums were sent, and checked: not merely absent.
    assert_eq!(stats.checksums_matched, 4, "every PATCH carried a checksum");
    let answer = register(&Api::new(&server), &url, name, bytes.len() as u64).await;
    answer.expect(200);
    assert_verified_in(&server, DS, name, &answer, &bytes);
}
