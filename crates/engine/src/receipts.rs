//! Receipts of verified uploads: what a re-run skips.
//!
//! One append-only file of JSON lines per (server, dataset), named by a hash of
//! the two, in `<state dir>/receipts/`. Each line is one [`ReceiptRecord`], whole
//! and self-describing (format version, server, dataset), so a line of another
//! version is passed over, a damaged line (not JSON, cut short by a crash or a
//! full disk) is counted and passed over ([`DamagedReceipts`]: the caller warns),
//! and the rest still load; for a name with several lines the last one wins.
//!
//! Appending is the journal writer's job ([`crate::journal_writer`]): one write
//! and one `fdatasync` per batch and file. This module is the format, where files
//! live, loading them, and the append itself.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use idb_read::Identity;
use idb_wire::VerifyReceipt;
use serde::{Deserialize, Serialize};

use crate::state::create_private_dir;

/// The receipt format written now. Lines of any other version are ignored.
pub const RECEIPT_VERSION: u32 = 1;

/// One verified upload, as recorded in the state directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptRecord {
    /// The format version ([`RECEIPT_VERSION`]).
    pub version: u32,
    /// The server, as the run was given it (a normalized URL).
    pub server: String,
    /// The dataset key.
    pub dataset: String,
    /// The file's name in the dataset.
    pub filename: String,
    /// The local file uploaded (absolute; saved as text when it is UTF-8,
    /// else as its bytes).
    #[serde(with = "crate::saved_path")]
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time, (seconds, nanoseconds) since the epoch.
    pub modified: (i64, i64),
    /// Its status change time, (seconds, nanoseconds) since the epoch.
    pub changed: (i64, i64),
    /// Its device number.
    pub device: u64,
    /// Its inode number.
    pub inode: u64,
    /// blake3 of the bytes sent, as 64 lower-case hex digits.
    pub blake3: String,
    /// What the server answered to verify, when it sent a receipt.
    pub server_receipt: Option<VerifyReceipt>,
    /// When the server verified it, in seconds since the epoch (UTC).
    pub verified_at: u64,
}

impl ReceiptRecord {
    /// Whether the file at `path` (absolute) with `identity` is, by its metadata
    /// alone, the very file this receipt describes.
    pub(crate) fn describes(&self, path: &Path, identity: &Identity) -> bool {
        self.path == path && self.identity() == *identity
    }

    /// Whether this receipt alone says the file at `path` with `identity` holds
    /// the bytes it records: it describes that file, and the file system keeps
    /// times finer than a second (see [`coarse_times`]).
    pub(crate) fn vouches_for(&self, path: &Path, identity: &Identity) -> bool {
        self.describes(path, identity) && !coarse_times(identity)
    }

    /// The identity recorded.
    pub(crate) fn identity(&self) -> Identity {
        Identity {
            size: self.size,
            modified: self.modified,
            changed: self.changed,
            device: self.device,
            inode: self.inode,
        }
    }

    /// The same receipt for the same bytes found at `path` with `identity` now
    /// (a touched, copied or moved file): the next run recognizes it without
    /// reading it.
    pub(crate) fn moved_to(&self, path: &Path, identity: &Identity) -> Self {
        Self {
            path: path.to_path_buf(),
            size: identity.size,
            modified: identity.modified,
            changed: identity.changed,
            device: identity.device,
            inode: identity.inode,
            ..self.clone()
        }
    }
}

/// Whether the file's times look whole-second (no nanoseconds at all, as on
/// file systems that keep seconds only): a rewrite of the same size within the
/// second it was checked would then leave its metadata as it was, so metadata
/// alone cannot vouch for its bytes, and its blake3 is compared instead.
fn coarse_times(identity: &Identity) -> bool {
    identity.modified.1 == 0 && identity.changed.1 == 0
}

/// Now, in seconds since the epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The lines of a receipts file that could not be read: the receipts they held
/// are unknown, so the files they recorded are not skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedReceipts {
    /// The receipts file.
    pub file: PathBuf,
    /// Its lines that could not be read.
    pub damaged: usize,
    /// Its lines (blank ones not counted).
    pub lines: usize,
}

impl DamagedReceipts {
    /// What this means and what to do, for a message that names the file
    /// first (`warning: FILE: ...`).
    pub fn reason(&self) -> String {
        format!(
            "{} of its {} lines cannot be read (damaged); a file whose receipt was on a \
             damaged line is not skipped but sent again (the chunked API then refuses a name \
             the dataset holds; over tus it becomes a second datafile): check the dataset's \
             page, then delete the damaged lines to silence this warning",
            self.damaged, self.lines
        )
    }
}

