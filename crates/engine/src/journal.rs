//! The resume journal: one small file per upload saying how far the server got,
//! so a killed run resumes instead of starting over.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use idb_read::Identity;
use serde::{Deserialize, Serialize};

/// The journal format written now. Files of any other version are ignored.
pub(crate) const JOURNAL_VERSION: u32 = 1;

/// Journal files are tiny; anything larger is not one of ours.
const MAX_JOURNAL_BYTES: u64 = 64 * 1024;

/// One upload's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) version: u32,
    pub(crate) server: String,
    pub(crate) dataset: String,
    pub(crate) filename: String,
    /// The local file as given, and what it was when the upload began.
    pub(crate) path: PathBuf,
    pub(crate) size: u64,
    pub(crate) modified: (i64, i64),
    pub(crate) device: u64,
    pub(crate) inode: u64,
    /// Bytes from the start the server acknowledged.
    pub(crate) acked: u64,
    /// The chunk size in use (the plan goes on from `acked` with it).
    pub(crate) chunk_size: u64,
    /// Whether the server writes at offsets (said on setup, which a resume skips).
    pub(crate) offset_mode: bool,
}

impl Entry {
    /// Whether the file at `path` with `identity` is the one this entry describes.
    pub(crate) fn describes(&self, path: &Path, identity: &Identity) -> bool {
        self.path == path
            && self.size == identity.size
            && self.modified == identity.modified
            && (self.device, self.inode) == (identity.device, identity.inode)
    }
}

/// What loading an upload's journal found.
#[derive(Debug)]
pub(crate) enum Loaded {
    /// No journal: a fresh upload.
    Nothing,
    /// A readable journal of this upload.
    Found(Entry),
    /// A file that is not a usable journal of this upload; it is not trusted.
    Unusable(String),
}

