//! The resume journal's storage: one small file per unfinished upload saying how
//! far the server got and the hash state there, so a killed run resumes instead
//! of starting over, and reads nothing again that it already sent.
//!
//! Writing is the journal writer's job ([`crate::journal_writer`]); this module is
//! the format, where files live, and reading them back.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use idb_read::{HashState, Identity};
use serde::{Deserialize, Serialize};

/// The journal format written now. Files of any other version are ignored.
pub(crate) const JOURNAL_VERSION: u32 = 2;

/// Anything larger is not one of ours. A journal is a few hundred bytes,
/// but one of a file sent by tus concatenation lists up to 1000 partials
/// with their addresses (`MAX_JOIN_PARTIALS`; over 300 KB with the long
/// addresses of an S3-backed server): room for ten times that.
const MAX_JOURNAL_BYTES: u64 = 4 * 1024 * 1024;

/// The field that seals a journal: the blake3 (hex) of the rest of its JSON,
/// written compact with its keys in order ([`seal`]). A journal without one
/// (written by an earlier idb) is read as before.
const CHECK_FIELD: &str = "check";

/// One upload's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) version: u32,
    pub(crate) server: String,
    pub(crate) dataset: String,
    pub(crate) filename: String,
    /// The local file (absolute), and what it was when the upload began.
    #[serde(with = "crate::saved_path")]
    pub(crate) path: PathBuf,
    pub(crate) size: u64,
    pub(crate) modified: (i64, i64),
    /// The inode's change time: a file written and its modification time put
    /// back (`touch -d`, a copy that keeps times) still changes it. Absent in
    /// journals of earlier versions of idb, which are then taken on the other
    /// fields alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) changed: Option<(i64, i64)>,
    pub(crate) device: u64,
    pub(crate) inode: u64,
    /// Bytes from the start the server acknowledged. The journal may lag the
    /// server (it is written now and then), never lead it.
    pub(crate) acked: u64,
    /// The chunk size in use (a resumed upload goes on with it).
    pub(crate) chunk_size: u64,
    /// Whether the server writes at offsets (said on setup, which a resume skips).
    pub(crate) offset_mode: bool,
    /// The whole-file blake3 state over a prefix of the file, so a resumed
    /// upload need not read it again. Saved as [`HashState::encode`]'s text (by
    /// the writer thread: the acknowledgement only clones it); one that cannot be
    /// read back is left out, and the upload reads that prefix again instead.
    #[serde(with = "saved_hash")]
    pub(crate) hash: Option<HashState>,
    /// Protocol 2: where the upload lives on the server, and whether its
    /// registration was sent (absent for protocol 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tus: Option<Box<crate::tus::TusRecord>>,
}

/// `Entry::hash` as text.
mod saved_hash {
    use idb_read::HashState;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        hash: &Option<HashState>,
        out: S,
    ) -> Result<S::Ok, S::Error> {
        match hash {
            Some(state) => out.serialize_some(&state.encode()),
            None => out.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        input: D,
    ) -> Result<Option<HashState>, D::Error> {
        let text = Option::<String>::deserialize(input)?;
        Ok(text.and_then(|t| HashState::decode(&t).ok()))
    }
}

impl Entry {
    /// Whether the file at `path` with `identity` is the one this entry describes.
    pub(crate) fn describes(&self, path: &Path, identity: &Identity) -> bool {
        self.describes_but_its_change_time(path, identity)
            && self
                .changed
                .is_none_or(|changed| changed == identity.changed)
    }

    /// [`Entry::describes`] but for the change time, which a `chmod`, a
    /// `chown` or a new link moves as much as a write does: the caller then
    /// compares the bytes ([`crate::resume`]).
    pub(crate) fn describes_but_its_change_time(&self, path: &Path, identity: &Identity) -> bool {
        self.path == path && self.same_inode(identity)
    }

    /// Whether the file with `identity` is this entry's, wherever it is now
    /// (moved, which moves its change time too): same inode, size and
    /// modification time. The caller then compares the bytes.
    pub(crate) fn same_inode(&self, identity: &Identity) -> bool {
        self.size == identity.size
            && self.modified == identity.modified
            && (self.device, self.inode) == (identity.device, identity.inode)
    }

