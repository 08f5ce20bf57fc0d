//! Never losing work: resuming after `kill -9`, a restarted server, a token that
//! expires mid-run, and journals that cannot be trusted.

use std::time::Duration;

use idb_mock::{MockConfig, Storage};

use crate::util::{CHUNK, DS, Dir, JournalWatch, Mock, TOKEN, journals};

const NAME: &str = "big.bin";
const SIZE: usize = 40 * CHUNK + 123;

/// A mock slow enough (5 ms a response) that an upload can be stopped midway.
fn slow(config: MockConfig) -> MockConfig {
    config.latency(Duration::from_millis(5))
}

/// Bytes of `name` the server holds (strict mode: the accepted log is contiguous).
fn held(mock: &Mock, name: &str) -> u64 {
    mock.accepted(DS, name).iter().map(|&(_, len)| len).sum()
}

/// The server accepted `name` in order from 0 with no gap or overlap, ending at
/// `size`: one session, never set up again.
fn assert_one_session(mock: &Mock, name: &str, size: usize) {
    let mut end = 0;
    for (offset, len) in mock.accepted(DS, name) {
        assert_eq!(
            offset, end,
            "the upload of {name} restarted or skipped at {offset}"
        );
        end = offset + len;
    }
    assert_eq!(end, size as u64);
}

/// An upload stops on a refused token after `chunks` chunks; returns the bytes the
/// server holds then. The token came from IDB_TOKEN, so nothing can refresh it.
fn interrupted_by_401(dir: &Dir, mock: &Mock, path: &std::path::Path, chunks: u64) -> u64 {
    let running = dir.upload(mock, DS).token(TOKEN).arg(path).spawn();
    mock.block_on(mock.wait_for_chunks(chunks));
    mock.expire_tokens();
    let run = running.wait();
    run.expect_code(3)
        .stderr_has(&format!(
            "error: {}: the server refused the token",
            path.display()
        ))
        .stderr_has("safely on the server")
        .stderr_has("IDB_TOKEN")
        .never_shows(TOKEN);
    let held = held(mock, NAME);
    assert!(
        held >= chunks * CHUNK as u64 && held < SIZE as u64,
        "{}",
        run.describe()
    );
    held
}

/// The bytes the one journal in `dir`'s state directory says are acknowledged.
fn journaled(dir: &Dir) -> u64 {
    let journals = journals(dir);
    assert_eq!(journals.len(), 1, "{journals:?}");
    let entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&journals[0]).unwrap()).unwrap();
    entry["acked"]
        .as_u64()
        .expect("a journal says what was acknowledged")
}

/// The mock, answering errors as its JSON or, with `plain`, as web pages that
/// name no offset (a server that speaks less than the mock).
fn errors(config: MockConfig, plain: bool) -> MockConfig {
    config.plain_errors(plain)
}

#[test]
fn a_killed_upload_resumes_where_the_server_is() {
    killed_upload_resumes("a_killed_upload_resumes_where_the_server_is", false);
}

/// The resumed chunk lands where the server is (it goes on), or the journal
/// lags and the server refuses it with a page naming no offset: the file starts
/// over once. Either way it verifies.
#[test]
fn a_killed_upload_resumes_against_a_server_with_plain_errors() {
    killed_upload_resumes(
        "a_killed_upload_resumes_against_a_server_with_plain_errors",
        true,
    );
}

fn killed_upload_resumes(test: &str, plain: bool) {
    let dir = Dir::new(test);
    let mock = Mock::start(errors(slow(MockConfig::new().dataset(DS, TOKEN)), plain));
    let (path, bytes) = dir.random_file(NAME, SIZE);

    // Progress is saved after every acknowledgement (off its path), and the kill
    // comes once some was: a crash loses at most what the journal lags by.
    let mut watch = JournalWatch::new(&dir);
    let running = dir
        .upload(&mock, DS)
        .token(TOKEN)
        .args(["--journal-interval", "0"])
        .arg(&path)
        .spawn();
    mock.block_on(mock.wait_for_chunks(8));
    watch.wait_for_write();
    let killed = running.kill9();
    assert!(
        killed.status.code().is_none(),
        "killed by a signal\n{}",
        killed.describe()
    );
    let held = held(&mock, NAME);
    let journaled = journaled(&dir);
    assert!(
        0 < journaled && journaled <= held,
        "the journal says {journaled} of the {held} bytes the server holds"
    );
    let before = mock.stats();

    let run = dir.upload(&mock, DS).token(TOKEN).arg(&path).run();
    run.expect_code(0)
        .verified_exactly(&[(&path, &bytes)])
        .stderr_has("resuming");
    mock.assert_stored(DS, NAME, &bytes);
    if plain {
        if run.stderr.contains("over from byte 0") {
            run.stderr_has("the server refused to resume it (HTTP 409)");
        }
        return;
    }
    assert_one_session(&mock, NAME, SIZE);
    // What the journal recorded before the kill is not sent again. The journal
    // is written off the acknowledgement's path, so it may lag the server (by
    // more than a chunk on a loaded machine): the chunks between are sent again,
    // and the mock answers 200 to each identical one, or 409 naming its offset.
    // The killed run's last request may still be arriving when `before` is
    // taken: up to one more chunk is counted that the resumed run never sent.
    // Starting over would resend everything.
    let resent = mock.stats().bytes_received - before.bytes_received;
    assert!(
        resent <= SIZE as u64 - journaled + CHUNK as u64,
        "resent {resent} bytes with {journaled} journaled and {held} of {SIZE} held\n{}",
        run.describe()
    );
}