/// The directory of journal files.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// Journals under `dir` (created, private to the user, when first written).
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Where the journal of (server, dataset, filename) lives: a hash of the three,
    /// so any name is a safe file name.
    pub(crate) fn path(&self, server: &str, dataset: &str, filename: &str) -> PathBuf {
        let mut key = blake3::Hasher::new();
        for part in [server, dataset, filename] {
            key.update(part.as_bytes());
            key.update(&[0]);
        }
        let hex = key.finalize().to_hex();
        self.dir.join(format!("{}.json", &hex[..32]))
    }

    pub(crate) fn load(&self, server: &str, dataset: &str, filename: &str) -> Loaded {
        let path = self.path(server, dataset, filename);
        let text = match fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Loaded::Nothing,
            Err(e) => return Loaded::Unusable(format!("cannot read {}: {e}", path.display())),
            Ok(meta) if meta.len() > MAX_JOURNAL_BYTES => {
                return Loaded::Unusable(format!(
                    "{} is too large to be a journal",
                    path.display()
                ));
            }
            Ok(_) => match fs::read(&path) {
                Ok(text) => text,
                Err(e) => return Loaded::Unusable(format!("cannot read {}: {e}", path.display())),
            },
        };
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        match serde_json::from_slice::<Versioned>(&text) {
            Ok(v) if v.version != JOURNAL_VERSION => {
                return Loaded::Unusable(format!(
                    "{} has journal version {}, this idb reads version {JOURNAL_VERSION}",
                    path.display(),
                    v.version
                ));
            }
            Ok(_) => {}
            Err(e) => return Loaded::Unusable(format!("{} is damaged: {e}", path.display())),
        }
        match serde_json::from_slice::<Entry>(&text) {
            Ok(entry)
                if (
                    entry.server.as_str(),
                    entry.dataset.as_str(),
                    entry.filename.as_str(),
                ) == (server, dataset, filename) =>
            {
                if entry.acked > entry.size {
                    return Loaded::Unusable(format!(
                        "{} claims more bytes than the file has",
                        path.display()
                    ));
                }
                Loaded::Found(entry)
            }
            Ok(_) => Loaded::Unusable(format!("{} belongs to another upload", path.display())),
            Err(e) => Loaded::Unusable(format!("{} is damaged: {e}", path.display())),
        }
    }

    /// Writes `entry` atomically: a temporary file, flushed to disk, renamed over
    /// the journal. A crash leaves the old journal or the new one, never a mix.
    pub(crate) fn save(&self, entry: &Entry) -> io::Result<()> {
        let path = self.path(&entry.server, &entry.dataset, &entry.filename);
        if !self.dir.exists() {
            fs::create_dir_all(&self.dir)?;
            fs::set_permissions(
                &self.dir,
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            )?;
        }
        let temp = path.with_extension("json.tmp");
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(&serde_json::to_vec_pretty(entry).map_err(io::Error::other)?)?;
        file.sync_all()?;
        fs::rename(&temp, &path)?;
        // The rename itself reaches the disk with the directory.
        File::open(&self.dir)?.sync_all()
    }

    /// Removes the journal of a finished upload (a missing one is fine).
    pub(crate) fn remove(&self, server: &str, dataset: &str, filename: &str) -> io::Result<()> {
        match fs::remove_file(self.path(server, dataset, filename)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            version: JOURNAL_VERSION,
            server: "https://h/".into(),
            dataset: "IDB-1".into(),
            filename: "a.bin".into(),
            path: "/data/a.bin".into(),
            size: 100,
            modified: (5, 6),
            device: 1,
            inode: 2,
            acked: 40,
            chunk_size: 10,
            offset_mode: false,
        }
    }

    #[test]
    fn saves_loads_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().join("state/journal"));
        assert!(matches!(
            journal.load("https://h/", "IDB-1", "a.bin"),
            Loaded::Nothing
        ));
        journal.save(&entry()).unwrap();
        match journal.load("https://h/", "IDB-1", "a.bin") {
            Loaded::Found(found) => assert_eq!(found, entry()),
            other => panic!("{other:?}"),
        }
        journal.remove("https://h/", "IDB-1", "a.bin").unwrap();
        journal.remove("https://h/", "IDB-1", "a.bin").unwrap();
        assert!(matches!(
            journal.load("https://h/", "IDB-1", "a.bin"),
            Loaded::Nothing
        ));
    }

    #[test]
    fn damaged_foreign_and_old_journals_are_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().to_path_buf());
        let path = journal.path("https://h/", "IDB-1", "a.bin");
        let full = serde_json::to_vec(&entry()).unwrap();
        let mut other = entry();
        other.filename = "b.bin".into();
        let mut old = serde_json::to_value(entry()).unwrap();
        old["version"] = 0.into();
        let mut greedy = entry();
        greedy.acked = 101;
        let cases: Vec<Vec<u8>> = vec![
            full[..full.len() / 2].to_vec(),
            b"\x00\xffgarbage".to_vec(),
            b"{}".to_vec(),
            serde_json::to_vec(&other).unwrap(),
            serde_json::to_vec(&old).unwrap(),
            serde_json::to_vec(&greedy).unwrap(),
            vec![b' '; MAX_JOURNAL_BYTES as usize + 1],
        ];
        for (i, bytes) in cases.into_iter().enumerate() {
            fs::write(&path, bytes).unwrap();
            assert!(
                matches!(
                    journal.load("https://h/", "IDB-1", "a.bin"),
                    Loaded::Unusable(_)
                ),
                "case {i}"
            );
        }
    }

    #[test]
    fn identity_decides_whether_an_entry_describes_a_file() {
        let e = entry();
        let identity = Identity {
            size: 100,
            modified: (5, 6),
            changed: (9, 9),
            device: 1,
            inode: 2,
        };
        assert!(e.describes(Path::new("/data/a.bin"), &identity));
        assert!(!e.describes(Path::new("/data/b.bin"), &identity));
        assert!(!e.describes(
            Path::new("/data/a.bin"),
            &Identity {
                size: 101,
                ..identity
            }
        ));
        assert!(!e.describes(
            Path::new("/data/a.bin"),
            &Identity {
                modified: (5, 7),
                ..identity
            }
        ));
        assert!(!e.describes(
            Path::new("/data/a.bin"),
            &Identity {
                inode: 3,
                ..identity
            }
        ));
    }
}
