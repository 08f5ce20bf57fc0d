//! Which files `idb upload` sends: directories with -r, --include/--exclude,
//! --files-from lists (a file, standard input), shards, symbolic links; and the
//! selections refused before anything is sent (exit 2, no request).
//!
//! Each test checks the exact set of names the mock stored.

use std::collections::BTreeSet;
use std::path::Path;

use crate::util::{DS, Dir, Mock, Run, TOKEN};

/// The names of the files the mock holds verified in [`DS`], sorted.
fn uploaded(mock: &Mock) -> Vec<String> {
    let store = mock.store_dir().expect("the standard mock stores files");
    let Ok(entries) = std::fs::read_dir(store.join(DS)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| {
            e.expect("list the dataset's directory")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// The base names of the paths a run printed as verified.
fn verified_names(run: &Run) -> Vec<String> {
    run.verified_lines()
        .iter()
        .map(|line| {
            let path = line
                .strip_prefix("verified ")
                .and_then(|rest| rest.rsplit_once(" ("))
                .map(|(path, _)| path)
                .unwrap_or_else(|| panic!("unexpected line {line:?}"));
            Path::new(path)
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// Asserts the run was refused as bad input and the server saw nothing.
#[track_caller]
fn refused_before_sending(run: &Run, mock: &Mock) {
    run.expect_code(2).stderr_has("nothing was uploaded");
    assert_eq!(
        mock.stats().requests,
        0,
        "nothing may be sent when the selection is refused\n{}",
        run.describe()
    );
    assert!(uploaded(mock).is_empty(), "{}", run.describe());
}

/// Files written for a test: each path (relative to the test's directory) and
/// its bytes.
type Written = Vec<(&'static str, Vec<u8>)>;

/// `data/` with five files at three depths, and what each holds.
fn data_tree(dir: &Dir) -> Written {
    [
        "data/a.csv",
        "data/b.txt",
        "data/sub/c.csv",
        "data/sub/deeper/d.h5",
        "data/tmp/e.csv",
    ]
    .into_iter()
    .map(|rel| (rel, dir.random_file(rel, 1000).1))
    .collect()
}

/// `idb upload -r data` in `dir`, to `mock`.
fn upload_data_dir(dir: &Dir, mock: &Mock) -> Run {
    dir.upload(mock, DS).token(TOKEN).args(["-r", "data"]).run()
}

/// Runs `idb upload ARGS` in a test directory holding [`data_tree`], against a
/// fresh mock; returns the directory (alive as long as the test needs it), the
/// mock, the files written, and the run.
fn upload_data_tree(test: &str, args: &[&str]) -> (Dir, Mock, Written, Run) {
    let dir = Dir::new(test);
    let mock = Mock::standard();
    let files = data_tree(&dir);
    let run = dir.upload(&mock, DS).token(TOKEN).args(args).run();
    (dir, mock, files, run)
}

#[test]
fn recursive_uploads_every_file_under_a_directory() {
    let (_dir, mock, files, run) = upload_data_tree(
        "recursive_uploads_every_file_under_a_directory",
        &["-r", "data"],
    );

    run.expect_code(0).stderr_has("5 of 5 files verified");
    assert_eq!(
        uploaded(&mock),
        ["a.csv", "b.txt", "c.csv", "d.h5", "e.csv"]
    );
    for (rel, bytes) in &files {
        let name = Path::new(rel).file_name().unwrap().to_str().unwrap();
        mock.assert_stored(DS, name, bytes);
    }
}

#[test]
fn directory_without_recursive_is_refused() {
    let (_dir, mock, _, run) =
        upload_data_tree("directory_without_recursive_is_refused", &["data"]);

    refused_before_sending(&run, &mock);
    run.stderr_has("error: data is a directory; add -r (--recursive)");
}

/// A glob without `/` matches names at any depth, one with `/` the path from
/// the walked directory; an excluded directory is left out whole.
#[test]
fn include_and_exclude_choose_the_files() {
    let (_dir, mock, _, run) = upload_data_tree(
        "include_and_exclude_choose_the_files",
        &[
            "-r",
            "data",
            "--include",
            "*.csv",
            "--include",
            "sub/**/*.h5",
            "--exclude",
            "tmp",
        ],
    );

    run.expect_code(0);
    assert_eq!(uploaded(&mock), ["a.csv", "c.csv", "d.h5"]);
}

#[test]
fn everything_excluded_is_refused() {
    let (_dir, mock, _, run) = upload_data_tree(
        "everything_excluded_is_refused",
        &["-r", "data", "--exclude", "*"],
    );

    refused_before_sending(&run, &mock);
    run.stderr_has("no files to upload: --include/--exclude left out all");
}

#[test]
fn bad_glob_names_the_option_and_the_glob() {
    let (_dir, mock, _, run) = upload_data_tree(
        "bad_glob_names_the_option_and_the_glob",
        &["-r", "data", "--include", "[oops"],
    );

    refused_before_sending(&run, &mock);
    run.stderr_has("--include \"[oops\" is not a valid glob");
}

/// A list file: blank lines ignored, a trailing `\r` dropped, spaces kept; the
/// FILE arguments are uploaded too.
#[test]
fn files_from_a_list_file() {
    let dir = Dir::new("files_from_a_list_file");
    let mock = Mock::standard();
    data_tree(&dir);
    dir.random_file("data/with space.csv", 10);
    dir.write(
        "list.txt",
        b"data/a.csv\n\ndata/with space.csv\r\ndata/sub/deeper/d.h5\n",
    );

    let run = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .args(["--files-from", "list.txt", "data/b.txt"])
        .run();

    run.expect_code(0);
    assert_eq!(
        uploaded(&mock),
        ["a.csv", "b.txt", "d.h5", "with space.csv"]
    );
}

/// `--files-from -` reads standard input; `-0` splits it at NUL bytes (as
/// `find -print0` writes), and a directory in it is walked with -r.
#[test]
fn files_from_stdin() {
    let dir = Dir::new("files_from_stdin");
    let mock = Mock::standard();
    data_tree(&dir);
    let list = dir.write("list0", b"data/a.csv\0data/sub\0");

    let run = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .args(["--files-from", "-", "-0", "-r"])
        .run_with_stdin(std::fs::File::open(&list).expect("open the list"));

    run.expect_code(0);
    assert_eq!(uploaded(&mock), ["a.csv", "c.csv", "d.h5"]);
}

/// N runs with --shard K/N into one dataset: each file once (a second upload of
/// a name would get 409 and fail the run), the parts disjoint, the union whole.
#[test]
fn shards_over_n_runs_upload_every_file_once() {
    let dir = Dir::new("shards_over_n_runs_upload_every_file_once");
    let mock = Mock::standard();
    let all: BTreeSet<String> = (0..40).map(|i| format!("f{i:02}.bin")).collect();
    for name in &all {
        dir.random_file(&format!("data/{name}"), 100);
    }

    let mut union = BTreeSet::new();
    for k in 1..=4 {
        let run = dir
            .upload(&mock, DS)
            .token(TOKEN)
            .args(["-r", "data", "--shard", &format!("{k}/4")])
            .run();
        run.expect_code(0);
        for name in verified_names(&run) {
            assert!(
                union.insert(name.clone()),
                "{name} was uploaded by two shards\n{}",
                run.describe()
            );
        }
    }

    assert_eq!(union, all);
    assert_eq!(uploaded(&mock), all.into_iter().collect::<Vec<_>>());
    assert_eq!(mock.stats().files_verified, 40);
}

/// Regression (found by an adversarial pass): two files of one name in a
/// sharded selection were refused only by the shard that held the name; the
/// other tasks of the job array exited 0. Every shard now refuses, naming
/// both files, and none sends anything.
#[test]
fn every_shard_refuses_a_selection_with_two_files_of_one_name() {
    let dir = Dir::new("every_shard_refuses_a_selection_with_two_files_of_one_name");
    let mock = Mock::standard();
    for i in 0..8 {
        dir.random_file(&format!("data/f{i}.bin"), 100);
    }
    dir.random_file("data/a/same.txt", 10);
    dir.random_file("data/b/same.txt", 20);
    for k in 1..=3 {
        let run = dir
            .upload(&mock, DS)
            .token(TOKEN)
            .args(["-r", "data", "--shard", &format!("{k}/3")])
            .run();
        run.expect_code(2)
            .stderr_has("2 files would have the same name, same.txt, in the dataset")
            .stderr_has("  data/a/same.txt\n")
            .stderr_has("  data/b/same.txt\n");
    }
    assert_eq!(mock.stats().requests, 0);
}

/// A dry run of a shard that holds none of the files says so as a dry run
/// (it printed a real run's summary, "0 of 0 files verified").
#[test]
fn a_dry_run_of_an_empty_shard_is_a_dry_run() {
    let dir = Dir::new("a_dry_run_of_an_empty_shard_is_a_dry_run");
    let mock = Mock::standard();
    dir.random_file("data/only.bin", 100);
    let mut said = Vec::new();
    for k in 1..=2 {
        let run = dir
            .upload(&mock, DS)
            .token(TOKEN)
            .args(["-r", "data", "--dry-run", "--shard", &format!("{k}/2")])
            .run();
        run.expect_code(0);
        assert!(!run.stderr.contains("verified"), "{}", run.describe());
        said.push(
            run.stderr
                .contains("dry run: 0 files to upload, 0 B in total"),
        );
    }
    said.sort();
    assert_eq!(said, [false, true], "one shard holds the file, one none");
    assert_eq!(mock.stats().requests, 0);
}

#[test]
fn bad_shard_names_the_option() {
    let (_dir, mock, _, run) = upload_data_tree(
        "bad_shard_names_the_option",
        &["-r", "data", "--shard", "0/4"],
    );

    run.expect_code(2)
        .stderr_has("'0/4' for '--shard <K/N>': K must be from 1 to N");
    assert_eq!(mock.stats().requests, 0, "{}", run.describe());
}

#[test]
fn duplicate_base_names_are_refused_before_sending() {
    let dir = Dir::new("duplicate_base_names_are_refused_before_sending");
    let mock = Mock::standard();
    dir.random_file("data/day1/readings.csv", 10);
    dir.random_file("data/day2/readings.csv", 20);
    dir.random_file("data/notes.txt", 30);

    let run = upload_data_dir(&dir, &mock);

    refused_before_sending(&run, &mock);
    run.stderr_has("2 files would have the same name, readings.csv, in the dataset")
        .stderr_has("\n  data/day1/readings.csv\n  data/day2/readings.csv\n")
        .stderr_has("--exclude")
        .stderr_has("separate datasets");
}

/// One file given by several spellings of its path is uploaded once, not
/// refused as two files of one name.
#[test]
fn a_file_given_by_several_spellings_is_uploaded_once() {
    let dir = Dir::new("a_file_given_by_several_spellings_is_uploaded_once");
    let mock = Mock::standard();
    let (path, bytes) = dir.random_file("data/readings.csv", 10);
    std::fs::create_dir(dir.join("other")).unwrap();
    std::os::unix::fs::symlink(dir.join("data"), dir.join("linked")).unwrap();
    // Another name for the same bytes is another file of the dataset.
    std::fs::hard_link(&path, dir.join("data/copy.csv")).unwrap();

    let run = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .args([
            "data/readings.csv",
            "./data/readings.csv",
            "data/./readings.csv",
            "other/../data/readings.csv",
            "linked/readings.csv",
            "data/copy.csv",
        ])
        .arg(&path)
        .run();

    run.expect_code(0);
    assert_eq!(run.verified_lines().len(), 2, "{}", run.describe());
    mock.assert_stored(DS, "readings.csv", &bytes);
    mock.assert_stored(DS, "copy.csv", &bytes);
}

/// A link met in a walk uploads its target's bytes under the link's own name,
/// and says so once.
#[test]
fn symlink_uploads_the_targets_bytes_under_the_links_name() {
    let dir = Dir::new("symlink_uploads_the_targets_bytes_under_the_links_name");
    let mock = Mock::standard();
    let (real, bytes) = dir.random_file("elsewhere/real.bin", 3000);
    std::fs::create_dir(dir.join("data")).unwrap();
    std::os::unix::fs::symlink(&real, dir.join("data/alias.bin")).unwrap();

    let run = upload_data_dir(&dir, &mock);

    run.expect_code(0);
    let target = std::fs::canonicalize(&real).unwrap();
    let note = format!(
        "note: data/alias.bin is a symbolic link; uploading {}'s bytes as alias.bin\n",
        target.display()
    );
    run.stderr_has(&note);
    assert_eq!(run.stderr.matches("is a symbolic link").count(), 1);
    assert_eq!(uploaded(&mock), ["alias.bin"]);
    mock.assert_stored(DS, "alias.bin", &bytes);
}

/// A FIFO met in a walk is skipped with a note; the other files go.
#[test]
fn special_file_in_a_walk_is_skipped_with_a_note() {
    let dir = Dir::new("special_file_in_a_walk_is_skipped_with_a_note");
    let mock = Mock::standard();
    dir.random_file("data/a.csv", 10);
    let fifo = dir.join("data/pipe");
    match std::process::Command::new("mkfifo").arg(&fifo).status() {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("mkfifo {} failed: {status}", fifo.display()),
        Err(e) => {
            eprintln!(
                "SKIPPED select::special_file_in_a_walk_is_skipped_with_a_note: cannot run mkfifo ({e})"
            );
            return;
        }
    }

    let run = upload_data_dir(&dir, &mock);

    run.expect_code(0)
        .stderr_has("note: skipping data/pipe: not a regular file");
    assert_eq!(uploaded(&mock), ["a.csv"]);
}

/// A newline in a name could forge a line of output: the name is refused, and
/// printed escaped.
#[test]
fn name_with_a_newline_in_a_walk_is_refused_and_printed_escaped() {
    let dir = Dir::new("name_with_a_newline_in_a_walk_is_refused_and_printed_escaped");
    let mock = Mock::standard();
    dir.random_file("data/ok.csv", 10);
    dir.random_file("data/two\nverified lines.csv", 10);

    let run = upload_data_dir(&dir, &mock);

    refused_before_sending(&run, &mock);
    run.stderr_has("error: data/two\\nverified lines.csv: the name has a control character")
        .stderr_has("rename the file");
    assert!(
        !run.stderr
            .lines()
            .any(|l| l.starts_with("verified lines.csv")),
        "the newline was printed raw\n{}",
        run.describe()
    );
}
