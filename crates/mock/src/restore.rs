//! Resuming the saved state of a store directory when a server starts on it
//! again: verified files keep their receipts (a move into place that a stop cut
//! short is finished), and strict-mode uploads continue from their staged bytes.
//!
//! Synchronous file I/O; the server builds its state on a blocking thread.

use std::collections::HashSet;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use idb_wire::{DatasetKey, VerifyReceipt, WriteMode, validate_filename};

use crate::layout::{dataset_dir, incoming_path};
use crate::persist::{self, Key, Mirror, SessionRecord};

/// How many bytes of a staged file are read at a time to rebuild its hash.
const RESTORE_BUFFER: usize = 1024 * 1024;

/// What a store's saved state gave back.
pub(crate) struct Restored {
    /// Verified files, in the saved order.
    pub(crate) verified: Vec<Verified>,
    /// Strict-mode uploads to continue, in the saved order.
    pub(crate) resumed: Vec<Resumed>,
    /// What the state file should say from now on.
    pub(crate) mirror: Mirror,
    /// What could not be restored, for people.
    pub(crate) warnings: Vec<String>,
}

/// A verified file, as saved.
pub(crate) struct Verified {
    pub(crate) key: Key,
    pub(crate) receipt: VerifyReceipt,
    /// `(offset, len)` of its newest transfers, as saved.
    pub(crate) log: Vec<(u64, u64)>,
}

/// A strict-mode upload rebuilt from its record and its staged file.
pub(crate) struct Resumed {
    pub(crate) key: Key,
    /// The session id it was given (see [`SessionRecord::id`]).
    pub(crate) id: u64,
    pub(crate) declared: u64,
    /// The staged file, open for reading and writing.
    pub(crate) file: File,
    /// Bytes received; the staged file holds exactly these.
    pub(crate) received: u64,
    /// The hash of the received bytes.
    pub(crate) hasher: blake3::Hasher,
    /// `(offset, len)` of the saved transfers that end within `received`.
    pub(crate) log: Vec<(u64, u64)>,
}

/// Loads the saved state of `root` for a server in `mode`, giving each resumed
/// upload an id from `next_id`.
pub(crate) fn restore(root: &Path, mode: WriteMode, next_id: &AtomicU64) -> Restored {
    let loaded = persist::load(root);
    let mut warnings = loaded.warnings;
    let mut verified = Vec::new();
    let mut verified_keys = HashSet::new();
    let mut receipts = Vec::new();
    for record in loaded.verified {
        let name = format!("{}/{}", record.dataset, record.filename);
        let valid = valid_names(&record.dataset, &record.filename).and_then(|()| {
            let hex = record.blake3.len() == 64
                && record
                    .blake3
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if hex {
                Ok(())
            } else {
                Err("its blake3 is not 64 lowercase hex digits".to_owned())
            }
        });
        if let Err(why) = valid {
            warnings.push(format!("ignoring the saved receipt of {name}: {why}"));
            continue;
        }
        if let Some(why) = finish_rename(root, &record.dataset, &record.filename) {
            warnings.push(format!("{name} was verified, but {why}"));
        }
        let key = (record.dataset.clone(), record.filename.clone());
        let receipt = VerifyReceipt {
            filename: record.filename.clone(),
            size: record.size,
            blake3: record.blake3.clone(),
        };
        verified_keys.insert(key.clone());
        verified.push(Verified {
            key,
            receipt,
            log: record.accepted.clone(),
        });
        receipts.push(record);
    }
    let mut resumed = Vec::new();
    let mut records = Vec::new();
    if !loaded.sessions.is_empty() && mode == WriteMode::Offset {
        warnings.push(format!(
            "{} saved strict-mode upload(s) are not resumed in offset mode; their \
             clients start over",
            loaded.sessions.len()
        ));
    } else {
        for record in loaded.sessions {
            let key = (record.dataset.clone(), record.filename.clone());
            let name = format!("{}/{}", record.dataset, record.filename);
            if verified_keys.contains(&key) {
                warnings.push(format!(
                    "ignoring the saved upload of {name}: it is verified already"
                ));
                continue;
            }
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            match resume(root, record, id) {
                Ok((upload, record, note)) => {
                    warnings.extend(note);
                    resumed.push(upload);
                    records.push(record);
                }
                Err(why) => warnings.push(format!("cannot resume the upload of {name}: {why}")),
            }
        }
    }
    Restored {
        verified,
        resumed,
        mirror: Mirror::new(records, receipts),
        warnings,
    }
}

/// A verified file whose receipt was saved but whose move out of the staging
/// directory did not happen (the server stopped between the two): moves it
/// now. Returns why the file is not in place, if it is not.
fn finish_rename(root: &Path, dataset: &str, filename: &str) -> Option<String> {
    let dir = dataset_dir(root, dataset);
    let stored = dir.join(filename);
    if stored.exists() {
        return None;
    }
    let staged = incoming_path(root, dataset, filename);
    if !staged.exists() {
        return Some(format!("{} is missing", stored.display()));
    }
    match fs::create_dir_all(&dir).and_then(|()| fs::rename(&staged, &stored)) {
        Ok(()) => None,
        Err(e) => Some(format!(
            "it cannot be moved from {} to {}: {e}",
            staged.display(),
            stored.display()
        )),
    }
}

/// Rebuilds a strict upload from its record and its staged file: the staged
/// file is trusted over the record when it is shorter (its last bytes never
/// reached the disk), and cut to the received length when longer (bytes of a
/// transfer that was never acknowledged). Returns the upload, the record as
/// resumed, and a note when the received length changed.
fn resume(
    root: &Path,
    mut record: SessionRecord,
    id: u64,
) -> Result<(Resumed, SessionRecord, Option<String>), String> {
    valid_names(&record.dataset, &record.filename)?;
    if record.received > record.declared {
        return Err(format!(
            "it says {} bytes were received of {} declared",
            record.received, record.declared
        ));
    }
    let path = incoming_path(root, &record.dataset, &record.filename);
    let file = path
        .parent()
        .map_or(Ok(()), fs::create_dir_all)
        .and_then(|()| {
            File::options()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
        })
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let on_disk = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    let mut note = None;
    if on_disk < record.received {
        note = Some(format!(
            "{}/{}: the saved state says {} bytes were received, the staged file holds \
             {on_disk}; resuming at {on_disk}",
            record.dataset, record.filename, record.received
        ));
        record.received = on_disk;
    } else if on_disk > record.received {
        file.set_len(record.received)
            .map_err(|e| format!("cannot cut {}: {e}", path.display()))?;
    }
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0; RESTORE_BUFFER];
    let mut at = 0;
    while at < record.received {
        let n = (record.received - at).min(RESTORE_BUFFER as u64) as usize;
        file.read_exact_at(&mut buffer[..n], at)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        hasher.update(&buffer[..n]);
        at += n as u64;
    }
    let received = record.received;
    record
        .accepted
        .retain(|&(offset, len)| offset + len <= received);
    record.id = id;
    let upload = Resumed {
        key: (record.dataset.clone(), record.filename.clone()),
        id,
        declared: record.declared,
        file,
        received,
        hasher,
        log: record.accepted.iter().copied().collect(),
    };
    Ok((upload, record, note))
}

/// Checks a saved dataset key and file name as a request's would be (the state
/// file is input too: a name must not walk out of the store).
fn valid_names(dataset: &str, filename: &str) -> Result<(), String> {
    DatasetKey::new(dataset).map_err(|e| e.to_string())?;
    validate_filename(filename).map_err(|e| e.to_string())
}