#[test]
fn an_upload_survives_a_server_restart() {
    upload_survives_a_server_restart("an_upload_survives_a_server_restart", false);
}

/// A chunk in flight at the restart may have been stored: sent again, a page
/// refuses it without an offset, and the next chunk settles it.
#[test]
fn an_upload_survives_a_restart_of_a_server_with_plain_errors() {
    upload_survives_a_server_restart(
        "an_upload_survives_a_restart_of_a_server_with_plain_errors",
        true,
    );
}

fn upload_survives_a_server_restart(test: &str, plain: bool) {
    let dir = Dir::new(test);
    let store = dir.join("store");
    let config = || {
        errors(
            slow(
                MockConfig::new()
                    .dataset(DS, TOKEN)
                    .storage(Storage::Dir(store.clone())),
            ),
            plain,
        )
    };
    let mut mock = Mock::start(config());
    let (path, bytes) = dir.random_file(NAME, SIZE);

    let running = dir.upload(&mock, DS).token(TOKEN).arg(&path).spawn();
    mock.block_on(mock.wait_for_chunks(8));
    mock.restart(config());
    let run = running.wait();

    run.expect_code(0).verified_exactly(&[(&path, &bytes)]);
    mock.assert_stored(DS, NAME, &bytes);
}

#[test]
fn a_new_token_in_the_token_file_continues_the_run() {
    let dir = Dir::new("a_new_token_in_the_token_file_continues_the_run");
    let mock = Mock::start(slow(MockConfig::new().dataset(DS, TOKEN)));
    let (path, bytes) = dir.random_file(NAME, SIZE);
    let token_file = dir.write("token", format!("{TOKEN}\n").as_bytes());
    const NEW: &str = "fresh-tok-Q7";

    let running = dir
        .upload(&mock, DS)
        .arg("--token-file")
        .arg(&token_file)
        .arg(&path)
        .spawn();
    mock.block_on(mock.wait_for_chunks(5));
    // The depositor gets a new token and puts it in the file; then the old one stops
    // working. The run reads the file again on its first 401 and goes on.
    mock.add_token(DS, NEW, None).unwrap();
    std::fs::write(&token_file, format!("{NEW}\n")).unwrap();
    mock.expire_token(TOKEN);
    let run = running.wait();

    run.expect_code(0)
        .verified_exactly(&[(&path, &bytes)])
        .stderr_has("new token from the token file")
        .never_shows(TOKEN)
        .never_shows(NEW);
    mock.assert_stored(DS, NAME, &bytes);
    assert_one_session(&mock, NAME, SIZE);
}

#[test]
fn after_a_refused_token_a_rerun_sends_only_what_is_missing() {
    let dir = Dir::new("after_a_refused_token_a_rerun_sends_only_what_is_missing");
    let mock = Mock::start(slow(MockConfig::new().dataset(DS, TOKEN)));
    let (path, bytes) = dir.random_file(NAME, SIZE);
    let held = interrupted_by_401(&dir, &mock, &path, 5);
    const NEW: &str = "fresh-tok-R2";
    mock.add_token(DS, NEW, None).unwrap();
    let before = mock.stats();

    let run = dir.upload(&mock, DS).token(NEW).arg(&path).run();

    run.expect_code(0)
        .verified_exactly(&[(&path, &bytes)])
        .stderr_has("resuming");
    mock.assert_stored(DS, NAME, &bytes);
    assert_one_session(&mock, NAME, SIZE);
    assert_eq!(
        mock.stats().bytes_received - before.bytes_received,
        SIZE as u64 - held
    );
}