    /// Where this entry is stored.
    pub(crate) fn key(&self) -> Key {
        Key::of(&self.server, &self.dataset, &self.filename)
    }
}

/// An upload's identity on this machine: (server, dataset, file name), hashed.
/// It names the upload's journal file and its place in the lock file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key([u8; 16]);

impl Key {
    pub(crate) fn of(server: &str, dataset: &str, filename: &str) -> Self {
        let mut key = blake3::Hasher::new();
        for part in [server, dataset, filename] {
            key.update(part.as_bytes());
            key.update(&[0]);
        }
        let mut bytes = [0; 16];
        bytes.copy_from_slice(&key.finalize().as_bytes()[..16]);
        Self(bytes)
    }

    /// The key a journal file's name stands for, if it is one ([`Key::file_name`]).
    pub(crate) fn from_file_name(name: &std::ffi::OsStr) -> Option<Self> {
        let hex = name.to_str()?.strip_suffix(".json")?;
        if hex.len() != 32 {
            return None;
        }
        let mut bytes = [0; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        // Spelt exactly as a journal is named (lower-case hex).
        let key = Self(bytes);
        (key.file_name() == name.to_str()?).then_some(key)
    }

    /// The journal file's name.
    fn file_name(&self) -> String {
        let mut name = String::with_capacity(37);
        for b in self.0 {
            name.push_str(&format!("{b:02x}"));
        }
        name.push_str(".json");
        name
    }

    /// A byte offset in the lock file standing for this upload (below 2^62, so
    /// any `off_t` holds it).
    pub(crate) fn lock_offset(&self) -> u64 {
        u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes")) >> 2
    }
}

/// What loading an upload's journal found.
#[derive(Debug)]
pub(crate) enum Loaded {
    /// No journal: a fresh upload.
    Nothing,
    /// A readable journal of this upload.
    Found(Box<Entry>),
    /// A file that is not a usable journal of this upload; it is not trusted.
    Unusable(String),
}

/// The directory of journal files.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// Journals under `dir` (created, private to the user, when first needed).
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the directory if needed, readable by the user only.
    pub(crate) fn create_dir(&self) -> io::Result<()> {
        crate::state::create_private_dir(&self.dir)
    }

    /// Where the journal with `key` lives.
    pub(crate) fn path(&self, key: Key) -> PathBuf {
        self.dir.join(key.file_name())
    }

    pub(crate) fn load(&self, server: &str, dataset: &str, filename: &str) -> Loaded {
        let path = self.path(Key::of(server, dataset, filename));
        match read(&path) {
            Err(Unreadable::Missing) => Loaded::Nothing,
            Err(Unreadable::Bad(bad)) => Loaded::Unusable(bad.reason),
            Ok(entry)
                if (
                    entry.server.as_str(),
                    entry.dataset.as_str(),
                    entry.filename.as_str(),
                ) == (server, dataset, filename) =>
            {
                Loaded::Found(Box::new(entry))
            }
            Ok(_) => Loaded::Unusable(format!("{} belongs to another upload", path.display())),
        }
    }