/// What loading one receipts file found.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// The newest receipt of each file name.
    pub(crate) newest: HashMap<String, ReceiptRecord>,
    /// Its damaged lines, if any.
    pub(crate) damaged: Option<DamagedReceipts>,
}

/// The directory of receipt files.
#[derive(Debug, Clone)]
pub(crate) struct Receipts {
    dir: PathBuf,
}

impl Receipts {
    /// Receipts under `dir` (created, private to the user, when first needed).
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding the receipts of `dataset` on `server`.
    pub(crate) fn file(&self, server: &str, dataset: &str) -> PathBuf {
        let mut key = blake3::Hasher::new();
        for part in [server, dataset] {
            key.update(part.as_bytes());
            key.update(&[0]);
        }
        let hex = key.finalize().to_hex();
        self.dir.join(format!("{}.jsonl", &hex[..16]))
    }

    /// The newest receipt of each file name of `dataset` on `server` (none if
    /// nothing was recorded). Lines of another version or of another (server,
    /// dataset) are skipped; damaged lines (blank ones aside) are skipped and
    /// counted.
    pub(crate) fn load(&self, server: &str, dataset: &str) -> io::Result<Loaded> {
        let path = self.file(server, dataset);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::default()),
            Err(e) => return Err(e),
        };
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let mut loaded = Loaded::default();
        let (mut lines, mut damaged) = (0, 0);
        for line in BufReader::new(file).split(b'\n') {
            let line = line?;
            if line.trim_ascii().is_empty() {
                continue;
            }
            lines += 1;
            // Another version's line is no damage: an idb of that version reads it.
            let record = match serde_json::from_slice::<Versioned>(&line) {
                Ok(v) if v.version != RECEIPT_VERSION => continue,
                Ok(_) => serde_json::from_slice::<ReceiptRecord>(&line),
                Err(e) => Err(e),
            };
            let Ok(record) = record else {
                damaged += 1;
                continue;
            };
            if record.server == server && record.dataset == dataset {
                loaded.newest.insert(record.filename.clone(), record);
            }
        }
        loaded.damaged = (damaged > 0).then_some(DamagedReceipts {
            file: path,
            damaged,
            lines,
        });
        Ok(loaded)
    }

    /// Appends `records` to their files: per file one write and one
    /// `fdatasync` (and the directory's on the file's creation). Failures come
    /// back per file, with the records that were not saved.
    pub(crate) fn append<'a>(
        &self,
        records: &'a [ReceiptRecord],
    ) -> Vec<(io::Error, Vec<&'a ReceiptRecord>)> {
        let mut by_file: BTreeMap<PathBuf, Vec<&ReceiptRecord>> = BTreeMap::new();
        for record in records {
            by_file
                .entry(self.file(&record.server, &record.dataset))
                .or_default()
                .push(record);
        }
        let mut failed = Vec::new();
        for (path, records) in by_file {
            if let Err(e) = self.append_to(&path, &records) {
                failed.push((e, records));
            }
        }
        failed
    }

    fn append_to(&self, path: &Path, records: &[&ReceiptRecord]) -> io::Result<()> {
        create_private_dir(&self.dir)?;
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        let mut text = Vec::with_capacity(records.len() * 512);
        // A torn last line (a crash mid-write) must not swallow the first new one.
        let len = file.metadata()?.len();
        if len > 0 {
            let mut last = [0];
            file.read_exact_at(&mut last, len - 1)?;
            if last[0] != b'\n' {
                text.push(b'\n');
            }
        }
        for record in records {
            serde_json::to_writer(&mut text, record).map_err(io::Error::other)?;
            text.push(b'\n');
        }
        file.write_all(&text)?;
        file.sync_data()?;
        if created {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(filename: &str) -> ReceiptRecord {
        ReceiptRecord {
            version: RECEIPT_VERSION,
            server: "https://h/".into(),
            dataset: "IDB-1".into(),
            filename: filename.into(),
            path: format!("/data/{filename}").into(),
            size: 100,
            modified: (5, 6),
            changed: (7, 8),
            device: 1,
            inode: 2,
            blake3: "ab".repeat(32),
            server_receipt: None,
            verified_at: 1_700_000_000,
        }
    }

    #[test]
    fn metadata_vouches_for_a_file_only_with_times_finer_than_a_second() {
        let receipt = record("a.bin");
        let (path, identity) = (receipt.path.clone(), receipt.identity());
        assert!(receipt.vouches_for(&path, &identity));
        assert!(!receipt.vouches_for(Path::new("/elsewhere/a.bin"), &identity));
        // Whole seconds: a same-size rewrite in the second of the check would
        // look the same, so the bytes must be compared.
        let coarse = ReceiptRecord {
            modified: (5, 0),
            changed: (7, 0),
            ..record("a.bin")
        };
        let identity = coarse.identity();
        assert!(coarse.describes(&path, &identity));
        assert!(!coarse.vouches_for(&path, &identity));
    }

    #[test]
    fn appends_and_loads_the_newest_line_per_name() {
        let dir = tempfile::tempdir().unwrap();
        let receipts = Receipts::new(dir.path().join("receipts"));
        assert!(
            receipts
                .load("https://h/", "IDB-1")
                .unwrap()
                .newest
                .is_empty()
        );
        let mut newer = record("a.bin");
        newer.verified_at += 10;
        let other_dataset = ReceiptRecord {
            dataset: "IDB-2".into(),
            ..record("a.bin")
        };
        let batch = [
            record("a.bin"),
            record("b.bin"),
            newer.clone(),
            other_dataset,
        ];
        assert!(receipts.append(&batch).is_empty());
        let loaded = receipts.load("https://h/", "IDB-1").unwrap();
        assert_eq!(loaded.newest.len(), 2);
        assert_eq!(loaded.newest["a.bin"], newer, "the last line wins");
        assert_eq!(loaded.damaged, None);
        assert_eq!(
            receipts.load("https://h/", "IDB-2").unwrap().newest.len(),
            1
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(receipts.file("https://h/", "IDB-1"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "private to the user");
    }

    #[test]
    fn bad_lines_are_skipped_and_a_torn_line_does_not_swallow_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let receipts = Receipts::new(dir.path().to_path_buf());
        let path = receipts.file("https://h/", "IDB-1");
        let whole = serde_json::to_string(&record("a.bin")).unwrap();
        let mut old = serde_json::to_value(record("old.bin")).unwrap();
        old["version"] = 99.into();
        let foreign = serde_json::to_string(&ReceiptRecord {
            server: "https://g/".into(),
            ..record("g.bin")
        })
        .unwrap();
        let torn = &whole[..whole.len() / 2];
        std::fs::write(
            &path,
            format!("{whole}\n\x00garbage\n{old}\n\n{foreign}\n{torn}"),
        )
        .unwrap();
        let loaded = receipts.load("https://h/", "IDB-1").unwrap();
        assert_eq!(loaded.newest.keys().collect::<Vec<_>>(), ["a.bin"]);
        // The garbage and the torn line are damage; another version's line,
        // another server's and a blank line are not.
        let damaged = loaded.damaged.expect("damaged lines are counted");
        assert_eq!((damaged.damaged, damaged.lines), (2, 5));
        assert_eq!(damaged.file, path);
        assert!(
            damaged
                .reason()
                .starts_with("2 of its 5 lines cannot be read")
        );
        assert!(receipts.append(&[record("b.bin")]).is_empty());
        let loaded = receipts.load("https://h/", "IDB-1").unwrap();
        assert!(loaded.newest.contains_key("b.bin"), "{loaded:?}");
    }

    #[test]
    fn a_damaged_line_in_the_middle_is_counted_and_the_good_lines_around_it_load() {
        let dir = tempfile::tempdir().unwrap();
        let receipts = Receipts::new(dir.path().to_path_buf());
        let line = |name| serde_json::to_string(&record(name)).unwrap();
        let b = line("b.bin");
        std::fs::write(
            receipts.file("https://h/", "IDB-1"),
            format!(
                "{}\n{}\n{}\n",
                line("a.bin"),
                &b[..b.len() - 7],
                line("c.bin")
            ),
        )
        .unwrap();
        let loaded = receipts.load("https://h/", "IDB-1").unwrap();
        let mut names: Vec<_> = loaded.newest.keys().collect();
        names.sort();
        assert_eq!(names, ["a.bin", "c.bin"]);
        let damaged = loaded.damaged.expect("the cut line is counted");
        assert_eq!((damaged.damaged, damaged.lines), (1, 3));
    }
}