/// An upload of a file of `SIZE` interrupted by a refused token, the file then
/// changed by `change` (given its path and bytes, it gives the bytes the file
/// holds after), and the same upload run again with a new token.
struct Rerun {
    mock: Mock,
    /// Bytes the first run left on the server.
    held: u64,
    /// The mock's payload bytes received before the second run.
    received_before: u64,
    run: crate::util::Run,
    _dir: Dir,
}

fn changed_between_runs(
    test: &str,
    change: impl FnOnce(&Dir, &std::path::Path, Vec<u8>) -> Vec<u8>,
) -> Rerun {
    let dir = Dir::new(test);
    let mock = Mock::start(slow(MockConfig::new().dataset(DS, TOKEN)));
    let (path, bytes) = dir.random_file(NAME, SIZE);
    let held = interrupted_by_401(&dir, &mock, &path, 5);
    let bytes = change(&dir, &path, bytes);
    mock.add_token(DS, "fresh-tok-C3", None).unwrap();
    let received_before = mock.stats().bytes_received;
    let run = dir.upload(&mock, DS).token("fresh-tok-C3").arg(&path).run();
    run.expect_code(0).verified_exactly(&[(&path, &bytes)]);
    mock.assert_stored(DS, NAME, &bytes);
    Rerun {
        mock,
        held,
        received_before,
        run,
        _dir: dir,
    }
}

#[test]
fn a_file_changed_since_the_last_run_starts_over() {
    let rerun = changed_between_runs(
        "a_file_changed_since_the_last_run_starts_over",
        |dir, _, _| dir.random_file(NAME, SIZE + 10).1,
    );
    rerun.run.stderr_has("the file changed since the last run");
}

/// Moved to another directory between the runs: the same file (inode, size,
/// modification time), its held bytes compared, resumes; it started over,
/// saying "the file changed". Another file of the same name there starts
/// over, saying its upload was of another path.
#[test]
fn a_file_moved_since_the_last_run_resumes_and_another_of_its_name_starts_over() {
    let dir = Dir::new("a_file_moved_since_the_last_run");
    let mock = Mock::start(slow(MockConfig::new().dataset(DS, TOKEN)));
    let (path, bytes) = dir.random_file(NAME, SIZE);
    let held = interrupted_by_401(&dir, &mock, &path, 5);
    let moved = dir.join("elsewhere").join(NAME);
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(&path, &moved).unwrap();
    mock.add_token(DS, "fresh-tok-M1", None).unwrap();
    let before = mock.stats().bytes_received;
    let run = dir
        .upload(&mock, DS)
        .token("fresh-tok-M1")
        .arg(&moved)
        .run();
    run.expect_code(0)
        .verified_exactly(&[(&moved, &bytes)])
        .stderr_has("resuming");
    mock.assert_stored(DS, NAME, &bytes);
    assert_one_session(&mock, NAME, SIZE);
    assert_eq!(mock.stats().bytes_received - before, SIZE as u64 - held);

    let dir = Dir::new("another_file_of_the_name_elsewhere");
    let mock = Mock::start(slow(MockConfig::new().dataset(DS, TOKEN)));
    let (path, _) = dir.random_file(NAME, SIZE);
    interrupted_by_401(&dir, &mock, &path, 5);
    let (other, other_bytes) = dir.random_file(&format!("elsewhere/{NAME}"), SIZE);
    mock.add_token(DS, "fresh-tok-M2", None).unwrap();
    let run = dir
        .upload(&mock, DS)
        .token("fresh-tok-M2")
        .arg(&other)
        .run();
    run.expect_code(0)
        .verified_exactly(&[(&other, &other_bytes)])
        .stderr_has("the last run's upload of this name was of a file at another path");
    mock.assert_stored(DS, NAME, &other_bytes);
}

/// Written in place (same size, same inode) with its modification time put
/// back, as `touch -d` or a copy keeping times would: only the change time
/// tells, and the upload starts over rather than join old bytes to new.
#[test]
fn a_file_written_with_its_modification_time_put_back_starts_over() {
    use std::os::unix::fs::FileExt;
    let rerun = changed_between_runs(
        "a_file_written_with_its_modification_time_put_back",
        |_, path, mut bytes| {
            let modified = std::fs::metadata(path).unwrap().modified().unwrap();
            let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            file.write_all_at(b"CORRUPT!", 1000).unwrap();
            bytes[1000..1008].copy_from_slice(b"CORRUPT!");
            file.set_modified(modified).unwrap();
            drop(file);
            assert_eq!(
                std::fs::metadata(path).unwrap().modified().unwrap(),
                modified
            );
            bytes
        },
    );
    rerun.run.stderr_has("the file changed since the last run");
}