    /// Every journal file in the directory (none if there is no directory), and
    /// what reading it found (`Err`: why it is not a usable journal).
    pub(crate) fn list(&self) -> io::Result<Listed> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut found = Vec::new();
        for dir_entry in entries {
            let path = dir_entry?.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match read(&path) {
                // Removed meanwhile (an upload finished).
                Err(Unreadable::Missing) => {}
                Err(Unreadable::Bad(bad)) => found.push((path, Err(bad))),
                Ok(entry) => found.push((path, Ok(entry))),
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    /// Writes `entry` atomically (a temporary file, flushed to disk, renamed over
    /// the journal, the directory flushed): a crash leaves the old journal or the
    /// new one, never a mix. The directory must exist ([`Journal::create_dir`]).
    pub(crate) fn save(&self, entry: &Entry) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;

        use atomic_write_file::unix::OpenOptionsExt as _;
        let mut options = atomic_write_file::OpenOptions::new();
        options
            .mode(0o600)
            .preserve_mode(false)
            .try_preserve_owner(false);
        let mut file = options.open(self.path(entry.key()))?;
        file.write_all(&seal(entry).map_err(io::Error::other)?)?;
        file.commit()
    }

    /// Removes the journal with `key` (a missing one is fine).
    pub(crate) fn remove(&self, key: Key) -> io::Result<()> {
        match fs::remove_file(self.path(key)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// `entry` as the journal's text, sealed with its [`CHECK_FIELD`]: a journal
/// changed afterwards (by hand, or by the disk) is then told from a good one,
/// instead of resuming from a hash state or an offset that is wrong, which
/// would call a good copy on the server corrupt, or send a wrong one.
fn seal(entry: &Entry) -> serde_json::Result<Vec<u8>> {
    let mut value = serde_json::to_value(entry)?;
    let check = checksum(&value)?;
    if let serde_json::Value::Object(fields) = &mut value {
        fields.insert(CHECK_FIELD.to_owned(), check.into());
    }
    serde_json::to_vec_pretty(&value)
}

/// The blake3 (hex) of `value` written compact, which is the same text
/// whatever spacing the file had: serde_json writes an object's keys in one
/// order for the same keys, whether they were read from the file or taken
/// from an [`Entry`].
fn checksum(value: &serde_json::Value) -> serde_json::Result<String> {
    Ok(blake3::hash(&serde_json::to_vec(value)?)
        .to_hex()
        .to_string())
}

/// Every journal file, and what reading it found ([`Journal::list`]).
pub(crate) type Listed = Vec<(PathBuf, Result<Entry, Unusable>)>;

/// A journal file that is not a usable journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unusable {
    /// Why, for people (naming the file).
    pub(crate) reason: String,
    /// Whether it is damaged (not JSON, cut short, fields missing, or saying
    /// what cannot be): it can never help a resume. Otherwise it could not
    /// be read now, is too large for this idb, or is of another version,
    /// and may still serve another idb or a later try.
    pub(crate) damaged: bool,
}

/// Why a journal file was not read.
pub(crate) enum Unreadable {
    /// There is none.
    Missing,
    /// It is not a usable journal.
    Bad(Unusable),
}

/// Reads and checks the journal file at `path`.
pub(crate) fn read(path: &Path) -> Result<Entry, Unreadable> {
    let unusable = |reason, damaged| Err(Unreadable::Bad(Unusable { reason, damaged }));
    let bad = |reason| unusable(reason, false);
    let damaged = |reason| unusable(reason, true);
    let text = match fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Unreadable::Missing),
        Err(e) => return bad(format!("cannot read {}: {e}", path.display())),
        Ok(meta) if meta.len() > MAX_JOURNAL_BYTES => {
            return bad(format!("{} is too large to be a journal", path.display()));
        }
        Ok(_) => match fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Unreadable::Missing),
            Err(e) => return bad(format!("cannot read {}: {e}", path.display())),
        },
    };
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    match serde_json::from_slice::<Versioned>(&text) {
        Ok(v) if v.version != JOURNAL_VERSION => {
            return bad(format!(
                "{} has journal version {}, this idb reads version {JOURNAL_VERSION}",
                path.display(),
                v.version
            ));
        }
        Ok(_) => {}
        Err(e) => return damaged(format!("{} is damaged: {e}", path.display())),
    }
    let mut value = match serde_json::from_slice::<serde_json::Value>(&text) {
        Ok(value) => value,
        Err(e) => return damaged(format!("{} is damaged: {e}", path.display())),
    };
    let sealed = value
        .as_object_mut()
        .and_then(|fields| fields.remove(CHECK_FIELD));
    if let Some(sealed) = sealed
        && checksum(&value).ok().as_deref() != sealed.as_str()
    {
        return damaged(format!(
            "{} is damaged: it is not what idb wrote (its check does not match)",
            path.display()
        ));
    }
    match serde_json::from_value::<Entry>(value) {
        Ok(entry) if entry.acked > entry.size => damaged(format!(
            "{} is damaged: it claims more bytes than the file has",
            path.display()
        )),
        Ok(entry) => Ok(entry),
        Err(e) => damaged(format!("{} is damaged: {e}", path.display())),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn entry() -> Entry {
        Entry {
            version: JOURNAL_VERSION,
            server: "https://h/".into(),
            dataset: "IDB-1".into(),
            filename: "a.bin".into(),
            path: "/data/a.bin".into(),
            size: 100,
            modified: (5, 6),
            changed: Some((9, 9)),
            device: 1,
            inode: 2,
            acked: 40,
            chunk_size: 10,
            offset_mode: false,
            hash: None,
            tus: None,
        }
    }

    fn key() -> Key {
        Key::of("https://h/", "IDB-1", "a.bin")
    }

    #[test]
    fn saves_loads_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().join("state/journal"));
        assert!(matches!(
            journal.load("https://h/", "IDB-1", "a.bin"),
            Loaded::Nothing
        ));
        journal.create_dir().unwrap();
        journal.save(&entry()).unwrap();
        match journal.load("https://h/", "IDB-1", "a.bin") {
            Loaded::Found(found) => assert_eq!(*found, entry()),
            other => panic!("{other:?}"),
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(journal.path(key()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "private to the user");
        journal.remove(key()).unwrap();
        journal.remove(key()).unwrap();
        assert!(matches!(
            journal.load("https://h/", "IDB-1", "a.bin"),
            Loaded::Nothing
        ));
    }

    #[test]
    fn damaged_foreign_and_old_journals_are_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().to_path_buf());
        let path = journal.path(key());
        let full = serde_json::to_vec(&entry()).unwrap();
        let mut other = entry();
        other.filename = "b.bin".into();
        let mut old = serde_json::to_value(entry()).unwrap();
        old["version"] = 1.into();
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
            // Damaged, so of no use to any idb: cut short, garbage, fields
            // missing, more bytes than the file. Another upload's is no damage
            // (it is read, and refused by `load`), nor are another version's
            // and one too large for this idb.
            let listed = journal.list().unwrap();
            let damaged = matches!(&listed[..], [(_, Err(u))] if u.damaged);
            assert_eq!(damaged, [0, 1, 2, 5].contains(&i), "case {i}: {listed:?}");
        }
    }

    #[test]
    fn a_journal_file_name_gives_back_its_key() {
        let name = std::ffi::OsString::from(key().file_name());
        assert_eq!(Key::from_file_name(&name), Some(key()));
        let upper = key().file_name().to_uppercase().replace(".JSON", ".json");
        let others = [
            "uploads.lock".to_owned(),
            "a.json".to_owned(),
            format!("{}.json", "zz".repeat(16)),
            format!(".{}.tmp1", key().file_name()),
            upper,
        ];
        for other in others {
            assert_eq!(Key::from_file_name(other.as_ref()), None, "{other}");
        }
    }

    /// Regression: a journal changed after idb wrote it, but still well-formed
    /// (a digit of its hash state flipped), was resumed from, and the verify
    /// then called a good copy on the server corrupt. Each field changed now
    /// makes it unusable; the same file written again as idb writes it, or a
    /// journal of an earlier idb with no check, still loads.
    #[test]
    fn a_journal_changed_after_it_was_written_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().to_path_buf());
        let mut sealed = entry();
        let mut hash = HashState::new(100);
        hash.absorb(0, &[7; 40]);
        sealed.hash = Some(hash);
        journal.save(&sealed).unwrap();
        let path = journal.path(key());
        let load = || journal.load("https://h/", "IDB-1", "a.bin");
        assert!(matches!(load(), Loaded::Found(found) if *found == sealed));
        let saved: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert!(saved[CHECK_FIELD].is_string(), "{saved}");

        // Spacing is not content.
        fs::write(&path, serde_json::to_vec(&saved).unwrap()).unwrap();
        assert!(matches!(load(), Loaded::Found(found) if *found == sealed));
        // Written by an earlier idb: no check.
        let mut unsealed = saved.clone();
        unsealed.as_object_mut().unwrap().remove(CHECK_FIELD);
        fs::write(&path, serde_json::to_vec(&unsealed).unwrap()).unwrap();
        assert!(matches!(load(), Loaded::Found(found) if *found == sealed));

        let text = saved["hash"].as_str().unwrap().to_owned();
        let flipped = text.rfind(|c: char| c.is_ascii_hexdigit()).unwrap();
        let digit = if &text[flipped..=flipped] == "0" {
            "1"
        } else {
            "0"
        };
        let changes: [(&str, serde_json::Value); 4] = [
            (
                "hash",
                format!("{}{digit}{}", &text[..flipped], &text[flipped + 1..]).into(),
            ),
            ("acked", 39.into()),
            ("chunk_size", 11.into()),
            (CHECK_FIELD, "0".repeat(64).into()),
        ];
        for (field, value) in changes {
            let mut changed = saved.clone();
            changed[field] = value;
            fs::write(&path, serde_json::to_vec_pretty(&changed).unwrap()).unwrap();
            match load() {
                Loaded::Unusable(reason) => {
                    assert!(
                        reason.contains("its check does not match"),
                        "{field}: {reason}"
                    );
                }
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    /// Regression: a file sent by tus concatenation keeps up to 1000 partials
    /// in its journal (`MAX_JOIN_PARTIALS`), each with its URL: well over the
    /// 64 KiB a journal was allowed, so a large upload stopped after some 400
    /// partials could not resume ("too large to be a journal") and started over.
    #[test]
    fn a_journal_of_a_thousand_partials_with_long_addresses_loads() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().to_path_buf());
        let mut full = entry();
        full.size = 1 << 41;
        full.acked = 0;
        let part = 2_199_023_256u64;
        full.tus = Some(Box::new(crate::tus::TusRecord {
            concat: true,
            partials: (0..1000)
                .map(|i| crate::tus::SavedPartial {
                    offset: i * part,
                    len: part,
                    // An address as long as an S3-backed tus server's
                    // (object id and multipart upload id).
                    url: format!(
                        "https://databank.illinois.edu/files/{i:032x}+{}",
                        "x".repeat(160)
                    ),
                })
                .collect(),
            ..Default::default()
        }));
        journal.save(&full).unwrap();
        match journal.load("https://h/", "IDB-1", "a.bin") {
            Loaded::Found(found) => assert_eq!(*found, full),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_differ_by_every_part_and_stay_in_range() {
        let keys = [
            Key::of("https://h/", "IDB-1", "a.bin"),
            Key::of("https://g/", "IDB-1", "a.bin"),
            Key::of("https://h/", "IDB-2", "a.bin"),
            Key::of("https://h/", "IDB-1", "b.bin"),
            // The separator keeps "ab" + "c" apart from "a" + "bc".
            Key::of("https://h/", "IDB-1a", ".bin"),
        ];
        for (i, a) in keys.iter().enumerate() {
            assert!(a.lock_offset() < 1 << 62);
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
                assert_ne!(a.lock_offset(), b.lock_offset());
            }
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
        for other in [
            Identity {
                size: 101,
                ..identity
            },
            Identity {
                modified: (5, 7),
                ..identity
            },
            // Written, and its modification time put back.
            Identity {
                changed: (9, 10),
                ..identity
            },
            Identity {
                inode: 3,
                ..identity
            },
        ] {
            assert!(!e.describes(Path::new("/data/a.bin"), &other));
        }
        // A journal of an earlier idb has no change time: the rest decides.
        let earlier = Entry { changed: None, ..e };
        let text = serde_json::to_string(&earlier).unwrap();
        assert!(!text.contains("changed"), "{text}");
        let read: Entry = serde_json::from_str(&text).unwrap();
        assert_eq!(read.changed, None);
        assert!(read.describes(
            Path::new("/data/a.bin"),
            &Identity {
                changed: (1, 2),
                ..identity
            }
        ));
    }
}