/// Its permissions changed between the runs (the change time moves as for a
/// write): the bytes the server holds are read again and compared, and the
/// upload resumes, sending only the rest.
#[test]
fn a_file_whose_permissions_changed_resumes_after_its_prefix_is_compared() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let rerun = changed_between_runs(
        "a_file_whose_permissions_changed_resumes",
        |_, path, bytes| {
            let before = std::fs::metadata(path).unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640)).unwrap();
            let after = std::fs::metadata(path).unwrap();
            assert_ne!(
                (before.ctime(), before.ctime_nsec()),
                (after.ctime(), after.ctime_nsec()),
                "the change time moved"
            );
            bytes
        },
    );
    rerun.run.stderr_has("resuming");
    assert_eq!(
        rerun.mock.stats().bytes_received - rerun.received_before,
        SIZE as u64 - rerun.held,
        "{}",
        rerun.run.describe()
    );
}

#[test]
fn a_server_that_forgot_the_upload_gets_it_from_the_start() {
    server_that_forgot_the_upload(
        "a_server_that_forgot_the_upload_gets_it_from_the_start",
        false,
    );
}

/// The trap: a restarted server whose errors are pages refused the
/// resumed transfer with a 409 naming no offset, on every re-run.
#[test]
fn a_server_with_plain_errors_that_forgot_the_upload_gets_it_from_the_start() {
    server_that_forgot_the_upload(
        "a_server_with_plain_errors_that_forgot_the_upload_gets_it_from_the_start",
        true,
    );
}

fn server_that_forgot_the_upload(test: &str, plain: bool) {
    let dir = Dir::new(test);
    let mut mock = Mock::start(errors(slow(MockConfig::new().dataset(DS, TOKEN)), plain));
    let (path, bytes) = dir.random_file(NAME, SIZE);
    interrupted_by_401(&dir, &mock, &path, 5);
    // A new server on the same address, with nothing of the old one's state.
    mock.restart(errors(MockConfig::new().dataset(DS, TOKEN), plain));

    let run = dir.upload(&mock, DS).token(TOKEN).arg(&path).run();

    run.expect_code(0)
        .verified_exactly(&[(&path, &bytes)])
        .stderr_has("resuming")
        .stderr_has(if plain {
            "the server refused to resume it (HTTP 409) without saying what it holds"
        } else {
            "no open upload of it any more"
        });
    mock.assert_stored(DS, NAME, &bytes);
    assert_one_session(&mock, NAME, SIZE);
}

/// Damaged, foreign-version and truncated journals neither crash the run nor are
/// trusted: the upload starts over and says why.
#[test]
fn untrustworthy_journals_are_reported_and_ignored() {
    type Spoil = fn(&str) -> String;
    let damage: [(&str, Spoil); 3] = [
        ("garbage", |_| "\u{0}\u{1}not json at all".into()),
        ("truncated", |text| text[..text.len() / 2].into()),
        ("old version", |text| {
            text.replacen("\"version\": 2", "\"version\": 0", 1)
        }),
    ];
    for (what, spoil) in damage {
        let dir = Dir::new("untrustworthy_journals_are_reported_and_ignored");
        let mock = Mock::start(slow(MockConfig::new().dataset(DS, TOKEN)));
        let (path, bytes) = dir.random_file(NAME, SIZE);
        interrupted_by_401(&dir, &mock, &path, 5);
        let kept = journals(&dir);
        assert_eq!(kept.len(), 1, "{what}: a journal was kept after the 401");
        let text = std::fs::read_to_string(&kept[0]).unwrap();
        std::fs::write(&kept[0], spoil(&text)).unwrap();
        mock.add_token(DS, "fresh-tok-J1", None).unwrap();

        let run = dir.upload(&mock, DS).token("fresh-tok-J1").arg(&path).run();

        run.expect_code(0)
            .verified_exactly(&[(&path, &bytes)])
            .stderr_has("not resuming from its journal");
        mock.assert_stored(DS, NAME, &bytes);
        assert!(
            journals(&dir).is_empty(),
            "{what}: the journal of a verified upload is removed"
        );
    }
}
